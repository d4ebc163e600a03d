package ctl

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	natspb "github.com/cosnats/cosnats/gen/cosnats/v1"
	"github.com/cosnats/cosnats/pkg/intake"
	"github.com/cosnats/cosnats/pkg/layout"
)

// natsFlags say how to reach NATS, for the commands that read what only NATS holds (the outcomes of
// the asynchronous intake).
type natsFlags struct {
	url, creds, prefix                  string
	user, passwordFile, tokenFile, nkey string
	password, token                     string // from the environment only (flags take files)
	ca                                  string
}

func (n *natsFlags) register(fs *flag.FlagSet, getenv func(string) string) {
	n.url, n.creds, n.prefix = getenv("COS_NATS_URL"), getenv("COS_NATS_CREDS"), getenv("COS_NATS_PREFIX")
	n.user, n.passwordFile, n.password = getenv("COS_NATS_USER"), getenv("COS_NATS_PASSWORD_FILE"), getenv("COS_NATS_PASSWORD")
	n.tokenFile, n.token, n.nkey, n.ca = getenv("COS_NATS_TOKEN_FILE"), getenv("COS_NATS_TOKEN"), getenv("COS_NATS_NKEY_FILE"), getenv("COS_NATS_TLS_CA_FILE")
	if n.url == "" {
		n.url = "nats://127.0.0.1:4222" // the quickstart's embedded server
	}
	if n.prefix == "" {
		n.prefix = layout.DefaultPrefix
	}
	fs.StringVar(&n.url, "nats-url", n.url, "NATS server `URL`s, comma-separated (env COS_NATS_URL)")
	fs.StringVar(&n.creds, "nats-creds", n.creds, "NATS credentials `FILE` (env COS_NATS_CREDS)")
	fs.StringVar(&n.user, "nats-user", n.user, "NATS `USER`, with --nats-password-file (env COS_NATS_USER)")
	fs.StringVar(&n.passwordFile, "nats-password-file", n.passwordFile, "`FILE` holding the NATS password (env COS_NATS_PASSWORD_FILE, or COS_NATS_PASSWORD)")
	fs.StringVar(&n.tokenFile, "nats-token-file", n.tokenFile, "`FILE` holding a NATS token (env COS_NATS_TOKEN_FILE, or COS_NATS_TOKEN)")
	fs.StringVar(&n.nkey, "nats-nkey-file", n.nkey, "`FILE` holding an nkey seed (env COS_NATS_NKEY_FILE)")
	fs.StringVar(&n.ca, "nats-ca", n.ca, "PEM `FILE` of the CAs that sign the NATS servers' certificates (env COS_NATS_TLS_CA_FILE)")
	fs.StringVar(&n.prefix, "nats-prefix", n.prefix, "the system's `PREFIX` of stream and subject names (env COS_NATS_PREFIX)")
}

// auth is the connection's authentication option (at most one method), read from the files named.
func (n *natsFlags) auth() ([]nats.Option, error) {
	read := func(flagName, file string) (string, error) {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("%s: %w", flagName, err)
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	}
	var opts []nats.Option
	if n.ca != "" {
		opts = append(opts, nats.RootCAs(n.ca))
	}
	methods := 0
	for _, set := range []bool{n.creds != "", n.nkey != "", n.user != "", n.tokenFile != "" || n.token != ""} {
		if set {
			methods++
		}
	}
	if methods > 1 {
		return nil, errors.New("give one NATS authentication: --nats-creds, --nats-nkey-file, --nats-user or a token")
	}
	switch {
	case n.creds != "":
		opts = append(opts, nats.UserCredentials(n.creds))
	case n.nkey != "":
		o, err := nats.NkeyOptionFromSeed(n.nkey)
		if err != nil {
			return nil, fmt.Errorf("--nats-nkey-file: %w", err)
		}
		opts = append(opts, o)
	case n.user != "":
		pw := n.password
		if n.passwordFile != "" {
			var err error
			if pw, err = read("--nats-password-file", n.passwordFile); err != nil {
				return nil, err
			}
		}
		opts = append(opts, nats.UserInfo(n.user, pw))
	case n.tokenFile != "" || n.token != "":
		tok := n.token
		if n.tokenFile != "" {
			var err error
			if tok, err = read("--nats-token-file", n.tokenFile); err != nil {
				return nil, err
			}
		}
		opts = append(opts, nats.Token(tok))
	}
	return opts, nil
}

// connect opens the NATS connection; an unreachable server is exit 3.
func (n *natsFlags) connect(c *call) (*nats.Conn, jetstream.JetStream, layout.Layout, error) {
	lay, err := layout.New(n.prefix)
	if err != nil {
		return nil, nil, layout.Layout{}, usagef(c.cmd, "--nats-prefix: %v", err)
	}
	auth, err := n.auth()
	if err != nil {
		return nil, nil, layout.Layout{}, usagef(c.cmd, "%v", err)
	}
	opts := append([]nats.Option{nats.Name("cosctl"), nats.Timeout(c.g.timeout), nats.MaxReconnects(0)}, auth...)
	nc, err := nats.Connect(n.url, opts...)
	if err != nil {
		return nil, nil, layout.Layout{}, &exitError{code: ExitUnavailable, msg: fmt.Sprintf("UNAVAILABLE: NATS at %s: %v", n.url, err)}
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, layout.Layout{}, fmt.Errorf("jetstream: %w", err)
	}
	return nc, js, lay, nil
}

var intakeOutcomeCommand = &command{
	name:    "intake outcome",
	args:    "COMMAND_ID",
	summary: "the stored outcome of an asynchronous command (over NATS)",
	help: `Reads the outcome of a command sent through the asynchronous intake from the stream COS_OUTCOMES,
over NATS (--nats-url): the resulting state and meta, or the error with its code, message and details,
and for a rejected command the command itself. Exit 4 when there is none: the command is not decided
yet, was never accepted, or its outcome is older than COS_INTAKE_OUTCOME_MAX_AGE.`,
	example: `cosctl intake outcome credit-1
cosctl intake outcome credit-1 --output table --nats-url nats://nats:4222`,
	output: "json",
	setup: func(fs *flag.FlagSet, c *call) func(context.Context, []string) error {
		var nf natsFlags
		var sf schemaFlags
		nf.register(fs, c.getenv)
		sf.register(fs, c.getenv)
		return func(ctx context.Context, args []string) error {
			if len(args) != 1 || args[0] == "" {
				return usagef(c.cmd, "intake outcome takes one COMMAND_ID")
			}
			return c.intakeOutcome(ctx, &nf, &sf, args[0])
		}
	},
}

func (c *call) intakeOutcome(ctx context.Context, nf *natsFlags, sf *schemaFlags, id string) error {
	nc, js, lay, err := nf.connect(c)
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, c.g.timeout)
	defer cancel()
	s, err := js.Stream(ctx, lay.OutcomeStream())
	if err == nil {
		var m *jetstream.RawStreamMsg
		if m, err = s.GetLastMsgForSubject(ctx, lay.OutcomeLogSubject(id)); err == nil {
			return c.printOutcome(sf, m)
		}
	}
	if errors.Is(err, jetstream.ErrMsgNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
		return &exitError{code: ExitNotFound, msg: fmt.Sprintf("NOT_FOUND: no outcome of command %q: not decided yet, never accepted, or older than COS_INTAKE_OUTCOME_MAX_AGE", id)}
	}
	return &exitError{code: ExitUnavailable, msg: fmt.Sprintf("UNAVAILABLE: read %s: %v", lay.OutcomeStream(), err)}
}

// printOutcome prints a stored outcome: as stored when it is JSON already, else decoded and rendered
// with the application's types.
func (c *call) printOutcome(sf *schemaFlags, m *jetstream.RawStreamMsg) error {
	h := m.Header
	if c.format() == "table" {
		tw := newTable(c.stdout)
		for _, row := range [][2]string{
			{"command_id", h.Get(intake.HeaderCommandID)},
			{"entity_id", h.Get(intake.HeaderEntityID)},
			{"status", statusName(h.Get(intake.HeaderStatus))},
			{"message", h.Get(intake.HeaderStatusMessage)},
			{"revision", h.Get(intake.HeaderRevision)},
			{"replayed", strconv.FormatBool(h.Get(intake.HeaderReplayed) == "true")},
			{"intake_sequence", h.Get(intake.HeaderIntakeSeq)},
			{"decided", m.Time.UTC().Format(time.RFC3339Nano)},
		} {
			fmt.Fprintf(tw, "%s\t%s\n", row[0], row[1])
		}
		return tw.Flush()
	}
	if h.Get(intake.HeaderContentType) == intake.ContentJSON {
		return writeJSON(c.stdout, json.RawMessage(m.Data), true)
	}
	var o natspb.CommandOutcome
	if err := proto.Unmarshal(m.Data, &o); err != nil {
		return fmt.Errorf("outcome at sequence %d of the outcome stream is not a CommandOutcome: %w", m.Sequence, err)
	}
	r, closeFn, err := sf.resolver(c)
	if err != nil {
		return err
	}
	defer closeFn()
	opts := jsonOptions
	opts.Resolver = r
	b, err := opts.Marshal(&o)
	if err != nil {
		// A type nobody knows: the outcome without the Any fields' contents, and a warning.
		newRenderer(r, c.stderr).warn(o.GetResponse().GetState().GetTypeUrl(), "state", err)
		b, _ = json.Marshal(map[string]any{
			"command_id": o.GetCommandId(), "entity_id": o.GetEntityId(), "intake_sequence": o.GetIntakeSequence(),
			"status": statusName(h.Get(intake.HeaderStatus)), "message": o.GetError().GetMessage(),
			"revision": o.GetResponse().GetMeta().GetRevisionNumber(), "replayed": o.GetReplayed(),
		})
	}
	return writeJSON(c.stdout, json.RawMessage(b), true)
}

// statusName turns a Cos-Status header into its code's name ("OK", "FAILED_PRECONDITION").
func statusName(v string) string {
	n, err := strconv.Atoi(v)
	if err != nil {
		return v
	}
	return codeName(codes.Code(n))
}

var intakeRejectedCommand = &command{
	name:    "intake rejected",
	args:    "[--since DURATION] [--limit N]",
	summary: "the asynchronous commands refused lately, with their errors (over NATS)",
	help: `Lists the commands of the asynchronous intake that were refused — invalid, or the write handler's
error — from the outcome stream COS_OUTCOMES over NATS (--nats-url): the newest --limit of those
decided within --since, oldest first. 'cosctl intake outcome COMMAND_ID' shows one in full, with the
command itself.`,
	example: `cosctl intake rejected
cosctl intake rejected --since 168h --limit 500 --output json`,
	output: "table",
	setup: func(fs *flag.FlagSet, c *call) func(context.Context, []string) error {
		var nf natsFlags
		nf.register(fs, c.getenv)
		since := fs.Duration("since", 24*time.Hour, "look at outcomes decided within this `DURATION`")
		limit := fs.Int("limit", 50, "list at most the newest `N`")
		return func(ctx context.Context, args []string) error {
			if len(args) != 0 {
				return usagef(c.cmd, "intake rejected takes no argument, got %q", args)
			}
			if *since <= 0 || *limit <= 0 {
				return usagef(c.cmd, "--since and --limit must be positive")
			}
			return c.intakeRejected(ctx, &nf, *since, *limit)
		}
	},
}

// rejection is one row of intake rejected.
type rejection struct {
	CommandID      string    `json:"command_id"`
	EntityID       string    `json:"entity_id"`
	Status         string    `json:"status"`
	Message        string    `json:"message"`
	IntakeSequence string    `json:"intake_sequence"`
	Decided        time.Time `json:"decided"`
}

func (c *call) intakeRejected(ctx context.Context, nf *natsFlags, since time.Duration, limit int) error {
	nc, js, lay, err := nf.connect(c)
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, c.g.timeout)
	defer cancel()
	start := time.Now().Add(-since)
	// Headers only: the status is in them, and an outcome's body may be large.
	cons, err := js.OrderedConsumer(ctx, lay.OutcomeStream(), jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{lay.OutcomeLogSubjects()}, DeliverPolicy: jetstream.DeliverByStartTimePolicy,
		OptStartTime: &start, HeadersOnly: true})
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return &exitError{code: ExitNotFound, msg: fmt.Sprintf("NOT_FOUND: no stream %s: the intake was never enabled", lay.OutcomeStream())}
	}
	if err != nil {
		return &exitError{code: ExitUnavailable, msg: fmt.Sprintf("UNAVAILABLE: read %s: %v", lay.OutcomeStream(), err)}
	}
	var rows []rejection
	if cons.CachedInfo().NumPending > 0 {
		it, err := cons.Messages()
		if err != nil {
			return &exitError{code: ExitUnavailable, msg: fmt.Sprintf("UNAVAILABLE: read %s: %v", lay.OutcomeStream(), err)}
		}
		defer it.Stop()
		for {
			m, err := it.Next(jetstream.NextContext(ctx))
			if err != nil {
				return &exitError{code: ExitUnavailable, msg: fmt.Sprintf("UNAVAILABLE: read %s: %v", lay.OutcomeStream(), err)}
			}
			meta, err := m.Metadata()
			if err != nil {
				return fmt.Errorf("outcome without metadata: %w", err)
			}
			h := m.Headers()
			if st := h.Get(intake.HeaderStatus); st != "0" {
				rows = append(rows, rejection{CommandID: h.Get(intake.HeaderCommandID), EntityID: h.Get(intake.HeaderEntityID),
					Status: statusName(st), Message: h.Get(intake.HeaderStatusMessage), IntakeSequence: h.Get(intake.HeaderIntakeSeq),
					Decided: meta.Timestamp.UTC()})
				if len(rows) > limit {
					rows = rows[1:]
				}
			}
			if meta.NumPending == 0 {
				break
			}
		}
	}
	if c.format() == "json" {
		for _, r := range rows {
			if err := writeJSON(c.stdout, r, false); err != nil {
				return err
			}
		}
		return nil
	}
	tw := newTable(c.stdout)
	fmt.Fprintln(tw, "DECIDED\tCOMMAND ID\tENTITY\tSTATUS\tMESSAGE")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Decided.Format(time.RFC3339), r.CommandID, r.EntityID, r.Status, r.Message)
	}
	return tw.Flush()
}

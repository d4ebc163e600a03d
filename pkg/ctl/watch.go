package ctl

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
)

var watchCommand = &command{
	name:    "watch",
	args:    "[ENTITY_ID] [--from-revision N | --from-sequence N] [--subscription-id ID] [--count N]",
	summary: "follow events live (Subscribe, or SubscribeAll without ENTITY_ID)",
	help: `Follows events as they are persisted: with ENTITY_ID, that entity's (ChiefOfStateService/Subscribe,
in revision order); without, every entity's (SubscribeAll, in order per entity). Prints one JSON line
per event:
  {"subscription_id", "sequence", "entity_id", "revision", "event", "resulting_state", "meta"}
sequence is the event's position in the event stream: resume a SubscribeAll after it with
--from-sequence sequence+1. By default only events persisted from now on are shown; --from-revision N
(one entity) first replays its events from revision N, --from-sequence N (all entities) starts at
stream position N.

It runs until SIGINT/SIGTERM, then ends the subscription on the gateway (Unsubscribe/UnsubscribeAll
with its id) and exits 0; or until --count events are printed (exit 0). --subscription-id names the
subscription (another process can end it with that id); cosctl makes one up otherwise. A stream the
server ends exits 0, or 1 when --count events were not seen yet. --output table prints one short line
per event instead.

` + typesHelp,
	example: `cosctl watch acc-1 --from-revision 1 --handler 127.0.0.1:50051
cosctl watch --count 10 --descriptors bank.pb`,
	output: "json",
	setup: func(fs *flag.FlagSet, c *call) func(context.Context, []string) error {
		var w watchFlags
		w.schema.register(fs, c.getenv)
		fs.Func("from-revision", "with ENTITY_ID: replay its events from revision `N` (>= 1), then go on live", uintFlag(&w.fromRevision, &w.fromRevisionSet, 32))
		fs.Func("from-sequence", "without ENTITY_ID: start at event stream position `N` (>= 1)", uintFlag(&w.fromSequence, &w.fromSequenceSet, 64))
		fs.StringVar(&w.subscriptionID, "subscription-id", "", "`ID` of the subscription (default: made up)")
		fs.IntVar(&w.count, "count", 0, "stop after `N` events (0 = until interrupted)")
		return func(ctx context.Context, args []string) error {
			if len(args) > 1 {
				return usagef(c.cmd, "watch wants at most one ENTITY_ID, got %d arguments", len(args))
			}
			if len(args) == 1 {
				w.entityID = args[0]
			}
			if err := w.validate(); err != nil {
				return usagef(c.cmd, "%v", err)
			}
			return c.watch(ctx, &w)
		}
	},
}

type watchFlags struct {
	schema          schemaFlags
	entityID        string
	fromRevision    uint64
	fromRevisionSet bool
	fromSequence    uint64
	fromSequenceSet bool
	subscriptionID  string
	count           int
}

func (w *watchFlags) validate() error {
	switch {
	case w.fromRevisionSet && w.fromSequenceSet:
		return errors.New("--from-revision and --from-sequence exclude each other")
	case w.fromRevisionSet && w.entityID == "":
		return errors.New("--from-revision needs ENTITY_ID (for all entities use --from-sequence)")
	case w.fromSequenceSet && w.entityID != "":
		return errors.New("--from-sequence is for all entities (for one entity use --from-revision)")
	case w.fromRevisionSet && w.fromRevision == 0, w.fromSequenceSet && w.fromSequence == 0:
		return errors.New("--from-revision and --from-sequence start at 1")
	case w.count < 0:
		return fmt.Errorf("--count must be >= 0, got %d", w.count)
	}
	return nil
}

// uintFlag parses an unsigned flag of bits width and records that it was given.
func uintFlag(v *uint64, set *bool, bits int) func(string) error {
	return func(s string) error {
		var n uint64
		if _, err := fmt.Sscan(s, &n); err != nil || fmt.Sprint(n) != s || (bits == 32 && n > 1<<32-1) {
			return fmt.Errorf("%q is not a whole number of %d bits", s, bits)
		}
		*v, *set = n, true
		return nil
	}
}

// eventLine is one event as watch prints it.
type eventLine struct {
	SubscriptionID string          `json:"subscription_id"`
	Sequence       uint64          `json:"sequence"`
	EntityID       string          `json:"entity_id"`
	Revision       uint32          `json:"revision"`
	Event          json.RawMessage `json:"event"`
	ResultingState json.RawMessage `json:"resulting_state"`
	Meta           json.RawMessage `json:"meta"`
}

// received is what the stream reader hands over: an event or the stream's end.
type received struct {
	event *cospb.SubscribeAllResponse // Subscribe's responses are converted: same fields
	err   error
}

func (c *call) watch(ctx context.Context, w *watchFlags) error {
	r, closeResolver, err := w.schema.resolver(c)
	if err != nil {
		return err
	}
	defer closeResolver()
	conn, err := c.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	client := cospb.NewChiefOfStateServiceClient(conn)
	id := w.subscriptionID
	if id == "" {
		id = newSubscriptionID()
	}
	// The stream outlives ctx: on a signal the subscription is ended by Unsubscribe first, then the
	// stream is cancelled.
	streamCtx, cancelStream := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelStream()
	var recv func() (*cospb.SubscribeAllResponse, error)
	if w.entityID != "" {
		s, err := client.Subscribe(streamCtx, &cospb.SubscribeRequest{EntityId: w.entityID, SubscriptionId: id, FromRevision: uint32(w.fromRevision)})
		if err != nil {
			return err
		}
		recv = func() (*cospb.SubscribeAllResponse, error) {
			m, err := s.Recv()
			if err != nil {
				return nil, err
			}
			return &cospb.SubscribeAllResponse{SubscriptionId: m.GetSubscriptionId(), Event: m.GetEvent(),
				ResultingState: m.GetResultingState(), Meta: m.GetMeta(), Sequence: m.GetSequence()}, nil
		}
	} else {
		s, err := client.SubscribeAll(streamCtx, &cospb.SubscribeAllRequest{SubscriptionId: id, FromSequence: w.fromSequence})
		if err != nil {
			return err
		}
		recv = s.Recv
	}
	events := make(chan received)
	go func() {
		for {
			m, err := recv()
			select {
			case events <- received{event: m, err: err}:
			case <-streamCtx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	x := newRenderer(r, c.stderr)
	seen := 0
	for {
		select {
		case <-ctx.Done():
			c.unsubscribe(client, w.entityID, id)
			return nil
		case it := <-events:
			if errors.Is(it.err, io.EOF) {
				if w.count > 0 {
					return &exitError{code: ExitFailed, msg: fmt.Sprintf("the server ended subscription %s after %d of %d events", id, seen, w.count)}
				}
				fmt.Fprintf(c.stderr, "cosctl: the server ended subscription %s after %d events\n", id, seen)
				return nil
			}
			if it.err != nil {
				return it.err
			}
			if err := c.printEvent(x, it.event, id); err != nil {
				return err
			}
			seen++
			if w.count > 0 && seen >= w.count {
				// Cancelling the stream ends it on the gateway; an Unsubscribe would also end other
				// streams that share a --subscription-id.
				return nil
			}
		}
	}
}

func (c *call) printEvent(x *renderer, m *cospb.SubscribeAllResponse, id string) error {
	line := eventLine{
		SubscriptionID: m.GetSubscriptionId(),
		Sequence:       m.GetSequence(),
		EntityID:       m.GetMeta().GetEntityId(),
		Revision:       m.GetMeta().GetRevisionNumber(),
		Event:          x.any(m.GetEvent(), "event"),
		ResultingState: x.any(m.GetResultingState(), "state"),
		Meta:           x.meta(m.GetMeta()),
	}
	if line.SubscriptionID == "" {
		line.SubscriptionID = id
	}
	if c.format() == "json" {
		return writeJSON(c.stdout, line, false)
	}
	_, err := fmt.Fprintf(c.stdout, "%d\t%s\trev %d\t%s\t%s\n", line.Sequence, line.EntityID, line.Revision,
		typeName(m.GetEvent().GetTypeUrl()), line.Event)
	return err
}

// unsubscribe ends the subscription on whichever gateway serves it; a subscription already gone is
// fine, anything else is reported but does not fail the watch (the stream is cancelled anyway).
func (c *call) unsubscribe(client cospb.ChiefOfStateServiceClient, entityID, id string) {
	ctx, cancel := context.WithTimeout(context.Background(), c.g.timeout)
	defer cancel()
	var err error
	if entityID != "" {
		_, err = client.Unsubscribe(ctx, &cospb.UnsubscribeRequest{SubscriptionId: id})
	} else {
		_, err = client.UnsubscribeAll(ctx, &cospb.UnsubscribeAllRequest{SubscriptionId: id})
	}
	if err != nil && status.Code(err) != codes.NotFound {
		fmt.Fprintf(c.stderr, "cosctl: warning: ending subscription %s: %s\n", id, statusLine(status.Convert(err)))
	}
}

func newSubscriptionID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return "cosctl-" + hex.EncodeToString(b)
}

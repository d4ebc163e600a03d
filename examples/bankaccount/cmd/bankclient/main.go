// Command bankclient drives the bank-account example through a
// chief-of-state gateway (ChiefOfStateService), the way an application would:
// it only knows the example's messages, never the write handler.
//
//	bankclient open acc-1 "Ann Lee" 1000
//	bankclient -command-id pay-42 debit acc-1 250
//	bankclient get acc-1
//	bankclient -cacert deploy/hardened/ca.pem -cert deploy/hardened/client.pem -key deploy/hardened/client-key.pem get acc-1
//
// Errors print the gRPC code, message and every status detail (BadRequest,
// ErrorInfo) so that the handler's rich errors are visible end to end.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	// Registered for protojson: error details arrive as Any.
	_ "google.golang.org/genproto/googleapis/rpc/errdetails"

	bankv1 "github.com/cosnats/cosnats/examples/bankaccount/gen/bankaccount/v1"
	cosv1 "github.com/cosnats/cosnats/gen/chief_of_state/v1"
)

// commandIDHeader is the metadata key of the idempotency key of a command.
const commandIDHeader = "x-cos-command-id"

const usageText = `usage: bankclient [flags] <command> [args]

commands:
  open <account-id> <owner> [initial-cents]  open an account (initial balance defaults to 0)
  credit <account-id> <cents>                add money
  debit <account-id> <cents>                 remove money
  get <account-id>                           stored state (GetState, never calls the handler)
  show <account-id>                          state via the write handler (ProcessCommand GetAccount)

flags:
`

// invocation is everything one run needs, parsed from the command line.
type invocation struct {
	addr      string
	timeout   time.Duration
	commandID string
	caFile    string // TLS to the gateway, trusting this CA (-cacert); plaintext when it and certFile are empty
	certFile  string // client certificate for mTLS (-cert, with -key)
	keyFile   string
	request   proto.Message // *cosv1.ProcessCommandRequest or *cosv1.GetStateRequest
}

func main() {
	inv, err := parse(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		usage(os.Stdout)
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bankclient: %v\n", err)
		usage(os.Stderr)
		os.Exit(2)
	}
	os.Exit(run(context.Background(), inv, os.Stdout, os.Stderr))
}

func defineFlags(fs *flag.FlagSet, inv *invocation) {
	fs.StringVar(&inv.addr, "addr", "localhost:9000", "chief-of-state gRPC address")
	fs.DurationVar(&inv.timeout, "timeout", 10*time.Second, "deadline of the call")
	fs.StringVar(&inv.commandID, "command-id", "", "idempotency key sent as "+commandIDHeader+" (commands only)")
	fs.StringVar(&inv.caFile, "cacert", "", "PEM CA of the gateway's certificate: use TLS (e.g. deploy/hardened/ca.pem)")
	fs.StringVar(&inv.certFile, "cert", "", "client certificate PEM for mTLS, with -key (implies TLS)")
	fs.StringVar(&inv.keyFile, "key", "", "client key PEM, with -cert")
}

func usage(w io.Writer) {
	fs := flag.NewFlagSet("bankclient", flag.ContinueOnError)
	defineFlags(fs, &invocation{})
	fs.SetOutput(w)
	fmt.Fprint(w, usageText)
	fs.PrintDefaults()
}

// parse reads flags and the subcommand. Every error it returns is a usage
// error (or flag.ErrHelp); it prints nothing itself.
func parse(args []string) (*invocation, error) {
	inv := &invocation{}
	fs := flag.NewFlagSet("bankclient", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	defineFlags(fs, inv)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if inv.timeout <= 0 {
		return nil, fmt.Errorf("-timeout must be positive, got %v", inv.timeout)
	}
	if (inv.certFile == "") != (inv.keyFile == "") {
		return nil, errors.New("-cert and -key go together")
	}
	req, err := parseRequest(fs.Args())
	if err != nil {
		return nil, err
	}
	if _, isGet := req.(*cosv1.GetStateRequest); isGet && inv.commandID != "" {
		// GetState is a read: silently dropping the key would mislead.
		return nil, errors.New("-command-id applies to commands only, not to get")
	}
	inv.request = req
	return inv, nil
}

// parseRequest turns "<command> [args]" into the request to send: a
// *cosv1.ProcessCommandRequest or a *cosv1.GetStateRequest. Amounts are not
// range-checked here on purpose, so that the handler's validation (and its
// error details) can be seen.
func parseRequest(args []string) (proto.Message, error) {
	if len(args) == 0 {
		return nil, errors.New("missing command")
	}
	name, args := args[0], args[1:]
	want := func(min, max int, form string) error {
		if len(args) < min || len(args) > max {
			return fmt.Errorf("usage: %s %s", name, form)
		}
		return nil
	}
	var cmd proto.Message
	switch name {
	case "open":
		if err := want(2, 3, "<account-id> <owner> [initial-cents]"); err != nil {
			return nil, err
		}
		open := &bankv1.OpenAccount{Owner: args[1]}
		if len(args) == 3 {
			cents, err := parseCents(args[2])
			if err != nil {
				return nil, err
			}
			open.InitialBalance = cents
		}
		cmd = open
	case "credit", "debit":
		if err := want(2, 2, "<account-id> <cents>"); err != nil {
			return nil, err
		}
		cents, err := parseCents(args[1])
		if err != nil {
			return nil, err
		}
		if name == "credit" {
			cmd = &bankv1.Credit{Amount: cents}
		} else {
			cmd = &bankv1.Debit{Amount: cents}
		}
	case "show":
		if err := want(1, 1, "<account-id>"); err != nil {
			return nil, err
		}
		cmd = &bankv1.GetAccount{}
	case "get":
		if err := want(1, 1, "<account-id>"); err != nil {
			return nil, err
		}
		return &cosv1.GetStateRequest{EntityId: args[0]}, nil
	default:
		return nil, fmt.Errorf("unknown command %q", name)
	}
	packed, err := anypb.New(cmd)
	if err != nil {
		return nil, err
	}
	return &cosv1.ProcessCommandRequest{EntityId: args[0], Command: packed}, nil
}

func parseCents(s string) (int64, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("amount %q is not a whole number of cents", s)
	}
	return n, nil
}

// run makes the call and prints the outcome; it returns the exit code.
// credentials are plaintext, or TLS with -cacert and -cert/-key when given.
func (inv *invocation) credentials() (credentials.TransportCredentials, error) {
	if inv.caFile == "" && inv.certFile == "" {
		return insecure.NewCredentials(), nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if inv.caFile != "" {
		pem, err := os.ReadFile(inv.caFile)
		if err != nil {
			return nil, fmt.Errorf("-cacert: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("-cacert %s: no PEM certificate in it", inv.caFile)
		}
	}
	if inv.certFile != "" {
		pair, err := tls.LoadX509KeyPair(inv.certFile, inv.keyFile)
		if err != nil {
			return nil, fmt.Errorf("-cert/-key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return credentials.NewTLS(cfg), nil
}

func run(ctx context.Context, inv *invocation, stdout, stderr io.Writer) int {
	creds, err := inv.credentials()
	if err != nil {
		fmt.Fprintf(stderr, "error: %v\n", err)
		return 1
	}
	conn, err := grpc.NewClient(inv.addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		fmt.Fprintf(stderr, "error: %v\n", err)
		return 1
	}
	defer conn.Close()
	client := cosv1.NewChiefOfStateServiceClient(conn)

	ctx, cancel := context.WithTimeout(ctx, inv.timeout)
	defer cancel()
	var (
		state *anypb.Any
		meta  *cosv1.MetaData
	)
	switch req := inv.request.(type) {
	case *cosv1.ProcessCommandRequest:
		if inv.commandID != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, commandIDHeader, inv.commandID)
		}
		var resp *cosv1.ProcessCommandResponse
		resp, err = client.ProcessCommand(ctx, req)
		state, meta = resp.GetState(), resp.GetMeta()
	case *cosv1.GetStateRequest:
		var resp *cosv1.GetStateResponse
		resp, err = client.GetState(ctx, req)
		state, meta = resp.GetState(), resp.GetMeta()
	default:
		err = fmt.Errorf("unsupported request %T", req)
	}
	if err != nil {
		printError(stderr, err)
		return 1
	}
	printState(stdout, state, meta)
	return 0
}

func printState(w io.Writer, state *anypb.Any, meta *cosv1.MetaData) {
	// EmitUnpopulated so that a zero balance is shown rather than omitted.
	b, err := protojson.MarshalOptions{Multiline: true, EmitUnpopulated: true}.Marshal(state)
	if err != nil {
		fmt.Fprintf(w, "state of type %s (not printable: %v)\n", state.GetTypeUrl(), err)
	} else {
		fmt.Fprintf(w, "%s\n", b)
	}
	fmt.Fprintf(w, "revision: %d\n", meta.GetRevisionNumber())
}

// printError prints "error: <code>: <message>" and then each status detail
// as one line of protojson, with its @type, so scripts can pick them out.
func printError(w io.Writer, err error) {
	st := status.Convert(err)
	fmt.Fprintf(w, "error: %s: %s\n", st.Code(), st.Message())
	for _, d := range st.Proto().GetDetails() {
		b, err := protojson.Marshal(d)
		if err != nil {
			fmt.Fprintf(w, "detail of type %s (not printable: %v)\n", d.GetTypeUrl(), err)
			continue
		}
		fmt.Fprintf(w, "%s\n", b)
	}
}

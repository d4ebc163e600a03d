package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	bankv1 "github.com/cosnats/cosnats/examples/bankaccount/gen/bankaccount/v1"
	cosv1 "github.com/cosnats/cosnats/gen/chief_of_state/v1"
)

func process(t *testing.T, id string, cmd proto.Message) *cosv1.ProcessCommandRequest {
	t.Helper()
	a, err := anypb.New(cmd)
	if err != nil {
		t.Fatal(err)
	}
	return &cosv1.ProcessCommandRequest{EntityId: id, Command: a}
}

func TestParseRequest(t *testing.T) {
	tests := []struct {
		args []string
		want proto.Message
	}{
		{[]string{"open", "acc-1", "Ann Lee"}, process(t, "acc-1", &bankv1.OpenAccount{Owner: "Ann Lee"})},
		{[]string{"open", "acc-1", "Ann", "1000"}, process(t, "acc-1", &bankv1.OpenAccount{Owner: "Ann", InitialBalance: 1000})},
		// Negative amounts pass through so the handler's validation is visible.
		{[]string{"open", "acc-1", "Ann", "-1"}, process(t, "acc-1", &bankv1.OpenAccount{Owner: "Ann", InitialBalance: -1})},
		{[]string{"credit", "acc 2", "250"}, process(t, "acc 2", &bankv1.Credit{Amount: 250})},
		{[]string{"credit", "acc-1", "-5"}, process(t, "acc-1", &bankv1.Credit{Amount: -5})},
		{[]string{"debit", "acc-1", "75"}, process(t, "acc-1", &bankv1.Debit{Amount: 75})},
		{[]string{"show", "acc-1"}, process(t, "acc-1", &bankv1.GetAccount{})},
		{[]string{"get", "acc-1"}, &cosv1.GetStateRequest{EntityId: "acc-1"}},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			got, err := parseRequest(tc.args)
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestParseRequestErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string // substring of the error
	}{
		{nil, "missing command"},
		{[]string{"close", "acc-1"}, `unknown command "close"`},
		{[]string{"open"}, "usage: open <account-id> <owner> [initial-cents]"},
		{[]string{"open", "acc-1"}, "usage: open"},
		{[]string{"open", "acc-1", "Ann", "10", "extra"}, "usage: open"},
		{[]string{"open", "acc-1", "Ann", "ten"}, `amount "ten" is not a whole number of cents`},
		{[]string{"credit", "acc-1"}, "usage: credit <account-id> <cents>"},
		{[]string{"credit", "acc-1", "1.50"}, `amount "1.50"`},
		{[]string{"debit", "acc-1", "1", "2"}, "usage: debit <account-id> <cents>"},
		{[]string{"debit", "acc-1", "99999999999999999999"}, "not a whole number"},
		{[]string{"get"}, "usage: get <account-id>"},
		{[]string{"get", "a", "b"}, "usage: get"},
		{[]string{"show"}, "usage: show <account-id>"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			got, err := parseRequest(tc.args)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, %v; want error containing %q", got, err, tc.want)
			}
		})
	}
}

func TestParseFlags(t *testing.T) {
	inv, err := parse([]string{"-addr", "cos:9100", "-timeout", "3s", "-command-id", "k1", "credit", "acc-1", "5"})
	if err != nil {
		t.Fatal(err)
	}
	if inv.addr != "cos:9100" || inv.timeout != 3*time.Second || inv.commandID != "k1" {
		t.Errorf("flags = %q %v %q", inv.addr, inv.timeout, inv.commandID)
	}
	if want := process(t, "acc-1", &bankv1.Credit{Amount: 5}); !proto.Equal(inv.request, want) {
		t.Errorf("request = %v, want %v", inv.request, want)
	}

	inv, err = parse([]string{"get", "acc-1"})
	if err != nil {
		t.Fatal(err)
	}
	if inv.addr != "localhost:9000" || inv.timeout != 10*time.Second || inv.commandID != "" {
		t.Errorf("defaults = %q %v %q", inv.addr, inv.timeout, inv.commandID)
	}

	for _, args := range [][]string{
		{"-command-id", "k1", "get", "acc-1"},
		{"-timeout", "0s", "get", "acc-1"},
		{"-nope", "get", "acc-1"},
		{"-cert", "client.pem", "get", "acc-1"}, // without -key
		{},
	} {
		if _, err := parse(args); err == nil {
			t.Errorf("parse(%q) succeeded, want usage error", args)
		}
	}
	if _, err := parse([]string{"-h"}); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("parse(-h) = %v, want flag.ErrHelp", err)
	}
}

// fakeCOS stands in for the gateway: it returns a fixed account, rejects
// Debit the way the example handler does, and records the command id.
type fakeCOS struct {
	cosv1.UnimplementedChiefOfStateServiceServer
	gotCommandID chan []string
}

func (f *fakeCOS) ProcessCommand(ctx context.Context, req *cosv1.ProcessCommandRequest) (*cosv1.ProcessCommandResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	f.gotCommandID <- md.Get(commandIDHeader)
	if req.GetCommand().MessageIs(&bankv1.Debit{}) {
		st, err := status.New(codes.FailedPrecondition, "insufficient funds").WithDetails(
			&errdetails.ErrorInfo{Reason: "INSUFFICIENT_FUNDS", Domain: "bankaccount.example", Metadata: map[string]string{"balance": "0"}},
			&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "amount", Description: "too much"}}},
		)
		if err != nil {
			return nil, err
		}
		return nil, st.Err()
	}
	state, _ := anypb.New(&bankv1.BankAccount{AccountId: req.GetEntityId(), Owner: "Ann"})
	return &cosv1.ProcessCommandResponse{State: state, Meta: &cosv1.MetaData{EntityId: req.GetEntityId(), RevisionNumber: 3}}, nil
}

func (f *fakeCOS) GetState(_ context.Context, req *cosv1.GetStateRequest) (*cosv1.GetStateResponse, error) {
	return nil, status.Errorf(codes.NotFound, "entity %s not found", req.GetEntityId())
}

func startFake(t *testing.T) (string, *fakeCOS) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fake := &fakeCOS{gotCommandID: make(chan []string, 1)}
	srv := grpc.NewServer()
	cosv1.RegisterChiefOfStateServiceServer(srv, fake)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String(), fake
}

func runArgs(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	inv, err := parse(args)
	if err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	code = run(context.Background(), inv, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestRunPrintsState(t *testing.T) {
	addr, fake := startFake(t)
	code, out, errOut := runArgs(t, "-addr", addr, "-command-id", "k-7", "show", "acc-1")
	if code != 0 || errOut != "" {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	if got := <-fake.gotCommandID; len(got) != 1 || got[0] != "k-7" {
		t.Errorf("%s = %q, want [k-7]", commandIDHeader, got)
	}
	json, rev, ok := strings.Cut(out, "\nrevision: ")
	if !ok || rev != "3\n" {
		t.Fatalf("output %q lacks the revision line", out)
	}
	var state anypb.Any
	if err := protojson.Unmarshal([]byte(json), &state); err != nil {
		t.Fatalf("state is not protojson: %v\n%s", err, json)
	}
	got := &bankv1.BankAccount{}
	if err := state.UnmarshalTo(got); err != nil {
		t.Fatal(err)
	}
	if want := (&bankv1.BankAccount{AccountId: "acc-1", Owner: "Ann"}); !proto.Equal(got, want) {
		t.Errorf("state %v, want %v", got, want)
	}
	if !strings.Contains(json, `"balance"`) {
		t.Errorf("zero balance omitted:\n%s", json)
	}
}

func TestRunPrintsErrorDetails(t *testing.T) {
	addr, fake := startFake(t)
	code, out, errOut := runArgs(t, "-addr", addr, "debit", "acc-1", "5")
	<-fake.gotCommandID
	if code != 1 || out != "" {
		t.Fatalf("exit %d, stdout %q", code, out)
	}
	lines := strings.Split(strings.TrimSuffix(errOut, "\n"), "\n")
	if len(lines) != 3 || lines[0] != "error: FailedPrecondition: insufficient funds" {
		t.Fatalf("stderr:\n%s", errOut)
	}
	wantTypes := []proto.Message{&errdetails.ErrorInfo{}, &errdetails.BadRequest{}}
	for i, line := range lines[1:] {
		var a anypb.Any
		if err := protojson.Unmarshal([]byte(line), &a); err != nil {
			t.Fatalf("detail line %q: %v", line, err)
		}
		if !a.MessageIs(wantTypes[i]) {
			t.Errorf("detail %d is %s", i, a.GetTypeUrl())
		}
	}
	if !strings.Contains(lines[1], "INSUFFICIENT_FUNDS") {
		t.Errorf("ErrorInfo line %q lacks the reason", lines[1])
	}

	code, _, errOut = runArgs(t, "-addr", addr, "get", "nope")
	if code != 1 || errOut != "error: NotFound: entity nope not found\n" {
		t.Errorf("exit %d, stderr %q", code, errOut)
	}
}

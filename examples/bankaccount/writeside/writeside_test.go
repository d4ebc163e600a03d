package writeside_test

import (
	"context"
	"math"
	"net"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	bankv1 "github.com/cosnats/cosnats/examples/bankaccount/gen/bankaccount/v1"
	"github.com/cosnats/cosnats/examples/bankaccount/writeside"
	cosv1 "github.com/cosnats/cosnats/gen/chief_of_state/v1"
)

const acct = "acc 1/é" // an id with a space, a slash and non-ASCII, as COS allows

// newClient serves a real Handler on a loopback port, so that status details
// are checked after crossing the wire, as chief-of-state would see them.
func newClient(t *testing.T) cosv1.WriteSideHandlerServiceClient {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	writeside.New().Register(srv)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)

	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return cosv1.NewWriteSideHandlerServiceClient(conn)
}

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// command builds a request the way chief-of-state does: Empty at revision 0,
// the account state otherwise.
func command(t *testing.T, rev uint32, balance int64, cmd proto.Message) *cosv1.HandleCommandRequest {
	t.Helper()
	var state proto.Message = &emptypb.Empty{}
	if rev > 0 {
		state = &bankv1.BankAccount{AccountId: acct, Owner: "Ann", Balance: balance}
	}
	req := &cosv1.HandleCommandRequest{
		PriorState:     mustAny(t, state),
		PriorEventMeta: &cosv1.MetaData{EntityId: acct, RevisionNumber: rev},
	}
	if cmd != nil {
		req.Command = mustAny(t, cmd)
	}
	return req
}

// wantEvents checks that resp carries exactly want in the events field.
func wantEvents(t *testing.T, resp *cosv1.HandleCommandResponse, want ...proto.Message) {
	t.Helper()
	if resp.GetEvent() != nil {
		t.Errorf("deprecated event field set: %v", resp.GetEvent())
	}
	if len(resp.GetEvents()) != len(want) {
		t.Fatalf("got %d events %v, want %d", len(resp.GetEvents()), resp.GetEvents(), len(want))
	}
	for i, a := range resp.GetEvents() {
		got, err := a.UnmarshalNew()
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(got, want[i]) {
			t.Errorf("event %d = %v, want %v", i, got, want[i])
		}
	}
}

// wantStatus checks code, message and the exact list of details as decoded
// from grpc-status-details-bin by the client.
func wantStatus(t *testing.T, err error, code codes.Code, msg string, details ...proto.Message) {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok {
		t.Fatalf("not a status error: %v", err)
	}
	if st.Code() != code || st.Message() != msg {
		t.Errorf("status = %v %q, want %v %q", st.Code(), st.Message(), code, msg)
	}
	got := st.Details()
	if len(got) != len(details) {
		t.Fatalf("got %d details %v, want %d", len(got), got, len(details))
	}
	for i, d := range got {
		m, ok := d.(proto.Message)
		if !ok {
			t.Fatalf("detail %d not decoded: %v", i, d)
		}
		if !proto.Equal(m, details[i]) {
			t.Errorf("detail %d = %v, want %v", i, m, details[i])
		}
	}
}

func badRequest(fieldDescs ...string) *errdetails.BadRequest {
	br := &errdetails.BadRequest{}
	for i := 0; i < len(fieldDescs); i += 2 {
		br.FieldViolations = append(br.FieldViolations,
			&errdetails.BadRequest_FieldViolation{Field: fieldDescs[i], Description: fieldDescs[i+1]})
	}
	return br
}

func TestHandleCommandEvents(t *testing.T) {
	c := newClient(t)
	tests := []struct {
		name    string
		rev     uint32
		balance int64
		cmd     proto.Message
		want    []proto.Message // nil: no-op
	}{
		{"open", 0, 0, &bankv1.OpenAccount{Owner: "Ann", InitialBalance: 500}, []proto.Message{&bankv1.AccountOpened{Owner: "Ann", InitialBalance: 500}}},
		{"open with zero balance", 0, 0, &bankv1.OpenAccount{Owner: "Ann"}, []proto.Message{&bankv1.AccountOpened{Owner: "Ann"}}},
		{"credit", 1, 100, &bankv1.Credit{Amount: 50}, []proto.Message{&bankv1.AccountCredited{Amount: 50}}},
		{"credit zero is a no-op", 1, 100, &bankv1.Credit{}, nil},
		{"debit", 2, 100, &bankv1.Debit{Amount: 40}, []proto.Message{&bankv1.AccountDebited{Amount: 40}}},
		{"debit whole balance", 2, 100, &bankv1.Debit{Amount: 100}, []proto.Message{&bankv1.AccountDebited{Amount: 100}}},
		{"get account", 3, 100, &bankv1.GetAccount{}, nil},
		{"get account before open", 0, 0, &bankv1.GetAccount{}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := c.HandleCommand(context.Background(), command(t, tc.rev, tc.balance, tc.cmd))
			if err != nil {
				t.Fatal(err)
			}
			wantEvents(t, resp, tc.want...)
		})
	}
}

func TestHandleCommandErrors(t *testing.T) {
	c := newClient(t)
	amount := func(desc string) *errdetails.BadRequest { return badRequest("amount", desc) }
	tests := []struct {
		name    string
		req     *cosv1.HandleCommandRequest
		code    codes.Code
		msg     string
		details []proto.Message
	}{
		{
			name: "open twice",
			req:  command(t, 1, 0, &bankv1.OpenAccount{Owner: "Bob"}),
			code: codes.AlreadyExists, msg: "account " + acct + " already exists",
		},
		{
			name: "open without owner",
			req:  command(t, 0, 0, &bankv1.OpenAccount{Owner: "  ", InitialBalance: 1}),
			code: codes.InvalidArgument, msg: "invalid OpenAccount",
			details: []proto.Message{badRequest("owner", "owner must not be empty")},
		},
		{
			name: "open with negative balance",
			req:  command(t, 0, 0, &bankv1.OpenAccount{Owner: "Ann", InitialBalance: -1}),
			code: codes.InvalidArgument, msg: "invalid OpenAccount",
			details: []proto.Message{badRequest("initial_balance", "initial_balance must be >= 0")},
		},
		{
			name: "open with both fields wrong lists both",
			req:  command(t, 0, 0, &bankv1.OpenAccount{InitialBalance: -1}),
			code: codes.InvalidArgument, msg: "invalid OpenAccount",
			details: []proto.Message{badRequest(
				"owner", "owner must not be empty",
				"initial_balance", "initial_balance must be >= 0")},
		},
		{
			name: "credit before open",
			req:  command(t, 0, 0, &bankv1.Credit{Amount: 1}),
			code: codes.NotFound, msg: "account " + acct + " is not open",
		},
		{
			name: "credit negative",
			req:  command(t, 1, 10, &bankv1.Credit{Amount: -1}),
			code: codes.InvalidArgument, msg: "invalid amount",
			details: []proto.Message{amount("amount must be >= 0")},
		},
		{
			name: "credit past the int64 range",
			req:  command(t, 1, math.MaxInt64, &bankv1.Credit{Amount: 1}),
			code: codes.OutOfRange, msg: "balance would overflow",
			details: []proto.Message{amount("amount would overflow the balance")},
		},
		{
			name: "debit before open",
			req:  command(t, 0, 0, &bankv1.Debit{Amount: 1}),
			code: codes.NotFound, msg: "account " + acct + " is not open",
		},
		{
			name: "debit zero",
			req:  command(t, 1, 10, &bankv1.Debit{}),
			code: codes.InvalidArgument, msg: "invalid amount",
			details: []proto.Message{amount("amount must be > 0")},
		},
		{
			name: "debit negative",
			req:  command(t, 1, 10, &bankv1.Debit{Amount: -5}),
			code: codes.InvalidArgument, msg: "invalid amount",
			details: []proto.Message{amount("amount must be > 0")},
		},
		{
			name: "debit more than balance",
			req:  command(t, 4, 100, &bankv1.Debit{Amount: 101}),
			code: codes.FailedPrecondition, msg: "insufficient funds",
			details: []proto.Message{
				&errdetails.ErrorInfo{
					Reason:   "INSUFFICIENT_FUNDS",
					Domain:   "bankaccount.example",
					Metadata: map[string]string{"balance": "100", "amount": "101"},
				},
				amount("amount 101 exceeds balance 100"),
			},
		},
		{
			name: "nil command",
			req:  command(t, 0, 0, nil),
			code: codes.InvalidArgument, msg: `unknown command type ""`,
		},
		{
			name: "event sent as command",
			req:  command(t, 0, 0, &bankv1.AccountOpened{Owner: "Ann"}),
			code: codes.InvalidArgument, msg: "unknown command type type.googleapis.com/bankaccount.v1.AccountOpened",
		},
		{
			name: "foreign well-known type",
			req:  command(t, 0, 0, wrapperspb.String("x")),
			code: codes.InvalidArgument, msg: "unknown command type type.googleapis.com/google.protobuf.StringValue",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := c.HandleCommand(context.Background(), tc.req)
			if err == nil {
				t.Fatalf("got %v, want error", resp)
			}
			wantStatus(t, err, tc.code, tc.msg, tc.details...)
		})
	}
}

// Types the handler cannot resolve or decode get InvalidArgument; the exact
// decoder error is not part of the contract, only the prefix and the URL.
func TestHandleCommandGarbage(t *testing.T) {
	c := newClient(t)
	tests := []struct {
		name string
		cmd  *anypb.Any
	}{
		{"unregistered type", &anypb.Any{TypeUrl: "type.googleapis.com/other.v1.Transfer", Value: []byte{1, 2, 3}}},
		{"undecodable bytes", &anypb.Any{TypeUrl: "type.googleapis.com/bankaccount.v1.Credit", Value: []byte{0xff, 0xff}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := command(t, 1, 10, nil)
			req.Command = tc.cmd
			_, err := c.HandleCommand(context.Background(), req)
			st := status.Convert(err)
			if st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), "unknown command type "+tc.cmd.GetTypeUrl()) {
				t.Errorf("got %v %q", st.Code(), st.Message())
			}
		})
	}
}

// TestHandleEventFold folds open → credit → debit the way chief-of-state
// does, feeding each resulting state into the next call.
func TestHandleEventFold(t *testing.T) {
	c := newClient(t)
	events := []proto.Message{
		&bankv1.AccountOpened{Owner: "Ann", InitialBalance: 100},
		&bankv1.AccountCredited{Amount: 50},
		&bankv1.AccountDebited{Amount: 30},
	}
	wants := []*bankv1.BankAccount{
		{AccountId: acct, Owner: "Ann", Balance: 100},
		{AccountId: acct, Owner: "Ann", Balance: 150},
		{AccountId: acct, Owner: "Ann", Balance: 120},
	}
	state := mustAny(t, &emptypb.Empty{})
	for i, ev := range events {
		resp, err := c.HandleEvent(context.Background(), &cosv1.HandleEventRequest{
			Event:      mustAny(t, ev),
			PriorState: state,
			EventMeta:  &cosv1.MetaData{EntityId: acct, RevisionNumber: uint32(i + 1)},
		})
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		got := &bankv1.BankAccount{}
		if err := resp.GetResultingState().UnmarshalTo(got); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if !proto.Equal(got, wants[i]) {
			t.Errorf("after event %d: state %v, want %v", i, got, wants[i])
		}
		state = resp.GetResultingState()
	}
}

func TestHandleEventErrors(t *testing.T) {
	c := newClient(t)
	open := &bankv1.BankAccount{AccountId: acct, Owner: "Ann", Balance: 1}
	tests := []struct {
		name  string
		event *anypb.Any
		prior *anypb.Any
		code  codes.Code
		msg   string
	}{
		{"opened twice", mustAny(t, &bankv1.AccountOpened{Owner: "Ann"}), mustAny(t, open),
			codes.FailedPrecondition, "account " + acct + " is already open"},
		{"credited before open", mustAny(t, &bankv1.AccountCredited{Amount: 1}), mustAny(t, &emptypb.Empty{}),
			codes.NotFound, "account " + acct + " is not open"},
		{"debited with unset state", mustAny(t, &bankv1.AccountDebited{Amount: 1}), nil,
			codes.NotFound, "account " + acct + " is not open"},
		{"command as event", mustAny(t, &bankv1.Credit{Amount: 1}), mustAny(t, open),
			codes.InvalidArgument, "unknown event type type.googleapis.com/bankaccount.v1.Credit"},
		{"nil event", nil, mustAny(t, open),
			codes.InvalidArgument, `unknown event type ""`},
		{"foreign prior state", mustAny(t, &bankv1.AccountCredited{Amount: 1}), mustAny(t, wrapperspb.Int64(3)),
			codes.InvalidArgument, "unexpected prior state type type.googleapis.com/google.protobuf.Int64Value"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := c.HandleEvent(context.Background(), &cosv1.HandleEventRequest{
				Event:      tc.event,
				PriorState: tc.prior,
				EventMeta:  &cosv1.MetaData{EntityId: acct, RevisionNumber: 2},
			})
			if err == nil {
				t.Fatalf("got %v, want error", resp)
			}
			wantStatus(t, err, tc.code, tc.msg)
		})
	}
}

// The pure functions must not modify the state they are given: the caller
// (and chief-of-state's reply) may still refer to it.
func TestEvolveDoesNotMutate(t *testing.T) {
	prior := &bankv1.BankAccount{AccountId: acct, Owner: "Ann", Balance: 10}
	next, err := writeside.Evolve(acct, prior, &bankv1.AccountCredited{Amount: 5})
	if err != nil {
		t.Fatal(err)
	}
	if prior.GetBalance() != 10 || next.GetBalance() != 15 {
		t.Errorf("prior %d next %d, want 10 and 15", prior.GetBalance(), next.GetBalance())
	}
}

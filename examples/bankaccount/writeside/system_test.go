package writeside_test

import (
	"context"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	bankpb "github.com/cosnats/cosnats/examples/bankaccount/gen/bankaccount/v1"
	"github.com/cosnats/cosnats/examples/bankaccount/writeside"
	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	"github.com/cosnats/cosnats/internal/costest"
	"github.com/cosnats/cosnats/pkg/node"
)

// The example through the whole system (embedded NATS, gateway, worker), as the quickstart runs it.
func TestBankAccountThroughTheSystem(t *testing.T) {
	port := costest.ServeGRPC(t, writeside.New().Register)
	cfg := costest.Config(t, "", port)
	cfg.WriteSide.ProtoValidation = true
	cfg.WriteSide.EventProtos = []string{"bankaccount.v1.AccountOpened", "bankaccount.v1.AccountCredited", "bankaccount.v1.AccountDebited"}
	cfg.WriteSide.StateProtos = []string{"bankaccount.v1.BankAccount"}
	n := costest.StartNode(t, cfg, node.Roles{})
	client := costest.Client(t, n.GRPCAddr)
	ctx := context.Background()
	send := func(cmd proto.Message) (*cospb.ProcessCommandResponse, error) {
		a, err := anypb.New(cmd)
		if err != nil {
			t.Fatal(err)
		}
		return client.ProcessCommand(ctx, &cospb.ProcessCommandRequest{EntityId: "acc-1", Command: a})
	}
	balance := func(resp *cospb.ProcessCommandResponse) int64 {
		var acc bankpb.BankAccount
		if err := resp.GetState().UnmarshalTo(&acc); err != nil {
			t.Fatal(err)
		}
		return acc.GetBalance()
	}
	if _, err := send(&bankpb.Credit{Amount: 5}); status.Code(err) != codes.NotFound {
		t.Fatalf("credit before open: %v", err)
	}
	resp, err := send(&bankpb.OpenAccount{Owner: "alice", InitialBalance: 100})
	if err != nil || balance(resp) != 100 || resp.GetMeta().GetRevisionNumber() != 1 {
		t.Fatalf("open: %v %v", resp, err)
	}
	if _, err := send(&bankpb.OpenAccount{Owner: "bob"}); status.Code(err) != codes.AlreadyExists {
		t.Fatalf("second open: %v", err)
	}
	_, err = send(&bankpb.Debit{Amount: 500})
	st := status.Convert(err)
	if st.Code() != codes.FailedPrecondition || len(st.Details()) != 2 {
		t.Fatalf("overdraft: %v %v", err, st.Details())
	}
	if info, ok := st.Details()[0].(*errdetails.ErrorInfo); !ok || info.GetReason() != writeside.ReasonInsufficientFunds {
		t.Fatalf("overdraft detail %v", st.Details()[0])
	}
	if resp, err = send(&bankpb.Credit{Amount: 0}); err != nil || resp.GetMeta().GetRevisionNumber() != 1 {
		t.Fatalf("zero credit is a no-op: %v %v", resp, err)
	}
	if resp, err = send(&bankpb.Debit{Amount: 40}); err != nil || balance(resp) != 60 || resp.GetMeta().GetRevisionNumber() != 2 {
		t.Fatalf("debit: %v %v", resp, err)
	}
	if resp, err = send(&bankpb.GetAccount{}); err != nil || balance(resp) != 60 || resp.GetMeta().GetRevisionNumber() != 2 {
		t.Fatalf("get: %v %v", resp, err)
	}
	got, err := client.GetState(ctx, &cospb.GetStateRequest{EntityId: "acc-1"})
	if err != nil || !proto.Equal(got.GetState(), resp.GetState()) {
		t.Fatalf("GetState: %v %v", got, err)
	}
}

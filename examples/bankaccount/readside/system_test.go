package readside_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	bankpb "github.com/cosnats/cosnats/examples/bankaccount/gen/bankaccount/v1"
	"github.com/cosnats/cosnats/examples/bankaccount/readside"
	"github.com/cosnats/cosnats/examples/bankaccount/writeside"
	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	"github.com/cosnats/cosnats/internal/costest"
	"github.com/cosnats/cosnats/pkg/config"
	"github.com/cosnats/cosnats/pkg/node"
)

// The quickstart's shape: embedded NATS, write handler and read side; events reach the read side.
func TestBalancesReachTheReadSide(t *testing.T) {
	rs := readside.New(slog.New(slog.NewTextHandler(io.Discard, nil)))
	cfg := costest.Config(t, "", costest.ServeGRPC(t, writeside.New().Register))
	cfg.ReadSideEnabled = true
	cfg.ReadSides = []config.ReadSide{{ID: "bank-balances", Host: "127.0.0.1", Port: costest.ServeGRPC(t, rs.Register),
		AutoStart: true, Enabled: true, Timeout: 5 * time.Second, MaxInFlight: config.DefaultReadSideMaxInFlight}}
	n := costest.StartNode(t, cfg, node.Roles{})
	client := costest.Client(t, n.GRPCAddr)
	for _, cmd := range []proto.Message{&bankpb.OpenAccount{Owner: "alice", InitialBalance: 100}, &bankpb.Credit{Amount: 5}, &bankpb.Debit{Amount: 30}} {
		a, _ := anypb.New(cmd)
		if _, err := client.ProcessCommand(context.Background(), &cospb.ProcessCommandRequest{EntityId: "acc-1", Command: a}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if bal, rev, ok := rs.Balance("acc-1"); ok && rev == 3 {
			if bal != 75 || rs.Gaps() != 0 || rs.Events() != 3 {
				t.Fatalf("read side: balance %d, gaps %d, events %d", bal, rs.Gaps(), rs.Events())
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the read side did not receive the three events")
		}
		<-tick.C
	}
}

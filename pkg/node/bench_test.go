package node_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	"github.com/cosnats/cosnats/internal/costest"
	"github.com/cosnats/cosnats/pkg/node"
)

// benchSystem is the single-process default (embedded NATS, default durability) with the Counter
// handler, all on loopback in this process.
func benchSystem(b *testing.B) cospb.ChiefOfStateServiceClient {
	h := &costest.Counter{}
	port := costest.ServeGRPC(b, h.Register)
	cfg := costest.Config(b, "", port)
	n := costest.StartNode(b, cfg, node.Roles{})
	return costest.Client(b, n.GRPCAddr)
}

// BenchmarkProcessCommand: closed loop, 64 concurrent callers, each on its own entities (10,000 in all).
func BenchmarkProcessCommand(b *testing.B) {
	client := benchSystem(b)
	cmd := costest.Cmd("add:1")
	var next atomic.Int64
	b.SetParallelism(32) // × GOMAXPROCS (2 here) = 64 callers
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			id := fmt.Sprintf("bench-%d", next.Add(1)%10000)
			if _, err := client.ProcessCommand(context.Background(), &cospb.ProcessCommandRequest{EntityId: id, Command: cmd}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkGetState: 64 concurrent callers reading 1,000 existing entities.
func BenchmarkGetState(b *testing.B) {
	client := benchSystem(b)
	cmd := costest.Cmd("add:1")
	for i := range 1000 {
		if _, err := client.ProcessCommand(context.Background(), &cospb.ProcessCommandRequest{EntityId: fmt.Sprint("g-", i), Command: cmd}); err != nil {
			b.Fatal(err)
		}
	}
	var next atomic.Int64
	b.SetParallelism(32)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			id := fmt.Sprint("g-", next.Add(1)%1000)
			if _, err := client.GetState(context.Background(), &cospb.GetStateRequest{EntityId: id}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

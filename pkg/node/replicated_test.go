package node_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	"github.com/cosnats/cosnats/internal/costest"
	"github.com/cosnats/cosnats/pkg/config"
	"github.com/cosnats/cosnats/pkg/entity"
	"github.com/cosnats/cosnats/pkg/layout"
	"github.com/cosnats/cosnats/pkg/node"
)

// r3 is a 3-server JetStream cluster with every stream at 3 replicas: gateway 1 on server A, workers on
// servers B and C, and gateway 2 on server C, all over TCP.
type r3 struct {
	cluster  *costest.Cluster
	cfg      config.Config
	handler  *costest.Counter
	gw1, gw2 cospb.ChiefOfStateServiceClient
	workers  []*costest.Node
	nc       *nats.Conn
	js       jetstream.JetStream
}

func replicated(t *testing.T) *r3 {
	t.Helper()
	cl := costest.StartCluster(t, 3)
	h := &costest.Counter{}
	port := costest.ServeGRPC(t, h.Register)
	cfg := costest.Config(t, cl.ClientURL(0), port)
	cfg.NATS.Replicas = 3
	// TestReplicatedOneEntityManyWriters keeps two workers on one entity: the one that must reload after
	// each conflict can lose many rounds in a row to the one whose cache is current.
	cfg.ConflictRetries = 200
	on := func(server int) config.Config {
		c := cfg
		c.NATS.URL = cl.ClientURL(server)
		return c
	}
	s := &r3{cluster: cl, cfg: cfg, handler: h}
	gw1 := costest.StartNode(t, on(0), node.Roles{Gateway: true})
	s.workers = []*costest.Node{
		costest.StartNode(t, on(1), node.Roles{Worker: true}),
		costest.StartNode(t, on(2), node.Roles{Worker: true}),
	}
	gw2 := costest.StartNode(t, on(2), node.Roles{Gateway: true})
	s.gw1, s.gw2 = costest.Client(t, gw1.GRPCAddr), costest.Client(t, gw2.GRPCAddr)

	nc, err := nats.Connect(cl.URLList())
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	s.nc = nc
	if s.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	lay := layout.Default()
	for _, name := range []string{lay.EventStream(), "KV_" + lay.StateBucket()} {
		st, err := s.js.Stream(context.Background(), name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		info := st.CachedInfo()
		if info.Config.Replicas != 3 || info.Cluster == nil || info.Cluster.Leader == "" || len(info.Cluster.Replicas) != 2 {
			t.Fatalf("stream %s: replicas %d, cluster %+v; want R3 with a leader and 2 followers", name, info.Config.Replicas, info.Cluster)
		}
	}
	// A worker's own server has its subscription once the worker is ready; the other servers learn of it
	// over the routes, asynchronously. Until then a command sent through them gets no responders.
	key, err := entity.NewKey("any", cfg.NumShards)
	if err != nil {
		t.Fatal(err)
	}
	cl.WaitForInterest(lay.CommandSubject(key), len(s.workers))
	for _, w := range s.workers {
		cl.WaitForInterest(lay.WorkerCommandSubject(w.Worker.ID(), lay.CommandSubject(key)), 1)
	}
	return s
}

func (s *r3) command(t *testing.T, c cospb.ChiefOfStateServiceClient, id, cmd string) *cospb.ProcessCommandResponse {
	t.Helper()
	resp, err := c.ProcessCommand(context.Background(), &cospb.ProcessCommandRequest{EntityId: id, Command: costest.Cmd(cmd)})
	if err != nil {
		t.Fatalf("ProcessCommand(%q, %q): %v", id, cmd, err)
	}
	return resp
}

// A command acknowledged through one gateway is seen by GetState through a gateway on another server.
func TestReplicatedReadYourWrites(t *testing.T) {
	s := replicated(t)
	const rounds = 200
	for i := range rounds {
		resp := s.command(t, s.gw1, "ryw", "add:1")
		wrote := resp.GetMeta().GetRevisionNumber()
		if wrote != uint32(i+1) || costest.Value(resp.GetState()) != int64(i+1) {
			t.Fatalf("round %d: ProcessCommand answered revision %d state %d", i, wrote, costest.Value(resp.GetState()))
		}
		got, err := s.gw2.GetState(context.Background(), &cospb.GetStateRequest{EntityId: "ryw"})
		if err != nil {
			t.Fatalf("round %d: GetState: %v", i, err)
		}
		read := got.GetMeta().GetRevisionNumber()
		if read < wrote {
			t.Fatalf("round %d: GetState on the other server returned revision %d after revision %d was acknowledged", i, read, wrote)
		}
		// Nothing else writes "ryw": the read is exactly the write.
		if read != wrote || costest.Value(got.GetState()) != int64(wrote) {
			t.Fatalf("round %d: GetState returned revision %d state %d, want %d", i, read, costest.Value(got.GetState()), wrote)
		}
	}
	costest.CheckRevisions(t, costest.Events(t, s.js, "ryw", s.cfg.NumShards), rounds, true)
}

// One entity, 10 goroutines × 20 commands through one gateway, two workers on different servers
// competing on an R3 stream: revisions are exactly 1..n and each event was applied on the previous state.
func TestReplicatedOneEntityManyWriters(t *testing.T) {
	s := replicated(t)
	// Some history first, written through the other gateway.
	const before = 5
	for range before {
		s.command(t, s.gw2, "hot", "add:1")
	}
	const goroutines, perGoroutine = 10, 20
	var wg sync.WaitGroup
	errs := make(chan error, goroutines*perGoroutine)
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range perGoroutine {
				var err error
				if g%2 == 0 {
					_, err = s.gw1.ProcessCommand(context.Background(), &cospb.ProcessCommandRequest{EntityId: "hot", Command: costest.Cmd("add:1")})
				} else { // straight to each worker in turn, as gateways whose views differ would send
					err = sendToWorker(s.nc, s.workers[(g/2)%2].Worker, s.cfg.NumShards, "hot", "add:1", fmt.Sprintf("direct-%d-%d", g, j))
				}
				if err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("command failed: %v", err)
	}
	const total = before + goroutines*perGoroutine
	costest.CheckRevisions(t, costest.Events(t, s.js, "hot", s.cfg.NumShards), total, true)
	var appends, conflicts uint64
	for i, w := range s.workers {
		st := w.Worker.Stats()
		t.Logf("worker %d: %+v", i, st)
		appends += st.Appends
		conflicts += st.Conflicts
	}
	if appends != total {
		t.Fatalf("workers appended %d times, want %d", appends, total)
	}
	// Every conflict re-ran the command on the reloaded state; nothing else called the handler.
	if calls := len(s.handler.Commands()); uint64(calls) != appends+conflicts {
		t.Fatalf("handler ran %d commands, want %d appends + %d conflicts", calls, appends, conflicts)
	}
	for i, w := range s.workers {
		if w.Worker.Stats().Appends == 0 {
			t.Errorf("worker %d did no work: the test did not exercise competition", i)
		}
	}
	got, err := s.gw2.GetState(context.Background(), &cospb.GetStateRequest{EntityId: "hot"})
	if err != nil {
		t.Fatal(err)
	}
	if got.GetMeta().GetRevisionNumber() != total || costest.Value(got.GetState()) != total {
		t.Fatalf("GetState %v, want revision and state %d", got, total)
	}
}

// A multi-event command is one atomic batch on R3 and yields consecutive revisions.
func TestReplicatedMultiEventCommand(t *testing.T) {
	s := replicated(t)
	s.command(t, s.gw1, "m", "add:1")
	resp := s.command(t, s.gw1, "m", "multi:3")
	if resp.GetMeta().GetRevisionNumber() != 4 || costest.Value(resp.GetState()) != 4 {
		t.Fatalf("multi-event reply %v", resp)
	}
	costest.CheckRevisions(t, costest.Events(t, s.js, "m", s.cfg.NumShards), 4, true)
	resp = s.command(t, s.gw2, "m", "multi:3")
	if resp.GetMeta().GetRevisionNumber() != 7 || costest.Value(resp.GetState()) != 7 {
		t.Fatalf("second multi-event reply %v", resp)
	}
	costest.CheckRevisions(t, costest.Events(t, s.js, "m", s.cfg.NumShards), 7, true)
	got, err := s.gw2.GetState(context.Background(), &cospb.GetStateRequest{EntityId: "m"})
	if err != nil {
		t.Fatal(err)
	}
	if got.GetMeta().GetRevisionNumber() != 7 {
		t.Fatalf("GetState %v, want revision 7", got)
	}
}

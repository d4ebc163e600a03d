package node_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	"github.com/cosnats/cosnats/internal/costest"
	"github.com/cosnats/cosnats/pkg/config"
	"github.com/cosnats/cosnats/pkg/layout"
	"github.com/cosnats/cosnats/pkg/node"
)

// Workers restarted one after the other (each stopped as SIGTERM stops it) while commands flow: every
// command is answered OK — none UNKNOWN, none refused — and applied exactly once.
func TestRollingRestartOfWorkersUnderLoad(t *testing.T) {
	srv := costest.StartNATS(t)
	h := &costest.Counter{}
	cfg := costest.Config(t, srv.ClientURL(), costest.ServeGRPC(t, h.Register))
	gw := costest.StartNode(t, cfg, node.Roles{Gateway: true})
	workers := []*costest.Node{
		costest.StartNode(t, cfg, node.Roles{Worker: true}),
		costest.StartNode(t, cfg, node.Roles{Worker: true}),
	}
	client := costest.Client(t, gw.GRPCAddr)
	const clients = 16
	var (
		stop    atomic.Bool
		wg      sync.WaitGroup
		mu      sync.Mutex
		failed  []error
		applied = make([]int, clients)
	)
	for c := range clients {
		wg.Go(func() {
			id := fmt.Sprint("roll-", c)
			for n := 0; !stop.Load(); n++ {
				ctx := metadata.AppendToOutgoingContext(context.Background(), "x-cos-command-id", fmt.Sprintf("%s-%d", id, n))
				if _, err := client.ProcessCommand(ctx, &cospb.ProcessCommandRequest{EntityId: id, Command: costest.Cmd("add:1")}); err != nil {
					mu.Lock()
					failed = append(failed, err)
					mu.Unlock()
					return
				}
				applied[c]++
			}
		})
	}
	for round := range 10 {
		i := round % len(workers)
		before := h.EventCalls()
		if err := workers[i].Stop(); err != nil {
			t.Fatalf("stop worker: %v", err)
		}
		workers[i] = costest.StartNode(t, cfg, node.Roles{Worker: true})
		// Let commands flow through the new worker before the next one goes.
		costest.Eventually(t, 30*time.Second, "commands after the restart", func() bool { return h.EventCalls() > before+50 })
	}
	stop.Store(true)
	wg.Wait()
	for _, err := range failed {
		t.Errorf("a command failed during the rolling restart: %v (%s)", err, status.Code(err))
	}
	_, js := costest.JetStream(t, srv)
	for c := range clients {
		events := costest.Events(t, js, fmt.Sprint("roll-", c), cfg.NumShards)
		costest.CheckRevisions(t, events, applied[c], true)
	}
}

// A projector stopped while a read-side call is in flight finishes the call and acknowledges the event
// before it exits.
func TestProjectorDrainAcknowledgesInFlightCalls(t *testing.T) {
	srv := costest.StartNATS(t)
	h := &costest.Counter{}
	cfg := costest.Config(t, srv.ClientURL(), costest.ServeGRPC(t, h.Register))
	rec := costest.NewRecorder()
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	rec.Fail = func(ctx context.Context, _ *cospb.HandleReadSideRequest) (bool, error) {
		once.Do(func() { close(entered) })
		select {
		case <-release:
			return true, nil
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
	cfg.ReadSideEnabled = true
	cfg.NumShards = 1
	cfg.ReadSides = []config.ReadSide{{ID: "rs", Host: "127.0.0.1", Port: costest.ServeGRPC(t, rec.Register),
		AutoStart: true, Enabled: true, Timeout: time.Minute, MaxInFlight: 1}}
	gw := costest.StartNode(t, cfg, node.Roles{Gateway: true, Worker: true})
	p := costest.StartNode(t, cfg, node.Roles{Projector: true})
	if _, err := costest.Client(t, gw.GRPCAddr).ProcessCommand(context.Background(), &cospb.ProcessCommandRequest{EntityId: "d", Command: costest.Cmd("add:1")}); err != nil {
		t.Fatal(err)
	}
	<-entered
	stopped := make(chan error, 1)
	go func() { stopped <- p.Stop() }()
	select {
	case err := <-stopped:
		t.Fatalf("the projector exited with a call in flight: %v", err)
	default:
	}
	close(release)
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	_, js := costest.JetStream(t, srv)
	c, err := js.Consumer(context.Background(), layout.Default().EventStream(), layout.Default().ReadSideConsumer("rs", 0))
	if err != nil {
		t.Fatal(err)
	}
	costest.Eventually(t, 10*time.Second, "the event acknowledged", func() bool {
		info, err := c.Info(context.Background())
		return err == nil && info.AckFloor.Stream == 1
	})
}

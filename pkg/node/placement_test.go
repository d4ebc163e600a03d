package node_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	natspb "github.com/cosnats/cosnats/gen/cosnats/v1"
	spb "google.golang.org/genproto/googleapis/rpc/status"

	"github.com/cosnats/cosnats/internal/costest"
	"github.com/cosnats/cosnats/pkg/entity"
	"github.com/cosnats/cosnats/pkg/layout"
	"github.com/cosnats/cosnats/pkg/worker"
)

// sendToWorker sends a command for entity id straight to worker w's own subject, as a gateway whose
// placement names w would: how two workers come to compete for one entity (gateways whose views of
// the workers differ for a moment).
func sendToWorker(nc *nats.Conn, w *worker.Worker, numShards int, id, cmd, commandID string) error {
	key, err := entity.NewKey(id, numShards)
	if err != nil {
		return err
	}
	lay := layout.Default()
	data, err := proto.Marshal(&natspb.CommandRequest{EntityId: id, Command: costest.Cmd(cmd), CommandId: commandID})
	if err != nil {
		return err
	}
	m, err := nc.Request(lay.WorkerCommandSubject(w.ID(), lay.CommandSubject(key)), data, 30*time.Second)
	if err != nil {
		return fmt.Errorf("command %s to worker %s: %w", commandID, w.ID(), err)
	}
	var r natspb.CommandReply
	if err := proto.Unmarshal(m.Data, &r); err != nil {
		return err
	}
	if b := r.GetStatus(); b != nil {
		var st spb.Status
		if err := proto.Unmarshal(b, &st); err != nil {
			return err
		}
		return fmt.Errorf("command %s: %w", commandID, status.FromProto(&st).Err())
	}
	return nil
}

// waitRoutedToAll sends commands for new entities until every worker has received one on its own
// subject: the gateway has heard all of them.
func (s *system) waitRoutedToAll() {
	s.t.Helper()
	probe := 0
	costest.Eventually(s.t, 30*time.Second, "commands routed to every worker", func() bool {
		probe++
		s.mustSend(fmt.Sprintf("probe-%d", probe), "add:1")
		for _, w := range s.workers {
			if w.Worker.Stats().Routed == 0 {
				return false
			}
		}
		return true
	})
}

// With two workers behind a gateway, each entity's commands go to one of them, so its cached state is
// current and no command's handler runs twice: no append conflict at all. (Through the queue group
// alone, the entity's commands would alternate between the workers and most would conflict.)
func TestEachEntityStaysOnOneWorker(t *testing.T) {
	s := distributed(t, 2, nil)
	s.waitRoutedToAll()
	before := make([]uint64, 2)
	for i, w := range s.workers {
		before[i] = w.Worker.Stats().Conflicts
	}
	handled := len(s.handler.Commands())

	const entities, perEntity = 40, 6
	var wg sync.WaitGroup
	errs := make(chan error, entities)
	for e := range entities {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range perEntity {
				if _, err := s.send(context.Background(), fmt.Sprintf("acc-%d", e), "add:1"); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for e := range entities {
		costest.CheckRevisions(t, s.events(fmt.Sprintf("acc-%d", e)), perEntity, true)
	}
	for i, w := range s.workers {
		st := w.Worker.Stats()
		t.Logf("worker %d: %+v", i, st)
		if st.Conflicts != before[i] {
			t.Errorf("worker %d had %d append conflicts: an entity's commands went to both workers", i, st.Conflicts-before[i])
		}
	}
	if calls := len(s.handler.Commands()) - handled; calls != entities*perEntity {
		t.Errorf("the handler ran %d commands for %d sent", calls, entities*perEntity)
	}
}

// A worker that stops (SIGTERM: it says it leaves, then drains) hands its entities to the other one
// without a failed command, and the gateway keeps answering while it goes.
func TestAStoppingWorkerHandsOverItsEntities(t *testing.T) {
	s := distributed(t, 2, nil)
	s.waitRoutedToAll()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	counts := make([]int, 16)
	for e := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if _, err := s.send(context.Background(), fmt.Sprintf("acc-%d", e), "add:1"); err != nil {
					errs <- err
					return
				}
				counts[e]++
			}
		}()
	}
	// Stop worker 0 while commands flow, once it has taken some of them.
	start := s.workers[0].Worker.Stats().Routed
	costest.Eventually(t, 30*time.Second, "worker 0 takes commands", func() bool { return s.workers[0].Worker.Stats().Routed > start+20 })
	if err := s.workers[0].Stop(); err != nil {
		t.Fatal(err)
	}
	after := s.workers[1].Worker.Stats().Commands
	costest.Eventually(t, 30*time.Second, "worker 1 takes the commands", func() bool { return s.workers[1].Worker.Stats().Commands > after+100 })
	cancel()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("a command failed while a worker stopped: %v", err)
	}
	for e := range 16 {
		costest.CheckRevisions(t, s.events(fmt.Sprintf("acc-%d", e)), counts[e], true)
	}
}

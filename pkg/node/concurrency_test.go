package node_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	natspb "github.com/cosnats/cosnats/gen/cosnats/v1"
	"github.com/cosnats/cosnats/internal/costest"
	"github.com/cosnats/cosnats/pkg/config"
	"github.com/cosnats/cosnats/pkg/entity"
	"github.com/cosnats/cosnats/pkg/eventlog"
	"github.com/cosnats/cosnats/pkg/layout"
	"github.com/cosnats/cosnats/pkg/node"
)

// One entity, 50 goroutines × 20 commands, two competing workers: revisions are exactly 1..1000 and
// every event was applied on the state of the previous one. The gateway sends the entity to one worker
// (placement), so half the goroutines send straight to each worker's own subject, as gateways whose
// views differ would.
func TestOneEntityManyWritersTwoWorkers(t *testing.T) {
	s := distributed(t, 2, func(c *config.Config) { c.ConflictRetries = 200 })
	const goroutines, perGoroutine = 50, 20
	var wg sync.WaitGroup
	errs := make(chan error, goroutines*perGoroutine)
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range perGoroutine {
				var err error
				if g%2 == 0 {
					_, err = s.send(context.Background(), "hot", "add:1")
				} else {
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
	costest.CheckRevisions(t, s.events("hot"), goroutines*perGoroutine, true)
	var handled uint64
	for _, w := range s.workers {
		handled += w.Worker.Stats().Appends
	}
	if handled != goroutines*perGoroutine {
		t.Fatalf("workers appended %d times", handled)
	}
	for i, w := range s.workers {
		if w.Worker.Stats().Appends == 0 {
			t.Errorf("worker %d did no work: the test did not exercise competition", i)
		}
	}
}

// 1,000 entities in parallel: all succeed, and no append conflicts, since different entities never
// contend.
func TestManyEntitiesNoConflicts(t *testing.T) {
	s := embedded(t, nil)
	const entities = 1000
	var wg sync.WaitGroup
	errs := make(chan error, entities)
	sem := make(chan struct{}, 100)
	for i := range entities {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			resp, err := s.send(context.Background(), fmt.Sprintf("entity-%d", i), "add:1")
			if err == nil && resp.GetMeta().GetRevisionNumber() != 1 {
				err = fmt.Errorf("entity-%d got revision %d", i, resp.GetMeta().GetRevisionNumber())
			}
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	st := s.workers[0].Worker.Stats()
	if st.Appends != entities || st.Conflicts != 0 {
		t.Fatalf("stats %+v, want %d appends and no conflicts", st, entities)
	}
}

func TestMultiEventCommandIsAtomic(t *testing.T) {
	s := embedded(t, nil)
	s.mustSend("m", "add:1")
	resp := s.mustSend("m", "multi:3")
	if resp.GetMeta().GetRevisionNumber() != 4 || costest.Value(resp.GetState()) != 4 {
		t.Fatalf("multi-event reply %v", resp)
	}
	costest.CheckRevisions(t, s.events("m"), 4, true)
	// HandleEvent fails on the 2nd of 3 events: nothing of the command is persisted.
	_, err := s.send(context.Background(), "m", "failevent:3:2")
	wantCode(t, err, codes.FailedPrecondition, "event rejected")
	costest.CheckRevisions(t, s.events("m"), 4, true)
	if resp := s.mustSend("m", "multi:2"); resp.GetMeta().GetRevisionNumber() != 6 {
		t.Fatalf("after a failed multi-event command: %v", resp)
	}
	costest.CheckRevisions(t, s.events("m"), 6, true)
}

func withID(id string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "x-cos-command-id", id)
}

// The same command id twice, and again after the worker restarted, produces one event and the
// original answer each time.
func TestIdempotentRetries(t *testing.T) {
	s := distributed(t, 1, nil)
	first, err := s.send(withID("cmd-1"), "i", "add:5")
	if err != nil {
		t.Fatal(err)
	}
	again, err := s.send(withID("cmd-1"), "i", "add:5")
	if err != nil {
		t.Fatal(err)
	}
	if again.GetMeta().GetRevisionNumber() != 1 || costest.Value(again.GetState()) != 5 {
		t.Fatalf("retry answered %v", again)
	}
	// Other commands move the entity on; the retry still gets the original result.
	s.mustSend("i", "add:1")
	s.mustSend("i", "add:1")
	if err := s.workers[0].Stop(); err != nil {
		t.Fatal(err)
	}
	s.workers[0] = costest.StartNode(t, s.cfg, node.Roles{Worker: true})
	late, err := s.send(withID("cmd-1"), "i", "add:5")
	if err != nil {
		t.Fatal(err)
	}
	if late.GetMeta().GetRevisionNumber() != 1 || costest.Value(late.GetState()) != 5 || !late.GetMeta().GetRevisionDate().AsTime().Equal(first.GetMeta().GetRevisionDate().AsTime()) {
		t.Fatalf("retry after restart answered %v, want %v", late, first)
	}
	if st := s.workers[0].Worker.Stats(); st.Replays != 1 || st.Appends != 0 {
		t.Fatalf("restarted worker stats %+v", st)
	}
	costest.CheckRevisions(t, s.events("i"), 3, false)
}

// A worker that appended and crashed before replying: the events are in the log with the command id;
// the caller's retry must get that result and append nothing.
func TestRetryAfterCrashBetweenAppendAndReply(t *testing.T) {
	s := distributed(t, 1, nil)
	s.mustSend("c", "add:1")
	key, _ := entity.NewKey("c", s.cfg.NumShards)
	ctx := context.Background()
	log, err := eventlog.Open(ctx, s.js, eventlog.Config{Layout: layout.Default(), Replicas: 1, NumShards: 9})
	if err != nil {
		t.Fatal(err)
	}
	head, err := log.Last(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	// What the crashed worker wrote: revision 2 with state 11, under command id "lost-reply".
	orphan := &cospb.EventWrapper{Event: costest.Cmd("ignored"), ResultingState: mustValue(11), Meta: &cospb.MetaData{EntityId: "c", RevisionNumber: 2}}
	if _, err := log.Append(ctx, eventlog.Append{Key: key, ExpectedSeq: head.Seq, CommandID: "lost-reply", Events: [][]byte{mustMarshal(t, orphan)}}); err != nil {
		t.Fatal(err)
	}
	resp, err := s.send(withID("lost-reply"), "c", "add:10")
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetMeta().GetRevisionNumber() != 2 || costest.Value(resp.GetState()) != 11 {
		t.Fatalf("retry answered %v", resp)
	}
	if n := len(s.events("c")); n != 2 {
		t.Fatalf("%d events, want 2", n)
	}
}

// Wiping the KV snapshots (here written on every revision, and with no in-process cache) changes no
// answer.
func TestWipingTheCacheChangesNothing(t *testing.T) {
	s := distributed(t, 1, func(c *config.Config) { c.StateCacheEntries, c.SnapshotFrequency = 0, 1 })
	for i := range 5 {
		s.mustSend("w", "add:1")
		s.mustSend(fmt.Sprintf("w%d", i), "add:1")
	}
	kv, err := s.js.KeyValue(context.Background(), layout.Default().StateBucket())
	if err != nil {
		t.Fatal(err)
	}
	keys, err := kv.ListKeys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for k := range keys.Keys() {
		n++
		if err := kv.Purge(context.Background(), k); err != nil {
			t.Fatal(err)
		}
	}
	if n == 0 {
		t.Fatal("no snapshot was ever written")
	}
	resp := s.mustSend("w", "add:1")
	if resp.GetMeta().GetRevisionNumber() != 6 || costest.Value(resp.GetState()) != 6 {
		t.Fatalf("after wiping: %v", resp)
	}
	costest.CheckRevisions(t, s.events("w"), 6, true)
	got, err := s.client.GetState(context.Background(), &cospb.GetStateRequest{EntityId: "w3"})
	if err != nil || costest.Value(got.GetState()) != 1 {
		t.Fatalf("GetState after wiping: %v %v", got, err)
	}
}

func mustValue(n int64) *anypb.Any { return costest.Int64Any(n) }

func mustMarshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// In single-process mode the gateway dispatches in-process; commands published straight onto NATS for
// the same entity join the same per-entity queue: interleaved, they never race each other.
func TestInProcessAndNATSCommandsShareTheEntityQueue(t *testing.T) {
	s := embedded(t, nil)
	key, _ := entity.NewKey("mixed", s.cfg.NumShards)
	subject := layout.Default().CommandSubject(key)
	const each = 100
	var wg sync.WaitGroup
	errs := make(chan error, 2*each)
	for i := range 10 {
		wg.Add(2)
		go func() { // through the gateway
			defer wg.Done()
			for range each / 10 {
				if _, err := s.send(context.Background(), "mixed", "add:1"); err != nil {
					errs <- err
				}
			}
		}()
		go func() { // straight onto NATS, as a NATS-native producer would
			defer wg.Done()
			for j := range each / 10 {
				data, _ := proto.Marshal(&natspb.CommandRequest{EntityId: "mixed", Command: costest.Cmd("add:1"), CommandId: fmt.Sprintf("nats-%d-%d", i, j)})
				reply, err := s.nc.Request(subject, data, 10*time.Second)
				if err != nil {
					errs <- err
					continue
				}
				var r natspb.CommandReply
				if err := proto.Unmarshal(reply.Data, &r); err != nil || r.GetResponse() == nil {
					errs <- fmt.Errorf("NATS command failed: %v %v", &r, err)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	costest.CheckRevisions(t, s.events("mixed"), 2*each, true)
	if st := s.workers[0].Worker.Stats(); st.Conflicts != 0 {
		t.Fatalf("stats %+v: commands of one entity raced inside one worker", st)
	}
}

package readside_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	"github.com/cosnats/cosnats/internal/costest"
	"github.com/cosnats/cosnats/pkg/config"
	"github.com/cosnats/cosnats/pkg/eventlog"
	"github.com/cosnats/cosnats/pkg/layout"
	"github.com/cosnats/cosnats/pkg/readside"
)

// concurrency counts the HandleReadSide calls in progress and the most seen at once.
type concurrency struct{ now, peak atomic.Int64 }

func (c *concurrency) enter() {
	n := c.now.Add(1)
	for p := c.peak.Load(); n > p && !c.peak.CompareAndSwap(p, n); p = c.peak.Load() {
	}
}

func (c *concurrency) leave() { c.now.Add(-1) }

// writeAll writes n events to each entity, the entities concurrently.
func (s *rsys) writeAll(ids []string, n int) {
	s.t.Helper()
	done := make(chan struct{})
	for _, id := range ids {
		go func() {
			defer func() { done <- struct{}{} }()
			for range n {
				if _, err := s.client.ProcessCommand(context.Background(), &cospb.ProcessCommandRequest{EntityId: id, Command: costest.Cmd("add:1")}); err != nil {
					s.t.Errorf("write %s: %v", id, err)
					return
				}
			}
		}()
	}
	for range ids {
		<-done
	}
}

func entityIDs(prefix string, n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	return ids
}

// In one shard, an entity whose read-side call hangs does not hold up the other entities; at most
// MaxInFlight calls are in progress at once.
func TestEntitiesOfAShardAreDeliveredInParallel(t *testing.T) {
	s := newRSys(t)
	s.cfg.NumShards = 1
	// The hanging call must not time out (a failure would deliver the others again).
	rec := s.readSide("rs", func(rs *config.ReadSide) { rs.MaxInFlight, rs.Timeout = 8, 2*time.Minute })
	var c concurrency
	gate := make(chan struct{})
	rec.Fail = func(ctx context.Context, req *cospb.HandleReadSideRequest) (bool, error) {
		c.enter()
		defer c.leave()
		if req.GetMeta().GetEntityId() == "slow" {
			select {
			case <-gate:
			case <-ctx.Done():
				return false, ctx.Err()
			}
		}
		return true, nil
	}
	s.start()
	s.write("slow", 2)
	others := entityIDs("other", 20)
	s.writeAll(others, 3)
	s.projector()
	rec.WaitFor(t, 30*time.Second, "the other entities while one hangs", allReceived(others, 3))
	if got := rec.Received("slow"); len(got) != 0 {
		t.Fatalf("the hanging entity was delivered: %v", got)
	}
	close(gate)
	rec.WaitFor(t, 30*time.Second, "the slow entity", allReceived([]string{"slow"}, 2))
	for _, id := range append(others, "slow") {
		costest.InOrder(t, id, rec.Received(id), uint32(len(rec.Received(id))), true)
	}
	if p := c.peak.Load(); p > 8 {
		t.Fatalf("%d calls at once; MaxInFlight is 8", p)
	}
}

// MaxInFlight 1 delivers a shard one event at a time, as COS did.
func TestMaxInFlightOneIsOneAtATime(t *testing.T) {
	s := newRSys(t)
	s.cfg.NumShards = 1
	rec := s.readSide("rs", func(rs *config.ReadSide) { rs.MaxInFlight = 1 })
	var c concurrency
	rec.Fail = func(context.Context, *cospb.HandleReadSideRequest) (bool, error) {
		c.enter()
		defer c.leave()
		time.Sleep(time.Millisecond) // widen the window in which a second call would overlap
		return true, nil
	}
	s.start()
	ids := entityIDs("e", 10)
	s.writeAll(ids, 5)
	s.projector()
	rec.WaitFor(t, 30*time.Second, "every event", allReceived(ids, 5))
	if p := c.peak.Load(); p != 1 {
		t.Fatalf("%d calls at once with MaxInFlight 1", p)
	}
	for _, id := range ids {
		costest.InOrder(t, id, rec.Received(id), 5, true)
	}
}

// Random failures (retried with backoff) while many entities share two shards: every event arrives,
// and no entity ever sees a revision before the previous one was handled.
func TestRandomFailuresKeepEachEntityInOrder(t *testing.T) {
	s := newRSys(t)
	s.cfg.NumShards = 2
	rec := s.readSide("rs", func(rs *config.ReadSide) { rs.MaxInFlight = 16 })
	var failed atomic.Int64
	rec.Fail = func(context.Context, *cospb.HandleReadSideRequest) (bool, error) {
		if rand.IntN(100) < 15 {
			failed.Add(1)
			return false, nil
		}
		return true, nil
	}
	s.start()
	ids := entityIDs("r", 40)
	s.projector()
	s.writeAll(ids, 15)
	rec.WaitFor(t, 90*time.Second, "every event despite failures", allReached(ids, 15))
	for _, id := range ids {
		costest.InOrder(t, id, rec.Received(id), 15, false)
	}
	if failed.Load() == 0 {
		t.Fatal("no delivery failed: the test proved nothing")
	}
}

// A consumer made with one MaxInFlight (for instance by an earlier version, which used 1) follows a
// changed setting, keeping its position.
func TestEnsureFollowsMaxInFlight(t *testing.T) {
	srv := costest.StartNATS(t)
	_, js := costest.JetStream(t, srv)
	ctx := context.Background()
	if _, err := eventlog.Open(ctx, js, eventlog.Config{Layout: layout.Default(), Replicas: 1, NumShards: 9}); err != nil {
		t.Fatal(err)
	}
	rs := config.ReadSide{ID: "rs", Host: "127.0.0.1", Port: 1, AutoStart: true, Enabled: true, Timeout: time.Second, MaxInFlight: 1}
	if _, err := readside.Ensure(ctx, js, layout.Default(), rs, 0); err != nil {
		t.Fatal(err)
	}
	rs.MaxInFlight, rs.Timeout = 32, 2*time.Second
	c, err := readside.Ensure(ctx, js, layout.Default(), rs, 0)
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.MaxAckPending != 32 || info.Config.AckWait != 7*time.Second {
		t.Fatalf("max ack pending %d, ack wait %v; want 32 and 7s", info.Config.MaxAckPending, info.Config.AckWait)
	}
}

// A consumer deleted under a running projector (say by an operator) is made again, from the first
// event, and delivery goes on.
func TestDeletedConsumerIsMadeAgain(t *testing.T) {
	s := newRSys(t)
	s.cfg.NumShards = 1
	rec := s.readSide("rs", nil)
	s.start()
	s.projector()
	s.write("d", 3)
	rec.WaitFor(t, 30*time.Second, "the first events", allReached([]string{"d"}, 3))
	if err := s.js.DeleteConsumer(context.Background(), layout.Default().EventStream(), layout.Default().ReadSideConsumer("rs", 0)); err != nil {
		t.Fatal(err)
	}
	s.write("d", 2)
	rec.WaitFor(t, 60*time.Second, "the events after the deletion", allReached([]string{"d"}, 5))
	costest.InOrder(t, "d", rec.Received("d"), 5, false)
}

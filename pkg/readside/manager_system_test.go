package readside_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	"github.com/cosnats/cosnats/internal/costest"
	"github.com/cosnats/cosnats/pkg/config"
	"github.com/cosnats/cosnats/pkg/layout"
)

func (s *rsys) consumerInfo(rs string, shard int) *jetstream.ConsumerInfo {
	s.t.Helper()
	c, err := s.js.Consumer(context.Background(), layout.Default().EventStream(), layout.Default().ReadSideConsumer(rs, shard))
	if err != nil {
		s.t.Fatal(err)
	}
	info, err := c.Info(context.Background())
	if err != nil {
		s.t.Fatal(err)
	}
	return info
}

func ok(t *testing.T, what string, successful bool, err error) {
	t.Helper()
	if err != nil || !successful {
		t.Fatalf("%s: successful=%v err=%v", what, successful, err)
	}
}

// Pause stops delivery (also across a projector restart), resume continues where it stopped, restart
// replays from the first event, skip skips exactly the stuck event.
func TestPauseResumeRestartSkip(t *testing.T) {
	s := newRSys(t)
	rec := s.readSide("rs", nil)
	var poisoned atomic.Uint32 // revision of "e" that fails; 0 = none
	rec.Fail = func(_ context.Context, req *cospb.HandleReadSideRequest) (bool, error) {
		return !(req.GetMeta().GetEntityId() == "e" && req.GetMeta().GetRevisionNumber() == poisoned.Load()), nil
	}
	s.start()
	p := s.projector()
	ctx := context.Background()
	shard := s.shard("e")
	s.write("e", 3)
	rec.WaitFor(t, 30*time.Second, "3 events", allReceived([]string{"e"}, 3))

	r, err := s.manager.PauseReadSide(ctx, &cospb.PauseReadSideRequest{ReadSideId: "rs"})
	ok(t, "pause", r.GetSuccessful(), err)
	costest.Eventually(t, 10*time.Second, "acks applied", func() bool {
		return s.consumerInfo("rs", shard).AckFloor.Stream > 0 && s.consumerInfo("rs", shard).NumAckPending == 0
	})
	delivered := s.consumerInfo("rs", shard).Delivered.Stream
	// A paused shard stays paused across a projector restart.
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	s.projector()
	s.write("e", 2)
	st := s.shardStatus("rs", shard)
	if info := s.consumerInfo("rs", shard); !st.GetPaused() || st.GetPending() != 2 || info.Delivered.Stream != delivered {
		t.Fatalf("paused shard: status %v, delivered up to %d (was %d)", st, info.Delivered.Stream, delivered)
	}
	if got := rec.Received("e"); !equal(got, 1, 2, 3) {
		t.Fatalf("delivered while paused: %v", got)
	}

	rr, err := s.manager.ResumeReadSide(ctx, &cospb.ResumeReadSideRequest{ReadSideId: "rs"})
	ok(t, "resume", rr.GetSuccessful(), err)
	rec.WaitFor(t, 30*time.Second, "5 events", allReceived([]string{"e"}, 5))
	if got := rec.Received("e"); !equal(got, 1, 2, 3, 4, 5) {
		t.Fatalf("after resume: %v", got)
	}

	rs, err := s.manager.RestartReadSideByShard(ctx, &cospb.RestartReadSideByShardRequest{ReadSideId: "rs", ClusterShardNumber: uint64(shard)})
	ok(t, "restart", rs.GetSuccessful(), err)
	rec.WaitFor(t, 30*time.Second, "the replay", allReceived([]string{"e"}, 10))
	if got := rec.Received("e"); !equal(got, 1, 2, 3, 4, 5, 1, 2, 3, 4, 5) {
		t.Fatalf("after restart: %v", got)
	}

	// Revision 6 is poison: the shard is stuck on it; skip skips it and only it.
	poisoned.Store(6)
	s.write("e", 2)
	rec.WaitFor(t, 30*time.Second, "the shard stuck on revision 6", func(r *costest.Recorder) bool { return r.Attempts("e", 6) >= 2 })
	sk, err := s.manager.SkipOffsetByShard(ctx, &cospb.SkipOffsetByShardRequest{ReadSideId: "rs", ClusterShardNumber: uint64(shard)})
	ok(t, "skip", sk.GetSuccessful(), err)
	rec.WaitFor(t, 30*time.Second, "revision 7", allReceived([]string{"e"}, 11))
	if got := rec.Received("e"); got[len(got)-1] != 7 || rec.Attempts("e", 7) != 1 {
		t.Fatalf("after skip: %v (revision 7 attempted %d times)", got, rec.Attempts("e", 7))
	}
	for _, r := range rec.Received("e") {
		if r == 6 {
			t.Fatal("the skipped event was delivered")
		}
	}
	// The offset is the stream sequence of revision 7, the shard's last event.
	str, err := s.js.Stream(ctx, layout.Default().EventStream())
	if err != nil {
		t.Fatal(err)
	}
	last, err := str.GetLastMsgForSubject(ctx, layout.Default().ShardEventSubjects(shard))
	if err != nil {
		t.Fatal(err)
	}
	costest.Eventually(t, 10*time.Second, "the offset at revision 7", func() bool {
		o, err := s.manager.GetLatestOffsetByShard(ctx, &cospb.GetLatestOffsetByShardRequest{ReadSideId: "rs", ClusterShardNumber: uint64(shard)})
		return err == nil && o.GetOffsets().GetOffset() == last.Sequence && o.GetOffsets().GetClusterShardNumber() == uint64(shard)
	})
	// Not stuck and nothing left: skip has nothing to skip.
	sk, err = s.manager.SkipOffsetByShard(ctx, &cospb.SkipOffsetByShardRequest{ReadSideId: "rs", ClusterShardNumber: uint64(shard)})
	if err != nil || sk.GetSuccessful() {
		t.Fatalf("skip with nothing to skip: %v %v", sk, err)
	}
}

// autoStart=false: the read side starts paused; resuming it delivers the history.
func TestAutoStartFalseStartsPaused(t *testing.T) {
	s := newRSys(t)
	rec := s.readSide("manual", func(rs *config.ReadSide) { rs.AutoStart = false })
	s.start()
	s.projector()
	s.write("e", 2)
	// The status answers NOT_FOUND until the projector made the consumers (a loaded machine is slow).
	s.waitConsumers("manual")
	costest.Eventually(t, 10*time.Second, "the shard's consumer", func() bool {
		st := s.shardStatus("manual", s.shard("e"))
		return st.GetPaused() && st.GetPending() == 2
	})
	if rec.Total() != 0 {
		t.Fatalf("a paused read side received %d events", rec.Total())
	}
	r, err := s.manager.ResumeReadSide(context.Background(), &cospb.ResumeReadSideRequest{ReadSideId: "manual"})
	ok(t, "resume", r.GetSuccessful(), err)
	rec.WaitFor(t, 30*time.Second, "the history", allReceived([]string{"e"}, 2))
}

// enabled=false: the read side is not run and not managed.
func TestDisabledReadSideIsNotRun(t *testing.T) {
	s := newRSys(t)
	on := s.readSide("on", nil)
	s.readSide("off", func(rs *config.ReadSide) { rs.Enabled = false })
	s.start()
	s.projector()
	s.write("e", 1)
	on.WaitFor(t, 30*time.Second, "the enabled read side", allReceived([]string{"e"}, 1))
	if s.recs["off"].Total() != 0 {
		t.Fatal("a disabled read side received events")
	}
	if _, err := s.js.Consumer(context.Background(), layout.Default().EventStream(), layout.Default().ReadSideConsumer("off", s.shard("e"))); err == nil {
		t.Fatal("a disabled read side has a consumer")
	}
}

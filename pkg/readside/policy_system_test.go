package readside_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	"github.com/cosnats/cosnats/internal/costest"
	"github.com/cosnats/cosnats/pkg/config"
)

// poisonRig: entity "poison" gets 3 events and its revision 2 fails while broken is set; ten other
// entities in other shards get 3 events each.
type poisonRig struct {
	*rsys
	rec    *costest.Recorder
	broken atomic.Bool
	others []string
}

func newPoisonRig(t *testing.T, policy config.FailurePolicy) *poisonRig {
	r := &poisonRig{rsys: newRSys(t)}
	r.rec = r.readSide("rs", func(rs *config.ReadSide) { rs.FailurePolicy = policy })
	r.broken.Store(true)
	r.rec.Fail = func(_ context.Context, req *cospb.HandleReadSideRequest) (bool, error) {
		m := req.GetMeta()
		return !(r.broken.Load() && m.GetEntityId() == "poison" && m.GetRevisionNumber() == 2), nil
	}
	r.start()
	for i := 0; len(r.others) < 10; i++ {
		if id := fmt.Sprintf("other-%d", i); r.shard(id) != r.shard("poison") {
			r.others = append(r.others, id)
		}
	}
	r.projector()
	r.write("poison", 3)
	for _, id := range r.others {
		r.write(id, 3)
	}
	return r
}

func (r *poisonRig) poisonStatus() string {
	st := r.shardStatus("rs", r.shard("poison"))
	return fmt.Sprintf("paused=%v stopped=%v failing=%v attempts=%d seq=%d err=%q",
		st.GetPaused(), st.GetStopped(), st.GetFailing(), st.GetAttempts(), st.GetFailedSequence(), st.GetLastError())
}

func (r *poisonRig) resumePoisonShard() {
	resp, err := r.manager.ResumeReadSideByShard(context.Background(), &cospb.ResumeReadSideByShardRequest{ReadSideId: "rs", ClusterShardNumber: uint64(r.shard("poison"))})
	if err != nil || !resp.GetSuccessful() {
		r.t.Fatalf("resume: %v %v", resp, err)
	}
}

func equal(a []uint32, b ...uint32) bool {
	return fmt.Sprint(a) == fmt.Sprint(b)
}

func TestPolicySkip(t *testing.T) {
	r := newPoisonRig(t, config.FailureSkip)
	r.rec.WaitFor(t, 30*time.Second, "all but the poison event", allReceived(append(r.others, "poison"), 2))
	r.rec.WaitFor(t, 30*time.Second, "poison revision 3", func(rec *costest.Recorder) bool { return len(rec.Received("poison")) == 2 })
	if got := r.rec.Received("poison"); !equal(got, 1, 3) || r.rec.Attempts("poison", 2) != 1 {
		t.Fatalf("SKIP delivered %v with %d attempts of revision 2", got, r.rec.Attempts("poison", 2))
	}
	st := r.poisonStatus()
	if !strings.Contains(st, "failing=false") || !strings.Contains(st, "successful=false") {
		t.Fatalf("status after a skip: %s", st)
	}
}

func TestPolicyReplaySkip(t *testing.T) {
	r := newPoisonRig(t, config.FailureReplaySkip)
	r.rec.WaitFor(t, 30*time.Second, "poison revision 3", func(rec *costest.Recorder) bool { return len(rec.Received("poison")) == 2 })
	if got := r.rec.Received("poison"); !equal(got, 1, 3) || r.rec.Attempts("poison", 2) != 6 {
		t.Fatalf("REPLAY_SKIP delivered %v with %d attempts of revision 2, want 6 (1 + 5 retries)", got, r.rec.Attempts("poison", 2))
	}
}

func testStop(t *testing.T, policy config.FailurePolicy, attempts int) {
	r := newPoisonRig(t, policy)
	r.rec.WaitFor(t, 30*time.Second, "the other shards", allReceived(r.others, 3))
	shard := r.shard("poison")
	costest.Eventually(t, 30*time.Second, "the poison shard stopped", func() bool {
		st := r.shardStatus("rs", shard)
		return st.GetStopped() && st.GetPaused()
	})
	if got := r.rec.Received("poison"); !equal(got, 1) || r.rec.Attempts("poison", 2) != attempts {
		t.Fatalf("%s delivered %v with %d attempts of revision 2, want %d", policy, got, r.rec.Attempts("poison", 2), attempts)
	}
	if st := r.poisonStatus(); !strings.Contains(st, fmt.Sprintf("attempts=%d", attempts)) {
		t.Fatalf("status of the stopped shard: %s", st)
	}
	// The read side is fixed; an operator resumes the shard, which continues with the stuck event.
	r.broken.Store(false)
	r.resumePoisonShard()
	r.rec.WaitFor(t, 30*time.Second, "poison after the resume", allReceived([]string{"poison"}, 3))
	if got := r.rec.Received("poison"); !equal(got, 1, 2, 3) {
		t.Fatalf("after the resume: %v", got)
	}
	if st := r.poisonStatus(); !strings.Contains(st, "paused=false stopped=false failing=false") {
		t.Fatalf("status after the resume: %s", st)
	}
}

func TestPolicyStop(t *testing.T)       { testStop(t, config.FailureStop, 1) }
func TestPolicyReplayStop(t *testing.T) { testStop(t, config.FailureReplayStop, 6) }

// The default policy retries with backoff; meanwhile every other shard keeps flowing, and the status
// shows the failure. Once the read side recovers, the shard continues in order.
func TestDefaultPolicyRetriesWithoutBlockingOtherShards(t *testing.T) {
	r := newPoisonRig(t, config.FailureRetry)
	r.rec.WaitFor(t, 30*time.Second, "other shards while poison fails", func(rec *costest.Recorder) bool {
		return allReceived(r.others, 3)(rec) && rec.Attempts("poison", 2) >= 3
	})
	costest.Eventually(t, 10*time.Second, "a failing status", func() bool {
		st := r.shardStatus("rs", r.shard("poison"))
		// Between attempts the consumer is paused by the projector: that is "failing", not "paused".
		return st.GetFailing() && !st.GetStopped() && !st.GetPaused() && st.GetAttempts() >= 2 && st.GetPending() == 2
	})
	r.broken.Store(false)
	r.rec.WaitFor(t, 30*time.Second, "poison after recovery", allReceived([]string{"poison"}, 3))
	if got := r.rec.Received("poison"); !equal(got, 1, 2, 3) {
		t.Fatalf("after recovery: %v", got)
	}
	costest.Eventually(t, 10*time.Second, "the failure cleared", func() bool { return !r.shardStatus("rs", r.shard("poison")).GetFailing() })
}

// A read side slower than its TIMEOUT: the call is cut off at the deadline and retried.
func TestSlowReadSideIsRetried(t *testing.T) {
	s := newRSys(t)
	rec := s.readSide("slow", func(rs *config.ReadSide) { rs.Timeout = 200 * time.Millisecond })
	var first atomic.Bool
	first.Store(true)
	rec.Fail = func(ctx context.Context, _ *cospb.HandleReadSideRequest) (bool, error) {
		if first.Swap(false) {
			<-ctx.Done() // far slower than the timeout
			return false, ctx.Err()
		}
		return true, nil
	}
	s.start()
	s.projector()
	s.write("e", 2)
	rec.WaitFor(t, 30*time.Second, "both events", allReceived([]string{"e"}, 2))
	if got := rec.Received("e"); !equal(got, 1, 2) || rec.Attempts("e", 1) != 2 {
		t.Fatalf("got %v with %d attempts of revision 1", got, rec.Attempts("e", 1))
	}
}

func TestManagerErrors(t *testing.T) {
	s := newRSys(t)
	s.readSide("rs", nil)
	s.start()
	ctx := context.Background()
	// Before a projector made its consumers, the gateway does not know the read side.
	if _, err := s.manager.PauseReadSide(ctx, &cospb.PauseReadSideRequest{ReadSideId: "rs"}); status.Code(err) != codes.NotFound {
		t.Fatalf("read side without consumers: %v", err)
	}
	s.projector()
	s.waitConsumers("rs")
	_, err := s.manager.PauseReadSide(ctx, &cospb.PauseReadSideRequest{ReadSideId: "nope"})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("unknown read side: %v", err)
	}
	_, err = s.manager.GetLatestOffsetByShard(ctx, &cospb.GetLatestOffsetByShardRequest{ReadSideId: "rs", ClusterShardNumber: uint64(s.cfg.NumShards)})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("shard out of range: %v", err)
	}
	resp, err := s.manager.GetLatestOffset(ctx, &cospb.GetLatestOffsetRequest{ReadSideId: "rs"})
	if err != nil || len(resp.GetOffsets()) != s.cfg.NumShards {
		t.Fatalf("offsets before any event: %v %v", resp, err)
	}
	// Nothing to skip on an empty shard: an unsuccessful answer, not an error.
	skip, err := s.manager.SkipOffsetByShard(ctx, &cospb.SkipOffsetByShardRequest{ReadSideId: "rs", ClusterShardNumber: 0})
	if err != nil || skip.GetSuccessful() {
		t.Fatalf("skip on an empty shard: %v %v", skip, err)
	}
}

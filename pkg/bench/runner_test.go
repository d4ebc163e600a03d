package bench

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// inFlight tracks how many ops run at once and the most seen.
type inFlight struct{ cur, max atomic.Int64 }

func (f *inFlight) enter() {
	n := f.cur.Add(1)
	for {
		m := f.max.Load()
		if n <= m || f.max.CompareAndSwap(m, n) {
			return
		}
	}
}

func (f *inFlight) leave() { f.cur.Add(-1) }

// seqSet records the seq numbers an op saw and checks they are distinct.
type seqSet struct {
	mu   sync.Mutex
	seen map[int64]bool
	dups int
}

func (s *seqSet) add(seq int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen == nil {
		s.seen = map[int64]bool{}
	}
	if s.seen[seq] {
		s.dups++
	}
	s.seen[seq] = true
}

func TestClosedLoopCountsOpsAndErrors(t *testing.T) {
	const c = 8
	var fl inFlight
	var seqs seqSet
	var badWorker atomic.Bool
	op := func(ctx context.Context, worker int, seq int64) error {
		fl.enter()
		defer fl.leave()
		if worker < 0 || worker >= c {
			badWorker.Store(true)
		}
		seqs.add(seq)
		time.Sleep(time.Millisecond)
		if seq%10 == 9 {
			return errors.New("boom")
		}
		return nil
	}
	const warmup, duration = 100 * time.Millisecond, 500 * time.Millisecond
	start := time.Now()
	r := ClosedLoop(context.Background(), "sleepy", "c=8", c, warmup, duration, op)
	took := time.Since(start)

	if took > warmup+duration+time.Second {
		t.Errorf("took %v for warm-up %v + duration %v", took, warmup, duration)
	}
	if took < warmup+duration {
		t.Errorf("took %v, less than warm-up %v + duration %v", took, warmup, duration)
	}
	if r.Scenario != "sleepy" || r.Variant != "c=8" {
		t.Errorf("scenario %q variant %q", r.Scenario, r.Variant)
	}
	if r.Ops < 100 {
		t.Fatalf("only %d ops in %v with %d goroutines of 1ms ops", r.Ops, duration, c)
	}
	// Every 10th seq fails; the measured ops are a contiguous-ish seq range, so the error count is
	// within a few (one per goroutine at each end) of Ops/10.
	if want := r.Ops / 10; r.Errors < want-2*c || r.Errors > want+2*c {
		t.Errorf("errors = %d of %d ops, want about %d", r.Errors, r.Ops, want)
	}
	if r.FirstError != "boom" {
		t.Errorf("first error = %q", r.FirstError)
	}
	if m := fl.max.Load(); m > c || m < 2 {
		t.Errorf("max concurrent ops = %d, want <= %d (and some concurrency)", m, c)
	}
	if badWorker.Load() {
		t.Error("worker index out of range")
	}
	if seqs.dups != 0 {
		t.Errorf("%d duplicate seq numbers", seqs.dups)
	}
	if got, min := int64(len(seqs.seen)), r.Ops; got < min {
		t.Errorf("%d distinct seqs, fewer than the %d measured ops", got, min)
	}
	if r.Seconds < duration.Seconds() || r.Seconds > duration.Seconds()+1 {
		t.Errorf("seconds = %v", r.Seconds)
	}
	if want := float64(r.Ops-r.Errors) / r.Seconds; r.OpsPerSec != want {
		t.Errorf("ops/s = %v, want %v", r.OpsPerSec, want)
	}
	if r.P50Ms < 1 || r.P90Ms < r.P50Ms || r.P99Ms < r.P90Ms || r.P999Ms < r.P99Ms || r.MaxMs < r.P999Ms {
		t.Errorf("latencies p50 %v p90 %v p99 %v p99.9 %v max %v", r.P50Ms, r.P90Ms, r.P99Ms, r.P999Ms, r.MaxMs)
	}
	if r.CPUPerOpUs < 0 {
		t.Errorf("cpu/op = %v", r.CPUPerOpUs)
	}
	if r.Note != "" {
		t.Errorf("note = %q", r.Note)
	}
}

func TestClosedLoopStopsWhenContextEnds(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	op := func(ctx context.Context, _ int, _ int64) error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
			return nil
		}
	}
	start := time.Now()
	r := ClosedLoop(ctx, "cancel", "", 4, 0, time.Minute, op)
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("took %v after the context ended at 200ms", took)
	}
	if r.Errors != 0 {
		t.Errorf("ops interrupted by the context counted as %d errors (%s)", r.Errors, r.FirstError)
	}
	if r.Ops == 0 {
		t.Error("no ops before the context ended")
	}
	if !strings.Contains(r.Note, "interrupted") {
		t.Errorf("note = %q", r.Note)
	}

	// A context that has already ended: nothing runs.
	r = ClosedLoop(ctx, "done", "", 4, time.Second, time.Minute, op)
	if r.Ops != 0 {
		t.Errorf("%d ops with an ended context", r.Ops)
	}
}

func TestOpenLoopRate(t *testing.T) {
	var seqs seqSet
	var fl inFlight
	op := func(_ context.Context, _ int, seq int64) error {
		fl.enter()
		defer fl.leave()
		seqs.add(seq)
		time.Sleep(time.Millisecond)
		return nil
	}
	start := time.Now()
	r := OpenLoop(context.Background(), "open", "200/s", 200, 16, time.Second, op)
	took := time.Since(start)
	if r.Ops < 180 || r.Ops > 220 {
		t.Errorf("ops = %d, want about 200", r.Ops)
	}
	if r.Errors != 0 || r.FirstError != "" {
		t.Errorf("errors %d %q", r.Errors, r.FirstError)
	}
	if took < 900*time.Millisecond || took > 2*time.Second {
		t.Errorf("took %v for 1s at 200/s", took)
	}
	if seqs.dups != 0 || int64(len(seqs.seen)) != r.Ops {
		t.Errorf("%d distinct seqs (%d dups) for %d ops", len(seqs.seen), seqs.dups, r.Ops)
	}
	for i := range r.Ops {
		if !seqs.seen[i] {
			t.Errorf("seq %d missing", i)
			break
		}
	}
	if m := fl.max.Load(); m > 16 {
		t.Errorf("max in flight %d > 16", m)
	}
	if r.Extra["target_rate"] != 200 {
		t.Errorf("extra = %v", r.Extra)
	}
	if _, ok := r.Extra["late_starts"]; !ok {
		t.Errorf("no late_starts in %v", r.Extra)
	}
	if r.P50Ms < 1 || r.MaxMs < r.P99Ms {
		t.Errorf("p50 %v p99 %v max %v", r.P50Ms, r.P99Ms, r.MaxMs)
	}
	if r.OpsPerSec < 100 || r.OpsPerSec > 220 {
		t.Errorf("ops/s = %v", r.OpsPerSec)
	}
}

func TestOpenLoopIncludesQueueing(t *testing.T) {
	// 100 ops/s of 20ms ops through one slot: capacity is 50/s, so a backlog builds up over the run
	// and the latencies (from the intended start) must show it.
	var fl inFlight
	op := func(_ context.Context, _ int, _ int64) error {
		fl.enter()
		defer fl.leave()
		time.Sleep(20 * time.Millisecond)
		return nil
	}
	r := OpenLoop(context.Background(), "queue", "", 100, 1, 500*time.Millisecond, op)
	if r.Ops != 50 {
		t.Errorf("ops = %d, want 50", r.Ops)
	}
	if m := fl.max.Load(); m != 1 {
		t.Errorf("max in flight = %d, want 1", m)
	}
	if r.P99Ms < 100 {
		t.Errorf("p99 = %vms: queueing delay not included (op takes 20ms)", r.P99Ms)
	}
	if r.Extra["late_starts"] < 10 {
		t.Errorf("late starts = %v", r.Extra["late_starts"])
	}
}

func TestOpenLoopErrorsAndCancel(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	op := func(_ context.Context, _ int, seq int64) error {
		if seq%2 == 1 {
			return errors.New("odd")
		}
		return nil
	}
	start := time.Now()
	r := OpenLoop(ctx, "cancel", "", 1000, 8, time.Minute, op)
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("took %v after the context ended at 300ms", took)
	}
	if r.Ops < 100 || r.Ops > 1000 {
		t.Errorf("ops = %d in about 300ms at 1000/s", r.Ops)
	}
	if d := r.Errors*2 - r.Ops; d < -2 || d > 2 {
		t.Errorf("errors = %d of %d ops, want half", r.Errors, r.Ops)
	}
	if r.FirstError != "odd" || !strings.Contains(r.Note, "interrupted") {
		t.Errorf("first error %q note %q", r.FirstError, r.Note)
	}

	// Degenerate arguments do nothing and do not panic.
	for _, rate := range []float64{0, -1} {
		r := OpenLoop(context.Background(), "zero", "", rate, 0, time.Second, op)
		if r.Ops != 0 || r.OpsPerSec != 0 || r.P99Ms != 0 {
			t.Errorf("rate %v: %+v", rate, r)
		}
	}
}

func TestErrDoneEndsTheRun(t *testing.T) {
	const n = 500
	var calls atomic.Int64
	op := func(_ context.Context, _ int, seq int64) error {
		calls.Add(1)
		if seq >= n {
			return fmt.Errorf("limit: %w", ErrDone) // wrapped on purpose
		}
		return nil
	}
	start := time.Now()
	r := ClosedLoop(context.Background(), "limited", "", 8, 0, time.Minute, op)
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("closed loop took %v for %d ops", took, n)
	}
	if r.Ops != n || r.Errors != 0 || r.FirstError != "" {
		t.Errorf("closed loop: ops %d errors %d (%q), want %d and 0", r.Ops, r.Errors, r.FirstError, n)
	}
	if c := calls.Load(); c != n+8 {
		t.Errorf("%d calls, want %d (one ErrDone per goroutine)", c, n+8)
	}

	start = time.Now()
	r = OpenLoop(context.Background(), "limited", "", 2000, 4, time.Minute, func(ctx context.Context, w int, seq int64) error {
		if seq >= 50 {
			return ErrDone
		}
		return nil
	})
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("open loop took %v", took)
	}
	if r.Ops != 50 || r.Errors != 0 {
		t.Errorf("open loop: ops %d errors %d, want 50 and 0", r.Ops, r.Errors)
	}
}

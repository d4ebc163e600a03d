package bench

import (
	"sync"
	"testing"
	"time"
)

func TestHistogramPercentiles(t *testing.T) {
	h := NewHistogram()
	if h.Count() != 0 || h.Percentile(50) != 0 || h.Percentile(0) != 0 || h.Percentile(100) != 0 || h.Max() != 0 {
		t.Fatalf("empty histogram: count %d p50 %v max %v", h.Count(), h.Percentile(50), h.Max())
	}
	for _, i := range []int{37, 100, 1, 50, 99} { // out of order on purpose
		h.Record(time.Duration(i) * time.Millisecond)
	}
	for i := 1; i <= 100; i++ {
		if i != 37 && i != 100 && i != 1 && i != 50 && i != 99 {
			h.Record(time.Duration(i) * time.Millisecond)
		}
	}
	if h.Count() != 100 {
		t.Fatalf("count = %d, want 100", h.Count())
	}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{
		{0, 1 * time.Millisecond},
		{1, 1 * time.Millisecond},
		{50, 50 * time.Millisecond},
		{90, 90 * time.Millisecond},
		{99, 99 * time.Millisecond},
		{99.9, 100 * time.Millisecond},
		{100, 100 * time.Millisecond},
		{150, 100 * time.Millisecond}, // clamped
		{-5, 1 * time.Millisecond},    // clamped
	} {
		if got := h.Percentile(c.p); got != c.want {
			t.Errorf("p%v = %v, want %v", c.p, got, c.want)
		}
	}
	if h.Max() != 100*time.Millisecond {
		t.Errorf("max = %v, want 100ms", h.Max())
	}
	// Recording after a percentile query invalidates the cached sorted samples.
	h.Record(time.Second)
	if h.Max() != time.Second || h.Count() != 101 {
		t.Errorf("after another record: max %v count %d", h.Max(), h.Count())
	}
}

func TestNearestRankExactRanks(t *testing.T) {
	// 1000 samples 1..1000: p99.9 must be rank 999 exactly (binary floating point must not push it to
	// 1000), p0.1 rank 1.
	s := make([]int64, 1000)
	for i := range s {
		s[i] = int64(i + 1)
	}
	for _, c := range []struct {
		p    float64
		want int64
	}{{99.9, 999}, {0.1, 1}, {0.15, 2}, {50, 500}, {99, 990}, {100, 1000}} {
		if got := nearestRank(s, c.p); got != c.want {
			t.Errorf("p%v = %d, want %d", c.p, got, c.want)
		}
	}
	if got := nearestRank([]int64{7}, 50); got != 7 {
		t.Errorf("single sample p50 = %d", got)
	}
}

func TestHistogramConcurrentRecord(t *testing.T) {
	h := NewHistogram()
	const goroutines, each = 16, 2000
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				h.Record(time.Duration(g*each+i+1) * time.Microsecond)
				if i%500 == 0 { // readers concurrent with writers
					_ = h.Percentile(99)
					_ = h.Count()
				}
			}
		})
	}
	wg.Wait()
	if n := h.Count(); n != goroutines*each {
		t.Fatalf("count = %d, want %d", n, goroutines*each)
	}
	if m := h.Max(); m != goroutines*each*time.Microsecond {
		t.Errorf("max = %v", m)
	}
	if p := h.Percentile(50); p != goroutines*each/2*time.Microsecond {
		t.Errorf("p50 = %v", p)
	}
}

func TestCPUTime(t *testing.T) {
	before := CPUTime()
	x := 0
	for i := range 20_000_000 {
		x += i % 7
	}
	_ = x
	after := CPUTime()
	if before <= 0 || after < before {
		t.Fatalf("CPUTime before %v after %v", before, after)
	}
}

func BenchmarkHistogramRecordParallel(b *testing.B) {
	h := NewHistogram()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			h.Record(time.Millisecond)
		}
	})
}

// Package bench measures the system: load generators, latency statistics and reports for cmd/cosbench.
package bench

import (
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"syscall"
	"time"
)

// histShards is the number of independently locked sample slices of a Histogram. Concurrent
// recorders pick one at random (per-thread generator, no shared write), so they rarely contend.
const histShards = 32

// histShard is one locked slice of samples, padded to its own cache line.
type histShard struct {
	mu      sync.Mutex
	samples []int64 // nanoseconds
	_       [64 - 8 - 24]byte
}

// Histogram records latencies and answers exact percentiles: it keeps every sample (8 bytes each;
// runs are at most a few million ops). It is safe for concurrent use: samples go to one of several
// independently locked shards, so concurrent Record calls rarely contend. The load generators of
// this package record into per-worker slices and merge them at the end instead.
type Histogram struct {
	shards [histShards]histShard

	mu     sync.Mutex // guards sorted
	sorted []int64    // every sample, sorted; rebuilt when the sample count changes
}

// NewHistogram returns an empty histogram.
func NewHistogram() *Histogram { return &Histogram{} }

// Record adds one latency sample.
func (h *Histogram) Record(d time.Duration) {
	s := &h.shards[rand.Uint32()%histShards]
	s.mu.Lock()
	s.samples = append(s.samples, int64(d))
	s.mu.Unlock()
}

// Count is the number of samples recorded so far.
func (h *Histogram) Count() int {
	n := 0
	for i := range h.shards {
		s := &h.shards[i]
		s.mu.Lock()
		n += len(s.samples)
		s.mu.Unlock()
	}
	return n
}

// sortedSamples returns every sample sorted ascending. The result is cached: samples are only ever
// appended, so an unchanged count means an unchanged set. Callers hold h.mu and must not modify it.
func (h *Histogram) sortedSamples() []int64 {
	n := h.Count()
	if n == len(h.sorted) {
		return h.sorted
	}
	all := make([]int64, 0, n+n/8)
	for i := range h.shards {
		s := &h.shards[i]
		s.mu.Lock()
		all = append(all, s.samples...)
		s.mu.Unlock()
	}
	slices.Sort(all)
	h.sorted = all
	return all
}

// Percentile is the nearest-rank p-th percentile (p in [0,100]; clamped) of the samples: the
// smallest sample such that at least p% of the samples are less than or equal to it. It is 0 when
// the histogram is empty. Percentile 0 is the minimum and 100 the maximum.
func (h *Histogram) Percentile(p float64) time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	return time.Duration(nearestRank(h.sortedSamples(), p))
}

// nearestRank is the nearest-rank percentile of sorted samples; 0 when there are none.
func nearestRank(sorted []int64, p float64) int64 {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	if math.IsNaN(p) || p < 0 {
		p = 0
	}
	if p > 100 {
		p = 100
	}
	// The epsilon keeps p*n/100 that is integral in exact arithmetic (e.g. 99.9*1000) from rounding up
	// to the next rank because of binary floating point.
	rank := int(math.Ceil(p*float64(n)/100 - 1e-9))
	rank = min(max(rank, 1), n)
	return sorted[rank-1]
}

// Max is the largest sample; 0 when the histogram is empty.
func (h *Histogram) Max() time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.sortedSamples()
	if len(s) == 0 {
		return 0
	}
	return time.Duration(s[len(s)-1])
}

// CPUTime is this process's user+system CPU time so far (getrusage RUSAGE_SELF); 0 if unavailable.
func CPUTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

package eventlog

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
)

// Every read gets a barrier whose publish started after the read began, and concurrent reads share
// publishes: never more than one in flight.
func TestBarriersAreOrderedAfterTheRead(t *testing.T) {
	var started, inflight atomic.Int64
	release := make(chan struct{})
	var once sync.Once
	b := &barriers{publish: func(ctx context.Context) (uint64, error) {
		if inflight.Add(1) != 1 {
			t.Error("two barrier publishes in flight")
		}
		defer inflight.Add(-1)
		n := started.Add(1) // the barrier's "sequence": the publish's start order
		if n == 1 {
			<-release // hold the first publish while more reads arrive
		}
		return uint64(n), nil
	}}
	first := make(chan uint64)
	go func() {
		seq, err := b.wait(context.Background())
		if err != nil {
			t.Error(err)
		}
		first <- seq
	}()
	const readers = 50
	var wg sync.WaitGroup
	seqs := make([]uint64, readers)
	before := make([]int64, readers)
	for i := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for started.Load() == 0 { // let the first publish start
				runtime.Gosched()
			}
			before[i] = started.Load()
			once.Do(func() { go func() { close(release) }() })
			seq, err := b.wait(context.Background())
			if err != nil {
				t.Error(err)
			}
			seqs[i] = seq
		}()
	}
	wg.Wait()
	if s := <-first; s != 1 {
		t.Fatalf("first read got barrier %d", s)
	}
	for i := range readers {
		if int64(seqs[i]) <= before[i] {
			t.Fatalf("read %d began after barrier %d had started and got barrier %d", i, before[i], seqs[i])
		}
	}
	if n := started.Load(); n > readers+1 {
		t.Fatalf("%d publishes for %d reads", n, readers+1)
	}
	t.Logf("%d reads, %d barrier publishes", readers+1, started.Load())
}

package worker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	natspb "github.com/cosnats/cosnats/gen/cosnats/v1"
)

var roomy = limits{runs: 4, pendingBytes: 1 << 20, entityQueue: 100}

// An inline run happens on the caller's goroutine; a job for the same entity arriving meanwhile
// waits behind it and runs on the pool afterwards, and the inline caller does not wait for it.
func TestSerializerInlineRunKeepsEntityOrder(t *testing.T) {
	s := newSerializer(roomy)
	var (
		mu    sync.Mutex
		order []string
	)
	inRun := make(chan struct{})
	release := make(chan struct{})
	s.start(func(j job) {
		if j.req.GetEntityId() == "first" {
			close(inRun)
			<-release
		}
		mu.Lock()
		order = append(order, j.req.GetEntityId())
		mu.Unlock()
		j.done(nil)
	})
	// enqueue reports whether the job had already run when submit returned.
	enqueue := func(subject, id string, after func()) (ranBefore bool, err error) {
		var ran atomic.Bool
		err = s.submit(job{subject: subject, req: &natspb.CommandRequest{EntityId: id}, done: func(*natspb.CommandReply) {
			ran.Store(true)
			if after != nil {
				after()
			}
		}}, true)
		return ran.Load(), err
	}
	firstDone := make(chan bool)
	go func() {
		ranBefore, err := enqueue("e1", "first", nil)
		firstDone <- ranBefore && err == nil
	}()
	<-inRun
	// Returns while "first" is still blocked: the caller does not wait for the entity's queue.
	secondDone := make(chan struct{})
	if ranBefore, err := enqueue("e1", "second", func() { close(secondDone) }); ranBefore || err != nil {
		t.Fatalf("a job for a busy entity: ran before returning=%v err=%v; want queued", ranBefore, err)
	}
	if ranBefore, err := enqueue("e2", "other", nil); !ranBefore || err != nil {
		t.Fatalf("a job for an idle entity: ran before returning=%v err=%v; want run inline", ranBefore, err)
	}
	close(release)
	if !<-firstDone {
		t.Fatal("the first job did not run inline")
	}
	<-secondDone
	s.stop(context.Background(), func(job) { t.Error("a job was refused") })
	mu.Lock()
	defer mu.Unlock()
	if len(order) != 3 || order[0] != "other" || order[1] != "first" || order[2] != "second" {
		t.Fatalf("run order %v; want [other first second]", order)
	}
	if len(s.busy) != 0 || s.pending != 0 {
		t.Fatalf("left after the runs: busy %v, pending %d bytes", s.busy, s.pending)
	}
}

// Once stopped, nothing runs and the caller is told.
func TestSerializerRefusesAfterStop(t *testing.T) {
	s := newSerializer(roomy)
	s.start(func(j job) { t.Error("a job ran after stop") })
	s.stop(context.Background(), func(job) {})
	for _, inline := range []bool{false, true} {
		if err := s.submit(job{subject: "e"}, inline); !errors.Is(err, errStopping) {
			t.Fatalf("inline=%v: %v, want errStopping", inline, err)
		}
	}
}

// blocked is a serializer whose runs block until released; it records what ran.
type blocked struct {
	s       *serializer
	release chan struct{}
	started chan string
	mu      sync.Mutex
	ran     []string
}

func newBlocked(lim limits) *blocked {
	b := &blocked{s: newSerializer(lim), release: make(chan struct{}), started: make(chan string, 1000)}
	b.s.start(func(j job) {
		b.started <- j.req.GetCommandId()
		<-b.release
		b.mu.Lock()
		b.ran = append(b.ran, j.req.GetCommandId())
		b.mu.Unlock()
		j.done(nil)
	})
	return b
}

func (b *blocked) submit(subject, id string, size int64) error {
	return b.s.submit(job{subject: subject, size: size, req: &natspb.CommandRequest{CommandId: id}, done: func(*natspb.CommandReply) {}}, false)
}

// Submitting never blocks, even with every run slot taken; what waits is bounded per entity and in
// bytes, and a refused job never runs.
func TestSerializerBoundsWhatWaits(t *testing.T) {
	b := newBlocked(limits{runs: 1, pendingBytes: 1000, entityQueue: 2})
	if err := b.submit("hot", "h0", 100); err != nil {
		t.Fatal(err)
	}
	<-b.started // h0 holds the only run slot
	for i := 1; i <= 2; i++ {
		if err := b.submit("hot", fmt.Sprint("h", i), 100); err != nil {
			t.Fatalf("h%d: %v", i, err)
		}
	}
	if err := b.submit("hot", "h3", 100); !errors.Is(err, errEntityQueue) {
		t.Fatalf("third waiting job of one entity: %v, want errEntityQueue", err)
	}
	// Other entities wait for a slot without blocking the caller, up to the byte bound (the running job
	// and the two waiting behind it hold 300 bytes).
	for i := range 7 {
		if err := b.submit(fmt.Sprint("e", i), fmt.Sprint("e", i), 100); err != nil {
			t.Fatalf("e%d: %v", i, err)
		}
	}
	if err := b.submit("e9", "e9", 1); !errors.Is(err, errOverloaded) {
		t.Fatalf("job over the byte bound: %v, want errOverloaded", err)
	}
	close(b.release)
	b.s.stop(context.Background(), func(job) { t.Error("a job was refused while time allowed") })
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.ran) != 10 || b.ran[0] != "h0" || b.ran[1] != "h1" || b.ran[2] != "h2" {
		t.Fatalf("ran %v: want the hot entity in order first, then e0..e6", b.ran)
	}
	if b.s.pending != 0 {
		t.Fatalf("%d bytes still counted after every job ended", b.s.pending)
	}
	for _, id := range b.ran {
		if id == "h3" || id == "e9" {
			t.Fatalf("refused job %s ran", id)
		}
	}
}

// A stop whose time ran out answers the jobs that did not start and waits only for the running one.
func TestSerializerStopRefusesWhatDidNotStart(t *testing.T) {
	b := newBlocked(limits{runs: 1, pendingBytes: 1000, entityQueue: 5})
	for _, id := range []string{"a1", "a2", "b1"} {
		if err := b.submit(id[:1], id, 1); err != nil {
			t.Fatal(err)
		}
	}
	<-b.started
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	refused := make(chan string, 2)
	stopped := make(chan struct{})
	go func() {
		b.s.stop(ctx, func(j job) { refused <- j.req.GetCommandId() })
		close(stopped)
	}()
	got := map[string]bool{<-refused: true, <-refused: true}
	select {
	case <-stopped:
		t.Fatal("stop returned while a job was running")
	default:
	}
	close(b.release)
	<-stopped
	if !got["a2"] || !got["b1"] || len(b.ran) != 1 || b.ran[0] != "a1" {
		t.Fatalf("ran %v, refused %v: want a1 run, a2 and b1 refused", b.ran, got)
	}
}

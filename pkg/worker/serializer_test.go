package worker

import (
	"sync"
	"sync/atomic"
	"testing"

	natspb "github.com/cosnats/cosnats/gen/cosnats/v1"
)

// An inline run happens on the caller's goroutine; a job for the same entity arriving meanwhile
// waits behind it and runs on the pool afterwards, and the inline caller does not wait for it.
func TestSerializerInlineRunKeepsEntityOrder(t *testing.T) {
	s := newSerializer(4)
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
	// enqueue reports whether the job had already run when enqueueInline returned.
	enqueue := func(subject, id string, after func()) (ranBefore, ok bool) {
		var ran atomic.Bool
		ok = s.enqueueInline(job{subject: subject, req: &natspb.CommandRequest{EntityId: id}, done: func(*natspb.CommandReply) {
			ran.Store(true)
			if after != nil {
				after()
			}
		}})
		return ran.Load(), ok
	}
	firstDone := make(chan bool)
	go func() {
		ranBefore, ok := enqueue("e1", "first", nil)
		firstDone <- ranBefore && ok
	}()
	<-inRun
	// Returns while "first" is still blocked: the caller does not wait for the entity's queue.
	secondDone := make(chan struct{})
	if ranBefore, ok := enqueue("e1", "second", func() { close(secondDone) }); ranBefore || !ok {
		t.Fatalf("a job for a busy entity: ran before returning=%v ok=%v; want queued", ranBefore, ok)
	}
	if ranBefore, ok := enqueue("e2", "other", nil); !ranBefore || !ok {
		t.Fatalf("a job for an idle entity: ran before returning=%v ok=%v; want run inline", ranBefore, ok)
	}
	close(release)
	if !<-firstDone {
		t.Fatal("the first job did not run inline")
	}
	<-secondDone
	s.stop()
	mu.Lock()
	defer mu.Unlock()
	if len(order) != 3 || order[0] != "other" || order[1] != "first" || order[2] != "second" {
		t.Fatalf("run order %v; want [other first second]", order)
	}
	if len(s.busy) != 0 {
		t.Fatalf("entities left busy after the runs: %v", s.busy)
	}
}

// Once stopped, nothing runs and the caller is told.
func TestSerializerRefusesAfterStop(t *testing.T) {
	s := newSerializer(1)
	s.start(func(j job) { t.Error("a job ran after stop") })
	s.stop()
	if s.enqueueInline(job{subject: "e"}) || s.enqueue(job{subject: "e"}) {
		t.Fatal("a job was accepted after stop")
	}
}

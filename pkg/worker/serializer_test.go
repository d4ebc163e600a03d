package worker

import (
	"sync"
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
		if j.data != nil && string(j.data) == "first" {
			close(inRun)
			<-release
		}
		mu.Lock()
		order = append(order, string(j.data))
		mu.Unlock()
		j.done(nil)
	})
	firstDone := make(chan bool)
	go func() {
		ran, ok := s.enqueueInline(job{subject: "e1", data: []byte("first"), done: func(*natspb.CommandReply) {}}, func() {})
		firstDone <- ran && ok
	}()
	<-inRun
	secondDone := make(chan struct{})
	queuedRan, ok := s.enqueueInline(job{subject: "e1", data: []byte("second"), done: func(*natspb.CommandReply) { close(secondDone) }}, func() {})
	if queuedRan || !ok {
		t.Fatalf("a job for a busy entity ran inline=%v ok=%v; want it queued", queuedRan, ok)
	}
	otherRan, ok := s.enqueueInline(job{subject: "e2", data: []byte("other"), done: func(*natspb.CommandReply) {}}, func() {})
	if !otherRan || !ok {
		t.Fatalf("a job for an idle entity: ran inline=%v ok=%v; want inline", otherRan, ok)
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
	if ran, ok := s.enqueueInline(job{subject: "e"}, func() {}); ran || ok {
		t.Fatalf("enqueue after stop: ran=%v ok=%v", ran, ok)
	}
}

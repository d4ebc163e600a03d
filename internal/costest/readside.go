package costest

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
)

// Recorder is a read side for tests: it records every delivery per entity, and a test may make
// deliveries fail through Fail.
type Recorder struct {
	cospb.UnimplementedReadSideHandlerServiceServer

	// Fail, when set, decides a delivery's outcome before it is recorded as received: false or an
	// error fails it. It runs under no lock and may block (it gets the call's context). Set it before
	// the read side serves; SetFail changes it while it serves.
	Fail func(ctx context.Context, req *cospb.HandleReadSideRequest) (bool, error)
	fail atomic.Pointer[FailFunc]

	mu       sync.Mutex
	changed  chan struct{}       // closed and replaced on every change
	received map[string][]uint32 // entity → revisions acknowledged, in arrival order
	attempts map[string]int      // "entity/revision" → deliveries, including failed ones
	total    int
	tags     map[string]string // entity → x-cos-event-tag seen
	ids      map[string]string // entity → x-cos-entity-id seen
}

// NewRecorder builds an empty recorder.
func NewRecorder() *Recorder {
	return &Recorder{changed: make(chan struct{}), received: map[string][]uint32{}, attempts: map[string]int{},
		tags: map[string]string{}, ids: map[string]string{}}
}

// Register adds the read side to a gRPC server.
func (r *Recorder) Register(s *grpc.Server) { cospb.RegisterReadSideHandlerServiceServer(s, r) }

// HandleReadSide implements the read side.
func (r *Recorder) HandleReadSide(ctx context.Context, req *cospb.HandleReadSideRequest) (*cospb.HandleReadSideResponse, error) {
	id, rev := req.GetMeta().GetEntityId(), req.GetMeta().GetRevisionNumber()
	r.mu.Lock()
	r.attempts[fmt.Sprintf("%s/%d", id, rev)]++
	r.notify()
	r.mu.Unlock()
	fail := r.Fail
	if f := r.fail.Load(); f != nil {
		fail = *f
	}
	if fail != nil {
		ok, err := fail(ctx, req)
		if err != nil || !ok {
			return &cospb.HandleReadSideResponse{Successful: false}, err
		}
	}
	md, _ := metadata.FromIncomingContext(ctx)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.received[id] = append(r.received[id], rev)
	r.total++
	if v := md.Get("x-cos-event-tag"); len(v) == 1 {
		r.tags[id] = v[0]
	}
	if v := md.Get("x-cos-entity-id"); len(v) == 1 {
		r.ids[id] = v[0]
	}
	r.notify()
	return &cospb.HandleReadSideResponse{Successful: true}, nil
}

// FailFunc decides a delivery's outcome (see Recorder.Fail).
type FailFunc = func(ctx context.Context, req *cospb.HandleReadSideRequest) (bool, error)

// SetFail replaces Fail while the read side serves; nil restores success.
func (r *Recorder) SetFail(f FailFunc) {
	if f == nil {
		f = func(context.Context, *cospb.HandleReadSideRequest) (bool, error) { return true, nil }
	}
	r.fail.Store(&f)
}

func (r *Recorder) notify() {
	close(r.changed)
	r.changed = make(chan struct{})
}

// Received returns the revisions acknowledged for an entity, in arrival order.
func (r *Recorder) Received(id string) []uint32 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]uint32(nil), r.received[id]...)
}

// Total is the number of acknowledged deliveries.
func (r *Recorder) Total() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.total
}

// Attempts is the number of deliveries of one event, failed ones included.
func (r *Recorder) Attempts(id string, rev uint32) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.attempts[fmt.Sprintf("%s/%d", id, rev)]
}

// Metadata returns the x-cos-entity-id and x-cos-event-tag last seen for an entity.
func (r *Recorder) Metadata(id string) (entityID, tag string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ids[id], r.tags[id]
}

// WaitFor blocks until cond holds (checked on every delivery) or fails the test after timeout.
func (r *Recorder) WaitFor(t testing.TB, timeout time.Duration, what string, cond func(*Recorder) bool) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		r.mu.Lock()
		ch := r.changed
		r.mu.Unlock()
		if cond(r) {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("timed out after %s waiting for %s (received %d)", timeout, what, r.Total())
		}
	}
}

// InOrder fails unless an entity's deliveries never skip ahead (each revision is at most one past the
// highest so far) and reach n. With exact, they must be exactly 1..n (no duplicates either).
func InOrder(t testing.TB, id string, got []uint32, n uint32, exact bool) {
	t.Helper()
	var high uint32
	for i, r := range got {
		if r > high+1 {
			t.Fatalf("%s: revision %d after %d: a gap (deliveries %v)", id, r, high, got)
		}
		if exact && r != uint32(i+1) {
			t.Fatalf("%s: deliveries %v, want exactly 1..%d", id, got, n)
		}
		high = max(high, r)
	}
	if high != n || (exact && len(got) != int(n)) {
		t.Fatalf("%s: deliveries %v, want 1..%d", id, got, n)
	}
}

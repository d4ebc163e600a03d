package bench

import (
	"context"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
)

// smallEvent is the event every no-op command produces: a few bytes.
var smallEvent, _ = anypb.New(wrapperspb.Int64(1))

// Command builds a benchmark command asking for n events (n <= 1 means one).
func Command(n int) *anypb.Any {
	a, _ := anypb.New(wrapperspb.Int32(int32(n)))
	return a
}

// NoopHandler is the write handler of the benchmarks: a command asks for n small events (see
// Command) and HandleEvent returns the event as the state. Its cost is the gRPC round trips alone.
type NoopHandler struct {
	cospb.UnimplementedWriteSideHandlerServiceServer
}

// HandleCommand implements the write handler.
func (NoopHandler) HandleCommand(_ context.Context, req *cospb.HandleCommandRequest) (*cospb.HandleCommandResponse, error) {
	var n wrapperspb.Int32Value
	_ = req.GetCommand().UnmarshalTo(&n)
	if n.GetValue() <= 1 {
		return &cospb.HandleCommandResponse{Events: []*anypb.Any{smallEvent}}, nil
	}
	events := make([]*anypb.Any, n.GetValue())
	for i := range events {
		events[i] = smallEvent
	}
	return &cospb.HandleCommandResponse{Events: events}, nil
}

// HandleEvent implements the write handler.
func (NoopHandler) HandleEvent(_ context.Context, req *cospb.HandleEventRequest) (*cospb.HandleEventResponse, error) {
	return &cospb.HandleEventResponse{ResultingState: req.GetEvent()}, nil
}

// NoopReadSide acknowledges every event and measures end-to-end lag: from the event's revision date
// (set by the worker just before the append) to its arrival here.
type NoopReadSide struct {
	cospb.UnimplementedReadSideHandlerServiceServer
	received atomic.Int64
	lag      atomic.Pointer[Histogram] // nil = not measuring
}

// HandleReadSide implements the read side.
func (r *NoopReadSide) HandleReadSide(_ context.Context, req *cospb.HandleReadSideRequest) (*cospb.HandleReadSideResponse, error) {
	r.received.Add(1)
	if h := r.lag.Load(); h != nil {
		h.Record(time.Since(req.GetMeta().GetRevisionDate().AsTime()))
	}
	return &cospb.HandleReadSideResponse{Successful: true}, nil
}

// Received is the number of events acknowledged so far.
func (r *NoopReadSide) Received() int64 { return r.received.Load() }

// MeasureLag starts recording lag into a fresh histogram and returns it; nil stops.
func (r *NoopReadSide) MeasureLag(on bool) *Histogram {
	if !on {
		r.lag.Store(nil)
		return nil
	}
	h := NewHistogram()
	r.lag.Store(h)
	return h
}

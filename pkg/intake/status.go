package intake

import (
	"context"
	"sync/atomic"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	natspb "github.com/cosnats/cosnats/gen/cosnats/v1"
	"github.com/cosnats/cosnats/pkg/layout"
)

// Status serves IntakeService: the intake's lag and limits, read from the stream and its consumer.
type Status struct {
	natspb.UnimplementedIntakeServiceServer
	layout  layout.Layout
	enabled bool
	js      atomic.Pointer[jetstream.JetStream]
}

// NewStatus builds the service; it answers UNAVAILABLE until Bind (unless the intake is disabled).
func NewStatus(lay layout.Layout, enabled bool) *Status {
	return &Status{layout: lay, enabled: enabled}
}

// Bind gives the service its JetStream context.
func (s *Status) Bind(js jetstream.JetStream) { s.js.Store(&js) }

// GetIntakeStatus implements IntakeService.
func (s *Status) GetIntakeStatus(ctx context.Context, _ *natspb.GetIntakeStatusRequest) (*natspb.GetIntakeStatusResponse, error) {
	if !s.enabled {
		return &natspb.GetIntakeStatusResponse{}, nil
	}
	p := s.js.Load()
	if p == nil {
		return nil, status.Error(codes.Unavailable, "chief-of-state is starting: not connected to NATS JetStream yet")
	}
	js := *p
	st, err := js.Stream(ctx, s.layout.IntakeStream())
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "intake stream %s: %v", s.layout.IntakeStream(), err)
	}
	c, err := js.Consumer(ctx, s.layout.IntakeStream(), s.layout.IntakeConsumer())
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "intake consumer %s: %v", s.layout.IntakeConsumer(), err)
	}
	si, ci := st.CachedInfo(), c.CachedInfo()
	resp := &natspb.GetIntakeStatusResponse{
		Enabled:         true,
		Stream:          s.layout.IntakeStream(),
		Subject:         s.layout.IntakeSubject(),
		OutcomeSubjects: s.layout.OutcomeSubjects(),
		Pending:         ci.NumPending,
		InProgress:      uint64(ci.NumAckPending),
		AckFloor:        ci.AckFloor.Stream,
		LastSequence:    si.State.LastSeq,
		StoredMessages:  si.State.Msgs,
		StoredBytes:     si.State.Bytes,
		MaxMessages:     max(si.Config.MaxMsgs, 0),
		MaxBytes:        max(si.Config.MaxBytes, 0),
	}
	// A work queue keeps only commands without an outcome: the first one stored is the oldest waiting.
	if si.State.Msgs > 0 && !si.State.FirstTime.IsZero() {
		resp.OldestPending = timestamppb.New(si.State.FirstTime)
	}
	return resp, nil
}

// Package command runs one command against an entity's prior state with the application's write
// handler: HandleCommand, then HandleEvent for each event in turn, with the COS validation rules. It
// does no storage I/O; the worker loads the prior state before and appends the result after.
package command

import (
	"context"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
)

// Handler is the part of the application's write handler this package calls.
type Handler interface {
	HandleCommand(ctx context.Context, in *cospb.HandleCommandRequest, opts ...grpc.CallOption) (*cospb.HandleCommandResponse, error)
	HandleEvent(ctx context.Context, in *cospb.HandleEventRequest, opts ...grpc.CallOption) (*cospb.HandleEventResponse, error)
}

// Rules are the write-side settings that shape how a command runs.
type Rules struct {
	// CallTimeout bounds each handler call (COS_GRPC_CALLS_TIMEOUT); the command's own deadline, when
	// earlier, wins.
	CallTimeout time.Duration
	// Validate turns on type checks of events and states against the allowed names below.
	Validate       bool
	EventTypes     map[string]bool
	StateTypes     map[string]bool
	Now            func() time.Time // nil = time.Now
	ForwardHeaders bool             // also send propagated headers to HandleEvent (COS did not)
}

// NewTypeSet builds an allowed-type set from full message names.
func NewTypeSet(names []string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}

// Prior is the entity's state before the command. Revision 0 means a fresh entity.
type Prior struct {
	State *anypb.Any
	Meta  *cospb.MetaData
}

// FreshPrior is the prior state of an entity with no events, as COS sends it.
func FreshPrior(entityID string) Prior {
	empty, _ := anypb.New(&emptypb.Empty{})
	return Prior{State: empty, Meta: &cospb.MetaData{EntityId: entityID}}
}

// Request is one command with the headers that travel with it.
type Request struct {
	EntityID          string
	Command           *anypb.Any
	PropagatedHeaders []*cospb.Header
	PersistedHeaders  []*cospb.Header
}

// Result is what a command produced: Events empty means a no-op.
type Result struct {
	Events []*cospb.EventWrapper
}

// Run decides a command. The returned error is a gRPC status error that must reach the caller as is:
// the handler's own status (code, message, details) or a validation error.
func Run(ctx context.Context, h Handler, rules Rules, prior Prior, req Request) (Result, error) {
	outCtx := ctx
	if len(req.PropagatedHeaders) > 0 {
		outCtx = metadata.NewOutgoingContext(ctx, HeadersToMetadata(req.PropagatedHeaders))
	}
	cctx, cancel := callContext(outCtx, rules.CallTimeout)
	resp, err := h.HandleCommand(cctx, &cospb.HandleCommandRequest{
		Command:        req.Command,
		PriorState:     prior.State,
		PriorEventMeta: prior.Meta,
	})
	cancel()
	if err != nil {
		return Result{}, handlerError("HandleCommand", err)
	}
	events := eventsOf(resp)
	if len(events) == 0 {
		return Result{}, nil
	}
	now := time.Now
	if rules.Now != nil {
		now = rules.Now
	}
	evCtx := ctx
	if rules.ForwardHeaders {
		evCtx = outCtx
	}
	state, rev := prior.State, prior.Meta.GetRevisionNumber()
	out := make([]*cospb.EventWrapper, 0, len(events))
	for _, ev := range events {
		if rules.Validate && !rules.EventTypes[TypeName(ev.GetTypeUrl())] {
			return Result{}, status.Errorf(codes.InvalidArgument, "invalid event: %s", ev.GetTypeUrl())
		}
		rev++
		meta := &cospb.MetaData{
			EntityId:       req.EntityID,
			RevisionNumber: rev,
			RevisionDate:   timestamppb.New(now()),
			Headers:        req.PersistedHeaders,
			Data:           map[string]*anypb.Any{},
		}
		cctx, cancel := callContext(evCtx, rules.CallTimeout)
		er, err := h.HandleEvent(cctx, &cospb.HandleEventRequest{Event: ev, PriorState: state, EventMeta: meta})
		cancel()
		if err != nil {
			return Result{}, handlerError("HandleEvent", err)
		}
		next := er.GetResultingState()
		if next == nil || next.GetTypeUrl() == "" {
			return Result{}, status.Error(codes.InvalidArgument, "event handler replied with empty state")
		}
		if rules.Validate && !rules.StateTypes[TypeName(next.GetTypeUrl())] {
			return Result{}, status.Errorf(codes.InvalidArgument, "invalid state: %s", next.GetTypeUrl())
		}
		out = append(out, &cospb.EventWrapper{Event: ev, ResultingState: next, Meta: meta})
		state = next
	}
	return Result{Events: out}, nil
}

// eventsOf applies COS's rule: a non-empty events list wins, else the deprecated single event; an Any
// with an empty type URL is no event.
func eventsOf(resp *cospb.HandleCommandResponse) []*anypb.Any {
	src := resp.GetEvents()
	if len(src) == 0 && resp.GetEvent() != nil {
		src = []*anypb.Any{resp.GetEvent()}
	}
	out := src[:0:0]
	for _, e := range src {
		if e.GetTypeUrl() != "" {
			out = append(out, e)
		}
	}
	return out
}

// HandlerError is a failed call to the write handler. Its gRPC status reaches the caller unchanged
// (code, message and details); the type only tells the handler's failures from this service's own.
type HandlerError struct {
	Call string // HandleCommand or HandleEvent
	st   *status.Status
}

func (e *HandlerError) Error() string { return e.st.Err().Error() }

// GRPCStatus is the handler's status, as status.FromError sees it.
func (e *HandlerError) GRPCStatus() *status.Status { return e.st }

// handlerError keeps a handler's gRPC status intact. A failure with no status (which grpc-go does not
// produce for RPCs) becomes UNKNOWN naming the call.
func handlerError(call string, err error) error {
	st, ok := status.FromError(err)
	if !ok {
		st = status.Newf(codes.Unknown, "%s failed: %v", call, err)
	}
	return &HandlerError{Call: call, st: st}
}

func callContext(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if d <= 0 {
		return context.WithCancel(ctx)
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= d {
		// The command's deadline comes first (the usual case: 5 s against 60 s): a context of its own
		// would change nothing but cost an allocation and a registration with the parent.
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, d)
}

// TypeName is the full message name of a type URL: the part after the last '/'.
func TypeName(typeURL string) string {
	return typeURL[strings.LastIndexByte(typeURL, '/')+1:]
}

// HeadersToMetadata turns headers into gRPC metadata; "-bin" keys carry raw bytes.
func HeadersToMetadata(hs []*cospb.Header) metadata.MD {
	md := make(metadata.MD, len(hs))
	for _, h := range hs {
		var v string
		switch x := h.GetValue().(type) {
		case *cospb.Header_BytesValue:
			v = string(x.BytesValue)
		case *cospb.Header_StringValue:
			v = x.StringValue
		}
		md.Append(h.GetKey(), v)
	}
	return md
}

// PickHeaders selects the configured keys from incoming metadata, one Header per value, in the order
// of keys. Keys must be lowercase (gRPC metadata keys are).
func PickHeaders(md metadata.MD, keys []string) []*cospb.Header {
	var out []*cospb.Header
	for _, k := range keys {
		for _, v := range md.Get(k) {
			if strings.HasSuffix(k, "-bin") {
				out = append(out, &cospb.Header{Key: k, Value: &cospb.Header_BytesValue{BytesValue: []byte(v)}})
			} else {
				out = append(out, &cospb.Header{Key: k, Value: &cospb.Header_StringValue{StringValue: v}})
			}
		}
	}
	return out
}

// MaxCommandIDBytes bounds an idempotency key.
const MaxCommandIDBytes = 128

// ValidateCommandID checks an idempotency key: 1..128 printable ASCII characters without spaces.
func ValidateCommandID(id string) error {
	if id == "" || len(id) > MaxCommandIDBytes {
		return fmt.Errorf("command id must be 1 to %d characters, got %d", MaxCommandIDBytes, len(id))
	}
	for i := 0; i < len(id); i++ {
		if id[i] <= ' ' || id[i] > '~' {
			return fmt.Errorf("command id may only hold printable ASCII without spaces")
		}
	}
	return nil
}

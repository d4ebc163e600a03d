package costest

import (
	"context"
	"strconv"
	"strings"
	"sync"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
)

// Counter is a write handler for tests. Commands are StringValues:
//
//	add:N          one event Int64Value(N)
//	multi:K        K events Int64Value(1)
//	failevent:K:I  K events; HandleEvent rejects the I-th (1-based) with FAILED_PRECONDITION
//	noop           no event
//	bad            INVALID_ARGUMENT with a google.rpc.BadRequest detail
//	legacy         one event Int64Value(1) in the deprecated `event` field
//	emptyany       one event with an empty type URL (= no event)
//	emptystate     one event whose HandleEvent returns no state
//	wrongevent     one StringValue event
//	wrongstate     one event whose resulting state is a StringValue
//	hang           blocks until the call's deadline, then fails with it
//
// The state is an Int64Value with the sum, so with +1 events a resulting state equal to the revision
// proves each event was applied on the previous event's state (see CheckRevisions).
type Counter struct {
	cospb.UnimplementedWriteSideHandlerServiceServer

	mu       sync.Mutex
	commands []CommandCall
	events   int
}

// CommandCall records one HandleCommand call.
type CommandCall struct {
	Request *cospb.HandleCommandRequest
	MD      metadata.MD
}

// Register adds the handler to a gRPC server.
func (c *Counter) Register(s *grpc.Server) { cospb.RegisterWriteSideHandlerServiceServer(s, c) }

// Commands returns the HandleCommand calls so far.
func (c *Counter) Commands() []CommandCall {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]CommandCall(nil), c.commands...)
}

// EventCalls is the number of HandleEvent calls so far.
func (c *Counter) EventCalls() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.events
}

// Cmd builds a command Any.
func Cmd(s string) *anypb.Any {
	a, _ := anypb.New(wrapperspb.String(s))
	return a
}

func ev(m proto.Message) *anypb.Any {
	a, _ := anypb.New(m)
	return a
}

// HandleCommand implements the write handler.
func (c *Counter) HandleCommand(ctx context.Context, req *cospb.HandleCommandRequest) (*cospb.HandleCommandResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	c.mu.Lock()
	c.commands = append(c.commands, CommandCall{Request: req, MD: md})
	c.mu.Unlock()
	var cmd wrapperspb.StringValue
	if err := req.GetCommand().UnmarshalTo(&cmd); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "not a counter command: %v", err)
	}
	op, arg, _ := strings.Cut(cmd.GetValue(), ":")
	ones := func(k int) []*anypb.Any {
		out := make([]*anypb.Any, k)
		for i := range out {
			out[i] = ev(wrapperspb.Int64(1))
		}
		return out
	}
	switch op {
	case "add":
		n, _ := strconv.ParseInt(arg, 10, 64)
		return &cospb.HandleCommandResponse{Events: []*anypb.Any{ev(wrapperspb.Int64(n))}}, nil
	case "multi":
		k, _ := strconv.Atoi(arg)
		return &cospb.HandleCommandResponse{Events: ones(k)}, nil
	case "failevent":
		ks, is, _ := strings.Cut(arg, ":")
		k, _ := strconv.Atoi(ks)
		i, _ := strconv.Atoi(is)
		events := ones(k)
		events[i-1] = ev(wrapperspb.Int64(-999))
		return &cospb.HandleCommandResponse{Events: events}, nil
	case "noop":
		return &cospb.HandleCommandResponse{}, nil
	case "hang":
		<-ctx.Done()
		return nil, status.FromContextError(ctx.Err()).Err()
	case "bad":
		st, _ := status.New(codes.InvalidArgument, "bad command").WithDetails(&errdetails.BadRequest{
			FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "value", Description: "must not be bad"}},
		})
		return nil, st.Err()
	case "legacy":
		return &cospb.HandleCommandResponse{Event: ev(wrapperspb.Int64(1))}, nil
	case "emptyany":
		return &cospb.HandleCommandResponse{Events: []*anypb.Any{{}}}, nil
	case "emptystate":
		return &cospb.HandleCommandResponse{Events: []*anypb.Any{ev(wrapperspb.Int64(-1))}}, nil
	case "wrongevent":
		return &cospb.HandleCommandResponse{Events: []*anypb.Any{ev(wrapperspb.String("x"))}}, nil
	case "wrongstate":
		return &cospb.HandleCommandResponse{Events: []*anypb.Any{ev(wrapperspb.Int64(-2))}}, nil
	}
	return nil, status.Errorf(codes.InvalidArgument, "unknown counter command %q", cmd.GetValue())
}

// HandleEvent implements the write handler.
func (c *Counter) HandleEvent(_ context.Context, req *cospb.HandleEventRequest) (*cospb.HandleEventResponse, error) {
	c.mu.Lock()
	c.events++
	c.mu.Unlock()
	var prior int64
	switch {
	case req.GetPriorState().MessageIs(&emptypb.Empty{}):
	case req.GetPriorState().MessageIs(&wrapperspb.Int64Value{}):
		var v wrapperspb.Int64Value
		if err := req.GetPriorState().UnmarshalTo(&v); err != nil {
			return nil, status.Errorf(codes.Internal, "prior state: %v", err)
		}
		prior = v.GetValue()
	default:
		return nil, status.Errorf(codes.Internal, "unexpected prior state %s", req.GetPriorState().GetTypeUrl())
	}
	var delta wrapperspb.Int64Value
	if err := req.GetEvent().UnmarshalTo(&delta); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "not a counter event: %v", err)
	}
	switch delta.GetValue() {
	case -999:
		return nil, status.Error(codes.FailedPrecondition, "event rejected")
	case -1:
		return &cospb.HandleEventResponse{}, nil
	case -2:
		return &cospb.HandleEventResponse{ResultingState: ev(wrapperspb.String("wrong"))}, nil
	}
	return &cospb.HandleEventResponse{ResultingState: ev(wrapperspb.Int64(prior + delta.GetValue()))}, nil
}

// Value reads a counter state.
func Value(a *anypb.Any) int64 {
	var v wrapperspb.Int64Value
	if err := a.UnmarshalTo(&v); err != nil {
		return -1 << 62
	}
	return v.GetValue()
}

// Int64Any wraps n as an Any holding a counter state.
func Int64Any(n int64) *anypb.Any { return ev(wrapperspb.Int64(n)) }

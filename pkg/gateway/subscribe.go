package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	"github.com/cosnats/cosnats/pkg/entity"
	"github.com/cosnats/cosnats/pkg/subscription"
)

// SubscriptionConfig are the settings of live subscriptions (package subscription).
type SubscriptionConfig struct {
	// Enabled (COS_SUBSCRIPTION_ENABLED) serves the four subscription RPCs; off, they answer
	// UNIMPLEMENTED as COS does.
	Enabled bool
	// Buffer, StallTimeout and MaxDisconnect: see subscription.Config (zero = its default).
	Buffer        int
	StallTimeout  time.Duration
	MaxDisconnect time.Duration
}

// SubscriptionIDKey is the response header of Subscribe and SubscribeAll carrying the subscription's id
// (generated when the request had none). It is sent once the subscription reads the event stream: every
// event persisted after the client received it reaches the client.
const SubscriptionIDKey = "x-cos-subscription-id"

// maxSubscriptionIDBytes bounds a client's subscription id: it is repeated in every response and sent in
// a header, hence printable ASCII.
const maxSubscriptionIDBytes = 256

var errSubscriptionsOff = status.Error(codes.Unimplemented, "Subscription is not enabled; configure subscription to use streaming")

func newHub(cfg Config, log *slog.Logger) *subscription.Hub {
	sc := cfg.Subscriptions
	return subscription.New(subscription.Config{Layout: cfg.Layout, Buffer: sc.Buffer, StallTimeout: sc.StallTimeout,
		MaxDisconnect: sc.MaxDisconnect}, log)
}

// BindSubscriptions gives the subscriptions their NATS connection (Bind gives the rest).
func (s *Service) BindSubscriptions(js jetstream.JetStream) {
	if s.cfg.Subscriptions.Enabled {
		s.subs.Bind(js)
	}
}

// EndSubscriptions ends every open Subscribe and SubscribeAll stream with UNAVAILABLE (saying where to
// resume), refuses new ones, and waits within ctx until they are released. Call it before stopping the
// gRPC server, whose graceful stop would otherwise wait for streams that never end on their own.
func (s *Service) EndSubscriptions(ctx context.Context) {
	s.subs.Shutdown(ctx)
}

// Subscribe implements the RPC: the entity's events as they are persisted, or from from_revision on.
func (s *Service) Subscribe(req *cospb.SubscribeRequest, stream grpc.ServerStreamingServer[cospb.SubscribeResponse]) error {
	if !s.cfg.Subscriptions.Enabled {
		return errSubscriptionsOff
	}
	key, err := entity.NewKey(req.GetEntityId(), s.cfg.NumShards)
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	id, err := subscriptionID(req.GetSubscriptionId())
	if err != nil {
		return err
	}
	r := subscription.Request{ID: id, Entity: &key, FromRevision: req.GetFromRevision()}
	return s.subscriptionStatus(s.subs.Subscribe(stream.Context(), r, sink[cospb.SubscribeResponse]{stream, id,
		func(e subscription.Event) *cospb.SubscribeResponse {
			w := e.Wrapper
			return &cospb.SubscribeResponse{SubscriptionId: id, Event: w.GetEvent(), ResultingState: w.GetResultingState(), Meta: w.GetMeta(), Sequence: e.Sequence}
		}}))
}

// SubscribeAll implements the RPC: every entity's events as they are persisted, or from from_sequence on.
func (s *Service) SubscribeAll(req *cospb.SubscribeAllRequest, stream grpc.ServerStreamingServer[cospb.SubscribeAllResponse]) error {
	if !s.cfg.Subscriptions.Enabled {
		return errSubscriptionsOff
	}
	id, err := subscriptionID(req.GetSubscriptionId())
	if err != nil {
		return err
	}
	r := subscription.Request{ID: id, FromSequence: req.GetFromSequence()}
	return s.subscriptionStatus(s.subs.Subscribe(stream.Context(), r, sink[cospb.SubscribeAllResponse]{stream, id,
		func(e subscription.Event) *cospb.SubscribeAllResponse {
			w := e.Wrapper
			return &cospb.SubscribeAllResponse{SubscriptionId: id, Event: w.GetEvent(), ResultingState: w.GetResultingState(), Meta: w.GetMeta(), Sequence: e.Sequence}
		}}))
}

// Unsubscribe implements the RPC: it ends the Subscribe streams with this id on every gateway.
func (s *Service) Unsubscribe(ctx context.Context, req *cospb.UnsubscribeRequest) (*cospb.UnsubscribeResponse, error) {
	if err := s.unsubscribe(ctx, subscription.KindEntity, req.GetSubscriptionId()); err != nil {
		return nil, err
	}
	return &cospb.UnsubscribeResponse{}, nil
}

// UnsubscribeAll implements the RPC: it ends the SubscribeAll streams with this id on every gateway.
func (s *Service) UnsubscribeAll(ctx context.Context, req *cospb.UnsubscribeAllRequest) (*cospb.UnsubscribeAllResponse, error) {
	if err := s.unsubscribe(ctx, subscription.KindAll, req.GetSubscriptionId()); err != nil {
		return nil, err
	}
	return &cospb.UnsubscribeAllResponse{}, nil
}

func (s *Service) unsubscribe(ctx context.Context, kind subscription.Kind, id string) error {
	if !s.cfg.Subscriptions.Enabled {
		return errSubscriptionsOff
	}
	if id == "" {
		return status.Error(codes.InvalidArgument, "empty subscription_id")
	}
	// No further check: an id no subscription can have ends nothing, which is fine.
	err := s.subs.Unsubscribe(ctx, kind, id)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, subscription.ErrNotBound):
		return status.Error(codes.Unavailable, "chief-of-state is starting: not connected to NATS JetStream yet")
	case errors.Is(err, subscription.ErrNotPublished):
		s.log.WarnContext(ctx, "unsubscribe: the other gateways could not be told", "subscription_id", id, "kind", kind.String(), "err", err)
		return status.Error(codes.Unavailable, "the streams with this subscription_id served by this gateway ended, but the other gateways could not be told (NATS unreachable); retry")
	case ctx.Err() != nil:
		return status.FromContextError(ctx.Err()).Err()
	}
	s.log.ErrorContext(ctx, "unsubscribe", "subscription_id", id, "kind", kind.String(), "err", err)
	return status.Error(codes.Internal, "unsubscribe failed; retry")
}

// subscriptionID is the request's id, or a new one when it has none.
func subscriptionID(id string) (string, error) {
	if id == "" {
		return nuid.Next(), nil
	}
	if len(id) > maxSubscriptionIDBytes {
		return "", status.Errorf(codes.InvalidArgument, "subscription_id is %d bytes, the limit is %d", len(id), maxSubscriptionIDBytes)
	}
	for i := 0; i < len(id); i++ {
		if id[i] < 0x20 || id[i] > 0x7e {
			return "", status.Error(codes.InvalidArgument, "subscription_id must be printable ASCII")
		}
	}
	return id, nil
}

// subscriptionStatus maps how a subscription ended to the status its stream ends with.
func (s *Service) subscriptionStatus(err error) error {
	var end *subscription.EndError
	switch {
	case err == nil:
		return nil // unsubscribed: the stream just ends
	case errors.Is(err, subscription.ErrNotBound):
		return status.Error(codes.Unavailable, "chief-of-state is starting: not connected to NATS JetStream yet")
	case errors.Is(err, subscription.ErrShuttingDown):
		return status.Error(codes.Unavailable, "gateway shutting down; subscribe again (another gateway will serve it)")
	case !errors.As(err, &end):
		s.log.Error("subscription", "err", err)
		return status.Error(codes.Internal, "subscription failed")
	}
	where := subscription.Position(end.Kind, end.Resume)
	switch end.Reason {
	case subscription.ShuttingDown:
		return status.Errorf(codes.Unavailable, "gateway shutting down; resume from %s", where)
	case subscription.TooSlow:
		lim := s.subs.Config()
		return status.Errorf(codes.ResourceExhausted, "subscriber too slow: %d events waited unread for %v; resume from %s", lim.Buffer, lim.StallTimeout, where)
	case subscription.Disconnected:
		return status.Errorf(codes.Unavailable, "the gateway lost NATS JetStream; resume from %s", where)
	case subscription.Unavailable:
		return status.Errorf(codes.Unavailable, "the event stream is unavailable; resume from %s", where)
	case subscription.Corrupt:
		return status.Errorf(codes.DataLoss, "a stored event cannot be decoded (%v); every event before it was delivered (resuming from %s reaches it again)", end.Err, where)
	case subscription.ClientGone:
		if st, ok := status.FromError(end.Err); ok {
			return st.Err()
		}
		return status.FromContextError(end.Err).Err()
	}
	return status.Error(codes.Internal, fmt.Sprintf("subscription ended (%v)", end))
}

// sink sends a subscription's events on one gRPC stream.
type sink[R any] struct {
	stream grpc.ServerStreamingServer[R]
	id     string
	build  func(subscription.Event) *R
}

func (k sink[R]) Live() error {
	return k.stream.SendHeader(metadata.Pairs(SubscriptionIDKey, k.id))
}

func (k sink[R]) Send(e subscription.Event) error { return k.stream.Send(k.build(e)) }

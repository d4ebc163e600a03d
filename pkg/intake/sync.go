package intake

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	natspb "github.com/cosnats/cosnats/gen/cosnats/v1"
	"github.com/cosnats/cosnats/pkg/gateway"
	"github.com/cosnats/cosnats/pkg/layout"
	"github.com/cosnats/cosnats/pkg/schema"
)

// Runner runs a command like ProcessCommand; *gateway.Service implements it.
type Runner interface {
	Run(ctx context.Context, req *cospb.ProcessCommandRequest, md metadata.MD) gateway.Result
}

// SyncConfig are the synchronous intake's settings.
type SyncConfig struct {
	Layout layout.Layout
	// MaxConcurrent bounds the requests running at once in this gateway; beyond it a request is
	// answered RESOURCE_EXHAUSTED at once. 0 = 4096.
	MaxConcurrent int
}

// Sync answers command requests on the synchronous intake subject (queue group of the gateways).
type Sync struct {
	cfg   SyncConfig
	nc    *nats.Conn
	run   Runner
	types *schema.Resolver // nil: protobuf only
	log   *slog.Logger
	slots chan struct{}
	wg    sync.WaitGroup
	// subscribed is closed once the server has the subscription: from then on a request finds it.
	subscribed chan struct{}
}

// NewSync builds the synchronous intake; types may be nil (no JSON).
func NewSync(cfg SyncConfig, nc *nats.Conn, run Runner, types *schema.Resolver, log *slog.Logger) *Sync {
	if cfg.MaxConcurrent <= 0 {
		cfg.MaxConcurrent = 4096
	}
	return &Sync{cfg: cfg, nc: nc, run: run, types: types, log: log, slots: make(chan struct{}, cfg.MaxConcurrent),
		subscribed: make(chan struct{})}
}

// Subscribed is closed once requests on the intake subject reach this gateway.
func (s *Sync) Subscribed() <-chan struct{} { return s.subscribed }

// Run takes requests until ctx ends, then stops taking them and lets those running finish.
func (s *Sync) Run(ctx context.Context) error {
	base := context.WithoutCancel(ctx) // a command that started is seen through
	sub, err := s.nc.QueueSubscribe(s.cfg.Layout.ProcessSubject(), s.cfg.Layout.GatewayQueue(), func(m *nats.Msg) { s.onMsg(base, m) })
	if err != nil {
		return fmt.Errorf("subscribe to %s: %w", s.cfg.Layout.ProcessSubject(), err)
	}
	// The subscription is the client's from now on: nats.go sends it again after every reconnect. The
	// flush only confirms that the server has it; NATS away for a moment must not end the intake.
	for {
		err := s.nc.FlushTimeout(5 * time.Second)
		if err == nil {
			break
		}
		if ctx.Err() != nil || s.nc.IsClosed() {
			_ = sub.Unsubscribe()
			return nil
		}
		s.log.Warn("subscription to the intake subject not confirmed yet; waiting", "subject", s.cfg.Layout.ProcessSubject(), "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	close(s.subscribed)
	s.log.Info("taking commands over NATS", "subject", s.cfg.Layout.ProcessSubject(), "queue", s.cfg.Layout.GatewayQueue())
	<-ctx.Done()
	_ = sub.Unsubscribe()
	s.wg.Wait()
	return nil
}

func (s *Sync) onMsg(ctx context.Context, m *nats.Msg) {
	select {
	case s.slots <- struct{}{}:
	default:
		s.respond(m, ContentProtobuf, Outcome(header(m.Header, HeaderEntityID), gateway.Result{
			Err: status.Errorf(codes.ResourceExhausted, "this gateway runs %d NATS commands already; the command was not processed, retry", cap(s.slots))}))
		return
	}
	s.wg.Add(1)
	go func() {
		defer func() { <-s.slots; s.wg.Done() }()
		accept := ContentProtobuf
		c, err := Decode(ctx, m.Header, m.Data, s.decodeTypes())
		if c.Accept != "" {
			accept = c.Accept
		}
		if err != nil {
			s.respond(m, accept, Outcome(header(m.Header, HeaderEntityID), gateway.Result{Err: err}))
			return
		}
		res := s.run.Run(ctx, c.Request, c.MD)
		s.respond(m, accept, Outcome(c.Request.GetEntityId(), res))
	}()
}

func (s *Sync) respond(m *nats.Msg, accept string, o *natspb.CommandOutcome) {
	if m.Reply == "" {
		return // published without a reply subject: nobody waits
	}
	enc, err := Encode(o, accept, s.typesOrNil())
	if err == nil {
		reply := nats.NewMsg(m.Reply)
		reply.Header, reply.Data = enc.Header, enc.Data
		err = s.nc.PublishMsg(reply)
	}
	if err != nil {
		s.log.Warn("reply to a NATS command", "command_id", o.GetCommandId(), "err", err)
	}
}

// typesOrNil keeps a nil *schema.Resolver from becoming a non-nil interface.
func (s *Sync) typesOrNil() JSONTypes {
	if s.types == nil {
		return nil
	}
	return s.types
}

func (s *Sync) decodeTypes() Types {
	if s.types == nil {
		return nil
	}
	return s.types
}

// Package readside delivers every persisted event to every configured read side, in order per entity
// (one durable JetStream consumer per read side and shard, one event in flight at a time), at least
// once, with COS's failure policies; and lets operators inspect and steer the shards
// (ReadSideManagerService and this project's ReadSideStatusService).
package readside

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	natspb "github.com/cosnats/cosnats/gen/cosnats/v1"
	"github.com/cosnats/cosnats/pkg/config"
	"github.com/cosnats/cosnats/pkg/layout"
)

// Metadata keys sent with every HandleReadSide call, as COS sent them.
const (
	EntityIDKey = "x-cos-entity-id"
	EventTagKey = "x-cos-event-tag"
)

// Config are the projector's settings.
type Config struct {
	Layout    layout.Layout
	NumShards int
	ReadSides []config.ReadSide
	// Timing is the failure-policy timing shared by all read sides; each read side's Kind is its own.
	Timing Policy
}

// DefaultTiming is the production timing: backoff from 1 s to 1 min, REPLAY_* 5 times 5 s apart.
var DefaultTiming = Policy{BackoffBase: time.Second, BackoffMax: time.Minute, ReplayDelay: 5 * time.Second, ReplayRetries: 5}

// Deps are the projector's collaborators.
type Deps struct {
	JS     jetstream.JetStream
	Status *StatusStore
	Logger *slog.Logger
}

// Projector runs every (read side, shard). Any number of replicas may run; per shard the server pins
// one of them and hands the shard to another within PinnedTTL when it goes away.
type Projector struct {
	cfg  Config
	deps Deps

	delivered, failures atomic.Uint64
}

// New builds a projector; it starts nothing.
func New(cfg Config, deps Deps) (*Projector, error) {
	if cfg.NumShards < 1 {
		return nil, errors.New("projector: NumShards must be >= 1")
	}
	for _, rs := range cfg.ReadSides {
		if err := rs.Validate(); err != nil {
			return nil, fmt.Errorf("projector: %w", err)
		}
	}
	return &Projector{cfg: cfg, deps: deps}, nil
}

// Delivered is the number of events acknowledged by read sides through this projector.
func (p *Projector) Delivered() uint64 { return p.delivered.Load() }

// Failures is the number of failed deliveries seen by this projector.
func (p *Projector) Failures() uint64 { return p.failures.Load() }

// Run delivers until ctx ends.
func (p *Projector) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	for _, rs := range p.cfg.ReadSides {
		conn, err := dial(rs)
		if err != nil {
			return err
		}
		defer conn.Close()
		client := cospb.NewReadSideHandlerServiceClient(conn)
		policy := p.cfg.Timing
		policy.Kind = rs.FailurePolicy
		for shard := range p.cfg.NumShards {
			s := &shardRunner{p: p, rs: rs, shard: shard, client: client, policy: policy,
				log: p.deps.Logger.With("read_side", rs.ID, "shard", shard)}
			g.Go(func() error { return s.run(gctx) })
		}
	}
	p.deps.Logger.Info("projector running", "read_sides", len(p.cfg.ReadSides), "shards", p.cfg.NumShards)
	return g.Wait()
}

func dial(rs config.ReadSide) (*grpc.ClientConn, error) {
	creds := insecure.NewCredentials()
	if rs.UseTLS {
		creds = credentials.NewClientTLSFromCert(nil, "")
	}
	target := net.JoinHostPort(rs.Host, strconv.Itoa(rs.Port))
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, fmt.Errorf("read side %s at %s: %w", rs.ID, target, err)
	}
	return conn, nil
}

// shardRunner delivers one shard of one read side.
type shardRunner struct {
	p      *Projector
	rs     config.ReadSide
	shard  int
	client cospb.ReadSideHandlerServiceClient
	policy Policy
	log    *slog.Logger

	ctx     context.Context
	failing bool // the recorded state may say "failing"; cleared on the next success
}

func (s *shardRunner) run(ctx context.Context) error {
	s.ctx = ctx
	s.failing = true // a previous replica may have left a failure on record
	c, err := Ensure(ctx, s.p.deps.JS, s.p.cfg.Layout, s.rs, s.shard)
	if err != nil {
		return err
	}
	cc, err := c.Consume(s.handle,
		jetstream.PullPriorityGroup(layout.ProjectorGroup),
		// Pull more often than PinnedTTL so an idle but alive replica keeps its pin.
		jetstream.PullExpiry(PinnedTTL/2),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			s.log.Debug("consume", "err", err)
		}))
	if err != nil {
		return fmt.Errorf("consume %s shard %d: %w", s.rs.ID, s.shard, err)
	}
	<-ctx.Done()
	cc.Stop()
	<-cc.Closed()
	return nil
}

func (s *shardRunner) handle(msg jetstream.Msg) {
	meta, err := msg.Metadata()
	if err != nil {
		s.log.Error("message without JetStream metadata", "err", err)
		_ = msg.Term()
		return
	}
	var w cospb.EventWrapper
	if err := proto.Unmarshal(msg.Data(), &w); err != nil {
		s.failed(msg, meta, fmt.Errorf("undecodable event at sequence %d: %w", meta.Sequence.Stream, err))
		return
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.rs.Timeout)
	ctx = metadata.AppendToOutgoingContext(ctx, EntityIDKey, HeaderValue(w.GetMeta().GetEntityId()), EventTagKey, strconv.Itoa(s.shard))
	resp, err := s.client.HandleReadSide(ctx, &cospb.HandleReadSideRequest{
		Event:      w.GetEvent(),
		State:      w.GetResultingState(),
		Meta:       w.GetMeta(),
		ReadSideId: s.rs.ID,
	})
	cancel()
	if s.ctx.Err() != nil {
		_ = msg.Nak() // shutting down: let the next replica have it at once
		return
	}
	if err == nil && !resp.GetSuccessful() {
		err = errors.New("read side replied successful=false")
	}
	if err != nil {
		s.failed(msg, meta, err)
		return
	}
	if err := msg.Ack(); err != nil {
		s.log.Warn("ack", "sequence", meta.Sequence.Stream, "err", err)
		return
	}
	s.p.delivered.Add(1)
	if s.failing {
		s.recovered()
	}
}

// recovered marks the shard as no longer failing, keeping the last error on record for operators.
func (s *shardRunner) recovered() {
	st, err := s.p.deps.Status.Get(s.ctx, s.rs.ID, s.shard)
	if err == nil && st.GetFailing() {
		st.Failing = false
		err = s.p.deps.Status.Put(s.ctx, s.rs.ID, s.shard, st)
	}
	if err != nil {
		s.log.Warn("record recovery", "err", err)
		return
	}
	s.failing = false
}

// failed applies the failure policy to an event whose delivery failed.
func (s *shardRunner) failed(msg jetstream.Msg, meta *jetstream.MsgMetadata, cause error) {
	s.p.failures.Add(1)
	d := s.policy.OnFailure(meta.NumDelivered)
	text := cause.Error()
	if len(text) > 1024 {
		text = text[:1024]
	}
	st := &natspb.ReadSideShardState{
		Failing:        d.Action == Retry,
		Stopped:        d.Action == Stop,
		LastError:      text,
		LastErrorTime:  timestamppb.Now(),
		FailedSequence: meta.Sequence.Stream,
		Attempts:       meta.NumDelivered,
	}
	if err := s.p.deps.Status.Put(s.ctx, s.rs.ID, s.shard, st); err != nil {
		s.log.Warn("record failure state", "err", err)
	}
	s.failing = d.Action == Retry
	log := s.log.With("sequence", meta.Sequence.Stream, "attempt", meta.NumDelivered, "err", cause)
	switch d.Action {
	case Retry:
		log.Warn("read side failed; retrying", "delay", d.Delay)
		_ = msg.NakWithDelay(d.Delay)
	case Skip:
		log.Error("read side failed; skipping the event (failure policy)", "policy", s.policy.Kind)
		_ = msg.Ack()
	case Stop:
		log.Error("read side failed; stopping the shard until it is resumed (failure policy)", "policy", s.policy.Kind)
		lay := s.p.cfg.Layout
		if _, err := s.p.deps.JS.PauseConsumer(s.ctx, lay.EventStream(), lay.ReadSideConsumer(s.rs.ID, s.shard), Forever); err != nil {
			log.Error("pause consumer", "err", err)
		}
		_ = msg.Nak() // delivered again after the resume
	}
}

// HeaderValue makes an entity id fit in a gRPC metadata value, which must be printable ASCII: such ids
// pass unchanged, any other id is percent-encoded (UTF-8 bytes, like a URL path). MetaData.entity_id
// always carries the exact id.
func HeaderValue(id string) string {
	for i := 0; i < len(id); i++ {
		if id[i] < 0x20 || id[i] > 0x7e {
			return url.PathEscape(id)
		}
	}
	return id
}

// Package readside delivers every persisted event to every configured read side, in order per entity
// (one durable JetStream consumer per read side and shard; events of different entities in parallel,
// up to the read side's MaxInFlight), at least once, with COS's failure policies; and lets operators
// inspect and steer the shards (ReadSideManagerService and this project's ReadSideStatusService).
package readside

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"sync"
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

// maxTracked bounds the failed events whose attempts a runner remembers.
const maxTracked = 1024

// pinHeader carries, on every message of a pinned consumer, the id of the replica's current pin.
const pinHeader = "Nats-Pin-Id"

// shardRunner delivers one shard of one read side: up to MaxInFlight events at once, one at a time
// per entity ("lanes" keyed by the entity's subject), in stream order within a lane.
//
// With more than one event in flight the server would redeliver a failed event after later ones,
// so the runner never naks. When an event must be retried or the shard stopped, it lets the lanes
// finish every event before the failed one, drops the rest, pauses the consumer (for the retry's
// delay, or until resumed) and resets it to its ack floor: everything before the failed event is
// handled, everything from it on is delivered again (events of other entities after it may be
// delivered twice; at least once allows it). When the runner finds itself under a new pin (it just
// became the active replica), it resets the consumer to its ack floor before delivering, so events
// another replica left unacknowledged come first.
type shardRunner struct {
	p      *Projector
	rs     config.ReadSide
	shard  int
	client cospb.ReadSideHandlerServiceClient
	policy Policy
	log    *slog.Logger

	ctx      context.Context
	consumer jetstream.Consumer
	failing  bool              // the recorded state may say "failing"; cleared once failedAt is passed
	failedAt uint64            // stream sequence of the event that failed last
	trusted  bool              // pin is the pin under which this runner owns the shard's deliveries
	pin      string            // (the pin id the server puts on every message it delivers to us)
	attempts map[uint64]uint64 // failed deliveries per stream sequence (REPLAY_* policies count them)
	tasks    chan delivery     // to idle pool goroutines
	results  chan result
	wg       sync.WaitGroup // pool goroutines
}

// delivery is one event received from the consumer.
type delivery struct {
	msg  jetstream.Msg
	seq  uint64 // stream sequence
	lane string // the entity's subject
}

// result is the outcome of handing a delivery to the read side.
type result struct {
	d   delivery
	err error
}

// recovery is why a session ended and what must happen before the next one.
type recovery struct {
	takeover bool     // new pin: another replica may have left events unacknowledged
	pin      string   // the new pin
	from     uint64   // else: the earliest failed event; only events before it are still delivered
	decision Decision // for the failed event: Retry (after Delay) or Stop
}

func (s *shardRunner) run(ctx context.Context) error {
	s.ctx = ctx
	s.failing = true // a previous replica may have left a failure on record
	s.attempts = make(map[uint64]uint64)
	s.tasks = make(chan delivery)
	s.results = make(chan result, s.rs.MaxInFlight)
	defer func() {
		close(s.tasks)
		s.wg.Wait()
	}()
	c, err := Ensure(ctx, s.p.deps.JS, s.p.cfg.Layout, s.rs, s.shard)
	if err != nil {
		return err
	}
	s.consumer = c
	var (
		pending *recovery
		errs    int // consecutive failures to reach NATS
	)
	for ctx.Err() == nil {
		if pending != nil {
			// Never deliver again before the reset: later events of a failed entity would go first.
			if err := s.recover(ctx, pending); err != nil {
				s.log.Warn("recover the shard; retrying", "err", err)
				errs++
				sleep(ctx, natsRetryDelay(errs))
				s.ensure(ctx)
				continue
			}
			pending = nil
		}
		rec, err := s.session(ctx)
		if err != nil {
			s.log.Warn("consume; retrying", "err", err)
			errs++
			sleep(ctx, natsRetryDelay(errs))
			s.ensure(ctx)
			continue
		}
		errs = 0
		pending = rec
	}
	return nil
}

// ensure binds the consumer again, making it anew (from the first event) if it was deleted, say by an
// operator; errors are left to the next attempt to use it.
func (s *shardRunner) ensure(ctx context.Context) {
	if c, err := Ensure(ctx, s.p.deps.JS, s.p.cfg.Layout, s.rs, s.shard); err == nil {
		s.consumer = c
	}
}

// natsRetryDelay spaces out attempts to reach NATS: 100 ms doubling to 5 s.
func natsRetryDelay(attempt int) time.Duration {
	d := 100 * time.Millisecond
	for i := 1; i < attempt && d < 5*time.Second; i++ {
		d *= 2
	}
	return min(d, 5*time.Second)
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// session consumes until a recovery is needed (returned once nothing is in flight) or ctx ends.
func (s *shardRunner) session(ctx context.Context) (*recovery, error) {
	in := make(chan jetstream.Msg, s.rs.MaxInFlight)
	quit := make(chan struct{})
	cc, err := s.consumer.Consume(func(m jetstream.Msg) {
		select {
		case in <- m:
		case <-quit:
		}
	},
		jetstream.PullPriorityGroup(layout.ProjectorGroup),
		jetstream.PullMaxMessages(s.rs.MaxInFlight),
		// Pull more often than PinnedTTL so an idle but alive replica keeps its pin.
		jetstream.PullExpiry(PinnedTTL/2),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			s.log.Debug("consume", "err", err)
		}))
	if err != nil {
		return nil, fmt.Errorf("consume %s shard %d: %w", s.rs.ID, s.shard, err)
	}
	defer func() {
		close(quit)
		cc.Stop()
		<-cc.Closed()
	}()

	var (
		lanes    = make(map[string][]delivery) // lane → deliveries waiting behind the one in progress
		inflight int
		rec      *recovery
		closed   = cc.Closed()
	)
	// keep reports whether a delivery may still be handed to the read side: during a recovery only
	// events before the failed one are (the reset delivers the rest again).
	keep := func(d delivery) bool { return rec == nil || !rec.takeover && d.seq < rec.from }
	for {
		if rec != nil && inflight == 0 {
			return rec, nil
		}
		select {
		case <-ctx.Done():
			for ; inflight > 0; inflight-- {
				<-s.results
			}
			return nil, nil
		case <-closed:
			// The consumer or the connection went away under us: finish what is in flight, then
			// start over from the ack floor, so nothing unacknowledged is passed.
			s.log.Warn("consume ended; restarting the shard at its ack floor")
			closed = nil
			if rec == nil {
				rec = &recovery{takeover: true, pin: s.pin}
			}
		case m := <-in:
			if rec != nil {
				continue // delivered again after the reset
			}
			d, err := newDelivery(m)
			if err != nil {
				s.log.Error("message without JetStream metadata", "err", err)
				_ = m.Term()
				continue
			}
			if pin := m.Headers().Get(pinHeader); !s.trusted || pin != s.pin {
				rec = &recovery{takeover: true, pin: pin}
				continue
			}
			if q, busy := lanes[d.lane]; busy {
				lanes[d.lane] = append(q, d)
				continue
			}
			lanes[d.lane] = nil
			inflight++
			s.start(d)
		case r := <-s.results:
			inflight--
			ok := r.err == nil
			// A failure after the one being recovered from is delivered again after the reset: it
			// is decided then (its record would misdirect an operator's skip now).
			if !ok && ctx.Err() == nil && keep(r.d) {
				if decision := s.decide(r.d, r.err); decision.Action == Skip {
					ok = true
				} else {
					rec = &recovery{from: r.d.seq, decision: decision}
				}
			}
			if ok {
				s.succeeded(r.d.seq, rec != nil)
			}
			q := lanes[r.d.lane]
			if !ok || len(q) == 0 || !keep(q[0]) {
				delete(lanes, r.d.lane)
				continue
			}
			lanes[r.d.lane] = q[1:]
			inflight++
			s.start(q[0])
		}
	}
}

func newDelivery(m jetstream.Msg) (delivery, error) {
	meta, err := m.Metadata()
	if err != nil {
		return delivery{}, err
	}
	return delivery{msg: m, seq: meta.Sequence.Stream, lane: m.Subject()}, nil
}

// start hands d to an idle pool goroutine, or to a new one (the pool grows to the most deliveries
// ever in flight at once, about MaxInFlight).
func (s *shardRunner) start(d delivery) {
	select {
	case s.tasks <- d:
	default:
		s.wg.Add(1)
		go s.work(d)
	}
}

func (s *shardRunner) work(d delivery) {
	defer s.wg.Done()
	for ok := true; ok; d, ok = <-s.tasks {
		s.results <- result{d: d, err: s.deliver(d)}
	}
}

// deliver calls the read side with one event and acknowledges it on success.
func (s *shardRunner) deliver(d delivery) error {
	var w cospb.EventWrapper
	if err := proto.Unmarshal(d.msg.Data(), &w); err != nil {
		return fmt.Errorf("undecodable event at sequence %d: %w", d.seq, err)
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
	if err == nil && !resp.GetSuccessful() {
		err = errors.New("read side replied successful=false")
	}
	if err != nil {
		return err
	}
	if err := d.msg.Ack(); err != nil {
		s.log.Warn("ack", "sequence", d.seq, "err", err)
	}
	s.p.delivered.Add(1)
	return nil
}

// succeeded notes a handled (or skipped) event. The shard stops failing once the failed event, or
// one after it, succeeds outside a recovery: events of other entities that succeed meanwhile do not
// mean the failed one is past.
func (s *shardRunner) succeeded(seq uint64, recovering bool) {
	if len(s.attempts) > 0 {
		delete(s.attempts, seq)
	}
	if s.failing && !recovering && seq >= s.failedAt {
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

// decide applies the failure policy to an event whose delivery failed, records the failure for
// operators, and acknowledges the event when the policy skips it.
func (s *shardRunner) decide(d delivery, cause error) Decision {
	s.p.failures.Add(1)
	n, known := s.attempts[d.seq]
	if !known {
		// Another replica, or this one before a restart, may have tried it already.
		if st, err := s.p.deps.Status.Get(s.ctx, s.rs.ID, s.shard); err == nil && st.GetFailedSequence() == d.seq {
			n = st.GetAttempts()
		}
	}
	n++
	if len(s.attempts) >= maxTracked {
		clear(s.attempts) // events skipped by an operator are never seen again: forget them
	}
	s.attempts[d.seq] = n
	dec := s.policy.OnFailure(n)
	text := cause.Error()
	if len(text) > 1024 {
		text = text[:1024]
	}
	st := &natspb.ReadSideShardState{
		Failing:        dec.Action == Retry,
		Stopped:        dec.Action == Stop,
		LastError:      text,
		LastErrorTime:  timestamppb.Now(),
		FailedSequence: d.seq,
		Attempts:       n,
	}
	if err := s.p.deps.Status.Put(s.ctx, s.rs.ID, s.shard, st); err != nil {
		s.log.Warn("record failure state", "err", err)
	}
	s.failing, s.failedAt = dec.Action == Retry, d.seq
	log := s.log.With("sequence", d.seq, "attempt", n, "err", cause)
	switch dec.Action {
	case Retry:
		log.Warn("read side failed; retrying", "delay", dec.Delay)
	case Skip:
		log.Error("read side failed; skipping the event (failure policy)", "policy", s.policy.Kind)
		delete(s.attempts, d.seq)
		if err := d.msg.Ack(); err != nil {
			log.Warn("ack skipped event", "ack_err", err)
		}
	case Stop:
		log.Error("read side failed; stopping the shard until it is resumed (failure policy)", "policy", s.policy.Kind)
	}
	return dec
}

// recover prepares the consumer for the next session: paused for a retry's delay or until an
// operator resumes a stopped shard, and reset to its ack floor, so delivery starts again with the
// first event not acknowledged: after a failure the failed one (the session let every event before
// it finish), after a takeover whatever another replica left. Resetting to the ack floor rather than
// to the failed event keeps an operator's skip or restart that raced with the failure: both move
// the ack floor.
func (s *shardRunner) recover(ctx context.Context, rec *recovery) error {
	if !rec.takeover {
		until := Forever
		if rec.decision.Action == Retry {
			until = time.Now().Add(rec.decision.Delay)
		}
		if err := s.pauseUntil(ctx, until); err != nil {
			return err
		}
	}
	name := s.p.cfg.Layout.ReadSideConsumer(s.rs.ID, s.shard)
	if _, err := s.p.deps.JS.ResetConsumer(ctx, s.p.cfg.Layout.EventStream(), name); err != nil {
		return fmt.Errorf("reset consumer %s to its ack floor: %w", name, err)
	}
	if rec.takeover {
		s.trusted, s.pin = true, rec.pin
	}
	return nil
}

// pauseUntil pauses the consumer until the given time, unless it is paused longer already (an
// operator's pause or a stop must not be cut short by a retry's delay). Reading and setting the pause
// are two requests: an operator's pause landing between them is shortened to the retry's delay.
func (s *shardRunner) pauseUntil(ctx context.Context, until time.Time) error {
	stream, name := s.p.cfg.Layout.EventStream(), s.p.cfg.Layout.ReadSideConsumer(s.rs.ID, s.shard)
	info, err := s.consumer.Info(ctx)
	if err != nil {
		return fmt.Errorf("consumer %s: %w", name, err)
	}
	if info.Paused && info.Config.PauseUntil != nil && !info.Config.PauseUntil.Before(until) {
		return nil
	}
	if _, err := s.p.deps.JS.PauseConsumer(ctx, stream, name, until); err != nil {
		return fmt.Errorf("pause consumer %s: %w", name, err)
	}
	return nil
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

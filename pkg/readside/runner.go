package readside

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	natspb "github.com/cosnats/cosnats/gen/cosnats/v1"
	"github.com/cosnats/cosnats/pkg/config"
	"github.com/cosnats/cosnats/pkg/layout"
	"github.com/cosnats/cosnats/pkg/pinpull"
	"github.com/cosnats/cosnats/pkg/telemetry"
)

// maxTracked bounds the failed events whose attempts a runner remembers.
const maxTracked = 1024

// shardRunner delivers one shard of one read side: up to MaxInFlight events at once, one at a time
// per entity ("lanes" keyed by the entity's subject), in stream order within a lane.
//
// It owns the shard only while the server pins it (pinned priority group) and only while it can prove
// so (a lease renewed by every pull the server answers). It delivers in sessions: each begins with a
// reset of the consumer to its ack floor, after which the consumer numbers its deliveries 1, 2, 3, …;
// a session ends at the first thing it did not observe — a delivery missing or out of order, a
// redelivery, a heartbeat that stopped, a disconnect, a lost pin, a leader change — and the next one
// starts at the ack floor again. So an entity's revision n+1 is never handed over before revision n was
// handled.
//
// The runner never naks: with more than one event in flight the server would redeliver a failed event
// after later ones. When an event must be retried or the shard stopped, it lets the lanes finish every
// event before the failed one, drops the rest, pauses the consumer (for the retry's delay, or until
// resumed) and starts the next session at the ack floor.
type shardRunner struct {
	p        *Projector
	rs       config.ReadSide
	shard    int
	client   cospb.ReadSideHandlerServiceClient
	policy   Policy
	log      *slog.Logger
	name     string         // the consumer
	spanName string         // of a delivery
	held     atomic.Bool    // the shard is pinned to this runner (for the metrics reporter)
	ctl      chan *nats.Msg // control requests from the read-side manager

	ctx      context.Context
	pin      string    // the pin this runner holds, "" = standby
	lease    time.Time // the pin is surely held until then
	failing  bool      // the recorded state may say "failing"; cleared once failedAt is passed
	failedAt uint64    // stream sequence of the event that failed last
	attempts map[uint64]uint64
	tasks    chan delivery // to idle pool goroutines
	results  chan result
	wg       sync.WaitGroup // pool goroutines
}

func newShardRunner(p *Projector, rs config.ReadSide, shard int, client cospb.ReadSideHandlerServiceClient, policy Policy) *shardRunner {
	return &shardRunner{
		p: p, rs: rs, shard: shard, client: client, policy: policy,
		log:      p.deps.Logger.With("read_side", rs.ID, "shard", shard),
		name:     p.cfg.Layout.ReadSideConsumer(rs.ID, shard),
		spanName: telemetry.OpProcess + " " + p.cfg.Layout.EventStream(),
		ctl:      make(chan *nats.Msg, 8),
		attempts: make(map[uint64]uint64),
		tasks:    make(chan delivery),
		results:  make(chan result, rs.MaxInFlight),
	}
}

// delivery is one event received from the consumer.
type delivery struct {
	msg    *nats.Msg
	seq    uint64    // stream sequence
	lane   string    // the entity's subject
	stored time.Time // when the event was stored (for the lag metric)
	ctx    context.Context
}

// result is the outcome of handing a delivery to the read side.
type result struct {
	d   delivery
	err error
}

// recovery is what must happen before the next session after an event failed.
type recovery struct {
	from     uint64   // the failed event; only events before it are still delivered
	decision Decision // Retry (after Delay) or Stop
}

// errNotOwner means another replica holds the shard (or this one cannot prove it still does).
var errNotOwner = errors.New("the shard is not pinned to this replica")

func (s *shardRunner) run(ctx context.Context) error {
	s.ctx = ctx
	s.failing = true // a previous replica may have left a failure on record
	defer func() {
		close(s.tasks)
		s.wg.Wait()
	}()
	if err := s.bind(ctx); err != nil || ctx.Err() != nil {
		return err
	}
	s.p.onBound()
	var (
		rec  *recovery
		errs int // consecutive failures to reach NATS
	)
	retry := func(what string, err error) {
		errs++
		d := retryDelay(errs)
		s.log.Warn(what+"; retrying", "err", err, "retry_in", d)
		s.wait(ctx, d)
	}
	defer s.held.Store(false)
	for ctx.Err() == nil {
		s.held.Store(s.pin != "")
		if s.pin == "" {
			if err := s.standby(ctx); err != nil {
				// E.g. an operator deleted the consumer: make it again (from the first event).
				if _, eerr := Ensure(ctx, s.p.deps.JS, s.p.cfg.Layout, s.rs, s.shard); eerr != nil {
					err = errors.Join(err, eerr)
				}
				retry("wait for the shard", err)
			}
			continue
		}
		if err := s.prepare(ctx, rec); err != nil {
			if errors.Is(err, errNotOwner) {
				s.log.Info("the shard is held by another replica", "reason", err)
				s.pin, rec = "", nil
				continue
			}
			if !time.Now().Before(s.lease) {
				s.pin, rec = "", nil
			}
			retry("prepare the shard", err)
			continue
		}
		errs, rec = 0, nil
		end := s.session(ctx)
		if end.why != "" {
			s.p.restarts.Add(1)
		}
		switch {
		case end.lostPin:
			s.log.Warn("lost the shard; delivery stopped", "reason", end.why)
			s.pin = ""
		case end.why != "":
			s.log.Warn("delivery session ended; restarting at the ack floor", "reason", end.why)
		}
		rec = end.recovery
	}
	return nil
}

// bind makes sure the consumer exists (creating it from the first event when missing), retrying while
// NATS cannot answer; a consumer this projector cannot use is an error.
func (s *shardRunner) bind(ctx context.Context) error {
	for attempt := 1; ; attempt++ {
		_, err := Ensure(ctx, s.p.deps.JS, s.p.cfg.Layout, s.rs, s.shard)
		switch {
		case ctx.Err() != nil:
			return nil
		case err == nil || errors.Is(err, layout.ErrMismatch):
			return err
		}
		d := retryDelay(attempt)
		s.log.Warn("bind the read-side consumer; retrying", "err", err, "retry_in", d)
		s.wait(ctx, d)
	}
}

// retryDelay spaces out attempts to reach NATS: 100 ms doubling to 5 s.
func retryDelay(attempt int) time.Duration {
	d := 100 * time.Millisecond
	for i := 1; i < attempt && d < 5*time.Second; i++ {
		d *= 2
	}
	return min(d, 5*time.Second)
}

// wait sleeps for d or until ctx ends, answering control requests meanwhile (nothing is delivered
// between sessions, so an owner can confirm at once).
func (s *shardRunner) wait(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			return
		case <-ctx.Done():
			return
		case m := <-s.ctl:
			s.answer(m)
		}
	}
}

// answer confirms a control request meant for the pin this runner holds.
func (s *shardRunner) answer(m *nats.Msg) bool {
	if s.pin == "" || m.Header.Get(controlPinHeader) != s.pin {
		return false
	}
	if err := m.Respond([]byte("ok")); err != nil {
		s.log.Warn("answer a control request", "err", err)
	}
	return true
}

// standby pulls without a pin until the server pins this replica (a delivery carrying a pin id). What
// it receives then is dropped: the session that follows starts at the ack floor.
//
// A replica that went away may have left the consumer at its max_ack_pending: then the server delivers
// nothing, and so pins nobody, until those deliveries time out (AckWait). A standby that finds the pin
// free and deliveries outstanding resets the consumer to its ack floor so the shard is taken over
// within about PinnedTTL. (Should another replica be pinned in between, its session sees the reset and
// starts over at the ack floor: nothing is skipped.)
func (s *shardRunner) standby(ctx context.Context) error {
	// Control requests are for the owner; a standby drops them.
	pin, lease, err := pinpull.Standby(ctx, s.p.deps.Conn, s.p.cfg.Layout.EventStream(), s.name, layout.ProjectorGroup,
		standbyCheck, s.unstick, s.ctl)
	if err != nil || pin == "" {
		return err
	}
	s.pin, s.lease = pin, lease
	s.log.Info("the server pinned the shard to this replica")
	return nil
}

// standbyCheck is how often a standby looks for a shard left stuck by a replica that went away.
const standbyCheck = 2 * time.Second

// unstick resets the consumer to its ack floor when nobody holds the pin and deliveries are outstanding.
func (s *shardRunner) unstick(ctx context.Context) {
	c, err := s.p.deps.JS.Consumer(ctx, s.p.cfg.Layout.EventStream(), s.name)
	if err != nil {
		return
	}
	info := c.CachedInfo()
	if pinnedClient(info) != "" || info.NumAckPending == 0 {
		return
	}
	if _, err := s.p.deps.JS.ResetConsumer(ctx, s.p.cfg.Layout.EventStream(), s.name); err != nil {
		s.log.Debug("reset a consumer left by another replica", "err", err)
		return
	}
	s.log.Info("reset the shard's consumer to its ack floor: the replica that held it left deliveries outstanding", "outstanding", info.NumAckPending)
}

// prepare starts a session's worth of consumer state: after checking that this replica still holds the
// pin, it pauses the consumer when a failed event must wait, and resets the consumer to its ack floor.
// Resetting to the ack floor rather than to the failed event keeps an operator's skip or restart that
// raced with the failure: both move the ack floor.
func (s *shardRunner) prepare(ctx context.Context, rec *recovery) error {
	if !time.Now().Before(s.lease) {
		return fmt.Errorf("%w: its lease ran out", errNotOwner)
	}
	js, stream := s.p.deps.JS, s.p.cfg.Layout.EventStream()
	c, err := js.Consumer(ctx, stream, s.name)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		// Deleted under us (by an operator): standby makes it again and waits for its pin.
		return fmt.Errorf("%w: consumer %s was deleted", errNotOwner, s.name)
	}
	if err != nil {
		return fmt.Errorf("consumer %s: %w", s.name, err)
	}
	info := c.CachedInfo()
	if pinned := pinnedClient(info); pinned != s.pin {
		return fmt.Errorf("%w: pinned to %q", errNotOwner, pinned)
	}
	if rec != nil {
		until := Forever
		if rec.decision.Action == Retry {
			until = time.Now().Add(rec.decision.Delay)
		}
		// An operator's pause or a stop lasts longer than a retry's delay: keep it. (Reading and
		// setting the pause are two requests: an operator's pause landing between them is shortened.)
		if !(info.Paused && info.Config.PauseUntil != nil && !info.Config.PauseUntil.Before(until)) {
			if _, err := js.PauseConsumer(ctx, stream, s.name, until); err != nil {
				return fmt.Errorf("pause consumer %s: %w", s.name, err)
			}
		}
	}
	if _, err := js.ResetConsumer(ctx, stream, s.name); err != nil {
		return fmt.Errorf("reset consumer %s to its ack floor: %w", s.name, err)
	}
	return nil
}

// pinnedClient is the pin id the consumer's priority group is pinned to, "" when none.
func pinnedClient(info *jetstream.ConsumerInfo) string {
	for _, g := range info.PriorityGroups {
		if g.Group == layout.ProjectorGroup {
			return g.PinnedClientID
		}
	}
	return ""
}

// sessionEnd is how a session ended.
type sessionEnd struct {
	why      string    // "" = shutdown or a failed event (see recovery)
	lostPin  bool      // the pin is (or may be) another replica's now
	recovery *recovery // a failed event to wait for before the next session
}

// session delivers from the ack floor (the consumer was just reset) until something ends it, and
// returns once nothing it started is in flight.
func (s *shardRunner) session(ctx context.Context) sessionEnd {
	nc := s.p.deps.Conn
	pl, err := pinpull.New(nc, s.p.cfg.Layout.EventStream(), s.name, layout.ProjectorGroup, s.pin, s.rs.MaxInFlight)
	if err != nil {
		return sessionEnd{why: err.Error()}
	}
	defer pl.Close()
	pl.Lease = s.lease
	defer func() { s.lease = pl.Lease }()
	calls, cancelCalls := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelCalls()
	lost := s.p.conn.epoch()
	reconnects := nc.Stats().Reconnects
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()

	var (
		lanes    = make(map[string][]delivery) // lane → deliveries waiting behind the one in progress
		inflight int
		end      *sessionEnd // set once the session ends; it returns when nothing is in flight
		failed   *recovery   // a failed event: only events before it are still delivered
		drain    <-chan time.Time
	)
	// stop ends the session; with cancel, calls in flight are cancelled (their outcome no longer
	// counts as a read-side failure).
	stop := func(e sessionEnd, cancel bool) {
		if end == nil {
			end = &e
		}
		if cancel {
			cancelCalls()
		}
	}
	keep := func(d delivery) bool { return end == nil && (failed == nil || d.seq < failed.from) }
	startNext := func(lane string) {
		q := lanes[lane]
		if len(q) == 0 || !keep(q[0]) {
			delete(lanes, lane)
			return
		}
		lanes[lane] = q[1:]
		inflight++
		s.start(q[0])
	}
	if err := pl.Maintain(time.Now()); err != nil {
		return sessionEnd{why: err.Error()}
	}
	for {
		if (end != nil || failed != nil) && inflight == 0 {
			if end == nil {
				return sessionEnd{recovery: failed}
			}
			if end.recovery == nil {
				end.recovery = failed
			}
			return *end
		}
		select {
		case <-ctx.Done():
			if drain == nil {
				stop(sessionEnd{}, false)
				t := time.NewTimer(s.p.cfg.DrainTimeout)
				defer t.Stop()
				drain = t.C
			}
			ctx = context.Background() // from now on only the drain deadline matters
		case <-drain:
			stop(sessionEnd{}, true)
		case <-lost:
			lost = nil
			stop(sessionEnd{why: "disconnected from NATS", lostPin: !time.Now().Before(pl.Lease)}, true)
		case m := <-s.ctl:
			if s.answer(m) {
				stop(sessionEnd{why: "an operator paused, restarted or skipped the shard"}, false)
			}
		case m := <-pl.Msgs:
			if end != nil {
				continue // delivered again after the reset
			}
			ev, why := pl.Receive(m, time.Now())
			// Pull again as soon as the outstanding pulls run low, not at the next tick: waiting for
			// the tick capped delivery at one batch per shard per 100 ms.
			if ev == pinpull.Delivery && failed == nil {
				if err := pl.Maintain(time.Now()); err != nil {
					stop(sessionEnd{why: err.Error()}, true)
					continue
				}
			}
			switch ev {
			case pinpull.LostPin:
				stop(sessionEnd{why: "another replica holds the pin", lostPin: true}, true)
			case pinpull.Broken:
				stop(sessionEnd{why: why}, true)
			case pinpull.Delivery:
				meta, _ := m.Metadata()
				d := delivery{msg: m, seq: meta.Sequence.Stream, lane: m.Subject, stored: meta.Timestamp, ctx: calls}
				if failed != nil && d.seq >= failed.from {
					continue
				}
				if _, busy := lanes[d.lane]; busy {
					lanes[d.lane] = append(lanes[d.lane], d)
					continue
				}
				if !time.Now().Before(pl.Lease) {
					stop(sessionEnd{why: "the pin's lease ran out", lostPin: true}, true)
					continue
				}
				lanes[d.lane] = nil
				inflight++
				s.start(d)
			}
		case r := <-s.results:
			inflight--
			ok := r.err == nil
			// A failure after the one being recovered from is delivered again after the reset: it is
			// decided then (its record would misdirect an operator's skip now). A call cancelled because
			// the session ended is no failure of the read side.
			if !ok && end == nil && (failed == nil || r.d.seq < failed.from) {
				if decision := s.decide(r.d, r.err); decision.Action == Skip {
					ok = true
				} else {
					failed = &recovery{from: r.d.seq, decision: decision}
				}
			}
			if ok {
				s.succeeded(r.d.seq, failed != nil)
			}
			if !ok {
				delete(lanes, r.d.lane)
				continue
			}
			if end == nil && !time.Now().Before(pl.Lease) {
				stop(sessionEnd{why: "the pin's lease ran out", lostPin: true}, true)
				continue
			}
			startNext(r.d.lane)
		case now := <-tick.C:
			switch {
			case end != nil:
			case !now.Before(pl.Lease):
				stop(sessionEnd{why: "the pin's lease ran out", lostPin: true}, true)
			case pl.Quiet(now):
				stop(sessionEnd{why: "no heartbeat from the server"}, true)
			case nc.Stats().Reconnects != reconnects:
				stop(sessionEnd{why: "reconnected to NATS"}, true)
			case failed == nil:
				if err := pl.Maintain(now); err != nil {
					stop(sessionEnd{why: err.Error()}, true)
				}
			}
		}
	}
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

var ackBody = []byte("+ACK")

// deliver calls the read side with one event and acknowledges it on success.
func (s *shardRunner) deliver(d delivery) error {
	if err := d.ctx.Err(); err != nil {
		return err
	}
	// The delivery's span is a child of the command that stored the event (its trace context is in
	// the event's headers).
	ctx := d.ctx
	if s.p.deps.Tracer != nil {
		ctx = telemetry.Extract(ctx, d.msg.Header)
	}
	ctx, span := telemetry.StartMessaging(ctx, s.p.deps.Tracer, s.spanName,
		telemetry.OpProcess, trace.SpanKindConsumer, s.p.cfg.Layout.EventSubjects(), d.msg.Subject)
	defer span.End()
	var w cospb.EventWrapper
	if err := proto.Unmarshal(d.msg.Data, &w); err != nil {
		err = fmt.Errorf("undecodable event at sequence %d: %w", d.seq, err)
		telemetry.Fail(span, err)
		return err
	}
	if span.IsRecording() {
		span.SetAttributes(semconv.MessagingConsumerGroupName(s.name), telemetry.AttrReadSideID.String(s.rs.ID),
			telemetry.AttrShard.Int(s.shard), telemetry.AttrEntityID.String(w.GetMeta().GetEntityId()),
			telemetry.AttrRevision.Int64(int64(w.GetMeta().GetRevisionNumber())))
	}
	ctx, cancel := context.WithTimeout(ctx, s.rs.Timeout)
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
		telemetry.Fail(span, err)
		return err
	}
	if err := s.p.deps.Conn.Publish(d.msg.Reply, ackBody); err != nil {
		s.log.WarnContext(ctx, "ack", "sequence", d.seq, "err", err)
	}
	s.p.delivered.Add(1)
	if m := s.p.deps.Metrics; m != nil {
		m.ReadSideEvent(s.rs.ID, telemetry.EventOK)
		m.ReadSideHandled(ctx, s.rs.ID, time.Since(d.stored))
	}
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
	s.p.deps.Metrics.ReadSideEvent(s.rs.ID, telemetry.EventFailed)
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
		s.p.deps.Metrics.ReadSideEvent(s.rs.ID, telemetry.EventSkipped)
		log.Error("read side failed; skipping the event (failure policy)", "policy", s.policy.Kind)
		delete(s.attempts, d.seq)
		if err := s.p.deps.Conn.Publish(d.msg.Reply, ackBody); err != nil {
			log.Warn("ack skipped event", "ack_err", err)
		}
	case Stop:
		log.Error("read side failed; stopping the shard until it is resumed (failure policy)", "policy", s.policy.Kind)
	}
	return dec
}

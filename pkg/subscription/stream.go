package subscription

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	"github.com/cosnats/cosnats/pkg/eventlog"
)

// Reason says why a subscription ended.
type Reason uint8

// The reasons an EndError gives.
const (
	ShuttingDown Reason = iota + 1 // the gateway stops
	TooSlow                        // the client did not read: its buffer stayed full for StallTimeout
	Disconnected                   // NATS unreachable for MaxDisconnect, or the connection closed
	Unavailable                    // the event stream could not be read (consumer could not be made)
	Corrupt                        // a stored event could not be decoded
	ClientGone                     // the client cancelled, or its stream broke (Err says how)
)

// EndError is how a subscription ended and where its client may resume without a gap (events may
// repeat): Resume is a stream sequence for SubscribeAll (from_sequence), a revision for Subscribe
// (from_revision).
type EndError struct {
	Reason Reason
	Kind   Kind
	Resume uint64
	Err    error // the cause, when there is more to say
}

func (e *EndError) Error() string {
	what := map[Reason]string{ShuttingDown: "gateway shutting down", TooSlow: "subscriber too slow",
		Disconnected: "NATS unreachable", Unavailable: "event stream unavailable", Corrupt: "undecodable event", ClientGone: "client gone"}[e.Reason]
	if e.Err != nil {
		what += ": " + e.Err.Error()
	}
	return fmt.Sprintf("subscription ended (%s); resume from %s", what, Position(e.Kind, e.Resume))
}

func (e *EndError) Unwrap() error { return e.Err }

// Position names a resume position for a client: "sequence N" (from_sequence) or "revision N"
// (from_revision).
func Position(k Kind, n uint64) string {
	if k == KindEntity {
		return fmt.Sprintf("revision %d", n)
	}
	return fmt.Sprintf("sequence %d", n)
}

// Causes a subscription's context ends with; each becomes one Reason.
var (
	errUnsubscribed = errors.New("unsubscribed")
	errShutdown     = errors.New("gateway shutting down")
	errDisconnected = errors.New("NATS connection lost")
)

type slowError struct{ buffer int }

func (e slowError) Error() string { return fmt.Sprintf("a buffer of %d events stayed full", e.buffer) }

type corruptError struct {
	seq uint64
	err error
}

func (e corruptError) Error() string {
	return fmt.Sprintf("%v: sequence %d: %v", eventlog.ErrCorrupt, e.seq, e.err)
}
func (e corruptError) Unwrap() error { return eventlog.ErrCorrupt }

type streamError struct{ err error }

func (e streamError) Error() string { return "read the event stream: " + e.err.Error() }
func (e streamError) Unwrap() error { return e.err }

type sinkError struct{ err error }

func (e sinkError) Error() string { return "send to the client: " + e.err.Error() }
func (e sinkError) Unwrap() error { return e.err }

// Subscribe streams the events req selects into sink until the subscription ends. It returns nil when it
// was unsubscribed, ErrNotBound or ErrShuttingDown when it could not start, else an *EndError. ctx is the
// client's: its end ends the subscription.
func (h *Hub) Subscribe(ctx context.Context, req Request, sink Sink) error {
	b := h.binding.Load()
	if b == nil {
		return ErrNotBound
	}
	sctx, end := context.WithCancelCause(ctx)
	defer end(nil)
	s := &sub{key: subKey{req.Kind(), req.ID}, ctx: sctx, end: end, done: make(chan struct{}), seqPos: req.Entity == nil}
	if err := h.register(s); err != nil {
		return err
	}
	defer func() {
		h.unregister(s)
		close(s.done)
	}()
	// Listening before the consumer exists, so no loss of the connection goes unnoticed.
	status := b.nc.StatusChanged(nats.RECONNECTING, nats.CONNECTED, nats.CLOSED)
	defer b.nc.RemoveStatusListener(status)

	cons, it, minRevision, err := h.open(s, b, req)
	if err != nil {
		if sctx.Err() == nil {
			h.log.Warn("start a subscription", "subscription_id", req.ID, "kind", s.key.kind.String(), "err", err)
			end(streamError{err})
		}
		return h.ended(s)
	}
	if err := sink.Live(); err != nil {
		end(sinkError{err})
		h.bg.Go(func() {
			it.Stop()
			h.dropConsumer(b, cons)
		})
		return h.ended(s)
	}
	out := make(chan Event, h.cfg.Buffer)
	h.bg.Go(func() { h.pump(s, b, cons, it, minRevision, out) })
	h.bg.Go(func() { h.sendLoop(s, sink, out) })
	h.watch(s, b, status)
	// Unblocks the pump's Next; in the background, as it may wait for a consumer reset in progress.
	h.bg.Go(it.Stop)
	return h.ended(s)
}

// open creates the subscription's ordered consumer and sets where it resumes from when nothing was sent.
// It returns the revision below which the entity's events are skipped.
func (h *Hub) open(s *sub, b *binding, req Request) (jetstream.Consumer, jetstream.MessagesContext, uint32, error) {
	cfg := jetstream.OrderedConsumerConfig{
		DeliverPolicy:     jetstream.DeliverNewPolicy,
		InactiveThreshold: inactiveThreshold,
		MaxResetAttempts:  resetAttempts,
	}
	var minRevision uint32
	if req.Entity != nil {
		subject := h.cfg.Layout.EventSubject(*req.Entity)
		cfg.FilterSubjects = []string{subject}
		if req.FromRevision > 0 {
			// Revisions are per entity, sequences stream-wide: read the entity from its start and skip.
			cfg.DeliverPolicy, minRevision, s.base = jetstream.DeliverAllPolicy, req.FromRevision, uint64(req.FromRevision)
		} else {
			// The revision before "now", so that a subscription ended before any event can still say
			// where to resume; an event persisted between this read and the consumer is then repeated
			// on resume rather than lost.
			rev, err := lastRevision(s.ctx, b.nc, h.cfg.Layout.EventStream(), subject)
			if err != nil {
				return nil, nil, 0, err
			}
			s.base = uint64(rev) + 1
		}
	} else {
		cfg.FilterSubjects = []string{h.cfg.Layout.AllEventSubjects()}
		if req.FromSequence > 0 {
			cfg.DeliverPolicy, cfg.OptStartSeq, s.base = jetstream.DeliverByStartSequencePolicy, req.FromSequence, req.FromSequence
		}
	}
	cons, err := b.js.OrderedConsumer(s.ctx, h.cfg.Layout.EventStream(), cfg)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("create an ordered consumer on %s: %w", cfg.FilterSubjects[0], err)
	}
	if req.Entity == nil && req.FromSequence == 0 {
		// A new-events consumer starts after the stream's last message when it is created.
		if info := cons.CachedInfo(); info != nil {
			s.base = info.Delivered.Stream + 1
		}
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(h.cfg.Buffer))
	if err != nil {
		h.dropConsumer(b, cons)
		return nil, nil, 0, fmt.Errorf("read from the ordered consumer: %w", err)
	}
	return cons, it, minRevision, nil
}

// lastRevision is the revision of the entity's last event on subject (0 when it has none), read from
// the stream leader.
func lastRevision(ctx context.Context, nc *nats.Conn, stream, subject string) (uint32, error) {
	m, err := eventlog.LeaderGet(ctx, nc, stream, eventlog.GetRequest{LastFor: subject})
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read the last event on %s: %w", subject, err)
	}
	var w cospb.EventWrapper
	if err := proto.Unmarshal(m.Data, &w); err != nil {
		return 0, corruptError{m.Sequence, err}
	}
	return w.GetMeta().GetRevisionNumber(), nil
}

// pump moves events from the consumer into out. When out stays full for StallTimeout the client is not
// reading: the subscription ends rather than hold more. It deletes the consumer when it stops.
func (h *Hub) pump(s *sub, b *binding, cons jetstream.Consumer, it jetstream.MessagesContext, minRevision uint32, out chan<- Event) {
	defer func() {
		// Stopped first: a consumer deleted under a running iterator would be re-created by it.
		it.Stop()
		h.dropConsumer(b, cons)
	}()
	var stall *time.Timer
	for {
		msg, err := it.Next()
		if err != nil {
			s.end(streamError{err}) // no-op when the subscription ended first (that stopped Next)
			return
		}
		meta, err := msg.Metadata()
		if err != nil {
			s.end(streamError{err})
			return
		}
		var w cospb.EventWrapper
		if err := proto.Unmarshal(msg.Data(), &w); err != nil {
			s.end(corruptError{meta.Sequence.Stream, err})
			return
		}
		if w.GetMeta().GetRevisionNumber() < minRevision {
			continue
		}
		e := Event{Sequence: meta.Sequence.Stream, Wrapper: &w}
		select {
		case out <- e:
			continue
		default:
		}
		if stall == nil {
			stall = time.NewTimer(h.cfg.StallTimeout)
		} else {
			stall.Reset(h.cfg.StallTimeout)
		}
		select {
		case out <- e:
			stall.Stop()
		case <-stall.C:
			s.end(slowError{h.cfg.Buffer})
			return
		case <-s.ctx.Done():
			stall.Stop()
			return
		}
	}
}

// sendLoop hands buffered events to the client and records how far it got.
func (h *Hub) sendLoop(s *sub, sink Sink, out <-chan Event) {
	for {
		select {
		case e := <-out:
			if s.ctx.Err() != nil {
				return
			}
			if err := sink.Send(e); err != nil {
				s.end(sinkError{err})
				return
			}
			if s.seqPos {
				s.sent.Store(e.Sequence)
			} else {
				s.sent.Store(uint64(e.Wrapper.GetMeta().GetRevisionNumber()))
			}
		case <-s.ctx.Done():
			return
		}
	}
}

// watch waits for the subscription to end, and ends it when NATS stays unreachable for MaxDisconnect
// (the ordered consumer itself would wait for it indefinitely).
func (h *Hub) watch(s *sub, b *binding, status <-chan nats.Status) {
	var lost *time.Timer
	var lostC <-chan time.Time
	defer func() {
		if lost != nil {
			lost.Stop()
		}
	}()
	startLost := func() {
		if lost == nil {
			lost = time.NewTimer(h.cfg.MaxDisconnect)
			lostC = lost.C
		}
	}
	if !b.nc.IsConnected() {
		startLost()
	}
	for {
		select {
		case <-s.ctx.Done():
			return
		case st, ok := <-status:
			switch {
			case !ok || st == nats.CLOSED:
				status = nil // a closed channel would be ready on every turn
				s.end(fmt.Errorf("%w: the connection is closed", errDisconnected))
			case st == nats.RECONNECTING:
				startLost()
			case st == nats.CONNECTED && lost != nil:
				lost.Stop()
				lost, lostC = nil, nil
			}
		case <-lostC:
			s.end(fmt.Errorf("%w for %v", errDisconnected, h.cfg.MaxDisconnect))
		}
	}
}

// ended turns the cause that ended s into Subscribe's result, logging the endings an operator may want
// to know about (once, here).
func (h *Hub) ended(s *sub) error {
	cause := context.Cause(s.ctx)
	e := &EndError{Kind: s.key.kind, Resume: s.resume()}
	var (
		slow    slowError
		corrupt corruptError
		stream  streamError
		sink    sinkError
	)
	switch {
	case errors.Is(cause, errUnsubscribed):
		return nil
	case errors.Is(cause, errShutdown):
		e.Reason = ShuttingDown
	case errors.As(cause, &slow):
		e.Reason, e.Err = TooSlow, slow
		h.log.Info("subscriber cut off: not reading", "subscription_id", s.key.id, "kind", s.key.kind.String(), "resume", e.Resume)
	case errors.Is(cause, errDisconnected):
		e.Reason, e.Err = Disconnected, cause
		h.log.Warn("subscription ended: NATS unreachable", "subscription_id", s.key.id, "kind", s.key.kind.String(), "err", cause)
	case errors.As(cause, &corrupt):
		e.Reason, e.Err = Corrupt, corrupt
		h.log.Error("subscription ended on an undecodable event", "subscription_id", s.key.id, "sequence", corrupt.seq, "err", corrupt.err)
	case errors.As(cause, &stream):
		e.Reason, e.Err = Unavailable, stream
		if errors.Is(stream.err, jetstream.ErrMsgIteratorClosed) && errors.Is(stream.err, jetstream.ErrConnectionClosed) {
			e.Reason = Disconnected
		}
		h.log.Warn("subscription ended: event stream unavailable", "subscription_id", s.key.id, "kind", s.key.kind.String(), "err", stream.err)
	case errors.As(cause, &sink):
		e.Reason, e.Err = ClientGone, sink.err
	default: // the client's context: cancelled, or its deadline passed
		e.Reason, e.Err = ClientGone, cause
	}
	return e
}

// dropConsumer deletes a consumer that is no longer read, so the server does not keep it until its
// inactivity threshold. Without a connection that is left to the threshold.
func (h *Hub) dropConsumer(b *binding, cons jetstream.Consumer) {
	info := cons.CachedInfo()
	if info == nil || !b.nc.IsConnected() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), deleteTimeout)
	defer cancel()
	if err := b.js.DeleteConsumer(ctx, h.cfg.Layout.EventStream(), info.Name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		h.log.Debug("delete a subscription's consumer", "consumer", info.Name, "err", err)
	}
}

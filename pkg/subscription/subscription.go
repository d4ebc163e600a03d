// Package subscription streams persisted events to live subscribers: one entity's events (Subscribe) or
// every entity's (SubscribeAll). Each subscription reads the event stream through its own ordered
// JetStream consumer into a bounded buffer that a sender drains towards the client; a client that stops
// reading is cut off once that buffer stays full, so it never makes the gateway hold more than the
// buffer or slows anyone else. Every ending says where to resume (a stream sequence, or a revision for
// one entity), so a client can reconnect without a gap.
//
// A subscription lives on the gateway that accepted it, while Unsubscribe may reach any gateway: the
// one that receives it ends its own matching streams, then tells the others over core NATS
// (layout.UnsubscribeSubject, every gateway listening, no queue group).
//
// The package speaks in typed errors (ErrNotBound, ErrShuttingDown, *EndError); the gateway maps them
// to gRPC statuses.
package subscription

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	"github.com/cosnats/cosnats/pkg/entity"
	"github.com/cosnats/cosnats/pkg/layout"
)

// Defaults of Config's limits.
const (
	DefaultBuffer        = 128
	DefaultStallTimeout  = time.Second
	DefaultMaxDisconnect = 20 * time.Second
)

// Consumer settings. A consumer outlives its subscription only when it could not be deleted (NATS
// unreachable): the server removes it after inactiveThreshold. resetAttempts bounds how often the ordered
// consumer re-creates itself in one recovery (1 s doubling between attempts) before the subscription
// ends as unavailable.
const (
	inactiveThreshold = 30 * time.Second
	resetAttempts     = 5
	deleteTimeout     = 2 * time.Second
	flushTimeout      = 5 * time.Second
)

// Config are the subscription settings.
type Config struct {
	Layout layout.Layout
	// Buffer is how many events one subscription holds for its client (and reads ahead from the stream):
	// at most about twice this many events are in memory per subscription. Default DefaultBuffer.
	Buffer int
	// StallTimeout is how long the buffer may stay full — the client not reading — before the
	// subscription ends with a TooSlow EndError. Default DefaultStallTimeout.
	StallTimeout time.Duration
	// MaxDisconnect is how long a subscription waits for a lost NATS connection to come back before it
	// ends with a Disconnected EndError. Default DefaultMaxDisconnect.
	MaxDisconnect time.Duration
}

func (c Config) withDefaults() Config {
	if c.Buffer <= 0 {
		c.Buffer = DefaultBuffer
	}
	if c.StallTimeout <= 0 {
		c.StallTimeout = DefaultStallTimeout
	}
	if c.MaxDisconnect <= 0 {
		c.MaxDisconnect = DefaultMaxDisconnect
	}
	return c
}

// Kind tells the two sorts of subscription apart: Unsubscribe ends only Subscribe streams and
// UnsubscribeAll only SubscribeAll streams, even when they share an id.
type Kind uint8

// The kinds.
const (
	KindEntity Kind = iota + 1 // Subscribe: one entity
	KindAll                    // SubscribeAll: every entity
)

func (k Kind) String() string {
	switch k {
	case KindEntity:
		return "entity"
	case KindAll:
		return "all"
	}
	return "unknown"
}

func parseKind(s string) (Kind, bool) {
	switch s {
	case "entity":
		return KindEntity, true
	case "all":
		return KindAll, true
	}
	return 0, false
}

// Request is one subscription.
type Request struct {
	ID string // subscription id, never empty
	// Entity is the entity followed; nil follows every entity.
	Entity *entity.Key
	// FromRevision (Entity set): 0 = events persisted from now on; N > 0 = the entity's events from
	// revision N on, then live.
	FromRevision uint32
	// FromSequence (Entity nil): 0 = events persisted from now on; N > 0 = every event from stream
	// sequence N on, then live.
	FromSequence uint64
}

// Kind is the request's kind.
func (r Request) Kind() Kind {
	if r.Entity != nil {
		return KindEntity
	}
	return KindAll
}

// Event is one persisted event as a subscriber receives it.
type Event struct {
	Sequence uint64 // its stream sequence
	Wrapper  *cospb.EventWrapper
}

// Sink is where a subscription's events go: the client's stream.
type Sink interface {
	// Live is called once, when the subscription reads the stream: events persisted from then on reach
	// it. The gateway tells the client then (response headers).
	Live() error
	// Send hands one event to the client. It may block while the client does not read; it is never
	// called concurrently, and may still be called (and must then fail) after Subscribe returned.
	Send(Event) error
}

// ErrNotBound means the hub has no NATS connection yet: the gateway is starting.
var ErrNotBound = errors.New("not connected to NATS JetStream yet")

// ErrShuttingDown refuses a subscription that arrives while the gateway stops.
var ErrShuttingDown = errors.New("gateway shutting down")

// ErrNotPublished means an Unsubscribe ended this gateway's streams but could not tell the other
// gateways (NATS unreachable): retrying it is safe.
var ErrNotPublished = errors.New("the other gateways could not be told")

// Hub serves the subscriptions of one gateway. New starts nothing; Bind connects it; Shutdown ends every
// stream it serves.
type Hub struct {
	cfg     Config
	log     *slog.Logger
	binding atomic.Pointer[binding]

	mu      sync.Mutex
	subs    map[subKey]map[*sub]struct{}
	closing bool
	control *nats.Subscription

	// bg counts the goroutines that may outlive a Subscribe call by a little: the pump (it deletes the
	// consumer when it ends), the sender (a Send blocked on a client that does not read returns only
	// once the RPC is finished), the iterator's stopper.
	bg sync.WaitGroup
}

type binding struct {
	js jetstream.JetStream
	nc *nats.Conn
}

type subKey struct {
	kind Kind
	id   string
}

// New returns a hub that answers ErrNotBound until Bind.
func New(cfg Config, log *slog.Logger) *Hub {
	return &Hub{cfg: cfg.withDefaults(), log: log, subs: map[subKey]map[*sub]struct{}{}}
}

// Config is the hub's configuration, defaults applied.
func (h *Hub) Config() Config { return h.cfg }

// headerKind carries the kind of subscription an unsubscribe message ends; the body is its id.
const headerKind = "Cos-Subscription-Kind"

// Bind connects the hub to NATS: subscriptions start, and the unsubscribes of every gateway (this one
// included) reach it from when Bind returns. A control subscription that cannot be made is logged:
// streams served here can then be ended only through this gateway.
func (h *Hub) Bind(js jetstream.JetStream) {
	nc := js.Conn()
	sub, err := nc.Subscribe(h.cfg.Layout.UnsubscribeSubject(), h.onUnsubscribe)
	if err == nil {
		// Once the server has the interest, an Unsubscribe another gateway publishes reaches us.
		err = nc.FlushTimeout(flushTimeout)
	}
	if err != nil {
		h.log.Error("listen for unsubscribes from other gateways", "subject", h.cfg.Layout.UnsubscribeSubject(), "err", err)
	}
	h.mu.Lock()
	if h.closing {
		h.mu.Unlock()
		if sub != nil {
			_ = sub.Unsubscribe()
		}
		return
	}
	h.control = sub
	h.mu.Unlock()
	h.binding.Store(&binding{js: js, nc: nc})
}

// Shutdown refuses new subscriptions, ends every open one with a ShuttingDown EndError and waits, within
// ctx, until their calls returned and their consumers are released.
func (h *Hub) Shutdown(ctx context.Context) {
	h.mu.Lock()
	h.closing = true
	control := h.control
	h.control = nil
	var all []*sub
	for _, set := range h.subs {
		for s := range set {
			all = append(all, s)
		}
	}
	h.mu.Unlock()
	if control != nil {
		_ = control.Unsubscribe()
	}
	for _, s := range all {
		s.end(errShutdown)
	}
	for _, s := range all {
		select {
		case <-s.done:
		case <-ctx.Done():
			return
		}
	}
	// Every Subscribe call has returned and none can start, so nothing adds to bg any more.
	done := make(chan struct{})
	go func() { h.bg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// Unsubscribe ends the subscriptions of this kind and id: this gateway's before it returns, the other
// gateways' once they receive the message it publishes. No subscription with that id is fine.
func (h *Hub) Unsubscribe(ctx context.Context, kind Kind, id string) error {
	b := h.binding.Load()
	if b == nil {
		return ErrNotBound
	}
	if err := h.endLocal(ctx, subKey{kind, id}); err != nil {
		return err
	}
	msg := nats.NewMsg(h.cfg.Layout.UnsubscribeSubject())
	msg.Header.Set(headerKind, kind.String())
	msg.Data = []byte(id)
	if err := b.nc.PublishMsg(msg); err != nil {
		return fmt.Errorf("%w: %w", ErrNotPublished, err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, flushTimeout)
		defer cancel()
	}
	// Flushed, the message is with the server, which hands it to every gateway listening.
	if err := b.nc.FlushWithContext(ctx); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%w: %w", ErrNotPublished, err)
	}
	return nil
}

// endLocal ends this gateway's subscriptions with key k and waits until their calls returned.
func (h *Hub) endLocal(ctx context.Context, k subKey) error {
	h.mu.Lock()
	var found []*sub
	for s := range h.subs[k] {
		found = append(found, s)
	}
	h.mu.Unlock()
	for _, s := range found {
		s.end(errUnsubscribed)
	}
	for _, s := range found {
		select {
		case <-s.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// onUnsubscribe ends the local subscriptions an unsubscribe message names, without waiting for them
// (it runs on the connection's delivery goroutine).
func (h *Hub) onUnsubscribe(m *nats.Msg) {
	kind, ok := parseKind(m.Header.Get(headerKind))
	if !ok || len(m.Data) == 0 {
		h.log.Warn("ignoring a malformed unsubscribe message", "subject", m.Subject, "kind", m.Header.Get(headerKind))
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs[subKey{kind, string(m.Data)}] {
		s.end(errUnsubscribed)
	}
}

// register adds a subscription unless the hub is shutting down.
func (h *Hub) register(s *sub) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closing {
		return ErrShuttingDown
	}
	set := h.subs[s.key]
	if set == nil {
		set = map[*sub]struct{}{}
		h.subs[s.key] = set
	}
	set[s] = struct{}{}
	return nil
}

func (h *Hub) unregister(s *sub) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if set := h.subs[s.key]; set != nil {
		delete(set, s)
		if len(set) == 0 {
			delete(h.subs, s.key)
		}
	}
}

// sub is one open subscription. Whatever ends it first — an unsubscribe, the shutdown, the pump, the
// sender, the client — is the cause of its context.
type sub struct {
	key    subKey
	ctx    context.Context
	end    context.CancelCauseFunc
	done   chan struct{} // closed when its Subscribe call returns
	sent   atomic.Uint64 // position (revision or sequence) of the last event handed to the client
	base   uint64        // where to resume when nothing was handed over yet
	seqPos bool          // positions are stream sequences (else revisions)
}

// resume is the position to resume from: after the last event handed over, or where it started.
func (s *sub) resume() uint64 {
	if n := s.sent.Load(); n > 0 {
		return n + 1
	}
	return s.base
}

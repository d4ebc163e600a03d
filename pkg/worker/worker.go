// Package worker is the stateless command executor. It takes commands from the per-entity command
// subjects (one queue group shared by all workers) and from its own command subjects (where gateways
// send the entities placement gives it, so its cached states stay current), runs them with the
// application's write handler and appends the resulting events with an expected-sequence check, so any
// number of workers may run and JetStream alone decides which write for an entity wins.
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	natspb "github.com/cosnats/cosnats/gen/cosnats/v1"
	"github.com/cosnats/cosnats/pkg/command"
	"github.com/cosnats/cosnats/pkg/entity"
	"github.com/cosnats/cosnats/pkg/eventlog"
	"github.com/cosnats/cosnats/pkg/layout"
	"github.com/cosnats/cosnats/pkg/placement"
	"github.com/cosnats/cosnats/pkg/telemetry"
)

// AppendTimeout bounds one append once it has started. An append is never abandoned because the
// command's deadline passed: the reply wait at the gateway includes this time (see ReplyGrace).
const AppendTimeout = 2 * time.Second

// ReplyGrace is how long past a command's deadline its outcome may still be decided and sent.
const ReplyGrace = AppendTimeout + 500*time.Millisecond

// Config are the worker's settings.
type Config struct {
	Layout            layout.Layout
	NumShards         int
	Rules             command.Rules
	CommandTimeout    time.Duration // deadline of a command that does not carry one
	ConflictRetries   int
	IdempotencyWindow int
	MaxCommandBytes   int
	MaxConcurrent     int   // entities processed at once by this worker; 0 = 1024
	MaxPendingBytes   int64 // encoded commands held (waiting or running); 0 = 64 MiB
	MaxEntityQueue    int   // commands of one entity held behind the running one; 0 = 256
	// DrainTimeout bounds the drain when Run's context ends: queued commands not started by then are
	// answered "not processed"; 0 = 25 s.
	DrainTimeout time.Duration
	// ID names this worker on its own command subjects and heartbeats (layout.ValidWorkerID); "" = a
	// new unique id.
	ID string
	// HeartbeatInterval is how often the worker tells gateways it lives; 0 = placement.DefaultInterval.
	HeartbeatInterval time.Duration
}

// Validate checks the settings.
func (c Config) Validate() error {
	switch {
	case c.NumShards < 1:
		return errors.New("worker: NumShards must be >= 1")
	case c.CommandTimeout <= 0:
		return errors.New("worker: CommandTimeout must be > 0")
	case c.ConflictRetries < 0:
		return errors.New("worker: ConflictRetries must be >= 0")
	case c.MaxCommandBytes <= 0:
		return errors.New("worker: MaxCommandBytes must be > 0")
	case c.ID != "" && !layout.ValidWorkerID(c.ID):
		return fmt.Errorf("worker: ID %q must match [A-Za-z0-9_-]{1,64}", c.ID)
	}
	return nil
}

// Store is the event log as the worker uses it.
type Store interface {
	Last(ctx context.Context, k entity.Key) (eventlog.Head, error)
	LastAny(ctx context.Context, k entity.Key) (eventlog.Head, error) // possibly stale
	At(ctx context.Context, k entity.Key, seq uint64) (eventlog.Head, error)
	Append(ctx context.Context, a eventlog.Append) (uint64, error)
	MaxPayload() int64
}

// Cache is the state cache as the worker uses it. A cached head may be stale; the append's
// expected-sequence check catches that.
type Cache interface {
	Get(ctx context.Context, k entity.Key) (eventlog.Head, bool)
	Put(k entity.Key, h eventlog.Head, priorRevision uint32)
	Forget(k entity.Key)
}

// Deps are the worker's collaborators.
type Deps struct {
	Conn    *nats.Conn
	Store   Store
	Cache   Cache
	Handler command.Handler
	Logger  *slog.Logger
	Metrics *telemetry.Metrics // nil: none
	Tracer  trace.Tracer       // nil: tracing off
}

// Stats are counters for tests and metrics.
type Stats struct {
	Commands  uint64 // commands executed
	Appends   uint64 // successful appends
	Conflicts uint64 // appends rejected by the expected-sequence check
	Replays   uint64 // commands answered from the log because their id was already applied
	Reads     uint64 // entity heads read from the event log (cache misses, conflicts, confirmations)
	Stale     uint64 // commands decided again because a refusal or no-op rested on an outdated head
	Routed    uint64 // commands received on this worker's own subjects (placement)
}

// Worker executes commands. Create with New, start with Run.
type Worker struct {
	cfg  Config
	deps Deps

	commands, appends, conflicts, replays, reads, stale, routed atomic.Uint64
	inflight                                                    atomic.Int64 // accepted, not yet answered
	subscribed                                                  chan struct{}
	q                                                           *serializer
	tracer                                                      trace.Tracer
	processSpan, appendSpan                                     string // span names
}

// ErrStopped is returned by Dispatch when the worker does not run (any more): the command was not
// processed.
var ErrStopped = errors.New("worker stopped")

// New builds a worker; it starts nothing.
func New(cfg Config, deps Deps) (*Worker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.MaxConcurrent <= 0 {
		cfg.MaxConcurrent = 1024
	}
	if cfg.MaxPendingBytes <= 0 {
		cfg.MaxPendingBytes = 64 << 20
	}
	if cfg.MaxEntityQueue <= 0 {
		cfg.MaxEntityQueue = 256
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 25 * time.Second
	}
	if cfg.ID == "" {
		cfg.ID = nuid.Next()
	}
	q := newSerializer(limits{runs: cfg.MaxConcurrent, pendingBytes: cfg.MaxPendingBytes, entityQueue: cfg.MaxEntityQueue})
	w := &Worker{cfg: cfg, deps: deps, subscribed: make(chan struct{}), q: q, tracer: deps.Tracer,
		processSpan: telemetry.OpProcess + " " + cfg.Layout.CommandSubjects(),
		appendSpan:  telemetry.OpSend + " " + cfg.Layout.EventStream()}
	deps.Metrics.SetInflight(w.inflight.Load)
	return w, nil
}

// ID is the worker's name on its own command subjects and heartbeats.
func (w *Worker) ID() string { return w.cfg.ID }

// Subscribed is closed once the worker receives commands.
func (w *Worker) Subscribed() <-chan struct{} { return w.subscribed }

// Stats returns the counters so far.
func (w *Worker) Stats() Stats {
	return Stats{Commands: w.commands.Load(), Appends: w.appends.Load(), Conflicts: w.conflicts.Load(), Replays: w.replays.Load(), Reads: w.reads.Load(), Stale: w.stale.Load(), Routed: w.routed.Load()}
}

// Run serves commands until ctx ends, then drains: it stops taking commands from NATS (those already
// delivered to this worker are still taken), finishes the queued and running ones within DrainTimeout,
// answers those it could not start with "not processed", and flushes the replies.
func (w *Worker) Run(ctx context.Context) error {
	// Commands in progress finish even when ctx ends: an append that started is seen through.
	base := context.WithoutCancel(ctx)
	announcer, err := placement.NewAnnouncer(w.deps.Conn, w.cfg.Layout, w.cfg.ID, w.cfg.HeartbeatInterval, w.deps.Logger)
	if err != nil {
		return err
	}
	w.q.start(func(j job) { j.done(w.run(base, j)) })
	shared, err := w.subscribe(w.cfg.Layout.CommandSubjects(), w.cfg.Layout.WorkerQueue())
	if err != nil {
		return err
	}
	own, err := w.subscribe(w.cfg.Layout.WorkerCommandSubjects(w.cfg.ID), "")
	if err != nil {
		_ = shared.Unsubscribe()
		return err
	}
	if err := w.deps.Conn.Flush(); err != nil {
		_, _ = shared.Unsubscribe(), own.Unsubscribe()
		return fmt.Errorf("subscribe to commands: %w", err)
	}
	close(w.subscribed)
	w.deps.Logger.Info("worker taking commands", "subject", w.cfg.Layout.CommandSubjects(), "queue", w.cfg.Layout.WorkerQueue(),
		"own_subject", w.cfg.Layout.WorkerCommandSubjects(w.cfg.ID))
	beatCtx, stopBeats := context.WithCancel(ctx)
	beats := make(chan struct{})
	go func() {
		defer close(beats)
		_ = announcer.Run(beatCtx)
	}()
	<-ctx.Done()
	stopBeats()
	<-beats
	announcer.Leave() // gateways stop sending here before the subscriptions drain
	w.drain(base, shared, own)
	return nil
}

// subscribe takes commands on subject, in queue group queue unless it is "".
func (w *Worker) subscribe(subject, queue string) (*nats.Subscription, error) {
	sub, err := w.deps.Conn.QueueSubscribe(subject, queue, w.onMsg)
	if err != nil {
		return nil, fmt.Errorf("subscribe to commands on %s: %w", subject, err)
	}
	// onMsg only decodes and queues (or refuses), so messages pile up in the subscription only when the
	// process cannot even read what it is sent; then, past this bound, the client drops them (their
	// callers hear nothing and retry) rather than let memory grow without end.
	if err := sub.SetPendingLimits(-1, int(min(w.cfg.MaxPendingBytes, 1<<40))); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("set pending limits: %w", err)
	}
	return sub, nil
}

// drain is Run's shutdown: see Run.
func (w *Worker) drain(base context.Context, subs ...*nats.Subscription) {
	log := w.deps.Logger
	ctx, cancel := context.WithTimeout(base, w.cfg.DrainTimeout)
	defer cancel()
	log.Info("worker draining", "timeout", w.cfg.DrainTimeout)
	for _, sub := range subs {
		closed := sub.StatusChanged(nats.SubscriptionClosed)
		if !w.deps.Conn.IsConnected() {
			_ = sub.Unsubscribe() // nothing more can arrive, and no reply could leave
		} else if err := sub.Drain(); err != nil {
			log.Warn("drain the command subscription", "subject", sub.Subject, "err", err)
			_ = sub.Unsubscribe()
		} else {
			select {
			case <-closed:
			case <-ctx.Done():
				log.Warn("the command subscription did not drain in time", "subject", sub.Subject)
				_ = sub.Unsubscribe()
			}
		}
	}
	var refused int
	w.q.stop(ctx, func(j job) {
		refused++
		j.done(statusReply(status.Convert(errStopping)))
	})
	if refused > 0 {
		log.Warn("drain timed out: commands answered as not processed", "commands", refused)
	}
	if w.deps.Conn.IsConnected() {
		if err := w.deps.Conn.FlushTimeout(time.Second); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			log.Warn("flush replies", "err", err)
		}
	}
	log.Info("worker drained")
}

// onMsg takes a command from NATS; the reply goes back when the sender asked for one.
func (w *Worker) onMsg(m *nats.Msg) {
	respond := func(reply *natspb.CommandReply) {
		if m.Reply == "" {
			return
		}
		data, err := proto.Marshal(reply)
		if err == nil {
			err = m.Respond(data)
		}
		if err != nil {
			w.deps.Logger.Warn("reply to command", "subject", m.Subject, "err", err)
		}
	}
	req, err := decode(m.Data)
	if err != nil {
		respond(w.reply(nil, false, err))
		return
	}
	var parent trace.SpanContext
	if w.tracer != nil {
		parent = trace.SpanContextFromContext(telemetry.Extract(context.Background(), m.Header))
	}
	// A command on this worker's own subjects joins the queue of its entity's command subject.
	subject := w.cfg.Layout.CommandSubjectOf(m.Subject)
	if subject != m.Subject {
		w.routed.Add(1)
	}
	if err := w.submit(job{subject: subject, req: req, size: int64(len(m.Data)), done: respond, parent: parent}, false); err != nil {
		respond(statusReply(status.Convert(err)))
	}
}

// submit queues j, counting it in flight until it is answered.
func (w *Worker) submit(j job, inline bool) error {
	w.inflight.Add(1)
	done := j.done
	j.done = func(r *natspb.CommandReply) {
		w.inflight.Add(-1)
		done(r)
	}
	err := w.q.submit(j, inline)
	if err != nil {
		w.inflight.Add(-1)
	}
	return err
}

// run executes a queued command inside the span of its processing, a child of the sender's span.
func (w *Worker) run(base context.Context, j job) *natspb.CommandReply {
	if j.parent.IsValid() {
		base = trace.ContextWithRemoteSpanContext(base, j.parent)
	}
	ctx, span := telemetry.StartMessaging(base, w.tracer, w.processSpan, telemetry.OpProcess, trace.SpanKindConsumer,
		w.cfg.Layout.CommandSubjects(), j.subject)
	defer span.End()
	if span.IsRecording() {
		span.SetAttributes(telemetry.AttrEntityID.String(j.req.GetEntityId()),
			telemetry.AttrCommandID.String(j.req.GetCommandId()),
			telemetry.AttrCommandType.String(command.TypeName(j.req.GetCommand().GetTypeUrl())))
	}
	resp, replayed, err := w.execute(ctx, j.subject, j.req)
	if span.IsRecording() {
		if err != nil {
			telemetry.Fail(span, err)
		} else {
			span.SetAttributes(telemetry.AttrRevision.Int64(int64(resp.GetMeta().GetRevisionNumber())), telemetry.AttrReplayed.Bool(replayed))
		}
	}
	return w.reply(resp, replayed, err)
}

// Dispatch runs a command in this process, as if it had arrived on subject: the gateway uses it when
// it shares the process with the worker, saving the NATS round trip and the request's encoding.
// Commands for one entity from here and from NATS share one queue. When the entity has nothing in
// progress the command runs on the caller's goroutine (no hand-off to the pool and back); req must not
// be changed by the caller afterwards.
func (w *Worker) Dispatch(ctx context.Context, subject string, req *natspb.CommandRequest) (*natspb.CommandReply, error) {
	select {
	case <-w.subscribed:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	ch := make(chan *natspb.CommandReply, 1)
	err := w.submit(job{subject: subject, req: req, size: int64(proto.Size(req)), done: func(r *natspb.CommandReply) { ch <- r },
		parent: trace.SpanContextFromContext(ctx)}, true)
	if errors.Is(err, errStopping) {
		return nil, ErrStopped
	}
	if err != nil {
		return statusReply(status.Convert(err)), nil
	}
	select {
	case r := <-ch:
		return r, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Execute runs one encoded CommandRequest that arrived on subject and returns the reply.
func (w *Worker) Execute(ctx context.Context, subject string, data []byte) *natspb.CommandReply {
	req, err := decode(data)
	if err != nil {
		return w.reply(nil, false, err)
	}
	return w.reply(w.execute(ctx, subject, req))
}

// reply turns execute's results into a CommandReply.
func (w *Worker) reply(resp *cospb.ProcessCommandResponse, replayed bool, err error) *natspb.CommandReply {
	if err != nil {
		st, _ := status.FromError(err)
		r := statusReply(st)
		var he *command.HandlerError
		r.HandlerError = errors.As(err, &he)
		return r
	}
	return &natspb.CommandReply{Outcome: &natspb.CommandReply_Response{Response: resp}, Replayed: replayed}
}

func statusReply(st *status.Status) *natspb.CommandReply {
	b, err := proto.Marshal(st.Proto())
	if err != nil {
		b, _ = proto.Marshal(status.New(codes.Internal, "internal error").Proto())
	}
	return &natspb.CommandReply{Outcome: &natspb.CommandReply_Status{Status: b}}
}

func decode(data []byte) (*natspb.CommandRequest, error) {
	var req natspb.CommandRequest
	if err := proto.Unmarshal(data, &req); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "malformed command request: %v", err)
	}
	return &req, nil
}

// check validates a command request that arrived on subject (a NATS client may send anything).
func (w *Worker) check(subject string, req *natspb.CommandRequest) (entity.Key, error) {
	key, err := entity.NewKey(req.GetEntityId(), w.cfg.NumShards)
	if err != nil {
		return entity.Key{}, status.Error(codes.InvalidArgument, err.Error())
	}
	if !w.cfg.Layout.KeySubjectMatches(key, subject) {
		return entity.Key{}, status.Errorf(codes.InvalidArgument,
			"command for entity %q must be sent on %s, not %s", key.ID, w.cfg.Layout.CommandSubject(key), subject)
	}
	if req.GetCommand().GetTypeUrl() == "" {
		return entity.Key{}, status.Error(codes.InvalidArgument, "missing command")
	}
	if n := proto.Size(req.GetCommand()); n > w.cfg.MaxCommandBytes {
		return entity.Key{}, status.Errorf(codes.InvalidArgument, "command is %d bytes, the limit is %d", n, w.cfg.MaxCommandBytes)
	}
	if id := req.GetCommandId(); id != "" {
		if err := command.ValidateCommandID(id); err != nil {
			return entity.Key{}, status.Error(codes.InvalidArgument, err.Error())
		}
	} else {
		req.CommandId = nuid.Next() // still lets this worker settle a timed-out append exactly once
	}
	return key, nil
}

func (w *Worker) execute(base context.Context, subject string, req *natspb.CommandRequest) (*cospb.ProcessCommandResponse, bool, error) {
	key, err := w.check(subject, req)
	if err != nil {
		return nil, false, err
	}
	w.commands.Add(1)
	deadline := time.Now().Add(w.cfg.CommandTimeout)
	if d := req.GetDeadlineUnixNano(); d > 0 && time.Unix(0, d).Before(deadline) {
		deadline = time.Unix(0, d)
	}
	ctx, cancel := context.WithDeadline(base, deadline)
	defer cancel()
	if ctx.Err() != nil {
		return nil, false, w.unchecked(ctx, req, codes.DeadlineExceeded, "the command's deadline passed before a worker took it", nil)
	}
	creq := command.Request{
		EntityID:          key.ID,
		Command:           req.GetCommand(),
		PropagatedHeaders: req.GetPropagatedHeaders(),
		PersistedHeaders:  req.GetPersistedHeaders(),
	}
	head, err := w.load(ctx, key, true)
	// A head from the cache or from any replica may be stale. An append's expected-sequence check
	// catches that; a handler's refusal or a command without events never reaches one, so before either
	// is answered the head is confirmed from the stream leader (leader).
	leader := false
	for attempt := 0; ; attempt++ {
		if err != nil {
			code := codes.Unavailable
			if ctx.Err() != nil {
				code = codes.DeadlineExceeded
			}
			return nil, false, w.unchecked(ctx, req, code, "loading the entity failed", err)
		}
		if seq, ok := head.Applied(req.GetCommandId()); ok {
			return w.replay(ctx, key, head, req.GetCommandId(), seq)
		}
		prior := command.Prior{State: head.State, Meta: head.Meta}
		if head.Seq == 0 {
			prior = command.FreshPrior(key.ID)
		}
		res, err := command.Run(ctx, w.deps.Handler, w.cfg.Rules, prior, creq)
		// (A command whose deadline passed is answered with that; no state decided it.)
		timedOut := ctx.Err() != nil || status.Code(err) == codes.DeadlineExceeded || status.Code(err) == codes.Canceled
		if (err != nil || len(res.Events) == 0) && !leader && !timedOut {
			fresh, lerr := w.load(ctx, key, false)
			if lerr != nil {
				code := codes.Unavailable
				if ctx.Err() != nil {
					code = codes.DeadlineExceeded
				}
				return nil, false, w.unchecked(ctx, req, code, "confirming the entity's state failed", lerr)
			}
			leader = true
			if fresh.Seq != head.Seq {
				// The handler decided on an outdated state: decide again on the current one.
				w.stale.Add(1)
				w.deps.Cache.Forget(key)
				head = fresh
				continue
			}
		}
		if err != nil {
			return nil, false, err
		}
		if len(res.Events) == 0 {
			return &cospb.ProcessCommandResponse{State: prior.State, Meta: prior.Meta}, false, nil
		}
		app, err := w.prepare(key, head, req.GetCommandId(), res)
		if err != nil {
			return nil, false, err
		}
		if ctx.Err() != nil {
			return nil, false, status.Error(codes.DeadlineExceeded, "the command's deadline passed before its events were persisted; nothing was persisted")
		}
		seq, aerr := w.append(ctx, base, app)
		var dup *eventlog.DuplicateError
		if errors.As(aerr, &dup) {
			return w.duplicate(ctx, key, req.GetCommandId(), dup.Seq)
		}
		if aerr == nil {
			w.appends.Add(1)
			last := res.Events[len(res.Events)-1]
			w.deps.Cache.Put(key, eventlog.Head{Seq: seq, State: last.GetResultingState(), Meta: last.GetMeta(), CommandID: app.CommandID, Recent: app.Recent}, head.Revision())
			return &cospb.ProcessCommandResponse{State: last.GetResultingState(), Meta: last.GetMeta()}, false, nil
		}
		if errors.Is(aerr, eventlog.ErrConflict) {
			w.conflicts.Add(1)
			w.deps.Cache.Forget(key)
			if attempt >= w.cfg.ConflictRetries {
				return nil, false, status.Errorf(codes.Aborted,
					"entity %q changed concurrently %d times in a row; nothing was persisted, retry the command", key.ID, attempt+1)
			}
			head, err = w.load(ctx, key, false)
			leader = true
			continue
		}
		return w.settle(base, key, req.GetCommandId(), aerr)
	}
}

// append stores the events, waiting out a stream that refuses atomic batches for load (nothing is
// stored then) while the command's deadline allows. Each attempt has its own AppendTimeout.
func (w *Worker) append(ctx, base context.Context, app eventlog.Append) (uint64, error) {
	for attempt := 0; ; attempt++ {
		actx, cancel := context.WithTimeout(base, AppendTimeout)
		actx, span := telemetry.StartMessaging(actx, w.tracer, w.appendSpan, telemetry.OpSend, trace.SpanKindProducer,
			w.cfg.Layout.EventSubjects(), w.cfg.Layout.EventSubject(app.Key))
		start := time.Now()
		seq, err := w.deps.Store.Append(actx, app)
		w.deps.Metrics.Append(actx, time.Since(start), errors.Is(err, eventlog.ErrConflict))
		if span.IsRecording() {
			span.SetAttributes(semconv.MessagingBatchMessageCount(len(app.Events)))
			telemetry.Fail(span, err)
		}
		span.End()
		cancel()
		if !errors.Is(err, eventlog.ErrBusy) || !busyWait(ctx, attempt) {
			return seq, err
		}
	}
}

// busyWait backs off before retrying an append the stream refused for load. It reports false when the
// command's deadline leaves no time to wait.
func busyWait(ctx context.Context, attempt int) bool {
	d := time.Duration(1+rand.IntN(1<<min(attempt, 5))) * time.Millisecond
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// prepare marshals the events and checks they fit in one NATS message each.
func (w *Worker) prepare(key entity.Key, head eventlog.Head, commandID string, res command.Result) (eventlog.Append, error) {
	if n := len(res.Events); n > eventlog.MaxBatch {
		return eventlog.Append{}, status.Errorf(codes.InvalidArgument,
			"the command produced %d events; at most %d are stored per command (one atomic batch); nothing was persisted", n, eventlog.MaxBatch)
	}
	app := eventlog.Append{Key: key, ExpectedSeq: head.Seq, CommandID: commandID, Events: make([][]byte, len(res.Events))}
	if head.Seq > 0 && head.CommandID != "" {
		app.Recent = head.Recent.Push(head.CommandID, head.Seq, w.cfg.IdempotencyWindow)
	}
	limit := w.deps.Store.MaxPayload() - int64(eventlog.HeaderBytes(commandID, app.Recent))
	for i, ev := range res.Events {
		b, err := proto.Marshal(ev)
		if err != nil {
			return eventlog.Append{}, status.Errorf(codes.InvalidArgument, "event %d cannot be encoded: %v", i+1, err)
		}
		if int64(len(b)) > limit {
			return eventlog.Append{}, status.Errorf(codes.InvalidArgument,
				"event %d with its resulting state is %d bytes, over the %d-byte message limit; nothing was persisted", i+1, len(b), limit)
		}
		app.Events[i] = b
	}
	return app, nil
}

// load reads an entity's head. A first load may be stale — from the cache, else from any replica of
// the log — because the append's expected-sequence check refuses a stale head. After such a conflict,
// and to confirm the head of a command that stores nothing (first = false), it reads from the stream
// leader, which has every acknowledged append.
func (w *Worker) load(ctx context.Context, key entity.Key, first bool) (eventlog.Head, error) {
	if !first {
		w.reads.Add(1)
		return w.deps.Store.Last(ctx, key)
	}
	h, ok := w.deps.Cache.Get(ctx, key)
	w.deps.Metrics.CacheRequest(ok)
	if ok {
		return h, nil
	}
	w.reads.Add(1)
	return w.deps.Store.LastAny(ctx, key)
}

// replay answers a command whose id was already applied with the result it had then. When that result
// cannot be read, the caller hears that the outcome is unknown to this attempt (it was applied, but a
// retry is needed to learn the result).
func (w *Worker) replay(ctx context.Context, key entity.Key, head eventlog.Head, commandID string, seq uint64) (*cospb.ProcessCommandResponse, bool, error) {
	w.replays.Add(1)
	if seq != head.Seq {
		h, err := w.deps.Store.At(ctx, key, seq)
		if err != nil {
			w.deps.Logger.WarnContext(ctx, "read the result of an applied command", "entity", key.ID, "command_id", commandID, "sequence", seq, "err", err)
			return nil, false, status.Errorf(codes.Unknown,
				"command %s was applied, but its result could not be read from the event store; retry with the same %s to get it", commandID, CommandIDKey)
		}
		head = h
	}
	return &cospb.ProcessCommandResponse{State: head.State, Meta: head.Meta}, true, nil
}

// duplicate answers a command the event store recognised as already stored (its id is in the stream's
// deduplication window though no longer among the entity's recent commands): with its original result
// when the store said where it is, else when the entity's head still knows it; otherwise ALREADY_EXISTS,
// a definite answer without the original result.
func (w *Worker) duplicate(ctx context.Context, key entity.Key, commandID string, seq uint64) (*cospb.ProcessCommandResponse, bool, error) {
	if seq > 0 {
		return w.replay(ctx, key, eventlog.Head{}, commandID, seq)
	}
	if head, err := w.deps.Store.Last(ctx, key); err == nil {
		if s, ok := head.Applied(commandID); ok {
			return w.replay(ctx, key, head, commandID, s)
		}
	}
	w.replays.Add(1)
	return nil, false, status.Errorf(codes.AlreadyExists,
		"command %s was already applied (the event store remembers its id); its original result is no longer at hand, nothing was stored again", commandID)
}

// settle decides an append that failed without a conflict. A definite failure stored nothing. Otherwise
// the log is asked whether the command landed; if that cannot be told, the caller hears exactly that.
func (w *Worker) settle(base context.Context, key entity.Key, commandID string, aerr error) (*cospb.ProcessCommandResponse, bool, error) {
	if eventlog.IsDefinite(aerr) {
		return nil, false, w.unavailable(base, "persist events", aerr)
	}
	ctx, cancel := context.WithTimeout(base, AppendTimeout/4)
	defer cancel()
	head, err := w.deps.Store.Last(ctx, key)
	if err == nil {
		if seq, ok := head.Applied(commandID); ok {
			return w.replay(ctx, key, head, commandID, seq)
		}
	}
	w.deps.Logger.WarnContext(ctx, "append outcome unknown", "entity", key.ID, "command_id", commandID, "err", aerr)
	return nil, false, status.Errorf(codes.Unknown,
		"the outcome of command %s is unknown: the event store did not confirm the append in time; retry with the same %s to learn it", commandID, CommandIDKey)
}

// CommandIDKey is the gRPC metadata key of the command id, named in replies that ask for a retry.
const CommandIDKey = "x-cos-command-id"

// unchecked answers a command that failed before the log was asked whether its id was already applied.
// This attempt stored nothing; but when the id is the caller's, an earlier attempt with it may have, so
// only a retry can tell: the outcome is unknown. An id the gateway made up has no earlier attempt.
func (w *Worker) unchecked(ctx context.Context, req *natspb.CommandRequest, code codes.Code, what string, err error) error {
	if err != nil {
		w.deps.Logger.WarnContext(ctx, "command failed before its idempotency check", "step", what, "command_id", req.GetCommandId(), "err", err)
	}
	if !req.GetCommandIdGenerated() {
		return status.Errorf(codes.Unknown,
			"%s, so whether an earlier attempt of command %s was applied is unknown; this attempt stored nothing: retry with the same %s",
			what, req.GetCommandId(), CommandIDKey)
	}
	if code == codes.Unavailable {
		return status.Errorf(code, "%s: the event store is unavailable; nothing was persisted", what)
	}
	return status.Errorf(code, "%s; nothing was persisted", what)
}

func (w *Worker) unavailable(ctx context.Context, what string, err error) error {
	w.deps.Logger.ErrorContext(ctx, "command failed", "step", what, "err", err)
	return status.Errorf(codes.Unavailable, "%s failed: the event store is unavailable; nothing was persisted", what)
}

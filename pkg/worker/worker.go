// Package worker is the stateless command executor. It takes commands from the per-entity command
// subjects (one queue group shared by all workers), runs them with the application's write handler and
// appends the resulting events with an expected-sequence check, so any number of workers may run and
// JetStream alone decides which write for an entity wins.
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	natspb "github.com/cosnats/cosnats/gen/cosnats/v1"
	"github.com/cosnats/cosnats/pkg/command"
	"github.com/cosnats/cosnats/pkg/entity"
	"github.com/cosnats/cosnats/pkg/eventlog"
	"github.com/cosnats/cosnats/pkg/layout"
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
	MaxConcurrent     int // entities processed at once by this worker; 0 = 1024
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
	}
	return nil
}

// Store is the event log as the worker uses it.
type Store interface {
	Last(ctx context.Context, k entity.Key) (eventlog.Head, error)
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
}

// Stats are counters for tests and metrics.
type Stats struct {
	Commands  uint64 // commands executed
	Appends   uint64 // successful appends
	Conflicts uint64 // appends rejected by the expected-sequence check
	Replays   uint64 // commands answered from the log because their id was already applied
	Reads     uint64 // entity heads read from the event log (cache misses and conflicts)
}

// Worker executes commands. Create with New, start with Run.
type Worker struct {
	cfg  Config
	deps Deps

	commands, appends, conflicts, replays, reads atomic.Uint64
	subscribed                                   chan struct{}
	q                                            *serializer
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
	return &Worker{cfg: cfg, deps: deps, subscribed: make(chan struct{}), q: newSerializer(cfg.MaxConcurrent)}, nil
}

// Subscribed is closed once the worker receives commands.
func (w *Worker) Subscribed() <-chan struct{} { return w.subscribed }

// Stats returns the counters so far.
func (w *Worker) Stats() Stats {
	return Stats{Commands: w.commands.Load(), Appends: w.appends.Load(), Conflicts: w.conflicts.Load(), Replays: w.replays.Load(), Reads: w.reads.Load()}
}

// Run serves commands until ctx ends, then stops taking new ones and finishes those in progress.
func (w *Worker) Run(ctx context.Context) error {
	// Commands in progress finish even when ctx ends: an append that started is seen through.
	base := context.WithoutCancel(ctx)
	w.q.start(func(j job) { j.done(w.reply(w.execute(base, j.subject, j.req))) })
	sub, err := w.deps.Conn.QueueSubscribe(w.cfg.Layout.CommandSubjects(), w.cfg.Layout.WorkerQueue(), w.onMsg)
	if err != nil {
		return fmt.Errorf("subscribe to commands: %w", err)
	}
	// Unlimited pending: back-pressure comes from the concurrency bound, not from dropped commands.
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		return fmt.Errorf("set pending limits: %w", err)
	}
	if err := w.deps.Conn.Flush(); err != nil {
		return fmt.Errorf("subscribe to commands: %w", err)
	}
	close(w.subscribed)
	w.deps.Logger.Info("worker taking commands", "subject", w.cfg.Layout.CommandSubjects(), "queue", w.cfg.Layout.WorkerQueue())
	<-ctx.Done()
	if err := sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		w.deps.Logger.Warn("unsubscribe from commands", "err", err)
	}
	w.q.stop()
	return nil
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
	if !w.q.enqueue(job{subject: m.Subject, req: req, done: respond}) {
		respond(statusReply(status.New(codes.Unavailable, "the worker is stopping; the command was not processed")))
	}
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
	if !w.q.enqueueInline(job{subject: subject, req: req, done: func(r *natspb.CommandReply) { ch <- r }}) {
		return nil, ErrStopped
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
		return statusReply(st)
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
		return nil, false, status.Error(codes.DeadlineExceeded, "the command's deadline passed before a worker took it; nothing was persisted")
	}
	creq := command.Request{
		EntityID:          key.ID,
		Command:           req.GetCommand(),
		PropagatedHeaders: req.GetPropagatedHeaders(),
		PersistedHeaders:  req.GetPersistedHeaders(),
	}
	head, err := w.load(ctx, key, true)
	for attempt := 0; ; attempt++ {
		if err != nil {
			return nil, false, w.notPersisted(ctx, "load entity", err)
		}
		if seq, ok := head.Applied(req.GetCommandId()); ok {
			return w.replay(ctx, key, head, seq)
		}
		prior := command.Prior{State: head.State, Meta: head.Meta}
		if head.Seq == 0 {
			prior = command.FreshPrior(key.ID)
		}
		res, err := command.Run(ctx, w.deps.Handler, w.cfg.Rules, prior, creq)
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
		seq, err := w.deps.Store.Append(actx, app)
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
	app := eventlog.Append{Key: key, ExpectedSeq: head.Seq, CommandID: commandID, Events: make([][]byte, len(res.Events))}
	if head.Seq > 0 && head.CommandID != "" {
		app.Recent = head.Recent.Push(head.CommandID, head.Seq, w.cfg.IdempotencyWindow)
	}
	limit := w.deps.Store.MaxPayload() - 1024 // room for headers
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

// load reads an entity's head: from the cache when allowed, else from the event log.
func (w *Worker) load(ctx context.Context, key entity.Key, cached bool) (eventlog.Head, error) {
	if cached {
		if h, ok := w.deps.Cache.Get(ctx, key); ok {
			return h, nil
		}
	}
	w.reads.Add(1)
	return w.deps.Store.Last(ctx, key)
}

// replay answers a command whose id was already applied with the result it had then.
func (w *Worker) replay(ctx context.Context, key entity.Key, head eventlog.Head, seq uint64) (*cospb.ProcessCommandResponse, bool, error) {
	w.replays.Add(1)
	if seq != head.Seq {
		h, err := w.deps.Store.At(ctx, key, seq)
		if err != nil {
			return nil, false, w.unavailable("read the original result", err)
		}
		head = h
	}
	return &cospb.ProcessCommandResponse{State: head.State, Meta: head.Meta}, true, nil
}

// settle decides an append that failed without a conflict. A definite failure stored nothing. Otherwise
// the log is asked whether the command landed; if that cannot be told, the caller hears exactly that.
func (w *Worker) settle(base context.Context, key entity.Key, commandID string, aerr error) (*cospb.ProcessCommandResponse, bool, error) {
	if eventlog.IsDefinite(aerr) {
		return nil, false, w.unavailable("persist events", aerr)
	}
	ctx, cancel := context.WithTimeout(base, AppendTimeout/4)
	defer cancel()
	head, err := w.deps.Store.Last(ctx, key)
	if err == nil {
		if seq, ok := head.Applied(commandID); ok {
			return w.replay(ctx, key, head, seq)
		}
	}
	w.deps.Logger.Warn("append outcome unknown", "entity", key.ID, "command_id", commandID, "err", aerr)
	return nil, false, status.Errorf(codes.Unknown,
		"the outcome of command %s is unknown: the event store did not confirm the append in time; retry with the same x-cos-command-id to learn it", commandID)
}

func (w *Worker) notPersisted(ctx context.Context, what string, err error) error {
	if ctx.Err() != nil {
		return status.Errorf(codes.DeadlineExceeded, "the command's deadline passed (%s); nothing was persisted", what)
	}
	return w.unavailable(what, err)
}

func (w *Worker) unavailable(what string, err error) error {
	w.deps.Logger.Error("command failed", "step", what, "err", err)
	return status.Errorf(codes.Unavailable, "%s failed: the event store is unavailable; nothing was persisted", what)
}

// job is one command to run, from NATS or from Dispatch.
type job struct {
	subject string
	req     *natspb.CommandRequest
	done    func(*natspb.CommandReply)
}

// serializer runs the jobs of one entity (one command subject) one at a time, in arrival order, and
// different entities in parallel up to a bound. Ordering within an entity keeps a worker from racing
// itself on the expected-sequence check. Entity runs go to a pool of long-lived goroutines: a fresh
// goroutine per command would grow its stack through the gRPC and NATS calls every time.
type serializer struct {
	run     func(job)
	max     int
	work    chan job // first job of an entity run, handed to an idle pool goroutine
	wg      sync.WaitGroup
	closing sync.RWMutex // held for reading by enqueue, for writing by stop
	closed  bool
	mu      sync.Mutex
	busy    map[string][]job // entity subject → jobs queued behind the running one
	spawned int              // pool goroutines
	inline  int              // runs on callers' goroutines in progress
}

func newSerializer(max int) *serializer {
	return &serializer{max: max, work: make(chan job), busy: make(map[string][]job)}
}

// start sets what runs a job; enqueue may be called from then on.
func (s *serializer) start(run func(job)) { s.run = run }

// enqueue queues a job; it blocks while max entities are in progress, and reports false once stopped.
func (s *serializer) enqueue(j job) bool { return s.submit(j, false) }

// enqueueInline is enqueue, except that a job whose entity is idle runs on the calling goroutine
// (while fewer than max such runs are in progress) before it returns. Jobs queued behind an inline
// run go to the pool when it ends, so the caller only waits for its own job.
func (s *serializer) enqueueInline(j job) bool { return s.submit(j, true) }

func (s *serializer) submit(j job, inline bool) bool {
	s.closing.RLock()
	defer s.closing.RUnlock()
	if s.closed || s.run == nil {
		return false
	}
	s.mu.Lock()
	if q, ok := s.busy[j.subject]; ok {
		s.busy[j.subject] = append(q, j)
		s.mu.Unlock()
		return true
	}
	s.busy[j.subject] = nil
	if inline && s.inline < s.max {
		s.inline++
		s.mu.Unlock()
		s.run(j)
		s.mu.Lock()
		s.inline--
		if next, more := s.next(j.subject); more {
			s.handOff(next) // unlocks
		} else {
			s.mu.Unlock()
		}
		return true
	}
	s.handOff(j)
	return true
}

// handOff gives the first job of an entity run to the pool: an idle goroutine, a new one while
// fewer than max exist, or else the next one to become idle. s.mu is held on entry and released.
func (s *serializer) handOff(j job) {
	grow := false
	select {
	case s.work <- j: // an idle pool goroutine takes it
		s.mu.Unlock()
		return
	default:
		if grow = s.spawned < s.max; grow {
			s.spawned++
		}
	}
	s.mu.Unlock()
	if grow {
		s.wg.Add(1)
		go s.worker(j)
		return
	}
	s.work <- j // all busy: wait for one
}

// next pops the job queued behind the one that just ran for subject, or forgets the subject when
// none is (s.mu held).
func (s *serializer) next(subject string) (job, bool) {
	q := s.busy[subject]
	if len(q) == 0 {
		delete(s.busy, subject)
		return job{}, false
	}
	j := q[0]
	s.busy[subject] = q[1:]
	return j, true
}

// worker runs entity runs until the serializer is stopped.
func (s *serializer) worker(j job) {
	defer s.wg.Done()
	for {
		s.drain(j)
		var ok bool
		if j, ok = <-s.work; !ok {
			return
		}
	}
}

// drain runs j and then every job queued behind it for the same entity.
func (s *serializer) drain(j job) {
	for {
		s.run(j)
		s.mu.Lock()
		next, more := s.next(j.subject)
		s.mu.Unlock()
		if !more {
			return
		}
		j = next
	}
}

// stop refuses new jobs, lets queued and running ones finish, and ends the pool.
func (s *serializer) stop() {
	s.closing.Lock()
	s.closed = true
	close(s.work)
	s.closing.Unlock()
	s.wg.Wait()
}

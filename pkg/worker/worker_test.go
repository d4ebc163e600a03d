package worker_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	natspb "github.com/cosnats/cosnats/gen/cosnats/v1"
	"github.com/cosnats/cosnats/internal/costest"
	"github.com/cosnats/cosnats/pkg/entity"
	"github.com/cosnats/cosnats/pkg/eventlog"
	"github.com/cosnats/cosnats/pkg/layout"
	"github.com/cosnats/cosnats/pkg/statecache"
	"github.com/cosnats/cosnats/pkg/worker"
)

// lostAck is the real event log with one twist: an append's answer can be replaced by a timeout,
// either after the append really happened (the ack was lost) or instead of it (the request was lost).
type lostAck struct {
	*eventlog.Log
	stored      bool           // whether the append reaches the log before the "timeout"
	passthrough bool           // behave like the real log
	conflict    bool           // answer every append with a conflict instead
	readsFail   bool           // every read of the log fails
	staleAny    *eventlog.Head // what a replica behind the leader answers to LastAny, when set
	anyReads    int
}

func (l *lostAck) Last(ctx context.Context, k entity.Key) (eventlog.Head, error) {
	if l.readsFail {
		return eventlog.Head{}, errors.New("read refused by the test")
	}
	return l.Log.Last(ctx, k)
}

func (l *lostAck) LastAny(ctx context.Context, k entity.Key) (eventlog.Head, error) {
	if l.readsFail {
		return eventlog.Head{}, errors.New("read refused by the test")
	}
	l.anyReads++
	if l.staleAny != nil {
		return *l.staleAny, nil
	}
	return l.Log.LastAny(ctx, k)
}

func (l *lostAck) At(ctx context.Context, k entity.Key, seq uint64) (eventlog.Head, error) {
	if l.readsFail {
		return eventlog.Head{}, errors.New("read refused by the test")
	}
	return l.Log.At(ctx, k, seq)
}

func (l *lostAck) Append(ctx context.Context, a eventlog.Append) (uint64, error) {
	if l.passthrough {
		return l.Log.Append(ctx, a)
	}
	if l.conflict {
		return 0, fmt.Errorf("%w: forced by the test", eventlog.ErrConflict)
	}
	if l.stored {
		if _, err := l.Log.Append(ctx, a); err != nil {
			return 0, err
		}
	}
	return 0, context.DeadlineExceeded
}

type rig struct {
	w             *worker.Worker
	log           *eventlog.Log
	store         *lostAck
	handler       *costest.Counter
	handlerClient cospb.WriteSideHandlerServiceClient
	cfg           worker.Config
	nc            *nats.Conn
}

func newRig(t *testing.T) *rig {
	t.Helper()
	srv := costest.StartNATS(t)
	nc, js := costest.JetStream(t, srv)
	ctx := context.Background()
	lay := layout.Default()
	log, err := eventlog.Open(ctx, js, eventlog.Config{Layout: lay, Replicas: 1, NumShards: 9})
	if err != nil {
		t.Fatal(err)
	}
	cache, err := statecache.Open(ctx, js, statecache.Config{Layout: lay}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	h := &costest.Counter{}
	port := costest.ServeGRPC(t, h.Register)
	conn, err := grpc.NewClient("127.0.0.1:"+strconv.Itoa(port), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	store := &lostAck{Log: log}
	cfg := worker.Config{
		Layout: lay, NumShards: 9, CommandTimeout: 5 * time.Second, ConflictRetries: 3,
		IdempotencyWindow: 16, MaxCommandBytes: 1 << 20,
	}
	client := cospb.NewWriteSideHandlerServiceClient(conn)
	w, err := worker.New(cfg, worker.Deps{Conn: nc, Store: store, Cache: cache, Handler: client, Logger: costest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	return &rig{w: w, log: log, store: store, handler: h, handlerClient: client, cfg: cfg, nc: nc}
}

func (r *rig) execute(t *testing.T, id, cmd, commandID string) (*cospb.ProcessCommandResponse, error) {
	t.Helper()
	return r.executeReq(t, &natspb.CommandRequest{EntityId: id, Command: costest.Cmd(cmd), CommandId: commandID})
}

func (r *rig) executeReq(t *testing.T, req *natspb.CommandRequest) (*cospb.ProcessCommandResponse, error) {
	t.Helper()
	key, _ := entity.NewKey(req.GetEntityId(), 9)
	data, _ := proto.Marshal(req)
	reply := r.w.Execute(context.Background(), layout.Default().CommandSubject(key), data)
	if b := reply.GetStatus(); b != nil {
		var st spb.Status
		if err := proto.Unmarshal(b, &st); err != nil {
			t.Fatal(err)
		}
		return nil, status.FromProto(&st).Err()
	}
	return reply.GetResponse(), nil
}

func (r *rig) revision(t *testing.T, id string) uint32 {
	t.Helper()
	key, _ := entity.NewKey(id, 9)
	h, err := r.log.Last(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	return h.Revision()
}

// The ack of an append that did land is lost: the worker reads the log, finds its command and
// answers with success instead of an error.
func TestLostAckAfterAppendIsSettledFromTheLog(t *testing.T) {
	r := newRig(t)
	r.store.stored = true
	resp, err := r.execute(t, "e", "add:4", "cmd-a")
	if err != nil {
		t.Fatalf("lost ack after a stored append: %v", err)
	}
	if resp.GetMeta().GetRevisionNumber() != 1 || costest.Value(resp.GetState()) != 4 {
		t.Fatalf("answer %v", resp)
	}
	if st := r.w.Stats(); st.Replays != 1 {
		t.Fatalf("stats %+v: the outcome should come from the log", st)
	}
}

// The append never reached the log and its answer never came: the caller is told the outcome is
// unknown (never "failed"), and the log is unchanged.
func TestLostAppendIsReportedAsUnknown(t *testing.T) {
	r := newRig(t)
	r.store.stored = false
	_, err := r.execute(t, "u", "add:1", "cmd-b")
	if status.Code(err) != codes.Unknown {
		t.Fatalf("got %v, want UNKNOWN", err)
	}
	if rev := r.revision(t, "u"); rev != 0 {
		t.Fatalf("revision %d", rev)
	}
}

// Conflicts on every attempt: after ConflictRetries reloads the caller gets ABORTED and nothing is stored.
func TestConflictsExhaustedAbort(t *testing.T) {
	r := newRig(t)
	r.store.conflict = true
	_, err := r.execute(t, "c", "add:1", "cmd-c")
	if status.Code(err) != codes.Aborted {
		t.Fatalf("got %v, want ABORTED", err)
	}
	if st := r.w.Stats(); st.Conflicts != 4 {
		t.Fatalf("stats %+v: want 1 attempt + 3 retries", st)
	}
	if n := len(r.handler.Commands()); n != 4 {
		t.Fatalf("HandleCommand called %d times, want 4", n)
	}
	if rev := r.revision(t, "c"); rev != 0 {
		t.Fatalf("revision %d", rev)
	}
}

// staleCache serves one fixed, outdated head, as a worker's cache does after another worker appended.
type staleCache struct{ head eventlog.Head }

func (c staleCache) Get(context.Context, entity.Key) (eventlog.Head, bool) {
	return c.head, c.head.Seq > 0
}
func (staleCache) Put(entity.Key, eventlog.Head, uint32) {}
func (staleCache) Forget(entity.Key)                     {}

// A stale cached head costs exactly one conflict and a reload; the answer is still right.
func TestStaleCacheIsCorrected(t *testing.T) {
	r := newRig(t)
	r.store.stored = true
	r.store.passthrough = true
	if _, err := r.execute(t, "st", "add:1", "a"); err != nil {
		t.Fatal(err)
	}
	key, _ := entity.NewKey("st", 9)
	old, err := r.log.Last(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.execute(t, "st", "add:1", "b"); err != nil {
		t.Fatal(err)
	}
	w, err := worker.New(r.cfg, worker.Deps{Conn: r.nc, Store: r.log, Cache: staleCache{head: old}, Handler: r.handlerClient, Logger: costest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	r.w = w
	resp, err := r.execute(t, "st", "add:1", "c")
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetMeta().GetRevisionNumber() != 3 || costest.Value(resp.GetState()) != 3 {
		t.Fatalf("with a stale cache: %v", resp)
	}
	if st := w.Stats(); st.Conflicts != 1 || st.Appends != 1 || st.Reads != 1 {
		t.Fatalf("stats %+v: the stale read should cost exactly one conflict and one read of the log", st)
	}
}

// A worker's first read of an entity may come from a replica that is behind: it costs one conflict and a
// read from the leader, and the answer is still right — also for a retry of a command the stale head
// does not show yet.
func TestStaleReplicaReadIsCorrected(t *testing.T) {
	r := newRig(t)
	r.store.stored, r.store.passthrough = true, true
	if _, err := r.execute(t, "sr", "add:1", "a"); err != nil {
		t.Fatal(err)
	}
	key, _ := entity.NewKey("sr", 9)
	old, err := r.log.Last(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.execute(t, "sr", "add:1", "b"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		head    eventlog.Head
		command string
		want    uint32 // revision of the answer
		replay  bool
	}{
		{"older head, new command", old, "c", 3, false},
		{"no head, new command", eventlog.Head{}, "d", 4, false},
		{"older head, retry of an applied command", old, "b", 2, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, err := worker.New(r.cfg, worker.Deps{Conn: r.nc, Store: r.store, Cache: staleCache{}, Handler: r.handlerClient, Logger: costest.Logger(t)})
			if err != nil {
				t.Fatal(err)
			}
			r.w, r.store.staleAny, r.store.anyReads = w, &tc.head, 0
			resp, err := r.execute(t, "sr", "add:1", tc.command)
			if err != nil {
				t.Fatal(err)
			}
			if resp.GetMeta().GetRevisionNumber() != tc.want || costest.Value(resp.GetState()) != int64(tc.want) {
				t.Fatalf("got revision %d, state %d; want %d", resp.GetMeta().GetRevisionNumber(), costest.Value(resp.GetState()), tc.want)
			}
			st := w.Stats()
			if st.Conflicts != 1 || st.Reads != 2 || r.store.anyReads != 1 || (st.Replays == 1) != tc.replay {
				t.Fatalf("stats %+v, %d reads from any replica: want one stale read, one conflict, one read from the leader (replay %v)", st, r.store.anyReads, tc.replay)
			}
		})
	}
	if rev := r.revision(t, "sr"); rev != 4 {
		t.Fatalf("revision %d after the commands, want 4 (the retry stored nothing)", rev)
	}
}

// A command that stores nothing — a no-op or the handler's refusal — never meets the expected-sequence
// check, so a stale head (from the cache or a replica behind) must not decide it: the worker confirms
// the head with the leader and decides again on the current state. A fresh head costs one read more and
// changes nothing.
func TestStaleHeadNeverDecidesACommandWithoutEvents(t *testing.T) {
	r := newRig(t)
	r.store.stored, r.store.passthrough = true, true
	for _, c := range []string{"a", "b"} {
		if _, err := r.execute(t, "nx", "add:1", c); err != nil {
			t.Fatal(err)
		}
	}
	key, _ := entity.NewKey("nx", 9)
	current, err := r.log.Last(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		any       *eventlog.Head // what LastAny answers
		cache     eventlog.Head  // what the cache holds (Seq 0: nothing)
		cmd       string
		wantCode  codes.Code
		wantStale uint64
		wantReads uint64
	}{
		{"replica behind, no-op", &eventlog.Head{}, eventlog.Head{}, "noop", codes.OK, 1, 2},
		{"replica behind, refusal", &eventlog.Head{}, eventlog.Head{}, "bad", codes.InvalidArgument, 1, 2},
		{"stale cache, no-op", nil, firstRevision(t, r, key), "noop", codes.OK, 1, 1},
		{"current replica, no-op", &current, eventlog.Head{}, "noop", codes.OK, 0, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, err := worker.New(r.cfg, worker.Deps{Conn: r.nc, Store: r.store, Cache: staleCache{head: tc.cache}, Handler: r.handlerClient, Logger: costest.Logger(t)})
			if err != nil {
				t.Fatal(err)
			}
			r.w, r.store.staleAny = w, tc.any
			resp, err := r.execute(t, "nx", tc.cmd, "")
			if status.Code(err) != tc.wantCode {
				t.Fatalf("got %v, want %v", err, tc.wantCode)
			}
			if tc.wantCode == codes.OK && (resp.GetMeta().GetRevisionNumber() != 2 || costest.Value(resp.GetState()) != 2) {
				t.Fatalf("a no-op answered revision %d, state %d: not the current revision 2", resp.GetMeta().GetRevisionNumber(), costest.Value(resp.GetState()))
			}
			if st := w.Stats(); st.Stale != tc.wantStale || st.Reads != tc.wantReads || st.Appends != 0 {
				t.Fatalf("stats %+v: want %d decided again, %d reads, no append", st, tc.wantStale, tc.wantReads)
			}
		})
	}
	if rev := r.revision(t, "nx"); rev != 2 {
		t.Fatalf("revision %d, want 2: nothing may be stored", rev)
	}
}

// firstRevision is entity k's head at its first event, read from the log.
func firstRevision(t *testing.T, r *rig, k entity.Key) eventlog.Head {
	t.Helper()
	h, err := r.log.Last(context.Background(), k)
	if err != nil {
		t.Fatal(err)
	}
	for h.Revision() > 1 {
		if h, err = r.log.At(context.Background(), k, h.Seq-1); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

// A command id that was already applied but whose result cannot be read is not "nothing persisted":
// the caller hears UNKNOWN and retries.
func TestReplayThatCannotReadTheResultIsUnknown(t *testing.T) {
	r := newRig(t)
	r.store.passthrough = true
	if _, err := r.execute(t, "rp", "add:1", "first"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.execute(t, "rp", "add:1", "second"); err != nil {
		t.Fatal(err)
	}
	// "first" is remembered in the recent commands of the head; its own event must be read.
	r.store.readsFail = false
	w, err := worker.New(r.cfg, worker.Deps{Conn: r.nc, Store: atFails{r.store}, Cache: noCache{}, Handler: r.handlerClient, Logger: costest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	r.w = w
	_, err = r.execute(t, "rp", "add:1", "first")
	if status.Code(err) != codes.Unknown || !strings.Contains(err.Error(), "was applied") {
		t.Fatalf("got %v, want UNKNOWN saying the command was applied", err)
	}
	if rev := r.revision(t, "rp"); rev != 2 {
		t.Fatalf("revision %d", rev)
	}
}

// atFails reads heads but not older events.
type atFails struct{ *lostAck }

func (atFails) At(context.Context, entity.Key, uint64) (eventlog.Head, error) {
	return eventlog.Head{}, errors.New("read refused by the test")
}

type noCache struct{}

func (noCache) Get(context.Context, entity.Key) (eventlog.Head, bool) { return eventlog.Head{}, false }
func (noCache) Put(entity.Key, eventlog.Head, uint32)                 {}
func (noCache) Forget(entity.Key)                                     {}

// When the log cannot be read before the idempotency check, the answer depends on whose the command id
// is: the caller's (maybe a retry of a command an earlier attempt stored) gets UNKNOWN; an id the
// gateway made up has no earlier attempt, so "nothing was persisted" is true.
func TestFailureBeforeTheIdempotencyCheck(t *testing.T) {
	r := newRig(t)
	w, err := worker.New(r.cfg, worker.Deps{Conn: r.nc, Store: r.store, Cache: noCache{}, Handler: r.handlerClient, Logger: costest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	r.w = w
	r.store.readsFail = true
	_, err = r.executeReq(t, &natspb.CommandRequest{EntityId: "pc", Command: costest.Cmd("add:1"), CommandId: "mine"})
	if status.Code(err) != codes.Unknown || !strings.Contains(err.Error(), "retry with the same x-cos-command-id") {
		t.Fatalf("caller's id: %v, want UNKNOWN", err)
	}
	_, err = r.executeReq(t, &natspb.CommandRequest{EntityId: "pc", Command: costest.Cmd("add:1"), CommandId: "gen", CommandIdGenerated: true})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "nothing was persisted") {
		t.Fatalf("generated id: %v, want UNAVAILABLE nothing persisted", err)
	}
	if n := len(r.handler.Commands()); n != 0 {
		t.Fatalf("the handler ran %d times", n)
	}
}

// More events than one atomic batch holds are refused before anything is sent.
func TestTooManyEventsAreInvalid(t *testing.T) {
	r := newRig(t)
	r.store.passthrough = true
	_, err := r.execute(t, "many", fmt.Sprint("multi:", eventlog.MaxBatch+1), "m")
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "nothing was persisted") {
		t.Fatalf("got %v, want INVALID_ARGUMENT", err)
	}
	if rev := r.revision(t, "many"); rev != 0 {
		t.Fatalf("revision %d", rev)
	}
}

// A retry that comes after more commands than the entity's headers remember is still recognised: the
// event stream's deduplication window knows the command id. A single event is answered with its
// original result; a batch with ALREADY_EXISTS. Nothing is stored twice.
func TestRetryBeyondTheRememberedCommandsIsRecognised(t *testing.T) {
	r := newRig(t)
	r.store.passthrough = true
	r.cfg.IdempotencyWindow = 0 // the head remembers its own command only
	w, err := worker.New(r.cfg, worker.Deps{Conn: r.nc, Store: r.store, Cache: noCache{}, Handler: r.handlerClient, Logger: costest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	r.w = w
	for _, c := range []struct{ cmd, id string }{{"add:1", "first"}, {"add:1", "second"}} {
		if _, err := r.execute(t, "win", c.cmd, c.id); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := r.execute(t, "win", "add:1", "first")
	if err != nil || resp.GetMeta().GetRevisionNumber() != 1 || costest.Value(resp.GetState()) != 1 {
		t.Fatalf("retry of the first command: %v %v; want its original result (revision 1)", resp, err)
	}
	if _, err := r.execute(t, "win", "multi:2", "batch"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.execute(t, "win", "add:1", "after"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.execute(t, "win", "multi:2", "batch"); status.Code(err) != codes.AlreadyExists {
		t.Fatalf("retry of a batch: %v, want ALREADY_EXISTS", err)
	}
	if rev := r.revision(t, "win"); rev != 5 {
		t.Fatalf("revision %d, want 5: a retry was stored again", rev)
	}
}

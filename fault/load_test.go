package fault

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	"github.com/cosnats/cosnats/internal/costest"
)

// op is one client operation: a command (with its id, retried until it is answered OK) or a read.
type op struct {
	client   int
	entity   string
	id       string // command id; "" for a GetState
	call     time.Time
	ret      time.Time // zero while unanswered
	rev      uint32    // the revision answered (for a read: 0 = NOT_FOUND)
	state    int64
	ok       bool // answered OK
	attempts int
	gw       int // the gateway a read went to
}

// load runs clients that send commands (with command ids, retried on any error with the same id, as the
// README advises) and reads to the gateways, recording every operation.
type load struct {
	gateways []cospb.ChiefOfStateServiceClient
	entities []string
	start    time.Time

	mu  sync.Mutex
	ops []*op

	stopping atomic.Bool
	wg       sync.WaitGroup
	codes    sync.Map // codes.Code → *atomic.Int64: answers other than OK, by code

	unknownMu sync.Mutex
	unknowns  []answer // the UNKNOWN answers, with when they came

	inflightMu sync.Mutex
	inflight   map[*op]struct{} // operations not answered yet
}

// answer is one error answer a client got.
type answer struct {
	at  time.Time
	msg string
}

func newLoad(gateways []cospb.ChiefOfStateServiceClient, entities int) *load {
	l := &load{gateways: gateways, start: time.Now(), inflight: map[*op]struct{}{}}
	for i := range entities {
		l.entities = append(l.entities, fmt.Sprintf("acct-%d", i))
	}
	return l
}

// run starts n clients.
func (l *load) run(n int) {
	for c := range n {
		l.wg.Go(func() { l.client(c) })
	}
}

// stop ends the clients; an operation in progress is still retried for up to grace.
func (l *load) stop() { l.stopping.Store(true); l.wg.Wait() }

// retryFor is how long a client keeps retrying one command after the load is stopped.
const retryFor = 90 * time.Second

func (l *load) client(c int) {
	rng := rand.New(rand.NewPCG(uint64(c), uint64(time.Now().UnixNano())))
	for n := 0; !l.stopping.Load(); n++ {
		entity := l.entities[rng.IntN(len(l.entities))]
		o := &op{client: c, entity: entity, call: time.Now()}
		l.inflightMu.Lock()
		l.inflight[o] = struct{}{}
		l.inflightMu.Unlock()
		if rng.IntN(10) == 0 {
			l.read(o, c+n)
		} else {
			o.id = fmt.Sprintf("c%d-%d", c, n)
			l.command(o, c+n)
		}
		l.mu.Lock()
		l.ops = append(l.ops, o)
		l.mu.Unlock()
		l.inflightMu.Lock()
		delete(l.inflight, o)
		l.inflightMu.Unlock()
	}
}

// settle waits until every operation started before now has been answered, so that what comes next
// is not blamed for the aftermath of what came before (a request lost with a killed worker is answered
// UNKNOWN only when the gateway stops waiting for it).
func (l *load) settle(ctx context.Context, within time.Duration) error {
	t0 := time.Now()
	deadline := t0.Add(within)
	for {
		older := 0
		l.inflightMu.Lock()
		for o := range l.inflight {
			if o.call.Before(t0) {
				older++
			}
		}
		l.inflightMu.Unlock()
		if older == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d operations started before %s still unanswered after %v", older, t0.Format("15:04:05.000"), within)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// command sends one command until a gateway answers OK; it gives up (leaving the outcome to the log)
// only when the load is stopping and it has retried for retryFor.
func (l *load) command(o *op, seq int) {
	var stoppedAt time.Time
	backoff := 50 * time.Millisecond
	for attempt := 0; ; attempt++ {
		gw := l.gateways[(seq+attempt)%len(l.gateways)]
		o.attempts++
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		ctx = metadata.AppendToOutgoingContext(ctx, "x-cos-command-id", o.id)
		resp, err := gw.ProcessCommand(ctx, &cospb.ProcessCommandRequest{EntityId: o.entity, Command: costest.Cmd("add:1")})
		cancel()
		if err == nil {
			o.ret, o.ok = time.Now(), true
			o.rev, o.state = resp.GetMeta().GetRevisionNumber(), costest.Value(resp.GetState())
			return
		}
		l.count(status.Code(err))
		if status.Code(err) == codes.Unknown {
			l.unknownMu.Lock()
			l.unknowns = append(l.unknowns, answer{at: time.Now(), msg: fmt.Sprintf("%s (entity %s, gateway %d)", err, o.entity, (seq+attempt)%len(l.gateways))})
			l.unknownMu.Unlock()
		}
		if l.stopping.Load() {
			if stoppedAt.IsZero() {
				stoppedAt = time.Now()
			}
			if time.Since(stoppedAt) > retryFor {
				return
			}
		}
		time.Sleep(backoff + time.Duration(rand.Int64N(int64(backoff))))
		backoff = min(2*backoff, time.Second)
	}
}

// read asks a gateway for the entity's state once; a failed read is not recorded as an answer.
func (l *load) read(o *op, seq int) {
	o.gw = seq % len(l.gateways)
	gw := l.gateways[o.gw]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	o.attempts = 1
	resp, err := gw.GetState(ctx, &cospb.GetStateRequest{EntityId: o.entity})
	switch {
	case err == nil:
		o.ret, o.ok = time.Now(), true
		o.rev, o.state = resp.GetMeta().GetRevisionNumber(), costest.Value(resp.GetState())
	case status.Code(err) == codes.NotFound:
		o.ret, o.ok = time.Now(), true
	default:
		l.count(status.Code(err))
	}
}

func (l *load) count(c codes.Code) {
	v, _ := l.codes.LoadOrStore(c, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
}

// answers reports the non-OK answers so far, by code.
func (l *load) answers() map[codes.Code]int64 {
	out := map[codes.Code]int64{}
	l.codes.Range(func(k, v any) bool {
		out[k.(codes.Code)] = v.(*atomic.Int64).Load()
		return true
	})
	return out
}

// snapshot copies the operations recorded so far.
func (l *load) snapshot() []*op {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*op(nil), l.ops...)
}

// acked counts the commands answered OK so far.
func (l *load) acked() int {
	n := 0
	for _, o := range l.snapshot() {
		if o.id != "" && o.ok {
			n++
		}
	}
	return n
}

// unknownsIn returns the UNKNOWN answers that came in [from, to).
func (l *load) unknownsIn(from, to time.Time) []string {
	l.unknownMu.Lock()
	defer l.unknownMu.Unlock()
	var out []string
	for _, a := range l.unknowns {
		if !a.at.Before(from) && a.at.Before(to) {
			out = append(out, a.at.Format("15:04:05.000")+" "+a.msg)
		}
	}
	return out
}

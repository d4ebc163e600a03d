package eventlog

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cosnats/cosnats/pkg/entity"
)

// Why barriers: a replicated stream's leader answers reads from its own store, and a leader cut off from
// its peers keeps believing it leads for up to ten seconds after the others elected a new one and
// stored more (nats-server has no read leases). A read that must include every acknowledged append
// therefore first stores a barrier message: storing it takes a quorum, so it lands after every append
// acknowledged before the read began. Then any replica that holds the barrier holds all of those.

const (
	// barrierTTL is how long a barrier stays in the stream; readers need it for milliseconds.
	barrierTTL = time.Minute
	// barrierTimeout bounds one barrier's publish: a stream without a quorum fails it, and the read
	// tries another while its own deadline allows.
	barrierTimeout = 2 * time.Second
	// currentBudget bounds a Current read whose caller set no deadline.
	currentBudget = 10 * time.Second
)

// barriers coalesces the barriers of concurrent reads: one publish at a time, and every read that
// arrives while it is in flight waits for the next one (which it needs: the one in flight may have
// been stored before the read began). At most two barriers per read, one in flight per process.
type barriers struct {
	publish func(context.Context) (uint64, error)

	mu      sync.Mutex
	running bool
	next    *barrier // the barrier the next publish makes; reads arriving now wait for it
}

type barrier struct {
	done chan struct{}
	seq  uint64
	err  error
}

// wait returns the sequence of a barrier published after the call began.
func (b *barriers) wait(ctx context.Context) (uint64, error) {
	b.mu.Lock()
	if b.next == nil {
		b.next = &barrier{done: make(chan struct{})}
	}
	r := b.next
	if !b.running {
		b.startLocked()
	}
	b.mu.Unlock()
	select {
	case <-r.done:
		return r.seq, r.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func (b *barriers) startLocked() {
	r := b.next
	b.next, b.running = nil, true
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), barrierTimeout)
		r.seq, r.err = b.publish(ctx)
		cancel()
		close(r.done)
		b.mu.Lock()
		b.running = false
		if b.next != nil {
			b.startLocked()
		}
		b.mu.Unlock()
	}()
}

func (l *Log) publishBarrier(ctx context.Context) (uint64, error) {
	ack, err := l.js.Publish(ctx, l.layout.SyncSubject(), nil, jetstream.WithMsgTTL(barrierTTL), jetstream.WithRetryAttempts(0))
	if err != nil {
		return 0, fmt.Errorf("store a read barrier: %w", err)
	}
	return ack.Sequence, nil
}

// Current reads an entity's head as it is now: the result includes every append acknowledged before
// the call, whichever replica answers and whatever leader changes happen meanwhile. On a single
// replica that is any read of the leader; on more, a barrier (see above) then a direct get that only
// counts if the replica holds the barrier. A read that cannot reach a quorum fails; it never answers
// an older head.
func (l *Log) Current(ctx context.Context, k entity.Key) (Head, error) {
	if l.replicas <= 1 {
		return l.Last(ctx, k)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, currentBudget)
		defer cancel()
	}
	subject, stream, nc := l.layout.EventSubject(k), l.layout.EventStream(), l.js.Conn()
	for backoff := time.Millisecond; ; backoff = min(2*backoff, 100*time.Millisecond) {
		seq, err := l.barriers.wait(ctx)
		if err == nil {
			// A replica a little behind the leader catches up within milliseconds: ask again a few
			// times before paying for another barrier.
			for try := 0; try < 5; try++ {
				var m *jetstream.RawStreamMsg
				m, err = lastUpTo(ctx, &l.replies, nc, stream, subject, l.layout.SyncSubject(), seq)
				if err == nil {
					if m == nil {
						return Head{}, nil
					}
					return decodeHead(m)
				}
				if !errors.Is(err, errBehind) {
					break
				}
				if !pause(ctx, time.Duration(try+1)*time.Millisecond) {
					break
				}
			}
		}
		if !retryable(err) || !pause(ctx, backoff) {
			return Head{}, fmt.Errorf("read the current head of %q: %w", k.ID, err)
		}
	}
}

// retryable errors may pass once a leader is elected or a replica catches up.
func retryable(err error) bool {
	return errors.Is(err, errBehind) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, nats.ErrConnectionReconnecting)
}

func pause(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

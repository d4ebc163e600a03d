// Package placement keeps each entity's commands on one worker while that worker lives. Workers say they
// live on a heartbeat subject; a gateway keeps the set it heard from lately and picks an entity's owner
// among them by rendezvous hashing, so every gateway with the same set picks the same worker and a
// worker that joins or leaves moves only its share of the entities.
//
// It is an optimisation only. Without it, commands for one entity alternate between workers through the
// queue group, each worker's cached state is then stale, the append's expected-sequence check refuses
// it and the handler runs a second time (a quarter to a third of all commands with two workers). Nothing
// depends on it for correctness: two workers that take the same entity's commands at once (gateways
// whose sets differ for a moment) are still serialised by that check, and a command whose owner does
// not answer goes to the queue group.
package placement

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cosnats/cosnats/pkg/layout"
)

// DefaultInterval is how often a worker says it lives.
const DefaultInterval = time.Second

// missedBeats is how many heartbeats a worker may miss before gateways stop sending it commands. A
// worker that died with its connection is noticed at once (its command subject has no responders);
// this bounds the time for one that lost its connection without NATS noticing yet.
const missedBeats = 3

// Heartbeat payloads.
var (
	beatUp      = []byte("up")
	beatLeaving = []byte("leaving")
)

// Announcer publishes one worker's heartbeats.
type Announcer struct {
	nc       *nats.Conn
	subject  string
	interval time.Duration
	log      *slog.Logger
}

// NewAnnouncer builds the announcer of worker id; it starts nothing. interval 0 is DefaultInterval.
func NewAnnouncer(nc *nats.Conn, lay layout.Layout, id string, interval time.Duration, log *slog.Logger) (*Announcer, error) {
	if !layout.ValidWorkerID(id) {
		return nil, fmt.Errorf("placement: worker id %q is not a subject token of [A-Za-z0-9_-]{1,64}", id)
	}
	if interval <= 0 {
		interval = DefaultInterval
	}
	return &Announcer{nc: nc, subject: lay.WorkerHeartbeatSubject(id), interval: interval, log: log}, nil
}

// Run says the worker lives, at once and then every interval, until ctx ends.
func (a *Announcer) Run(ctx context.Context) error {
	t := time.NewTicker(a.interval)
	defer t.Stop()
	for {
		// A publish fails only on a closed connection; while it reconnects, nats.go buffers it.
		if err := a.nc.Publish(a.subject, beatUp); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			a.log.Warn("worker heartbeat", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Leave tells gateways to stop sending this worker commands; call it before the worker drains. Those
// already on the way are still taken; later ones find no responder and go to the queue group.
func (a *Announcer) Leave() {
	if !a.nc.IsConnected() {
		return
	}
	if err := a.nc.Publish(a.subject, beatLeaving); err == nil {
		err = a.nc.FlushTimeout(time.Second)
		if err != nil {
			a.log.Warn("worker leaving notice", "err", err)
		}
	}
}

// View is a gateway's set of live workers. Owner is safe for concurrent use and takes no lock.
type View struct {
	nc       *nats.Conn
	lay      layout.Layout
	interval time.Duration
	log      *slog.Logger
	now      func() time.Time

	mu       sync.Mutex
	lastBeat map[string]time.Time // live workers: when each was last heard
	ring     atomic.Pointer[ring]
	ready    chan struct{}
}

// NewView builds a view; Run fills it. interval must be the workers' heartbeat interval (0:
// DefaultInterval).
func NewView(nc *nats.Conn, lay layout.Layout, interval time.Duration, log *slog.Logger) *View {
	if interval <= 0 {
		interval = DefaultInterval
	}
	v := &View{nc: nc, lay: lay, interval: interval, log: log, now: time.Now, lastBeat: map[string]time.Time{}, ready: make(chan struct{})}
	v.ring.Store(&ring{})
	return v
}

// Subscribed is closed once the view hears heartbeats.
func (v *View) Subscribed() <-chan struct{} { return v.ready }

// Run listens to heartbeats and forgets workers that miss them, until ctx ends.
func (v *View) Run(ctx context.Context) error {
	sub, err := v.nc.Subscribe(v.lay.WorkerHeartbeats(), v.onBeat)
	if err != nil {
		return fmt.Errorf("subscribe to worker heartbeats: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	close(v.ready)
	t := time.NewTicker(v.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			v.expire()
		}
	}
}

func (v *View) onBeat(m *nats.Msg) {
	id, ok := v.lay.ParseWorkerHeartbeat(m.Subject)
	if !ok {
		return
	}
	switch string(m.Data) {
	case string(beatUp):
		v.mu.Lock()
		_, known := v.lastBeat[id]
		v.lastBeat[id] = v.now()
		if !known {
			v.publish("worker joined", id)
		}
		v.mu.Unlock()
	case string(beatLeaving):
		v.remove(id, "worker left")
	}
}

// Down forgets worker id until it is heard again: a command sent to it found no responder.
func (v *View) Down(id string) { v.remove(id, "worker gone: no responder") }

func (v *View) remove(id, why string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, ok := v.lastBeat[id]; ok {
		delete(v.lastBeat, id)
		v.publish(why, id)
	}
}

func (v *View) expire() {
	v.mu.Lock()
	defer v.mu.Unlock()
	cutoff := v.now().Add(-missedBeats * v.interval)
	for id, t := range v.lastBeat {
		if t.Before(cutoff) {
			delete(v.lastBeat, id)
			v.publish("worker gone: no heartbeat", id)
		}
	}
}

// publish installs the ring of the current members; v.mu is held.
func (v *View) publish(why, id string) {
	ids := make([]string, 0, len(v.lastBeat))
	for m := range v.lastBeat {
		ids = append(ids, m)
	}
	v.ring.Store(newRing(ids))
	v.log.Info(why, "worker", id, "workers", len(ids))
}

// Owner returns the worker that owns key (an entity's command subject), or false when no worker is known.
func (v *View) Owner(key string) (string, bool) { return v.ring.Load().owner(key) }

// Len is the number of live workers.
func (v *View) Len() int { return len(v.ring.Load().ids) }

// Workers returns the live workers, sorted.
func (v *View) Workers() []string { return slices.Clone(v.ring.Load().ids) }

// ring is an immutable member set with each member's hash seed.
type ring struct {
	ids   []string // sorted
	seeds []uint64
}

func newRing(ids []string) *ring {
	slices.Sort(ids)
	r := &ring{ids: ids, seeds: make([]uint64, len(ids))}
	for i, id := range ids {
		r.seeds[i] = hash64(id)
	}
	return r
}

// owner is rendezvous (highest random weight) hashing: each member scores the key, the highest wins.
// Removing a member moves only the keys it owned; adding one moves only those it now wins.
func (r *ring) owner(key string) (string, bool) {
	if len(r.ids) == 0 {
		return "", false
	}
	k := hash64(key)
	best, bestScore := 0, uint64(0)
	for i, s := range r.seeds {
		if score := mix(s ^ k); i == 0 || score > bestScore {
			best, bestScore = i, score
		}
	}
	return r.ids[best], true
}

// hash64 is FNV-1a, inline so a command's owner costs no allocation.
func hash64(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// mix is the splitmix64 finaliser: it spreads the xor of two FNV hashes over all 64 bits, so scores of
// one key under different members are independent enough for an even split.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

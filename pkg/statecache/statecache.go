// Package statecache keeps recent entity heads close to a worker in a bounded in-process LRU, and
// writes periodic snapshots to a JetStream KV bucket. The LRU is only a cache: an entry may be stale
// (another worker appended since), and the event log's optimistic-concurrency check catches that.
//
// The KV snapshots are not read on the command path: every event already stores the full resulting
// state, so the entity's last event is as cheap to read as a KV entry and always current. Writing a KV
// entry on every command was measured to multiply tail latency (compaction of the bucket's history)
// for no gain, so snapshots are written every SnapshotEvery revisions, for operators and tools.
package statecache

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	natspb "github.com/cosnats/cosnats/gen/cosnats/v1"
	"github.com/cosnats/cosnats/pkg/bucket"
	"github.com/cosnats/cosnats/pkg/entity"
	"github.com/cosnats/cosnats/pkg/eventlog"
	"github.com/cosnats/cosnats/pkg/layout"
)

// Config sets the cache's size and its KV bucket.
type Config struct {
	Layout  layout.Layout
	Entries int   // in-process entries; 0 disables the LRU
	Bytes   int64 // in-process bound on the entries' encoded size; 0 disables the LRU
	UseKV   bool  // false disables the KV bucket (COS_DISABLE_SNAPSHOT)
	// SnapshotEvery writes a KV snapshot when an append reaches a multiple of this revision
	// (COS_SNAPSHOT_FREQUENCY); 0 writes none.
	SnapshotEvery int
	Replicas      int
	// TTL bounds how long an untouched entity stays in the bucket, so the bucket does not grow with
	// every entity ever written.
	TTL time.Duration
}

// Cache is safe for concurrent use. The zero value is not usable; call Open.
type Cache struct {
	lru    *lru
	kv     jetstream.KeyValue
	nc     *nats.Conn
	prefix string // KV key subject prefix, "$KV.<bucket>."
	every  uint32
	log    *slog.Logger
}

// Open creates or binds the KV bucket (when enabled) and the LRU.
func Open(ctx context.Context, js jetstream.JetStream, cfg Config, log *slog.Logger) (*Cache, error) {
	c := &Cache{log: log, every: uint32(max(cfg.SnapshotEvery, 0))}
	if cfg.Entries > 0 && cfg.Bytes > 0 {
		c.lru = newLRU(cfg.Entries, cfg.Bytes)
	}
	if !cfg.UseKV || cfg.SnapshotEvery <= 0 {
		return c, nil
	}
	name := cfg.Layout.StateBucket()
	kv, err := bucket.Open(ctx, js, jetstream.KeyValueConfig{
		Bucket:      name,
		Description: "chief-of-state periodic snapshots (Snapshot per entity; never read on the command path)",
		History:     1,
		TTL:         cfg.TTL,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
	})
	if err != nil {
		return nil, err
	}
	c.kv, c.nc, c.prefix = kv, js.Conn(), "$KV."+name+"."
	return c, nil
}

// Get returns the in-process head of an entity, if any.
func (c *Cache) Get(_ context.Context, k entity.Key) (eventlog.Head, bool) {
	return c.lru.get(k.Token)
}

// Put records a head after a successful append that moved the entity on from priorRevision. When the
// append reached a multiple of SnapshotEvery, the head also goes to the KV bucket, fire-and-forget: it
// costs no round trip on the command path.
func (c *Cache) Put(k entity.Key, h eventlog.Head, priorRevision uint32) {
	c.lru.put(k.Token, h)
	if c.kv == nil || h.Revision()/c.every == priorRevision/c.every {
		return
	}
	data, err := proto.Marshal(encode(h))
	if err == nil {
		err = c.nc.Publish(c.prefix+k.Token, data)
	}
	if err != nil {
		c.log.Debug("snapshot write failed", "entity", k.ID, "err", err)
	}
}

// Snapshot reads an entity's latest KV snapshot (for tools and tests; the command path never does).
func (c *Cache) Snapshot(ctx context.Context, k entity.Key) (eventlog.Head, bool, error) {
	if c.kv == nil {
		return eventlog.Head{}, false, nil
	}
	e, err := c.kv.Get(ctx, k.Token)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return eventlog.Head{}, false, nil
	}
	if err != nil {
		return eventlog.Head{}, false, fmt.Errorf("read snapshot of %q: %w", k.ID, err)
	}
	h, err := decode(e.Value())
	if err != nil {
		return eventlog.Head{}, false, fmt.Errorf("decode snapshot of %q: %w", k.ID, err)
	}
	return h, true, nil
}

// Forget drops an entity from the in-process cache, e.g. after a conflict proved it stale.
func (c *Cache) Forget(k entity.Key) { c.lru.remove(k.Token) }

func encode(h eventlog.Head) *natspb.Snapshot {
	return &natspb.Snapshot{
		State:          &cospb.StateWrapper{State: h.State, Meta: h.Meta},
		Sequence:       h.Seq,
		RecentCommands: h.Recent.String(),
		CommandId:      h.CommandID,
	}
}

func decode(data []byte) (eventlog.Head, error) {
	var s natspb.Snapshot
	if err := proto.Unmarshal(data, &s); err != nil {
		return eventlog.Head{}, err
	}
	recent, err := eventlog.ParseRecent(s.GetRecentCommands())
	if err != nil {
		return eventlog.Head{}, err
	}
	if s.GetSequence() == 0 || s.GetState().GetMeta() == nil {
		return eventlog.Head{}, errors.New("snapshot without sequence or meta")
	}
	return eventlog.Head{
		Seq:       s.GetSequence(),
		State:     s.GetState().GetState(),
		Meta:      s.GetState().GetMeta(),
		CommandID: s.GetCommandId(),
		Recent:    recent,
	}, nil
}

// lru is a plain mutex-guarded LRU bounded by entry count and by the encoded size of the heads it
// holds (states may be up to a NATS message each); a nil *lru is an always-empty cache.
type lru struct {
	mu       sync.Mutex
	max      int
	maxBytes int64
	bytes    int64
	order    *list.List // front = most recent; values are *lruEntry
	items    map[string]*list.Element
}

type lruEntry struct {
	key  string
	head eventlog.Head
	size int64
}

func newLRU(max int, maxBytes int64) *lru {
	return &lru{max: max, maxBytes: maxBytes, order: list.New(), items: make(map[string]*list.Element, min(max, 1<<16))}
}

// entrySize approximates what an entry keeps alive: the encoded state and meta, the remembered command
// ids and the bookkeeping around them.
func entrySize(key string, h eventlog.Head) int64 {
	const overhead = 256 // list element, map slot, decoded message structs
	return int64(overhead + len(key) + proto.Size(h.State) + proto.Size(h.Meta) + len(h.CommandID) + 48*len(h.Recent))
}

func (l *lru) get(key string) (eventlog.Head, bool) {
	if l == nil {
		return eventlog.Head{}, false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.items[key]
	if !ok {
		return eventlog.Head{}, false
	}
	l.order.MoveToFront(e)
	return e.Value.(*lruEntry).head, true
}

func (l *lru) put(key string, h eventlog.Head) {
	if l == nil {
		return
	}
	size := entrySize(key, h)
	l.mu.Lock()
	defer l.mu.Unlock()
	if e, ok := l.items[key]; ok {
		// Never replace a newer head with an older one (two workers' writes may race).
		if cur := e.Value.(*lruEntry); cur.head.Seq <= h.Seq {
			l.bytes += size - cur.size
			cur.head, cur.size = h, size
		}
		l.order.MoveToFront(e)
	} else if size <= l.maxBytes {
		l.items[key] = l.order.PushFront(&lruEntry{key: key, head: h, size: size})
		l.bytes += size
	}
	for l.order.Len() > l.max || l.bytes > l.maxBytes {
		l.evict(l.order.Back())
	}
}

func (l *lru) evict(e *list.Element) {
	ent := e.Value.(*lruEntry)
	l.order.Remove(e)
	delete(l.items, ent.key)
	l.bytes -= ent.size
}

func (l *lru) remove(key string) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if e, ok := l.items[key]; ok {
		l.evict(e)
	}
}

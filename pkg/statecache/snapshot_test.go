package statecache_test

import (
	"context"
	"io"
	"log/slog"
	"testing"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	"github.com/cosnats/cosnats/internal/costest"
	"github.com/cosnats/cosnats/pkg/entity"
	"github.com/cosnats/cosnats/pkg/eventlog"
	"github.com/cosnats/cosnats/pkg/layout"
	"github.com/cosnats/cosnats/pkg/statecache"
)

// Snapshots reach the KV bucket only when an append crosses a multiple of SnapshotEvery; the
// in-process cache always has the newest head.
func TestPeriodicSnapshots(t *testing.T) {
	_, js := costest.JetStream(t, costest.StartNATS(t))
	c, err := statecache.Open(context.Background(), js, statecache.Config{Layout: layout.Default(), Entries: 10, Bytes: 1 << 20, UseKV: true, SnapshotEvery: 3, Replicas: 1},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	k, _ := entity.NewKey("e", 9)
	head := func(rev uint32) eventlog.Head {
		return eventlog.Head{Seq: uint64(rev), State: costest.Int64Any(int64(rev)), Meta: &cospb.MetaData{EntityId: "e", RevisionNumber: rev}, CommandID: "c"}
	}
	snapshot := func() uint32 {
		t.Helper()
		h, ok, err := c.Snapshot(context.Background(), k)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			return 0
		}
		return h.Revision()
	}
	c.Put(k, head(1), 0)
	c.Put(k, head(2), 1)
	// Revisions 1 and 2 cross no multiple of 3: nothing was written.
	if got := snapshot(); got != 0 {
		t.Fatalf("snapshot at revision %d before the first multiple of 3", got)
	}
	c.Put(k, head(4), 2) // a multi-event append from 2 to 4 crosses 3
	if h, ok := c.Get(context.Background(), k); !ok || h.Revision() != 4 {
		t.Fatalf("in-process head %v %v", h, ok)
	}
	for snapshot() != 4 { // the write is fire-and-forget: poll until the server has stored it
	}
	c.Put(k, head(5), 4)
	if got := snapshot(); got != 4 {
		t.Fatalf("snapshot moved to %d without crossing a multiple of 3", got)
	}
}

package eventlog_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cosnats/cosnats/internal/costest"
	"github.com/cosnats/cosnats/pkg/entity"
	"github.com/cosnats/cosnats/pkg/eventlog"
	"github.com/cosnats/cosnats/pkg/layout"
)

func TestOpenIsIdempotent(t *testing.T) {
	_, js := costest.JetStream(t, costest.StartNATS(t))
	cfg := eventlog.Config{Layout: layout.Default(), Replicas: 1, NumShards: 9}
	for range 2 {
		if _, err := eventlog.Open(context.Background(), js, cfg); err != nil {
			t.Fatal(err)
		}
	}
}

func TestOpenRejectsAnIncompatibleStream(t *testing.T) {
	_, js := costest.JetStream(t, costest.StartNATS(t))
	cfg := eventlog.Config{Layout: layout.Default(), Replicas: 1, NumShards: 9}
	bad := eventlog.StreamConfig(cfg)
	bad.MaxAge = time.Hour
	bad.AllowAtomicPublish = false
	if _, err := js.CreateStream(context.Background(), bad); err != nil {
		t.Fatal(err)
	}
	_, err := eventlog.Open(context.Background(), js, cfg)
	if err == nil || !strings.Contains(err.Error(), "max_age") || !strings.Contains(err.Error(), "allow_atomic") || !strings.Contains(err.Error(), "COS_EVENTS") {
		t.Fatalf("got %v, want an error naming the stream, max_age and allow_atomic", err)
	}
}

func TestAppendConflictAndBatch(t *testing.T) {
	_, js := costest.JetStream(t, costest.StartNATS(t))
	ctx := context.Background()
	log, err := eventlog.Open(ctx, js, eventlog.Config{Layout: layout.Default(), Replicas: 1, NumShards: 9})
	if err != nil {
		t.Fatal(err)
	}
	k, _ := entity.NewKey("e", 9)
	seq, err := log.Append(ctx, eventlog.Append{Key: k, CommandID: "a", Events: [][]byte{nil, nil, nil}})
	if err != nil {
		t.Fatal(err)
	}
	if seq != 3 {
		t.Fatalf("batch of 3 ended at sequence %d", seq)
	}
	// A stale expectation is a conflict, for a single event and for a batch, and stores nothing.
	for _, n := range []int{1, 2} {
		_, err = log.Append(ctx, eventlog.Append{Key: k, ExpectedSeq: 1, CommandID: "b", Events: make([][]byte, n)})
		if !errors.Is(err, eventlog.ErrConflict) || !eventlog.IsDefinite(err) {
			t.Fatalf("stale append of %d: %v", n, err)
		}
	}
	h, err := log.Last(ctx, k)
	if err != nil || h.Seq != 3 || h.CommandID != "a" {
		t.Fatalf("head %+v %v", h, err)
	}
	s, _ := js.Stream(ctx, layout.Default().EventStream())
	info, _ := s.Info(ctx)
	if info.State.Msgs != 3 {
		t.Fatalf("%d messages stored", info.State.Msgs)
	}
}

package eventlog_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cosnats/cosnats/internal/costest"
	"github.com/cosnats/cosnats/pkg/entity"
	"github.com/cosnats/cosnats/pkg/eventlog"
	"github.com/cosnats/cosnats/pkg/layout"
)

// Every setting the guarantees rest on is checked on an existing stream, and a mismatch is a
// configuration error that names the setting.
func TestOpenRefusesDrift(t *testing.T) {
	cfg := eventlog.Config{Layout: layout.Default(), Replicas: 1, NumShards: 9}
	for _, tt := range []struct {
		name   string
		mutate func(*jetstream.StreamConfig)
		want   string
	}{
		{"deny purge off", func(c *jetstream.StreamConfig) { c.DenyPurge = false }, "deny_delete/deny_purge"},
		{"memory storage", func(c *jetstream.StreamConfig) { c.Storage = jetstream.MemoryStorage }, "storage"},
		{"other shard count", func(c *jetstream.StreamConfig) { c.Metadata = map[string]string{eventlog.MetaNumShards: "16"} }, "COS_NUM_SHARDS=16"},
		{"other layout version", func(c *jetstream.StreamConfig) {
			c.Metadata = map[string]string{eventlog.MetaNumShards: "9", eventlog.MetaLayout: "7"}
		}, "cos_layout"},
		{"delete markers", func(c *jetstream.StreamConfig) { c.SubjectDeleteMarkerTTL = time.Minute }, "subject_delete_marker_ttl"},
		{"per-subject limit", func(c *jetstream.StreamConfig) { c.MaxMsgsPerSubject = 5 }, "max_msgs_per_subject"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, js := costest.JetStream(t, costest.StartNATS(t))
			bad := eventlog.StreamConfig(cfg)
			tt.mutate(&bad)
			if _, err := js.CreateStream(context.Background(), bad); err != nil {
				t.Fatal(err)
			}
			_, err := eventlog.Open(context.Background(), js, cfg)
			if !errors.Is(err, layout.ErrMismatch) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want a mismatch naming %q", err, tt.want)
			}
		})
	}
	t.Run("replicas", func(t *testing.T) {
		_, js := costest.JetStream(t, costest.StartNATS(t))
		if _, err := eventlog.Open(context.Background(), js, cfg); err != nil {
			t.Fatal(err)
		}
		r3 := cfg
		r3.Replicas = 3
		_, err := eventlog.Open(context.Background(), js, r3)
		if !errors.Is(err, layout.ErrMismatch) || !strings.Contains(err.Error(), "COS_NATS_REPLICAS says 3") {
			t.Fatalf("got %v", err)
		}
	})
}

// A stream made before the shard count was recorded gets it recorded, after its first event (not a read
// barrier before it) is checked against it; a process with another count is refused from then on. The
// upgrade also allows direct gets and message TTLs.
func TestShardCountIsRecorded(t *testing.T) {
	nc, js := costest.JetStream(t, costest.StartNATS(t))
	ctx := context.Background()
	cfg := eventlog.Config{Layout: layout.Default(), Replicas: 1, NumShards: 9}
	legacy := eventlog.StreamConfig(cfg)
	legacy.Metadata, legacy.AllowDirect, legacy.AllowMsgTTL = nil, false, false
	if _, err := js.CreateStream(ctx, legacy); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, layout.Default().SyncSubject(), nil); err != nil {
		t.Fatal(err)
	}
	k, _ := entity.NewKey("test-id-0", 9) // shard 5 with 9 shards, 7 with 16
	m := nats.NewMsg(layout.Default().EventSubject(k))
	if _, err := js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	_ = nc
	sixteen := cfg
	sixteen.NumShards = 16
	if _, err := eventlog.Open(ctx, js, sixteen); !errors.Is(err, layout.ErrMismatch) || !strings.Contains(err.Error(), "test-id-0") {
		t.Fatalf("16 shards on a 9-shard stream: %v", err)
	}
	if _, err := eventlog.Open(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, layout.Default().EventStream())
	if err != nil {
		t.Fatal(err)
	}
	if got := s.CachedInfo().Config; got.Metadata[eventlog.MetaNumShards] != "9" || !got.AllowDirect || !got.AllowMsgTTL {
		t.Fatalf("after the upgrade: shard count %q, allow_direct %v, allow_msg_ttl %v", got.Metadata[eventlog.MetaNumShards], got.AllowDirect, got.AllowMsgTTL)
	}
	if _, err := eventlog.Open(ctx, js, sixteen); !errors.Is(err, layout.ErrMismatch) || !strings.Contains(err.Error(), "COS_NUM_SHARDS=9") {
		t.Fatalf("16 shards after recording: %v", err)
	}
}

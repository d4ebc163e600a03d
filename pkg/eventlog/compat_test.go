package eventlog

import (
	"strings"
	"testing"

	"github.com/cosnats/cosnats/pkg/layout"
)

// Direct gets are fine on one replica and refused on replicated streams, where a follower could answer
// with stale data.
func TestDirectGetsOnlyOnOneReplica(t *testing.T) {
	r1 := StreamConfig(Config{Layout: layout.Default(), Replicas: 1, NumShards: 9})
	if !r1.AllowDirect || compatible(r1, r1) != nil {
		t.Fatalf("R1: allow_direct=%v, compatible: %v", r1.AllowDirect, compatible(r1, r1))
	}
	r3 := StreamConfig(Config{Layout: layout.Default(), Replicas: 3, NumShards: 9})
	if r3.AllowDirect {
		t.Fatal("R3 stream with direct gets")
	}
	stale := r3
	stale.AllowDirect = true
	if err := compatible(stale, r3); err == nil || !strings.Contains(err.Error(), "allow_direct") {
		t.Fatalf("R3 with direct gets: %v", err)
	}
}

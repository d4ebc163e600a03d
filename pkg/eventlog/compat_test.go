package eventlog

import (
	"strings"
	"testing"
	"time"

	"github.com/cosnats/cosnats/pkg/layout"
)

// Every stream allows direct gets and message TTLs (read barriers need both); delete markers, which
// would put messages on event subjects, are refused.
func TestStreamAllowsBarriers(t *testing.T) {
	for _, replicas := range []int{1, 3} {
		c := StreamConfig(Config{Layout: layout.Default(), Replicas: replicas, NumShards: 9})
		if !c.AllowDirect || !c.AllowMsgTTL || compatible(c, c) != nil {
			t.Fatalf("R%d: allow_direct=%v allow_msg_ttl=%v, compatible: %v", replicas, c.AllowDirect, c.AllowMsgTTL, compatible(c, c))
		}
		markers := c
		markers.SubjectDeleteMarkerTTL = time.Minute
		if err := compatible(markers, c); err == nil || !strings.Contains(err.Error(), "subject_delete_marker_ttl") {
			t.Fatalf("R%d with delete markers: %v", replicas, err)
		}
	}
}

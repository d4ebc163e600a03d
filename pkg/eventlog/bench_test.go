package eventlog_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/cosnats/cosnats/internal/costest"
	"github.com/cosnats/cosnats/pkg/entity"
	"github.com/cosnats/cosnats/pkg/eventlog"
)

// BenchmarkReadR3 compares reads of an entity's head on a 3-node cluster, 64 readers at once: the
// stream leader's answer (what workers use; what GetState used before barriers) and Current (what
// GetState uses: a shared barrier, then a direct get that must hold it).
//
//	go test -run XXX -bench BenchmarkReadR3 ./pkg/eventlog
func BenchmarkReadR3(b *testing.B) {
	c := costest.StartCluster(b, 3)
	ctx := context.Background()
	log, _ := openOn(b, c.ClientURL(0))
	keys := make([]entity.Key, 256)
	for i := range keys {
		keys[i], _ = entity.NewKey(fmt.Sprint("bench-", i), 9)
		if _, err := log.Append(ctx, eventlog.Append{Key: keys[i], CommandID: "c", Events: [][]byte{revisionEvent(b, 1)}}); err != nil {
			b.Fatal(err)
		}
	}
	for _, mode := range []struct {
		name string
		read func(context.Context, entity.Key) (eventlog.Head, error)
	}{{"leader", log.Last}, {"current", log.Current}} {
		b.Run(mode.name, func(b *testing.B) {
			b.SetParallelism(32) // × GOMAXPROCS (2 here): 64 readers
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					if h, err := mode.read(ctx, keys[i%len(keys)]); err != nil || h.Revision() != 1 {
						b.Errorf("read: revision %d, %v", h.Revision(), err)
						return
					}
					i++
				}
			})
		})
	}
}

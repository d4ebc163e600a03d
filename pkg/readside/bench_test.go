package readside_test

import (
	"context"
	"fmt"
	"runtime/metrics"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	"github.com/cosnats/cosnats/internal/costest"
	"github.com/cosnats/cosnats/pkg/config"
	"github.com/cosnats/cosnats/pkg/entity"
	"github.com/cosnats/cosnats/pkg/eventlog"
	"github.com/cosnats/cosnats/pkg/layout"
	"github.com/cosnats/cosnats/pkg/node"
)

// BenchmarkCatchUp measures how fast a new read side (a no-op gRPC handler on loopback) catches up with
// a log of 20,000 events (9 shards), everything in this process. Reports events/s. The log has 2,000
// entities of 10 events, or 20,000 entities of one event each (the shape of cosbench's scale scenario,
// where the server has one subject per event to filter).
func BenchmarkCatchUp(b *testing.B) {
	for _, shape := range []struct{ entities, perEntity int }{{2000, 10}, {20000, 1}} {
		b.Run(fmt.Sprintf("%dx%d", shape.entities, shape.perEntity), func(b *testing.B) { benchCatchUp(b, shape.entities, shape.perEntity) })
	}
}

func benchCatchUp(b *testing.B, entities, perEntity int) {
	srv := costest.StartNATS(b)
	_, js := costest.JetStream(b, srv)
	ctx := context.Background()
	log, err := eventlog.Open(ctx, js, eventlog.Config{Layout: layout.Default(), Replicas: 1, NumShards: 9})
	if err != nil {
		b.Fatal(err)
	}
	for i := range entities {
		k, _ := entity.NewKey(fmt.Sprint("bench-", i), 9)
		var seq uint64
		for r := range perEntity {
			data, _ := proto.Marshal(&cospb.EventWrapper{Event: costest.Cmd("e"), ResultingState: costest.Int64Any(int64(r + 1)),
				Meta: &cospb.MetaData{EntityId: k.ID, RevisionNumber: uint32(r + 1)}})
			if seq, err = log.Append(ctx, eventlog.Append{Key: k, ExpectedSeq: seq, CommandID: fmt.Sprint(r), Events: [][]byte{data}}); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		rec := costest.NewRecorder()
		cfg := costest.Config(b, srv.ClientURL(), 1)
		cfg.ReadSideEnabled = true
		cfg.ReadSides = []config.ReadSide{{ID: fmt.Sprint("bench", i), Host: "127.0.0.1", Port: costest.ServeGRPC(b, rec.Register),
			AutoStart: true, Enabled: true, Timeout: 5 * time.Second, MaxInFlight: config.DefaultReadSideMaxInFlight}}
		start, cpu := time.Now(), cpuSeconds()
		n := costest.StartNode(b, cfg, node.Roles{Projector: true})
		rec.WaitFor(b, 5*time.Minute, "catch-up", func(r *costest.Recorder) bool { return r.Total() == entities*perEntity })
		elapsed, used := time.Since(start).Seconds(), cpuSeconds()-cpu
		b.ReportMetric(float64(entities*perEntity)/elapsed, "events/s")
		// The whole process (NATS, projector, read side): whether catch-up is bound by CPU or by waiting.
		b.ReportMetric(used*1e6/float64(entities*perEntity), "cpu-µs/event")
		b.ReportMetric(used/elapsed, "cores")
		if err := n.Stop(); err != nil {
			b.Fatal(err)
		}
	}
}

// cpuSeconds is the CPU time this process has used so far: the Go runtime's estimate of the time
// available to it (GOMAXPROCS over its lifetime) minus the time its processors were idle.
func cpuSeconds() float64 {
	sample := []metrics.Sample{{Name: "/cpu/classes/total:cpu-seconds"}, {Name: "/cpu/classes/idle:cpu-seconds"}}
	metrics.Read(sample)
	return sample[0].Value.Float64() - sample[1].Value.Float64()
}

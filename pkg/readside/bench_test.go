package readside_test

import (
	"context"
	"fmt"
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
// a log of 20,000 events over 2,000 entities (9 shards), everything in this process. Reports events/s.
func BenchmarkCatchUp(b *testing.B) {
	const entities, perEntity = 2000, 10
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
		start := time.Now()
		n := costest.StartNode(b, cfg, node.Roles{Projector: true})
		rec.WaitFor(b, 5*time.Minute, "catch-up", func(r *costest.Recorder) bool { return r.Total() == entities*perEntity })
		b.ReportMetric(float64(entities*perEntity)/time.Since(start).Seconds(), "events/s")
		if err := n.Stop(); err != nil {
			b.Fatal(err)
		}
	}
}

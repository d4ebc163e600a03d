package node_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	"github.com/cosnats/cosnats/internal/costest"
	"github.com/cosnats/cosnats/pkg/intake"
	"github.com/cosnats/cosnats/pkg/layout"
	"github.com/cosnats/cosnats/pkg/node"
	"github.com/cosnats/cosnats/pkg/telemetry"
)

// benchSystem is the single-process default (embedded NATS, default durability) with the Counter
// handler, all on loopback in this process.
func benchSystem(b *testing.B) cospb.ChiefOfStateServiceClient {
	return benchSystemWith(b, node.Options{})
}

func benchSystemWith(b *testing.B, opts node.Options) cospb.ChiefOfStateServiceClient {
	h := &costest.Counter{}
	port := costest.ServeGRPC(b, h.Register)
	cfg := costest.Config(b, "", port)
	n := costest.StartNodeWith(b, cfg, opts)
	return costest.Client(b, n.GRPCAddr)
}

// BenchmarkProcessCommand: closed loop, 64 concurrent callers, each on its own entities (10,000 in all).
// Tracing is off (no OTLP endpoint), as by default; metrics are on.
func BenchmarkProcessCommand(b *testing.B) {
	benchProcessCommand(b, benchSystem(b))
}

// BenchmarkProcessCommandTraced is BenchmarkProcessCommand with tracing on and every command sampled:
// spans are batched and exported to an exporter that discards them, so what is measured is the cost in
// this process (span creation, context propagation in gRPC metadata and NATS headers, batching).
func BenchmarkProcessCommandTraced(b *testing.B) {
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()))
	b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	benchProcessCommand(b, benchSystemWith(b, node.Options{Tracing: &telemetry.Tracing{Provider: tp, Enabled: true, Shutdown: tp.Shutdown}}))
}

func benchProcessCommand(b *testing.B, client cospb.ChiefOfStateServiceClient) {
	cmd := costest.Cmd("add:1")
	var next atomic.Int64
	b.SetParallelism(32) // × GOMAXPROCS (2 here) = 64 callers
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			id := fmt.Sprintf("bench-%d", next.Add(1)%10000)
			if _, err := client.ProcessCommand(context.Background(), &cospb.ProcessCommandRequest{EntityId: id, Command: cmd}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkGetState: 64 concurrent callers reading 1,000 existing entities.
func BenchmarkGetState(b *testing.B) {
	client := benchSystem(b)
	cmd := costest.Cmd("add:1")
	for i := range 1000 {
		if _, err := client.ProcessCommand(context.Background(), &cospb.ProcessCommandRequest{EntityId: fmt.Sprint("g-", i), Command: cmd}); err != nil {
			b.Fatal(err)
		}
	}
	var next atomic.Int64
	b.SetParallelism(32)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			id := fmt.Sprint("g-", next.Add(1)%1000)
			if _, err := client.GetState(context.Background(), &cospb.GetStateRequest{EntityId: id}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkIntakeAsync: b.N commands published to the asynchronous intake (async publishes, 10,000
// entities), timed until the last outcome is heard. The cost per command of the durable way in.
func BenchmarkIntakeAsync(b *testing.B) {
	h := &costest.Counter{}
	cfg := costest.Config(b, "", costest.ServeGRPC(b, h.Register))
	cfg.NATS.Listen = "127.0.0.1:0"
	n := costest.StartNode(b, cfg, node.Roles{})
	nc, err := nats.Connect(n.NATSURL)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	lay := layout.Default()
	var heard atomic.Int64
	done := make(chan struct{})
	sub, err := nc.Subscribe(lay.OutcomeSubjects(), func(*nats.Msg) {
		if heard.Add(1) == int64(b.N) {
			close(done)
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = sub.Unsubscribe() })
	data, _ := proto.Marshal(wrapperspb.String("add:1"))
	b.ResetTimer()
	for i := range b.N {
		m := nats.NewMsg(lay.IntakeSubject())
		m.Header.Set(intake.HeaderEntityID, fmt.Sprintf("bench-%d", i%10000))
		m.Header.Set(intake.HeaderCommandType, "google.protobuf.StringValue")
		m.Header.Set("Nats-Msg-Id", fmt.Sprintf("b%d-%d", b.N, i))
		m.Data = data
		for {
			_, err := js.PublishMsgAsync(m)
			if errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
				<-js.PublishAsyncComplete() // a producer waits for acknowledgements when too many are out
				continue
			}
			if err != nil {
				b.Fatal(err)
			}
			break
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		b.Fatal("publishes not acknowledged")
	}
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		b.Fatalf("%d of %d outcomes", heard.Load(), b.N)
	}
}

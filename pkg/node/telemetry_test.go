package node_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/cosnats/cosnats/deploy/observability"
	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	"github.com/cosnats/cosnats/internal/costest"
	"github.com/cosnats/cosnats/pkg/config"
	"github.com/cosnats/cosnats/pkg/node"
	"github.com/cosnats/cosnats/pkg/telemetry"
)

// recording is tracing into memory, shared by every node of a test (as one collector would be).
func recording(t *testing.T) (*tracetest.SpanRecorder, *telemetry.Tracing) {
	t.Helper()
	sr := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return sr, &telemetry.Tracing{Provider: tp, Enabled: true, Shutdown: func(context.Context) error { return nil }}
}

// tracedClient calls the gateway inside a client span, as an instrumented application would.
func tracedClient(t *testing.T, addr string, tp trace.TracerProvider) cospb.ChiefOfStateServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithStatsHandler(otelgrpc.NewClientHandler(otelgrpc.WithTracerProvider(tp), otelgrpc.WithPropagators(telemetry.Propagator))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return cospb.NewChiefOfStateServiceClient(conn)
}

// traceparents records the traceparent each read-side call carried.
type traceparents struct {
	mu  sync.Mutex
	got []string
}

func (p *traceparents) fail(ctx context.Context, _ *cospb.HandleReadSideRequest) (bool, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	p.mu.Lock()
	p.got = append(p.got, strings.Join(md.Get("traceparent"), ","))
	p.mu.Unlock()
	return true, nil
}

func (p *traceparents) all() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.got...)
}

// tracedSystem configures a system with one read side whose calls' traceparents are recorded.
func tracedSystem(t *testing.T, natsURL string) (config.Config, *costest.Counter, *traceparents) {
	t.Helper()
	h := &costest.Counter{}
	cfg := costest.Config(t, natsURL, costest.ServeGRPC(t, h.Register))
	rec, tps := costest.NewRecorder(), &traceparents{}
	rec.Fail = tps.fail
	cfg.ReadSideEnabled = true
	cfg.ReadSides = []config.ReadSide{{ID: "rs", Host: "127.0.0.1", Port: costest.ServeGRPC(t, rec.Register),
		AutoStart: true, Enabled: true, Timeout: 5 * time.Second, MaxInFlight: 4}}
	return cfg, h, tps
}

// checkChain asserts that one command is one trace: each named span is a child of the one before it
// (parents maps a span name to its parent's name), all in the caller's trace; and that both handlers
// saw the trace context.
func checkChain(t *testing.T, sr *tracetest.SpanRecorder, root trace.SpanContext, parents map[string]string, h *costest.Counter, tps *traceparents) {
	t.Helper()
	var spans map[string]sdktrace.ReadOnlySpan
	var why string
	costest.Eventually(t, 30*time.Second, "every span of the command to end", func() bool {
		spans = map[string]sdktrace.ReadOnlySpan{}
		for _, s := range sr.Ended() {
			if s.SpanContext().TraceID() != root.TraceID() {
				continue
			}
			name := s.Name()
			if s.SpanKind() == trace.SpanKindClient && strings.HasPrefix(name, "chief_of_state.v1.ChiefOfStateService/") {
				name = "client " + name // the test's own call; the gateway's server span has the same name
			}
			spans[name] = s
		}
		for name := range parents {
			if spans[name] == nil {
				why = "missing " + name
				return false
			}
		}
		return true
	}, &why)
	for name, parent := range parents {
		s := spans[name]
		want := root.SpanID()
		if parent != "" {
			want = spans[parent].SpanContext().SpanID()
		}
		if s.Parent().SpanID() != want {
			t.Errorf("span %q: parent %s, want %q (%s)", name, s.Parent().SpanID(), parent, want)
		}
	}
	attrs := func(name string) map[string]string {
		out := map[string]string{}
		for _, kv := range spans[name].Attributes() {
			out[string(kv.Key)] = kv.Value.Emit()
		}
		return out
	}
	for name, want := range map[string]map[string]string{
		"process cos.cmd.*.*": {"cos.entity_id": "traced", "cos.revision": "1", "messaging.system": "nats", "cos.command_type": "google.protobuf.StringValue"},
		"process COS_EVENTS":  {"cos.entity_id": "traced", "cos.revision": "1", "cos.read_side_id": "rs", "messaging.operation.type": "process"},
		"send COS_EVENTS":     {"messaging.destination.template": "cos.events.>", "messaging.operation.type": "send"},
	} {
		got := attrs(name)
		for k, v := range want {
			if got[k] != v {
				t.Errorf("span %q: %s = %q, want %q", name, k, got[k], v)
			}
		}
	}
	// The handlers received the context of their client spans.
	calls := h.Commands()
	if len(calls) != 1 {
		t.Fatalf("%d HandleCommand calls", len(calls))
	}
	want := spans["chief_of_state.v1.WriteSideHandlerService/HandleCommand"].SpanContext()
	if tp := calls[0].MD.Get("traceparent"); len(tp) != 1 || !strings.Contains(tp[0], want.TraceID().String()+"-"+want.SpanID().String()) {
		t.Errorf("HandleCommand saw traceparent %q, want span %s", tp, want.SpanID())
	}
	want = spans["chief_of_state.v1.ReadSideHandlerService/HandleReadSide"].SpanContext()
	if got := tps.all(); len(got) == 0 || !strings.Contains(got[len(got)-1], want.TraceID().String()+"-"+want.SpanID().String()) {
		t.Errorf("HandleReadSide saw traceparents %q, want span %s", got, want.SpanID())
	}
}

// command sends one command inside a root span and returns the span's context.
func tracedCommand(t *testing.T, addr string, tp trace.TracerProvider) trace.SpanContext {
	t.Helper()
	ctx, root := tp.Tracer("test").Start(context.Background(), "caller")
	_, err := tracedClient(t, addr, tp).ProcessCommand(ctx, &cospb.ProcessCommandRequest{EntityId: "traced", Command: costest.Cmd("add:1")})
	root.End()
	if err != nil {
		t.Fatal(err)
	}
	return root.SpanContext()
}

// One command in the single-process mode is one trace, from the caller's span through the handlers and
// the append to the read side's call.
func TestTraceOfACommandEmbedded(t *testing.T) {
	sr, tr := recording(t)
	cfg, h, tps := tracedSystem(t, "")
	n := costest.StartNodeWith(t, cfg, node.Options{Tracing: tr})
	root := tracedCommand(t, n.GRPCAddr, tr.Provider)
	checkChain(t, sr, root, map[string]string{
		"client chief_of_state.v1.ChiefOfStateService/ProcessCommand": "",
		"chief_of_state.v1.ChiefOfStateService/ProcessCommand":        "client chief_of_state.v1.ChiefOfStateService/ProcessCommand",
		"process cos.cmd.*.*": "chief_of_state.v1.ChiefOfStateService/ProcessCommand",
		"chief_of_state.v1.WriteSideHandlerService/HandleCommand": "process cos.cmd.*.*",
		"chief_of_state.v1.WriteSideHandlerService/HandleEvent":   "process cos.cmd.*.*",
		"send COS_EVENTS":    "process cos.cmd.*.*",
		"process COS_EVENTS": "send COS_EVENTS",
		"chief_of_state.v1.ReadSideHandlerService/HandleReadSide": "process COS_EVENTS",
	}, h, tps)
}

// The same across a gateway, a worker and a projector that only share NATS: the context crosses the
// command hop in the request's headers and reaches the read side in the event's headers.
func TestTraceOfACommandDistributed(t *testing.T) {
	sr, tr := recording(t)
	srv := costest.StartNATS(t)
	cfg, h, tps := tracedSystem(t, srv.ClientURL())
	costest.StartNodeWith(t, cfg, node.Options{Roles: node.Roles{Worker: true}, Tracing: tr})
	costest.StartNodeWith(t, cfg, node.Options{Roles: node.Roles{Projector: true}, Tracing: tr})
	gw := costest.StartNodeWith(t, cfg, node.Options{Roles: node.Roles{Gateway: true}, Tracing: tr})
	root := tracedCommand(t, gw.GRPCAddr, tr.Provider)
	checkChain(t, sr, root, map[string]string{
		"client chief_of_state.v1.ChiefOfStateService/ProcessCommand": "",
		"chief_of_state.v1.ChiefOfStateService/ProcessCommand":        "client chief_of_state.v1.ChiefOfStateService/ProcessCommand",
		"send cos.cmd.*.*":    "chief_of_state.v1.ChiefOfStateService/ProcessCommand",
		"process cos.cmd.*.*": "send cos.cmd.*.*",
		"chief_of_state.v1.WriteSideHandlerService/HandleCommand": "process cos.cmd.*.*",
		"chief_of_state.v1.WriteSideHandlerService/HandleEvent":   "process cos.cmd.*.*",
		"send COS_EVENTS":    "process cos.cmd.*.*",
		"process COS_EVENTS": "send COS_EVENTS",
		"chief_of_state.v1.ReadSideHandlerService/HandleReadSide": "process COS_EVENTS",
	}, h, tps)
	// GetState is traced too.
	ctx, span := tr.Provider.Tracer("test").Start(context.Background(), "reader")
	if _, err := tracedClient(t, gw.GRPCAddr, tr.Provider).GetState(ctx, &cospb.GetStateRequest{EntityId: "traced"}); err != nil {
		t.Fatal(err)
	}
	span.End()
	costest.Eventually(t, 10*time.Second, "the GetState server span", func() bool {
		for _, s := range sr.Ended() {
			if s.Name() == "chief_of_state.v1.ChiefOfStateService/GetState" && s.Parent().TraceID() == span.SpanContext().TraceID() {
				return true
			}
		}
		return false
	})
}

// scrape reads /metrics the way Prometheus does and checks it the way `promtool check metrics` does.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %s", resp.Status)
	}
	problems, err := promlint.New(strings.NewReader(string(body))).Lint()
	if err != nil {
		t.Fatalf("lint /metrics: %v", err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// value is the sum of a metric's samples whose labels include want (a counter's or gauge's value, a
// histogram's count).
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	var sum float64
	for _, m := range fams[name].GetMetric() {
		ok := true
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			ok = ok && labels[k] == v
		}
		if !ok {
			continue
		}
		switch {
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		case m.Histogram != nil:
			sum += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return sum
}

// DocumentedMetrics are the metric names the README documents.
var DocumentedMetrics = []string{
	"cos_commands_total", "cos_command_duration_seconds", "cos_handler_duration_seconds",
	"cos_append_duration_seconds", "cos_append_conflicts_total", "cos_state_cache_requests_total",
	"cos_worker_inflight_commands", "cos_gateway_workers", "cos_readside_events_total", "cos_readside_lag_events",
	"cos_readside_lag_seconds", "cos_readside_shard_state", "cos_nats_connected", "cos_build_info",
	"cos_intake_commands_total", "cos_intake_pending_commands",
	"go_goroutines", "process_resident_memory_bytes",
}

// A running system's /metrics passes the linter, has every documented metric, and moves as commands
// flow: outcomes, handler calls, appends, cache, read side, shard state.
func TestMetricsOfARunningSystem(t *testing.T) {
	cfg, _, _ := tracedSystem(t, "")
	n := costest.StartNodeWith(t, cfg, node.Options{})
	client := costest.Client(t, n.GRPCAddr)
	ctx := context.Background()
	const commands = 20
	for i := range commands {
		if _, err := client.ProcessCommand(ctx, &cospb.ProcessCommandRequest{EntityId: fmt.Sprint("m-", i%4), Command: costest.Cmd("add:1")}); err != nil {
			t.Fatal(err)
		}
	}
	retry := metadata.AppendToOutgoingContext(ctx, "x-cos-command-id", "retried-1")
	for range 2 {
		if _, err := client.ProcessCommand(retry, &cospb.ProcessCommandRequest{EntityId: "m-0", Command: costest.Cmd("add:1")}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := client.ProcessCommand(ctx, &cospb.ProcessCommandRequest{EntityId: "m-0", Command: costest.Cmd("bad")}); err == nil {
		t.Fatal("bad command accepted")
	}
	if _, err := client.ProcessCommand(ctx, &cospb.ProcessCommandRequest{EntityId: "", Command: costest.Cmd("add:1")}); err == nil {
		t.Fatal("empty id accepted")
	}
	var fams map[string]*dto.MetricFamily
	var why string
	// The read side and the shard reporter (every 5 s) catch up asynchronously.
	costest.Eventually(t, 30*time.Second, "read-side metrics", func() bool {
		fams = scrape(t, n.ProbeAddr)
		ok := value(fams, "cos_readside_events_total", map[string]string{"read_side": "rs", "outcome": "ok"})
		held := value(fams, "cos_readside_shard_state", map[string]string{"read_side": "rs", "state": "running"})
		workers := value(fams, "cos_gateway_workers", nil)
		// The lag and the states are set together, but a scrape collects one family after the other and
		// may fall between them during the reporter's first round.
		lag := fams["cos_readside_lag_events"] != nil
		why = fmt.Sprintf("%v events ok, %v shards running, lag reported %v, %v workers known", ok, held, lag, workers)
		return ok == commands+1 && held > 0 && lag && workers == 1 // its own worker, heard by its gateway
	}, &why)
	for _, name := range DocumentedMetrics {
		if fams[name] == nil {
			t.Errorf("%s missing from /metrics", name)
		}
	}
	// Every metric the shipped alert rules and dashboard query exists.
	kit, err := observability.MetricNames()
	if err != nil {
		t.Fatal(err)
	}
	if len(kit) == 0 {
		t.Fatal("the alert rules and the dashboard name no metric")
	}
	for _, name := range kit {
		if fams[name] == nil {
			t.Errorf("%s, used by deploy/observability, is not in /metrics", name)
		}
	}
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"cos_commands_total", map[string]string{"outcome": "ok"}, commands + 1},
		{"cos_commands_total", map[string]string{"outcome": "replayed"}, 1},
		{"cos_commands_total", map[string]string{"outcome": "handler_error"}, 1},
		{"cos_commands_total", map[string]string{"outcome": "invalid"}, 1},
		{"cos_commands_total", map[string]string{"outcome": "unknown"}, 0},
		{"cos_command_duration_seconds", nil, commands + 4},
		{"cos_handler_duration_seconds", map[string]string{"method": "HandleCommand"}, commands + 2},
		{"cos_handler_duration_seconds", map[string]string{"method": "HandleEvent"}, commands + 1},
		{"cos_handler_duration_seconds", map[string]string{"method": "HandleReadSide"}, commands + 1},
		{"cos_append_duration_seconds", nil, commands + 1},
		{"cos_append_conflicts_total", nil, 0},
		{"cos_state_cache_requests_total", map[string]string{"result": "miss"}, 4},
		{"cos_state_cache_requests_total", map[string]string{"result": "hit"}, commands + 3 - 4},
		{"cos_readside_lag_seconds", map[string]string{"read_side": "rs"}, commands + 1},
		{"cos_readside_events_total", map[string]string{"read_side": "rs", "outcome": "failed"}, 0},
		{"cos_worker_inflight_commands", nil, 0},
		{"cos_nats_connected", nil, 1},
		{"cos_build_info", nil, 1},
	} {
		if got := value(fams, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	// Each shard held reports exactly one state, and its lag is 0 once everything is handled.
	costest.Eventually(t, 30*time.Second, "lag 0 on every held shard", func() bool {
		fams = scrape(t, n.ProbeAddr)
		return value(fams, "cos_readside_lag_events", map[string]string{"read_side": "rs"}) == 0 && fams["cos_readside_lag_events"] != nil
	})
	if held, states := len(fams["cos_readside_lag_events"].GetMetric()), value(fams, "cos_readside_shard_state", nil); float64(held) != states {
		t.Errorf("%d shards held, %v states set", held, states)
	}
}

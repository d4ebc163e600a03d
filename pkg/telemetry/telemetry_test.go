package telemetry

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

func env(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

func TestTracingFromEnv(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		getenv  func(string) string
		enabled bool
		err     string
	}{
		{"nothing configured", env(), false, ""},
		{"disabled", env("OTEL_SDK_DISABLED", "true", "OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"), false, ""},
		{"exporter none", env("OTEL_TRACES_EXPORTER", "none", "OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"), false, ""},
		{"otlp http", env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"), true, ""},
		{"otlp grpc", env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317", "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"), true, ""},
		{"traces endpoint only", env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:4318/v1/traces"), true, ""},
		{"bad protocol", env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://x:4318", "OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"), false, "OTEL_EXPORTER_OTLP_PROTOCOL"},
		{"bad exporter", env("OTEL_TRACES_EXPORTER", "zipkin"), false, "OTEL_TRACES_EXPORTER"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr, err := TracingFromEnv(ctx, tc.getenv, "cos", "worker")
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one naming %s", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				// Nothing listens at the endpoint: do not wait for the export to give up.
				sctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
				defer cancel()
				_ = tr.Shutdown(sctx)
			}()
			if tr.Enabled != tc.enabled {
				t.Fatalf("enabled = %v, want %v", tr.Enabled, tc.enabled)
			}
			_, span := StartMessaging(ctx, Tracer(tr), "x", OpSend, trace.SpanKindProducer, "a.*", "a.b")
			if span.IsRecording() != tc.enabled {
				t.Fatalf("span recording = %v, want %v", span.IsRecording(), tc.enabled)
			}
			span.End()
		})
	}
}

func TestResourceFromEnv(t *testing.T) {
	t.Setenv("OTEL_SERVICE_NAME", "bank")
	t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test")
	res, err := Resource(context.Background(), "chiefofstate", "gateway")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, kv := range res.Attributes() {
		got[string(kv.Key)] = kv.Value.Emit()
	}
	for k, want := range map[string]string{"service.name": "bank", "deployment.environment": "test", "cos.role": "gateway"} {
		if got[k] != want {
			t.Errorf("%s = %q, want %q (all: %v)", k, got[k], want, got)
		}
	}
}

func sampledContext(t *testing.T) (context.Context, trace.SpanContext) {
	t.Helper()
	tp := sdktrace.NewTracerProvider()
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	ctx, span := tp.Tracer("t").Start(context.Background(), "root")
	t.Cleanup(func() { span.End() })
	return ctx, span.SpanContext()
}

func TestNATSHeadersCarryTraceContext(t *testing.T) {
	ctx, sc := sampledContext(t)
	h := nats.Header{}
	Inject(ctx, h)
	if got := h.Get("traceparent"); !strings.Contains(got, sc.TraceID().String()) {
		t.Fatalf("traceparent = %q, want trace %s", got, sc.TraceID())
	}
	back := trace.SpanContextFromContext(Extract(context.Background(), h))
	if back.TraceID() != sc.TraceID() || back.SpanID() != sc.SpanID() || !back.IsRemote() {
		t.Fatalf("extracted %v, want %v (remote)", back, sc)
	}
	// A producer may spell the header name in any case.
	h2 := nats.Header{"Traceparent": h["traceparent"]}
	if got := trace.SpanContextFromContext(Extract(context.Background(), h2)); got.TraceID() != sc.TraceID() {
		t.Fatalf("canonical-case header not read: %v", got)
	}
	h3 := nats.Header{"TRACEPARENT": h["traceparent"]}
	if got := trace.SpanContextFromContext(Extract(context.Background(), h3)); got.TraceID() != sc.TraceID() {
		t.Fatalf("upper-case header not read: %v", got)
	}
	// Nothing is written without a trace.
	empty := nats.Header{}
	Inject(context.Background(), empty)
	if len(empty) != 0 {
		t.Fatalf("headers without a trace: %v", empty)
	}
}

func TestLongTraceStateIsDropped(t *testing.T) {
	ctx, sc := sampledContext(t)
	ts := trace.TraceState{}
	var err error
	for i := range 30 {
		if ts, err = ts.Insert("k"+strings.Repeat("x", 3)+string(rune('a'+i%26))+string(rune('a'+i/26)), strings.Repeat("v", 60)); err != nil {
			t.Fatal(err)
		}
	}
	ctx = trace.ContextWithSpanContext(ctx, sc.WithTraceState(ts))
	h := nats.Header{}
	Inject(ctx, h)
	if h.Get("tracestate") != "" {
		t.Fatalf("a %d-character tracestate was carried", len(ts.String()))
	}
	if h.Get("traceparent") == "" {
		t.Fatal("traceparent dropped with the tracestate")
	}
	size := 0
	for k, vs := range h {
		for _, v := range vs {
			size += len(k) + len(v) + 4
		}
	}
	if size > TraceHeaderBytes {
		t.Fatalf("trace headers take %d bytes, over the %d reserved", size, TraceHeaderBytes)
	}
}

func TestLogRecordsCarryTraceIDs(t *testing.T) {
	ctx, sc := sampledContext(t)
	var buf bytes.Buffer
	log := slog.New(LogHandler(slog.NewJSONHandler(&buf, nil))).With("role", "worker")
	log.InfoContext(ctx, "hello")
	log.Info("no context")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("lines: %q", lines)
	}
	if !strings.Contains(lines[0], `"trace_id":"`+sc.TraceID().String()+`"`) || !strings.Contains(lines[0], `"span_id":"`+sc.SpanID().String()+`"`) {
		t.Fatalf("record with a span lacks its ids: %s", lines[0])
	}
	if strings.Contains(lines[1], "trace_id") {
		t.Fatalf("record without a span has a trace id: %s", lines[1])
	}
}

func TestMetricsNilIsSafe(t *testing.T) {
	var m *Metrics
	ctx := context.Background()
	m.Command(ctx, OutcomeOK, time.Millisecond)
	m.HandlerCall(ctx, "HandleCommand", time.Millisecond)
	m.Append(ctx, time.Millisecond, true)
	m.CacheRequest(true)
	m.SetInflight(func() int64 { return 1 })
	m.WatchConnected(func() bool { return true })
	m.ReadSideKnown("rs")
	m.ReadSideEvent("rs", EventOK)
	m.ReadSideHandled(ctx, "rs", time.Millisecond)
	m.Shard("rs", 1, 3, ShardRunning)
	m.ForgetShard("rs", 1)
}

func TestMetricsLintAndValues(t *testing.T) {
	m := NewMetrics()
	ctx, sc := sampledContext(t)
	m.Command(ctx, OutcomeOK, 3*time.Millisecond)
	m.Command(context.Background(), OutcomeUnknown, time.Second)
	m.Append(ctx, time.Millisecond, true)
	m.CacheRequest(false)
	m.SetInflight(func() int64 { return 7 })
	connected := true
	m.WatchConnected(func() bool { return connected })
	m.ReadSideKnown("rs")
	m.Shard("rs", 2, 11, ShardFailing)

	problems, err := promlint.NewWithMetricFamilies(mustGather(t, m)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	if n := testutil.ToFloat64(m.commands.WithLabelValues(OutcomeOK)); n != 1 {
		t.Errorf("ok commands = %v", n)
	}
	if n := testutil.ToFloat64(m.appendConflicts); n != 1 {
		t.Errorf("conflicts = %v", n)
	}
	if n := testutil.ToFloat64(m.shardState.WithLabelValues("rs", "2", ShardFailing)); n != 1 {
		t.Errorf("failing = %v", n)
	}
	if n := testutil.ToFloat64(m.shardState.WithLabelValues("rs", "2", ShardRunning)); n != 0 {
		t.Errorf("running = %v", n)
	}
	fams := families(t, m)
	if v := fams["cos_worker_inflight_commands"].GetMetric()[0].GetGauge().GetValue(); v != 7 {
		t.Errorf("inflight = %v", v)
	}
	if v := fams["cos_nats_connected"].GetMetric()[0].GetGauge().GetValue(); v != 1 {
		t.Errorf("connected = %v", v)
	}
	connected = false
	if v := families(t, m)["cos_nats_connected"].GetMetric()[0].GetGauge().GetValue(); v != 0 {
		t.Errorf("connected after a disconnect = %v", v)
	}
	// The sampled command's latency carries its trace id as an exemplar.
	var found bool
	for _, b := range fams["cos_command_duration_seconds"].GetMetric()[0].GetHistogram().GetBucket() {
		for _, l := range b.GetExemplar().GetLabel() {
			if l.GetName() == "trace_id" && l.GetValue() == sc.TraceID().String() {
				found = true
			}
		}
	}
	if !found {
		t.Error("no exemplar with the trace id")
	}
	m.ForgetShard("rs", 2)
	if n := testutil.CollectAndCount(m.shardState); n != 0 {
		t.Errorf("%d shard-state series after ForgetShard", n)
	}
}

func mustGather(t *testing.T, m *Metrics) []*dto.MetricFamily {
	t.Helper()
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	return mfs
}

func families(t *testing.T, m *Metrics) map[string]*dto.MetricFamily {
	out := map[string]*dto.MetricFamily{}
	for _, mf := range mustGather(t, m) {
		out[mf.GetName()] = mf
	}
	return out
}

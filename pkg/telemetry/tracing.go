package telemetry

import (
	"context"
	"errors"
	"fmt"
	"net/textproto"
	"strings"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/cosnats/cosnats/pkg/buildinfo"
)

// ScopeName is the instrumentation scope of this project's spans.
const ScopeName = "github.com/cosnats/cosnats"

// Attribute keys of this project's spans (the rest follow the OTel RPC and messaging conventions).
const (
	AttrEntityID    = attribute.Key("cos.entity_id")
	AttrCommandID   = attribute.Key("cos.command_id")
	AttrCommandType = attribute.Key("cos.command_type")
	AttrRevision    = attribute.Key("cos.revision")
	AttrReadSideID  = attribute.Key("cos.read_side_id")
	AttrShard       = attribute.Key("cos.shard")
	AttrReplayed    = attribute.Key("cos.replayed")
)

// Propagator is W3C trace context: traceparent and tracestate, in gRPC metadata and NATS headers alike.
var Propagator propagation.TextMapPropagator = propagation.TraceContext{}

// Tracing is the process's tracer provider and how to flush it at exit.
type Tracing struct {
	Provider trace.TracerProvider
	// Enabled is false when spans go nowhere: instrumentation that costs something is then left out.
	Enabled  bool
	Shutdown func(context.Context) error
}

// Off is tracing that records nothing.
func Off() Tracing {
	return Tracing{Provider: noop.NewTracerProvider(), Shutdown: func(context.Context) error { return nil }}
}

// TracingFromEnv configures tracing the standard OpenTelemetry way: OTEL_SDK_DISABLED,
// OTEL_TRACES_EXPORTER (otlp or none), OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT, _PROTOCOL (grpc or
// http/protobuf, the default), _HEADERS, _INSECURE…, OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES and
// OTEL_TRACES_SAMPLER[_ARG] (read by the SDK). Without an exporter endpoint tracing is off. serviceName
// is the default service.name; role becomes cos.role.
func TracingFromEnv(ctx context.Context, getenv func(string) string, serviceName, role string) (Tracing, error) {
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return Off(), nil
	}
	switch exp := strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")); exp {
	case "", "otlp":
	case "none":
		return Off(), nil
	default:
		return Tracing{}, fmt.Errorf("OTEL_TRACES_EXPORTER: %q is not supported (otlp or none)", exp)
	}
	if getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" {
		return Off(), nil
	}
	proto := getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if proto == "" {
		proto = getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	var (
		exp sdktrace.SpanExporter
		err error
	)
	switch strings.TrimSpace(proto) {
	case "", "http/protobuf":
		exp, err = otlptracehttp.New(ctx)
	case "grpc":
		exp, err = otlptracegrpc.New(ctx)
	default:
		return Tracing{}, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL: %q is not supported (grpc or http/protobuf)", proto)
	}
	if err != nil {
		return Tracing{}, fmt.Errorf("OTLP trace exporter: %w", err)
	}
	res, err := Resource(ctx, serviceName, role)
	if err != nil {
		return Tracing{}, err
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	return Tracing{Provider: tp, Enabled: true, Shutdown: tp.Shutdown}, nil
}

// Resource describes this process: service.name (OTEL_SERVICE_NAME wins), service.version, cos.role,
// and OTEL_RESOURCE_ATTRIBUTES.
func Resource(ctx context.Context, serviceName, role string) (*resource.Resource, error) {
	bi := buildinfo.Get()
	res, err := resource.New(ctx,
		resource.WithAttributes(semconv.ServiceName(serviceName), semconv.ServiceVersion(bi.Version),
			attribute.String("cos.role", role)),
		resource.WithFromEnv(), // after our defaults: the environment overrides them
		resource.WithTelemetrySDK(),
		resource.WithHost(),
	)
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, fmt.Errorf("OTEL_RESOURCE_ATTRIBUTES: %w", err)
	}
	return res, nil
}

// HeaderCarrier carries trace context in NATS headers. NATS header names are case-sensitive: it writes
// the W3C lower-case names and reads them in any case (producers may send Traceparent).
type HeaderCarrier nats.Header

// Get implements propagation.TextMapCarrier.
func (c HeaderCarrier) Get(key string) string {
	if v := c[key]; len(v) > 0 {
		return v[0]
	}
	if v := c[textproto.CanonicalMIMEHeaderKey(key)]; len(v) > 0 {
		return v[0]
	}
	for k, v := range c {
		if len(v) > 0 && strings.EqualFold(k, key) {
			return v[0]
		}
	}
	return ""
}

// Set implements propagation.TextMapCarrier.
func (c HeaderCarrier) Set(key, value string) { c[key] = []string{value} }

// Keys implements propagation.TextMapCarrier.
func (c HeaderCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// Inject writes the trace context of ctx into h, when ctx holds one (a tracestate over MaxTraceState
// is left out).
func Inject(ctx context.Context, h nats.Header) {
	if trace.SpanContextFromContext(ctx).IsValid() {
		Propagator.Inject(trim(ctx), HeaderCarrier(h))
	}
}

// Extract returns ctx with the remote trace context found in h (if any).
func Extract(ctx context.Context, h nats.Header) context.Context {
	if len(h) == 0 {
		return ctx
	}
	return Propagator.Extract(ctx, HeaderCarrier(h))
}

// TraceHeaderBytes bounds what Inject adds to a message's headers: traceparent (55 characters) and a
// tracestate of at most 32 entries of 512 characters in all, with names and separators.
const TraceHeaderBytes = 700

// MaxTraceState is the longest tracestate carried on (W3C allows implementations to cut it at 512).
const MaxTraceState = 512

// trim drops a tracestate too long to carry, so the header budget of TraceHeaderBytes holds.
func trim(ctx context.Context) context.Context {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() || len(sc.TraceState().String()) <= MaxTraceState {
		return ctx
	}
	return trace.ContextWithSpanContext(ctx, sc.WithTraceState(trace.TraceState{}))
}

// Fail marks a span as failed with err.
func Fail(span trace.Span, err error) {
	if err != nil && span.IsRecording() {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
}

package telemetry

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
)

// Messaging operation types (OTel messaging conventions).
const (
	OpSend    = "send"
	OpProcess = "process"
)

// StartMessaging starts a span of a NATS hop, following the OTel messaging conventions: name is
// "<operation> <destination template>" (low cardinality), the concrete subject is an attribute.
// Attributes are only built when the span records, so a disabled tracer costs next to nothing.
// A nil tracer (tracing off) starts nothing and returns ctx as it is.
func StartMessaging(ctx context.Context, tr trace.Tracer, name, op string, kind trace.SpanKind, template, subject string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	if tr == nil {
		return ctx, nothing
	}
	ctx, span := tr.Start(ctx, name, trace.WithSpanKind(kind))
	if span.IsRecording() {
		span.SetAttributes(semconv.MessagingSystemKey.String("nats"),
			semconv.MessagingOperationTypeKey.String(op),
			semconv.MessagingOperationName(op),
			semconv.MessagingDestinationTemplate(template),
			semconv.MessagingDestinationName(subject))
		span.SetAttributes(attrs...)
	}
	return ctx, span
}

// nothing is the span of a disabled tracer: it records nothing and ends nothing.
var nothing = trace.SpanFromContext(context.Background())

// Tracer is this project's tracer when tracing is on, nil when it is off (StartMessaging then does
// nothing at all).
func Tracer(t Tracing) trace.Tracer {
	if !t.Enabled || t.Provider == nil {
		return nil
	}
	return t.Provider.Tracer(ScopeName)
}

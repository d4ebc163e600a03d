// Package telemetry makes a process observable: Prometheus metrics (one registry per process, served on
// /metrics beside the probes), OpenTelemetry traces configured the standard OTEL_* way and carried as
// W3C trace context in gRPC metadata and NATS headers (events keep the context of the command that
// produced them), and log records that carry trace_id and span_id. With no exporter configured tracing
// is off and the instrumentation that would cost something is not installed.
package telemetry

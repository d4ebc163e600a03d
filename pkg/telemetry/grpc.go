package telemetry

import (
	"context"
	"path"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc/filters"
	"go.opentelemetry.io/otel/metric/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/stats"
)

// ClientOptions are the dial options that instrument a connection to an application handler: the
// duration of each call in cos_handler_duration_seconds and, when tracing is on, a client span whose
// context the handler receives as traceparent.
func ClientOptions(m *Metrics, t Tracing) []grpc.DialOption {
	var opts []grpc.DialOption
	if m != nil {
		opts = append(opts, grpc.WithChainUnaryInterceptor(m.unaryClient))
	}
	if t.Enabled {
		opts = append(opts, grpc.WithStatsHandler(otelgrpc.NewClientHandler(otelOptions(t)...)))
	}
	return opts
}

// ServerHandler is the gateway's tracing: a server span per call that continues the caller's
// traceparent. nil when tracing is off.
func ServerHandler(t Tracing) stats.Handler {
	if !t.Enabled {
		return nil
	}
	// Probes call the health service every few seconds: spans of them would drown the commands'.
	return otelgrpc.NewServerHandler(append(otelOptions(t), otelgrpc.WithFilter(filters.Not(filters.HealthCheck())))...)
}

func otelOptions(t Tracing) []otelgrpc.Option {
	return []otelgrpc.Option{
		otelgrpc.WithTracerProvider(t.Provider),
		otelgrpc.WithPropagators(Propagator),
		otelgrpc.WithMeterProvider(noop.NewMeterProvider()), // our own metrics are in Prometheus
	}
}

func (m *Metrics) unaryClient(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	start := time.Now()
	err := invoker(ctx, method, req, reply, cc, opts...)
	m.HandlerCall(ctx, path.Base(method), time.Since(start))
	return err
}

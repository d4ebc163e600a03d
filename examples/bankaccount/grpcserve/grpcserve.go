// Package grpcserve runs the example's gRPC handlers as small standalone servers: health service and
// reflection included, graceful stop on SIGINT/SIGTERM.
package grpcserve

import (
	"context"
	"flag"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
)

// drainTimeout bounds the graceful stop: a health Watch stream never ends on its own and would
// otherwise block shutdown forever.
const drainTimeout = 10 * time.Second

// Server describes one example server.
type Server struct {
	Name        string // for logs
	Service     string // gRPC service name reported SERVING by the health service
	AddrEnv     string // environment variable with the default listen address
	DefaultAddr string
	Register    func(*grpc.Server)
}

// Main parses -addr, listens and serves until SIGINT/SIGTERM; it exits the process on failure.
func (s Server) Main() {
	addr := os.Getenv(s.AddrEnv)
	if addr == "" {
		addr = s.DefaultAddr
	}
	flag.StringVar(&addr, "addr", addr, "listen address (env "+s.AddrEnv+")")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	lis, err := net.Listen("tcp", addr)
	if err == nil {
		err = s.Run(ctx, lis)
	}
	if err != nil {
		slog.Error(s.Name, "addr", addr, "err", err)
		os.Exit(1)
	}
}

// Run serves on lis until ctx ends.
func (s Server) Run(ctx context.Context, lis net.Listener) error {
	srv := grpc.NewServer()
	s.Register(srv)
	hs := health.NewServer()
	hs.SetServingStatus(s.Service, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	reflection.Register(srv)

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	slog.Info(s.Name+" serving", "addr", lis.Addr().String())
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	slog.Info(s.Name + " stopping")
	hs.Shutdown() // report NOT_SERVING first so probes stop routing here
	stopped := make(chan struct{})
	go func() { srv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(drainTimeout):
		srv.Stop()
	}
	return nil
}

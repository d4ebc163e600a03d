// Command bankreadside serves the bank-account example's read-side handler,
// the gRPC service chief-of-state calls for every persisted event. It keeps
// account balances in memory and logs each event. Set COS_READ_SIDE_ENABLED=true
// and point a read side's COS_READ_SIDE_CONFIG__HOST__<ID> and
// COS_READ_SIDE_CONFIG__PORT__<ID> at its -addr.
package main

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

	"github.com/cosnats/cosnats/examples/bankaccount/readside"
	cosv1 "github.com/cosnats/cosnats/gen/chief_of_state/v1"
)

// drainTimeout bounds the graceful stop: a health Watch stream never ends on
// its own and would otherwise block shutdown forever.
const drainTimeout = 10 * time.Second

func main() {
	defaultAddr := os.Getenv("BANK_READSIDE_ADDR")
	if defaultAddr == "" {
		defaultAddr = "127.0.0.1:50052"
	}
	addr := flag.String("addr", defaultAddr, "listen address (env BANK_READSIDE_ADDR)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	lis, err := net.Listen("tcp", *addr)
	if err != nil {
		slog.Error("listen", "addr", *addr, "err", err)
		os.Exit(1)
	}
	if err := serve(ctx, lis); err != nil {
		slog.Error("serve", "err", err)
		os.Exit(1)
	}
}

// serve runs the handler on lis until ctx ends; it takes a listener so tests
// can use a free port.
func serve(ctx context.Context, lis net.Listener) error {
	srv := grpc.NewServer()
	readside.New(slog.Default()).Register(srv)
	hs := health.NewServer()
	hs.SetServingStatus(cosv1.ReadSideHandlerService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	reflection.Register(srv)

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	slog.Info("bankreadside serving", "addr", lis.Addr().String())
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	slog.Info("bankreadside stopping")
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

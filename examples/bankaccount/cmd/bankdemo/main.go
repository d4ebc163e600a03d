// Command bankdemo is the quickstart: the whole system in one process — an embedded NATS server, the
// gateway on COS_ADDRESS:COS_PORT (default 0.0.0.0:9000), a worker, and the bank-account write handler
// on a loopback port. Every COS_* variable still applies.
package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"google.golang.org/grpc"

	"github.com/cosnats/cosnats/examples/bankaccount/writeside"
	"github.com/cosnats/cosnats/pkg/config"
	"github.com/cosnats/cosnats/pkg/node"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "bankdemo:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listen for the write handler: %w", err)
	}
	handler := grpc.NewServer()
	writeside.New().Register(handler)
	go func() { _ = handler.Serve(lis) }()
	defer handler.Stop()

	env := append(os.Environ(), // later entries win: the demo's own handler unless the user set one
		"COS_WRITE_SIDE_HOST=127.0.0.1", "COS_WRITE_SIDE_PORT="+strconv.Itoa(lis.Addr().(*net.TCPAddr).Port))
	if h := os.Getenv("COS_WRITE_SIDE_HOST"); h != "" {
		env = os.Environ()
	}
	cfg, log, err := config.Load(env, os.Stderr)
	if err != nil {
		return err
	}
	return node.Run(ctx, cfg, node.Options{Logger: log, Ready: func(i node.Info) {
		log.Info("bank-account demo ready: try `go run ./examples/bankaccount/cmd/bankclient open acc-1 alice 1000`", "gateway", i.GRPCAddr)
	}})
}

// Command bankdemo is the quickstart: the whole system in one process — an embedded NATS server, the
// gateway on COS_ADDRESS:COS_PORT (default 0.0.0.0:9000), a worker, a projector, and the bank-account
// write handler and read side ("bank-balances", which logs every event it receives) on loopback ports.
// Every COS_* variable still applies; a write handler or read sides configured in the environment
// replace the demo's own.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"google.golang.org/grpc"

	"github.com/cosnats/cosnats/examples/bankaccount/readside"
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
	env := os.Environ()
	if os.Getenv("COS_WRITE_SIDE_HOST") == "" {
		port, stop, err := serve(writeside.New().Register)
		if err != nil {
			return err
		}
		defer stop()
		env = append(env, "COS_WRITE_SIDE_HOST=127.0.0.1", "COS_WRITE_SIDE_PORT="+port)
	}
	if !readSidesConfigured(env) {
		rs := readside.New(slog.New(slog.NewJSONHandler(os.Stderr, nil)).With("component", "bank-balances"))
		port, stop, err := serve(rs.Register)
		if err != nil {
			return err
		}
		defer stop()
		env = append(env, "COS_READ_SIDE_ENABLED=true",
			"COS_READ_SIDE_CONFIG__HOST__bank-balances=127.0.0.1", "COS_READ_SIDE_CONFIG__PORT__bank-balances="+port)
	}
	cfg, log, err := config.Load(env, os.Stderr)
	if err != nil {
		return err
	}
	return node.Run(ctx, cfg, node.Options{Logger: log, Ready: func(i node.Info) {
		log.Info("bank-account demo ready: try `go run ./examples/bankaccount/cmd/bankclient open acc-1 alice 1000`", "gateway", i.GRPCAddr)
	}})
}

// serve starts a gRPC server on a free loopback port.
func serve(register func(*grpc.Server)) (port string, stop func(), err error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, fmt.Errorf("listen on loopback: %w", err)
	}
	s := grpc.NewServer()
	register(s)
	go func() { _ = s.Serve(lis) }()
	return strconv.Itoa(lis.Addr().(*net.TCPAddr).Port), s.Stop, nil
}

func readSidesConfigured(env []string) bool {
	for _, kv := range env {
		if strings.HasPrefix(kv, "COS_READ_SIDE_CONFIG") {
			return true
		}
	}
	return false
}

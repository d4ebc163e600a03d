// Command bankdemo is the quickstart: the whole system in one process — an embedded NATS server, the
// gateway on COS_ADDRESS:COS_PORT (default 0.0.0.0:9000), a worker, a projector, and the bank-account
// write handler and read side ("bank-balances", which logs every event it receives) on loopback ports.
// The embedded NATS server also listens on 127.0.0.1:4222 (COS_NATS_LISTEN) for NATS producers.
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
	"google.golang.org/grpc/reflection"

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
		// A fixed port when free, so tools can reach the handler's reflection (cosctl --handler).
		port, stop, err := serve(writeside.New().Register, demoHandlerAddr)
		if err != nil {
			return err
		}
		defer stop()
		env = append(env, "COS_WRITE_SIDE_HOST=127.0.0.1", "COS_WRITE_SIDE_PORT="+port)
	}
	if !readSidesConfigured(env) {
		rs := readside.New(slog.New(slog.NewJSONHandler(os.Stderr, nil)).With("component", "bank-balances"))
		port, stop, err := serve(rs.Register, "")
		if err != nil {
			return err
		}
		defer stop()
		env = append(env, "COS_READ_SIDE_ENABLED=true",
			"COS_READ_SIDE_CONFIG__HOST__bank-balances=127.0.0.1", "COS_READ_SIDE_CONFIG__PORT__bank-balances="+port)
	}
	if os.Getenv("COS_NATS_URL") == "" && os.Getenv("COS_NATS_LISTEN") == "" {
		// So producers (the nats CLI, examples/natsproducer) can reach the embedded server; loopback only.
		env = append(env, "COS_NATS_LISTEN=127.0.0.1:4222")
	}
	cfg, log, err := config.Load(env, os.Stderr)
	if err != nil {
		return err
	}
	return node.Run(ctx, cfg, node.Options{Logger: log, Ready: func(i node.Info) {
		log.Info("bank-account demo ready: try `go run ./examples/bankaccount/cmd/bankclient open acc-1 alice 1000`",
			"gateway", i.GRPCAddr, "nats", i.NATSURL, "write_handler", cfg.WriteSide.Host+":"+strconv.Itoa(cfg.WriteSide.Port))
	}})
}

// demoHandlerAddr is where the demo's write handler listens when the port is free.
const demoHandlerAddr = "127.0.0.1:50051"

// serve starts a gRPC server on addr, or on a free loopback port when addr is "" or taken.
func serve(register func(*grpc.Server), addr string) (port string, stop func(), err error) {
	var lis net.Listener
	if addr != "" {
		lis, err = net.Listen("tcp", addr)
	}
	if lis == nil {
		if lis, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			return "", nil, fmt.Errorf("listen on loopback: %w", err)
		}
	}
	s := grpc.NewServer()
	register(s)
	reflection.Register(s) // lets the gateway turn JSON commands into the handler's messages
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

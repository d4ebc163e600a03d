// Command worker executes commands from NATS with the application's write handler. It needs
// COS_NATS_URL: without it, cmd/gateway already runs a worker in its own process.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/cosnats/cosnats/pkg/config"
	"github.com/cosnats/cosnats/pkg/node"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	cfg, log, err := config.Load(os.Environ(), os.Stderr)
	if err != nil {
		return err
	}
	if cfg.NATS.Embedded() {
		return errors.New("COS_NATS_URL is required: a standalone worker joins an existing NATS (cmd/gateway alone runs everything in one process)")
	}
	return node.Run(ctx, cfg, node.Options{Roles: node.Roles{Worker: true}, Logger: log})
}

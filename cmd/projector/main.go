// Command projector delivers events to the configured read sides. It needs COS_NATS_URL: without it,
// cmd/gateway runs the projector in its own process. Run as many replicas as you like; each shard is
// delivered by one of them at a time.
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
		fmt.Fprintln(os.Stderr, "projector:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	cfg, log, err := config.Load(os.Environ(), os.Stderr)
	if err != nil {
		return err
	}
	if cfg.NATS.Embedded() {
		return errors.New("COS_NATS_URL is required: a standalone projector joins an existing NATS (cmd/gateway alone runs everything in one process)")
	}
	if len(cfg.EnabledReadSides()) == 0 {
		return errors.New("no read side to run: set COS_READ_SIDE_ENABLED=true and configure read sides (COS_READ_SIDE_CONFIG or COS_READ_SIDE_CONFIG__HOST__<id>, ...)")
	}
	return node.Run(ctx, cfg, node.Options{Roles: node.Roles{Projector: true}, Logger: log})
}

// Command gateway serves ChiefOfStateService. Without COS_NATS_URL it is the whole system in one
// process: an embedded NATS server, the gateway and a worker.
package main

import (
	"context"
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
		fmt.Fprintln(os.Stderr, "gateway:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	cfg, log, err := config.Load(os.Environ(), os.Stderr)
	if err != nil {
		return err
	}
	return node.Run(ctx, cfg, node.Options{Roles: node.Roles{Gateway: true}, Logger: log})
}

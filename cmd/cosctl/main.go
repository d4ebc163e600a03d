// Command cosctl is the operator's command line for chief-of-state: commands and state as JSON, live
// events, read sides (status, pause, resume, restart, skip, offsets, replay with progress) and the
// command intake, all over the gateway's gRPC port. `cosctl --help` lists the commands and the exit
// codes; the logic is in pkg/ctl.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/cosnats/cosnats/pkg/ctl"
)

func main() {
	// A signal ends the context: a watch then unsubscribes before exiting.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := ctl.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

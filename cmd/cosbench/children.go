package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/cosnats/cosnats/pkg/bench"
	"github.com/cosnats/cosnats/pkg/natsembed"
)

// envNATSCluster, with COSBENCH_NATS_DIR, makes the nats child a cluster of that many servers.
const envNATSCluster = "COSBENCH_NATS_CLUSTER"

// selfChildren starts scenario 11's children as this binary again, in a role chosen by env.
type selfChildren struct{}

// NATS implements bench.Children: serveNATS (or serveNATSCluster) in a child.
func (selfChildren) NATS(dir string, size int) *exec.Cmd {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "COSBENCH_NATS_DIR="+dir)
	if size > 1 {
		cmd.Env = append(cmd.Env, envNATSCluster+"="+strconv.Itoa(size))
	}
	return cmd
}

// Floor implements bench.Children: serveFloor in a child.
func (selfChildren) Floor(p bench.FloorPart) *exec.Cmd {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), p.Env()...)
	return cmd
}

// serveFloor is the child: a front or a back of the distributed floor, until SIGTERM; it prints its
// address (a front) or "ready" (a back) once it takes work.
func serveFloor() int {
	p, err := bench.FloorPartFromEnv(os.Getenv)
	if err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := bench.ServeFloorPart(ctx, p, func(line string) { fmt.Println(line) }); err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		return 1
	}
	return 0
}

// serveNATSCluster is the child: a size-node JetStream cluster on loopback, until SIGTERM; it prints
// the client URL list once the cluster is ready.
func serveNATSCluster(dir string, size string) int {
	n, err := strconv.Atoi(size)
	if err != nil || n < 1 {
		fmt.Fprintf(os.Stderr, "nats cluster: %s=%q is not a size\n", envNATSCluster, size)
		return 1
	}
	c, err := natsembed.StartCluster(natsembed.ClusterConfig{Size: n, StoreDir: dir})
	if err != nil {
		fmt.Fprintln(os.Stderr, "nats cluster:", err)
		return 1
	}
	return announceUntilSignal(c.URLList(), c.Shutdown)
}

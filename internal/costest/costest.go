// Package costest starts real components for tests: an embedded nats-server, gRPC servers on loopback
// and whole nodes (gateway and/or worker) wired to them. No mocks: tests talk to what users run.
package costest

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	"github.com/cosnats/cosnats/pkg/config"
	"github.com/cosnats/cosnats/pkg/health"
	"github.com/cosnats/cosnats/pkg/natsembed"
	"github.com/cosnats/cosnats/pkg/node"
	"github.com/cosnats/cosnats/pkg/readside"
)

// StartNATS starts an embedded JetStream server listening on a loopback port.
func StartNATS(t testing.TB) *natsembed.Server {
	t.Helper()
	srv, err := natsembed.Start(natsembed.Config{StoreDir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatalf("start NATS: %v", err)
	}
	t.Cleanup(srv.Shutdown)
	return srv
}

// JetStream connects to srv and returns a JetStream handle.
func JetStream(t testing.TB, srv *natsembed.Server) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return nc, js
}

// ServeGRPC starts a gRPC server on 127.0.0.1:0 with whatever register adds and returns its port.
func ServeGRPC(t testing.TB, register func(*grpc.Server)) int {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	s := grpc.NewServer()
	register(s)
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Serve(lis) }()
	t.Cleanup(func() { s.Stop(); <-done })
	return lis.Addr().(*net.TCPAddr).Port
}

// Config is a valid configuration for a node using the NATS server at natsURL ("" = embedded in
// dataDir) and the write handler on 127.0.0.1:handlerPort.
func Config(t testing.TB, natsURL string, handlerPort int) config.Config {
	t.Helper()
	env := []string{
		"COS_WRITE_SIDE_HOST=127.0.0.1",
		"COS_WRITE_SIDE_PORT=" + strconv.Itoa(handlerPort),
		"COS_DATA_DIR=" + t.TempDir(),
		"COS_METRICS_ADDRESS=127.0.0.1:0",
	}
	if natsURL != "" {
		env = append(env, "COS_NATS_URL="+natsURL)
	}
	cfg, _, err := config.FromEnv(env)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return cfg
}

// Logger discards logs unless the test runs with -v.
func Logger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

// Node is a running node.
type Node struct {
	node.Info
	stop func() error
}

// Stop ends the node and waits for it; Run's error is returned.
func (n *Node) Stop() error { return n.stop() }

// StartNode runs a node with the given roles until the test ends (or Stop).
func StartNode(t testing.TB, cfg config.Config, roles node.Roles) *Node {
	t.Helper()
	return StartNodeWith(t, cfg, node.Options{Roles: roles})
}

// FastTiming makes read-side retries quick for tests.
var FastTiming = readside.Policy{BackoffBase: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond, ReplayDelay: 20 * time.Millisecond, ReplayRetries: 5}

// StartNodeWith runs a node with options (Logger, Listener and Ready are filled in; read-side retries
// default to FastTiming) until the test ends (or Stop).
func StartNodeWith(t testing.TB, cfg config.Config, opts node.Options) *Node {
	t.Helper()
	roles := opts.Roles
	if opts.ReadSideTiming == nil {
		opts.ReadSideTiming = &FastTiming
	}
	ctx, cancel := context.WithCancel(context.Background())
	var lis net.Listener
	if roles.Gateway || cfg.NATS.Embedded() {
		var err error
		if lis, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatalf("listen: %v", err)
		}
	}
	ready := make(chan node.Info, 1)
	done := make(chan error, 1)
	go func() {
		opts.Logger, opts.Listener, opts.Ready = Logger(t), lis, func(i node.Info) { ready <- i }
		done <- node.Run(ctx, cfg, opts)
	}()
	n := &Node{}
	select {
	case n.Info = <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("node did not start: %v", err)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatal("node did not start within 30s")
	}
	var stopped bool
	var stopErr error
	n.stop = func() error {
		if !stopped {
			stopped = true
			cancel()
			stopErr = <-done
		}
		return stopErr
	}
	t.Cleanup(func() {
		if err := n.Stop(); err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("node stopped with error: %v", err)
		}
	})
	return n
}

// Running is a node launched without waiting for it to be ready: tests of start-up watch it wait.
type Running struct {
	Addrs  node.Info        // listener addresses (gRPC, probes), known before NATS is reached
	Health *health.State    // the node's readiness
	Ready  <-chan node.Info // receives once everything serves
	done   chan struct{}
	err    error
	cancel context.CancelFunc
}

// Done is closed when Run has returned; Err is its result then.
func (r *Running) Done() <-chan struct{} { return r.done }

// Err is Run's result, once Done is closed.
func (r *Running) Err() error { return r.err }

// Stop cancels the node (as SIGTERM does), waits for it and returns Run's result.
func (r *Running) Stop() error {
	r.cancel()
	<-r.done
	return r.err
}

// Launch runs a node until the test ends (or Stop) and returns once its listeners are bound, or Run
// returned.
func Launch(t testing.TB, cfg config.Config, opts node.Options) *Running {
	t.Helper()
	if opts.ReadSideTiming == nil {
		opts.ReadSideTiming = &FastTiming
	}
	if opts.Health == nil {
		opts.Health = health.New()
	}
	ctx, cancel := context.WithCancel(context.Background())
	var lis net.Listener
	if opts.Roles.Gateway || cfg.NATS.Embedded() {
		var err error
		if lis, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatalf("listen: %v", err)
		}
	}
	listening := make(chan node.Info, 1)
	ready := make(chan node.Info, 1)
	r := &Running{Health: opts.Health, Ready: ready, done: make(chan struct{}), cancel: cancel}
	go func() {
		defer close(r.done)
		opts.Logger, opts.Listener = Logger(t), lis
		opts.Listening = func(i node.Info) { listening <- i }
		opts.Ready = func(i node.Info) { ready <- i }
		r.err = node.Run(ctx, cfg, opts)
	}()
	t.Cleanup(func() { _ = r.Stop() })
	select {
	case r.Addrs = <-listening:
	case <-r.done:
	}
	return r
}

// Client dials a gateway.
func Client(t testing.TB, addr string) cospb.ChiefOfStateServiceClient {
	t.Helper()
	return cospb.NewChiefOfStateServiceClient(Conn(t, addr))
}

// Conn dials a gRPC server (plaintext), closed when the test ends.
func Conn(t testing.TB, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// Eventually polls a condition that becomes true asynchronously (an ack applied by the server, interest
// crossing a route) every few milliseconds, and fails the test if it does not hold within timeout.
// why, when given, is filled by cond with the reason it is still false, for the failure message.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool, why ...*string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			reason := ""
			if len(why) > 0 && why[0] != nil {
				reason = ": " + *why[0]
			}
			t.Fatalf("timed out after %s waiting for %s%s", timeout, what, reason)
		}
		<-tick.C
	}
}

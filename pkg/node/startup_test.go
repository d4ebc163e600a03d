package node_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	"github.com/cosnats/cosnats/internal/costest"
	"github.com/cosnats/cosnats/pkg/config"
	"github.com/cosnats/cosnats/pkg/layout"
	"github.com/cosnats/cosnats/pkg/natsembed"
	"github.com/cosnats/cosnats/pkg/node"
)

// freeAddr is a loopback address nothing listens on (yet).
func freeAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	_ = lis.Close()
	return addr
}

// readyz is the status code and body of a node's /readyz.
func readyz(t *testing.T, r *costest.Running) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + r.Addrs.ProbeAddr + "/readyz")
	if err != nil {
		t.Fatalf("/readyz: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// grpcHealth is the gateway's gRPC health for the whole server.
func grpcHealth(t *testing.T, addr string) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	resp, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatalf("health check: %v", err)
	}
	return resp.GetStatus()
}

// waitWaiting waits until a node says it is not ready for a reason containing why.
func waitWaiting(t *testing.T, r *costest.Running, why string) {
	t.Helper()
	var reasons string
	costest.Eventually(t, 30*time.Second, "the node to report waiting on "+why, func() bool {
		ready, w := r.Health.Ready()
		reasons = strings.Join(w, "; ")
		return !ready && strings.Contains(reasons, why)
	}, &reasons)
}

func waitReady(t *testing.T, r *costest.Running, within time.Duration) {
	t.Helper()
	select {
	case <-r.Ready:
	case <-r.Done():
		t.Fatalf("the node exited: %v", r.Err())
	case <-time.After(within):
		_, why := r.Health.Ready()
		t.Fatalf("the node is not ready after %s: %v", within, why)
	}
}

func running(t *testing.T, r *costest.Running) {
	t.Helper()
	select {
	case <-r.Done():
		t.Fatalf("the node exited by itself: %v", r.Err())
	default:
	}
}

// A process started before NATS is reachable waits: it serves its probes and its gRPC port (not ready,
// commands refused as not processed), says what it waits for, and is ready once NATS comes.
func TestStartBeforeNATSIsReachable(t *testing.T) {
	addr := freeAddr(t)
	h := &costest.Counter{}
	cfg := costest.Config(t, "nats://"+addr, costest.ServeGRPC(t, h.Register))
	r := costest.Launch(t, cfg, node.Options{Roles: node.Roles{Gateway: true, Worker: true}})
	waitWaiting(t, r, "connecting to NATS")
	// "start" holds readiness until every role runs, so no step's gap reads as ready.
	if code, body := readyz(t, r); code != http.StatusServiceUnavailable || !strings.Contains(body, "nats") || !strings.Contains(body, "start: starting the roles") {
		t.Fatalf("/readyz while waiting: %d %s", code, body)
	}
	if st := grpcHealth(t, r.Addrs.GRPCAddr); st != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("gRPC health while waiting: %v", st)
	}
	client := costest.Client(t, r.Addrs.GRPCAddr)
	_, err := client.ProcessCommand(context.Background(), &cospb.ProcessCommandRequest{EntityId: "e", Command: costest.Cmd("add:1")})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "not processed") {
		t.Fatalf("a command while waiting: %v", err)
	}
	running(t, r)
	srv, err := natsembed.Start(natsembed.Config{StoreDir: t.TempDir(), Listen: addr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	waitReady(t, r, 30*time.Second)
	if _, err := client.ProcessCommand(context.Background(), &cospb.ProcessCommandRequest{EntityId: "e", Command: costest.Cmd("add:1")}); err != nil {
		t.Fatal(err)
	}
	if code, body := readyz(t, r); code != http.StatusOK {
		t.Fatalf("/readyz when ready: %d %s", code, body)
	}
	if st := grpcHealth(t, r.Addrs.GRPCAddr); st != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("gRPC health when ready: %v", st)
	}
}

// After set-up, losing NATS makes a process not ready, never exit; it is ready again once NATS is back.
func TestReadinessFollowsTheConnection(t *testing.T) {
	addr := freeAddr(t)
	dir := t.TempDir()
	srv, err := natsembed.Start(natsembed.Config{StoreDir: dir, Listen: addr})
	if err != nil {
		t.Fatal(err)
	}
	h := &costest.Counter{}
	cfg := costest.Config(t, "nats://"+addr, costest.ServeGRPC(t, h.Register))
	r := costest.Launch(t, cfg, node.Options{Roles: node.Roles{Gateway: true, Worker: true}})
	waitReady(t, r, 30*time.Second)
	probe := func() (int, float64) {
		resp, err := http.Get("http://" + r.Addrs.ProbeAddr + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		return resp.StatusCode, value(scrape(t, r.Addrs.ProbeAddr), "cos_nats_connected", nil)
	}
	if code, connected := probe(); code != http.StatusOK || connected != 1 {
		t.Fatalf("connected: /readyz %d, cos_nats_connected %v", code, connected)
	}
	srv.Shutdown()
	waitWaiting(t, r, "disconnected from NATS")
	if st := grpcHealth(t, r.Addrs.GRPCAddr); st != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("gRPC health without NATS: %v", st)
	}
	if code, connected := probe(); code != http.StatusServiceUnavailable || connected != 0 {
		t.Fatalf("NATS gone: /readyz %d, cos_nats_connected %v", code, connected)
	}
	running(t, r)
	srv, err = natsembed.Start(natsembed.Config{StoreDir: dir, Listen: addr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	costest.Eventually(t, 30*time.Second, "ready again", func() bool { ok, _ := r.Health.Ready(); return ok })
	if code, connected := probe(); code != http.StatusOK || connected != 1 {
		t.Fatalf("NATS back: /readyz %d, cos_nats_connected %v", code, connected)
	}
	client := costest.Client(t, r.Addrs.GRPCAddr)
	if _, err := client.ProcessCommand(context.Background(), &cospb.ProcessCommandRequest{EntityId: "e", Command: costest.Cmd("add:1")}); err != nil {
		t.Fatal(err)
	}
}

// roles are the three roles of a distributed deployment.
var roles = []node.Roles{{Gateway: true}, {Worker: true}, {Projector: true}}

func r3Config(t *testing.T, cl *costest.Cluster, rec *costest.Recorder) (config.Config, *costest.Counter) {
	t.Helper()
	h := &costest.Counter{}
	cfg := costest.Config(t, cl.URLList(), costest.ServeGRPC(t, h.Register))
	cfg.NATS.Replicas = 3
	cfg.ReadSideEnabled = true
	cfg.ReadSides = []config.ReadSide{{ID: "rs", Host: "127.0.0.1", Port: costest.ServeGRPC(t, rec.Register),
		AutoStart: true, Enabled: true, Timeout: 5 * time.Second, MaxInFlight: 16}}
	return cfg, h
}

// Every role, two of each, started at the same moment on an empty 3-node cluster (what a fresh
// install does): all of them become ready, and commands reach the read side.
func TestAllRolesStartAtOnceOnAnEmptyCluster(t *testing.T) {
	cl := costest.StartCluster(t, 3)
	rec := costest.NewRecorder()
	cfg, _ := r3Config(t, cl, rec)
	var (
		mu    sync.Mutex
		nodes []*costest.Running
		wg    sync.WaitGroup
	)
	for range 2 {
		for _, rl := range roles {
			wg.Go(func() {
				r := costest.Launch(t, cfg, node.Options{Roles: rl})
				mu.Lock()
				nodes = append(nodes, r)
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	for _, r := range nodes {
		waitReady(t, r, 60*time.Second)
	}
	var gateways []string
	for _, r := range nodes {
		if r.Addrs.GRPCAddr != "" {
			gateways = append(gateways, r.Addrs.GRPCAddr)
		}
	}
	for i, addr := range gateways {
		id := fmt.Sprint("start-", i)
		sendEventually(t, costest.Client(t, addr), id, 3)
		rec.WaitFor(t, 30*time.Second, "events of "+id, func(r *costest.Recorder) bool { return len(r.Received(id)) >= 3 })
	}
	for _, r := range nodes {
		running(t, r)
	}
}

// sendEventually sends n commands to an entity; right after start-up the workers' interest may not have
// crossed every route yet ("no worker is available"), which a client retries.
func sendEventually(t *testing.T, c cospb.ChiefOfStateServiceClient, id string, n int) {
	t.Helper()
	for i := 0; i < n; {
		_, err := c.ProcessCommand(context.Background(), &cospb.ProcessCommandRequest{EntityId: id, Command: costest.Cmd("add:1")})
		switch {
		case err == nil:
			i++
		case status.Code(err) == codes.Unavailable && strings.Contains(err.Error(), "not processed"):
			time.Sleep(50 * time.Millisecond) // a client's retry backoff
		default:
			t.Fatalf("command %d of %s: %v", i+1, id, err)
		}
	}
}

// On a fresh cluster with one node of three down, the replicated streams may or may not be made at once
// (that depends on whether the cluster already counts the node as gone): processes either start or wait,
// saying why, and never exit; all are ready once the node is back. With the streams already there, one
// node down does not keep them from starting.
func TestStartWithOneNodeOfThreeDown(t *testing.T) {
	cl := costest.StartCluster(t, 3)
	rec := costest.NewRecorder()
	cfg, _ := r3Config(t, cl, rec)
	cl.Kill(2)
	var nodes []*costest.Running
	for _, rl := range roles {
		nodes = append(nodes, costest.Launch(t, cfg, node.Options{Roles: rl}))
	}
	for _, r := range nodes {
		var why string
		costest.Eventually(t, 30*time.Second, "ready, or waiting on JetStream", func() bool {
			ready, w := r.Health.Ready()
			why = strings.Join(w, "; ")
			return ready || strings.Contains(why, "waiting for NATS JetStream")
		}, &why)
		running(t, r)
	}
	cl.Restart(2)
	for _, r := range nodes {
		waitReady(t, r, 60*time.Second)
	}
	for _, r := range nodes {
		if err := r.Stop(); err != nil {
			t.Fatalf("stop: %v", err)
		}
	}
	// Everything exists now; a node down is no reason to wait.
	cl.Kill(1)
	for _, rl := range roles {
		waitReady(t, costest.Launch(t, cfg, node.Options{Roles: rl}), 60*time.Second)
	}
}

// A stream that disagrees with a process (another replica count, another shard count) is a
// configuration error: the process exits at once and names the setting.
func TestDriftEndsTheProcess(t *testing.T) {
	srv := costest.StartNATS(t)
	h := &costest.Counter{}
	cfg := costest.Config(t, srv.ClientURL(), costest.ServeGRPC(t, h.Register))
	costest.StartNode(t, cfg, node.Roles{Gateway: true})
	for _, tt := range []struct {
		mutate func(*config.Config)
		want   string
	}{
		{func(c *config.Config) { c.NATS.Replicas = 3 }, "COS_NATS_REPLICAS says 3"},
		{func(c *config.Config) { c.NumShards = 16 }, "COS_NUM_SHARDS=9"},
	} {
		c := cfg
		tt.mutate(&c)
		r := costest.Launch(t, c, node.Options{Roles: node.Roles{Worker: true}})
		select {
		case <-r.Done():
		case <-time.After(30 * time.Second):
			t.Fatalf("a process with a drifted setting (%s) did not exit", tt.want)
		}
		if err := r.Err(); !errors.Is(err, layout.ErrMismatch) || !strings.Contains(err.Error(), tt.want) {
			t.Fatalf("exit error %v, want one naming %q", err, tt.want)
		}
	}
}

package ctl_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/reflection"

	"github.com/cosnats/cosnats/examples/bankaccount/writeside"
	"github.com/cosnats/cosnats/internal/costest"
	"github.com/cosnats/cosnats/pkg/config"
	"github.com/cosnats/cosnats/pkg/ctl"
	"github.com/cosnats/cosnats/pkg/entity"
	"github.com/cosnats/cosnats/pkg/node"
)

// system is the quickstart's shape on loopback ports: one node with embedded NATS, the bank-account
// write handler (with gRPC reflection, as its standalone binary serves it) and a recording read side.
type system struct {
	node        *costest.Node
	addr        string // gateway
	handlerAddr string // write handler (reflection)
	numShards   int
	rec         *costest.Recorder
}

const readSideID = "rs"

func startSystem(t *testing.T) *system {
	t.Helper()
	return startSystemWith(t, nil)
}

// startSystemWith starts the system with a configuration changed by mutate.
func startSystemWith(t *testing.T, mutate func(*config.Config)) *system {
	t.Helper()
	handlerPort := costest.ServeGRPC(t, func(s *grpc.Server) {
		writeside.New().Register(s)
		reflection.Register(s)
	})
	rec := costest.NewRecorder()
	cfg := costest.Config(t, "", handlerPort)
	cfg.NATS.Listen = "127.0.0.1:0" // intake outcome and intake rejected read NATS
	cfg.ReadSideEnabled = true
	cfg.ReadSides = []config.ReadSide{{ID: readSideID, Host: "127.0.0.1", Port: costest.ServeGRPC(t, rec.Register),
		AutoStart: true, Enabled: true, Timeout: 5 * time.Second, MaxInFlight: config.DefaultReadSideMaxInFlight}}
	if mutate != nil {
		mutate(&cfg)
	}
	n := costest.StartNode(t, cfg, node.Roles{})
	s := &system{node: n, addr: n.GRPCAddr, handlerAddr: "127.0.0.1:" + strconv.Itoa(handlerPort), numShards: cfg.NumShards, rec: rec}
	// The manager knows a read side once the projector made its consumers.
	costest.Eventually(t, 30*time.Second, "the read side's consumers", func() bool {
		r := s.cli(context.Background(), "readside", "status", "--id", readSideID)
		return r.code == 0 && strings.Count(r.stdout, "\n"+readSideID+" ") == s.numShards
	})
	return s
}

// result is one cosctl run.
type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// cli runs cosctl against the system's gateway (and its admin listener, when it has one) with no
// environment.
func (s *system) cli(ctx context.Context, args ...string) result {
	args = append(args, "--addr", s.addr)
	if s.node.AdminAddr != "" {
		args = append(args, "--admin-addr", s.node.AdminAddr)
	}
	return runCLI(ctx, nil, args...)
}

// runWithWriters runs cosctl with no environment, writing where the test reads while it runs.
func runWithWriters(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return ctl.Run(ctx, args, func(string) string { return "" }, stdout, stderr)
}

func runCLI(ctx context.Context, env map[string]string, args ...string) result {
	var out, errb bytes.Buffer
	code := ctl.Run(ctx, args, func(k string) string { return env[k] }, &out, &errb)
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

// ok runs cosctl and fails the test unless it exits 0.
func (s *system) ok(t *testing.T, args ...string) result {
	t.Helper()
	r := s.cli(context.Background(), args...)
	if r.code != 0 {
		t.Fatalf("cosctl %s: %s", strings.Join(args, " "), r)
	}
	return r
}

// want runs cosctl and checks its exit code and that stderr holds each of the strings.
func (s *system) want(t *testing.T, code int, stderr []string, args ...string) result {
	t.Helper()
	r := s.cli(context.Background(), args...)
	checkResult(t, r, code, stderr, args)
	return r
}

func checkResult(t *testing.T, r result, code int, stderr []string, args []string) {
	t.Helper()
	if r.code != code {
		t.Fatalf("cosctl %s: want exit %d, got %s", strings.Join(args, " "), code, r)
	}
	for _, s := range stderr {
		if !strings.Contains(r.stderr, s) {
			t.Fatalf("cosctl %s: stderr lacks %q: %s", strings.Join(args, " "), s, r)
		}
	}
}

func decode(t *testing.T, s string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, s)
	}
	return m
}

// path walks decoded JSON: path(m, "state", "balance").
func path(m any, keys ...string) any {
	for _, k := range keys {
		obj, ok := m.(map[string]any)
		if !ok {
			return nil
		}
		m = obj[k]
	}
	return m
}

func (s *system) open(t *testing.T, id string, balance int) {
	t.Helper()
	s.ok(t, "process", id, "bankaccount.v1.OpenAccount", fmt.Sprintf(`{"owner":"alice","initialBalance":"%d"}`, balance))
}

func (s *system) credit(t *testing.T, id string, amount int) {
	t.Helper()
	s.ok(t, "process", id, "bankaccount.v1.Credit", fmt.Sprintf(`{"amount":"%d"}`, amount))
}

// shardStatus reads one shard's status as JSON.
func (s *system) shardStatus(t *testing.T, shard int) map[string]any {
	t.Helper()
	st := decode(t, s.ok(t, "readside", "status", "--id", readSideID, "--output", "json").stdout)
	shards, _ := st["shards"].([]any)
	for _, sh := range shards {
		if path(sh, "cluster_shard_number") == strconv.Itoa(shard) {
			return sh.(map[string]any)
		}
	}
	t.Fatalf("shard %d not in status %v", shard, st)
	return nil
}

// waitCaughtUp waits until no shard has an event pending.
func (s *system) waitCaughtUp(t *testing.T) {
	t.Helper()
	costest.Eventually(t, 30*time.Second, "every shard caught up", func() bool {
		st := decode(t, s.ok(t, "readside", "status", "--id", readSideID, "--output", "json").stdout)
		shards, _ := st["shards"].([]any)
		for _, sh := range shards {
			if path(sh, "pending") != "0" {
				return false
			}
		}
		return len(shards) == s.numShards
	})
}

// stateCounts counts the STATE column of a status table.
func stateCounts(table string) map[string]int {
	out := map[string]int{}
	for _, row := range strings.Split(strings.TrimSpace(table), "\n")[1:] {
		if f := strings.Fields(row); len(f) >= 5 {
			out[f[4]]++
		}
	}
	return out
}

func received(id string, n int) func(*costest.Recorder) bool {
	return func(r *costest.Recorder) bool { return len(r.Received(id)) >= n }
}

// inOrderAtLeastOnce checks that revisions 1..n were received in order, each at least once: a
// redelivery may repeat revisions already handled (at least once), never skip one.
func inOrderAtLeastOnce(got []uint32, n uint32) error {
	var high uint32
	for i, rev := range got {
		if rev > high+1 {
			return fmt.Errorf("revision %d at %d after at most %d: one was skipped", rev, i, high)
		}
		high = max(high, rev)
	}
	if high < n {
		return fmt.Errorf("received up to revision %d of %d", high, n)
	}
	return nil
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	_ = lis.Close()
	return addr
}

// syncBuffer is a buffer a running watch writes while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func shardOf(s *system, id string) int { return entity.Shard(id, s.numShards) }

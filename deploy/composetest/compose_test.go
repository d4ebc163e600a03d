package composetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	bankv1 "github.com/cosnats/cosnats/examples/bankaccount/gen/bankaccount/v1"
	cosv1 "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	natsv1 "github.com/cosnats/cosnats/gen/cosnats/v1"
	"github.com/cosnats/cosnats/internal/loopport"
)

const (
	// budget bounds the whole test, image builds included.
	budget     = 6 * time.Minute
	readSideID = "bank-balances" // the projectors' read side in docker-compose.yml
	accounts   = 12
	clients    = 6 // concurrent command loops; each owns accounts/clients accounts
	// batch is how many commands must be acknowledged in each phase of the load: enough to span a
	// fault, small enough for two slow cores.
	batch = 150
)

func TestCompose(t *testing.T) {
	ctx, env := prepare(t, budget)
	began, root, composeCmd, image, natsImage := env.began, env.root, env.compose, env.image, env.natsImage
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	s := &stack{
		t:       t,
		root:    root,
		compose: composeCmd,
		project: "coscompose" + randomHex(4),
		files:   []string{"deploy/composetest/monitoring.yml"},
		env: append(os.Environ(),
			"COS_IMAGE="+image, "NATS_IMAGE="+natsImage, "COS_GATEWAY_PORT="+strconv.Itoa(port),
			// A developer's tracing setting must not point the containers at a collector that is not there.
			"OTEL_EXPORTER_OTLP_ENDPOINT="),
	}
	t.Logf("compose %q, project %s, images %s and %s, gateway on :%d", composeCmd, s.project, image, natsImage, port)
	s.bringUp(t, ctx)

	conn, err := grpc.NewClient(fmt.Sprintf("127.0.0.1:%d", port), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	b := &bank{
		cos:    cosv1.NewChiefOfStateServiceClient(conn),
		status: natsv1.NewReadSideStatusServiceClient(conn),
		run:    randomHex(4),
		ledger: make(map[string]*account),
	}

	// 1. The stack as started: open the accounts, credit each once, see it in the state and at the
	// read side.
	for i := range accounts {
		id := fmt.Sprintf("acc-%d", i)
		b.ledger[id] = &account{}
		if _, err := b.command(ctx, id, &bankv1.OpenAccount{Owner: "owner of " + id}); err != nil {
			t.Fatal(err)
		}
		if err := b.credit(ctx, id, int64(100+i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.verify(ctx, s); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d accounts opened and credited; state and read side agree", accounts)

	// 2. Continuous load; kill a NATS node and a worker; bring them back.
	load := b.startLoad(ctx)
	phase := func(what string) {
		t.Helper()
		start := time.Now()
		if err := b.waitAcked(ctx, 90*time.Second, batch); err != nil {
			load.stop()
			t.Fatalf("%s: %v", what, err)
		}
		t.Logf("%s: %d commands acknowledged in %v (%d retried attempts so far)",
			what, batch, time.Since(start).Round(time.Millisecond), b.retried.Load())
	}
	phase("steady load")
	node, worker, err := s.victims(ctx)
	if err != nil {
		load.stop()
		t.Fatal(err)
	}
	if err := s.kill(ctx, node, worker); err != nil {
		load.stop()
		t.Fatal(err)
	}
	phase(node + " and " + worker + " killed")
	restart := time.Now()
	if err := s.start(ctx, node, worker); err == nil {
		err = s.waitUp(ctx, 2*time.Minute, node, worker)
	}
	if err != nil {
		load.stop()
		t.Fatal(err)
	}
	t.Logf("%s and %s back (JetStream current, worker ready) in %v", node, worker, time.Since(restart).Round(time.Millisecond))
	phase("after the restart")
	if err := load.stop(); err != nil {
		t.Fatal(err)
	}

	// 3. Nothing acknowledged was lost, and the read side has it all.
	if err := b.verify(ctx, s); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d commands acknowledged (%d attempts retried with the same command id); every one is in the state and reached the read side; test took %v",
		b.acked.Load(), b.retried.Load(), time.Since(began).Round(time.Second))
}

// victims picks the NATS node and the worker whose loss the load must feel: the node that leads the
// event stream (appends stop until the other two elect a leader, and acknowledged events must survive
// the loss), and a worker connected to the same node as the gateway, which takes the gateway's
// commands first (NATS prefers queue subscribers on the publisher's server), else worker-1.
func (s *stack) victims(ctx context.Context) (node, worker string, err error) {
	node, err = s.streamLeader(ctx, "COS_EVENTS")
	if err != nil {
		return "", "", err
	}
	gw, err := s.natsNodeOf(ctx, "gateway")
	if err != nil {
		return "", "", err
	}
	worker = "worker-1"
	for _, w := range []string{"worker-1", "worker-2"} {
		wn, err := s.natsNodeOf(ctx, w)
		if err != nil {
			return "", "", err
		}
		if wn == gw {
			worker = w
			break
		}
	}
	s.t.Logf("killing %s (leader of COS_EVENTS) and %s (the gateway is connected to %s)", node, worker, gw)
	return node, worker, nil
}

// bank drives the bank-account example through the gateway and keeps the ledger of what it was told.
type bank struct {
	cos    cosv1.ChiefOfStateServiceClient
	status natsv1.ReadSideStatusServiceClient
	run    string // makes this run's command ids unique

	ledger  map[string]*account // fixed set of accounts; each owned by one goroutine at a time
	seq     atomic.Int64        // command id counter
	acked   atomic.Int64        // acknowledged credits
	retried atomic.Int64        // attempts answered with a retryable code
}

// account is what the gateway acknowledged for one account.
type account struct {
	balance int64  // sum of acknowledged credits
	credits uint32 // acknowledged credits (one event each)
}

// command sends cmd to entity with a fresh command id, retrying with that same id until it is
// answered with something other than "not processed" or "unknown outcome" (README, "Outcomes"): a
// retry of an applied command returns its original result, so a command is applied at most once
// however often it is sent.
func (b *bank) command(ctx context.Context, entity string, cmd proto.Message) (*cosv1.ProcessCommandResponse, error) {
	packed, err := anypb.New(cmd)
	if err != nil {
		return nil, fmt.Errorf("pack %T: %w", cmd, err)
	}
	req := &cosv1.ProcessCommandRequest{EntityId: entity, Command: packed}
	id := fmt.Sprintf("%s-%d", b.run, b.seq.Add(1))
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		cctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(ctx, "x-cos-command-id", id), 10*time.Second)
		resp, err := b.cos.ProcessCommand(cctx, req)
		cancel()
		if err == nil {
			return resp, nil
		}
		switch status.Code(err) {
		case codes.Unavailable, codes.Unknown, codes.DeadlineExceeded, codes.Aborted:
		default:
			return nil, fmt.Errorf("%T on %s (command id %s): %w", cmd, entity, id, err)
		}
		b.retried.Add(1)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%T on %s (command id %s) unresolved after %d attempts: %w (last answer: %v)", cmd, entity, id, attempt, ctx.Err(), err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}

// credit credits amount to entity and records it once acknowledged.
func (b *bank) credit(ctx context.Context, entity string, amount int64) error {
	resp, err := b.command(ctx, entity, &bankv1.Credit{Amount: amount})
	if err != nil {
		return err
	}
	a := b.ledger[entity]
	a.balance += amount
	a.credits++
	if got, want := resp.GetMeta().GetRevisionNumber(), a.credits+1; got != want {
		return fmt.Errorf("credit of %s acknowledged at revision %d, want %d (open + %d credits)", entity, got, want, a.credits)
	}
	b.acked.Add(1)
	return nil
}

// loadRun is the running load.
type loadRun struct {
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
	mu     sync.Mutex
	err    error
}

// stop asks every loop to finish the command it is sending (until it is resolved) and returns the
// first error of any loop.
func (l *loadRun) stop() error {
	l.once.Do(l.cancel)
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// startLoad runs clients loops that credit their own accounts one command at a time, so that each
// account's acknowledged credits are known exactly.
func (b *bank) startLoad(ctx context.Context) *loadRun {
	stopCtx, cancel := context.WithCancel(ctx)
	l := &loadRun{cancel: cancel, done: make(chan struct{})}
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; stopCtx.Err() == nil; n++ {
				entity := fmt.Sprintf("acc-%d", c+clients*(n%(accounts/clients)))
				amount, err := rand.Int(rand.Reader, big.NewInt(1000))
				if err == nil {
					// ctx, not stopCtx: a command already sent is resolved before the loop stops.
					err = b.credit(ctx, entity, 1+amount.Int64())
				}
				if err != nil {
					l.mu.Lock()
					l.err = errors.Join(l.err, err)
					l.mu.Unlock()
					l.once.Do(l.cancel)
					return
				}
			}
		}()
	}
	go func() { wg.Wait(); close(l.done) }()
	return l
}

// waitAcked waits until n more credits are acknowledged.
func (b *bank) waitAcked(ctx context.Context, timeout time.Duration, n int64) error {
	target := b.acked.Load() + n
	return poll(ctx, timeout, 100*time.Millisecond, fmt.Sprintf("%d more acknowledged commands", n), func() (bool, string, error) {
		got := b.acked.Load()
		return got >= target, fmt.Sprintf("%d of %d acknowledged", got, target), nil
	})
}

// verify checks every account's state against the ledger (GetState), then waits until the read side
// has acknowledged every event (GetReadSideStatus: nothing pending on any shard) and its handler
// applied each account's last revision with the same balance (bankreadside's log).
func (b *bank) verify(ctx context.Context, s *stack) error {
	for id, a := range b.ledger {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		resp, err := b.cos.GetState(cctx, &cosv1.GetStateRequest{EntityId: id})
		cancel()
		if err != nil {
			return fmt.Errorf("GetState %s: %w", id, err)
		}
		acc := &bankv1.BankAccount{}
		if err := resp.GetState().UnmarshalTo(acc); err != nil {
			return fmt.Errorf("state of %s: %w", id, err)
		}
		if acc.GetBalance() != a.balance || resp.GetMeta().GetRevisionNumber() != a.credits+1 {
			return fmt.Errorf("%s: state has balance %d at revision %d; acknowledged: %d credits summing to %d (revision %d)",
				id, acc.GetBalance(), resp.GetMeta().GetRevisionNumber(), a.credits, a.balance, a.credits+1)
		}
	}
	return poll(ctx, time.Minute, 500*time.Millisecond, "the read side to catch up", func() (bool, string, error) {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		resp, err := b.status.GetReadSideStatus(cctx, &natsv1.GetReadSideStatusRequest{ReadSideId: readSideID})
		cancel()
		if err != nil {
			// NOT_FOUND until a projector made the consumers; UNAVAILABLE while the gateway reconnects.
			return false, fmt.Sprintf("GetReadSideStatus: %v", err), nil
		}
		if len(resp.GetShards()) == 0 {
			return false, "no shards", nil
		}
		for _, sh := range resp.GetShards() {
			if sh.GetStopped() || sh.GetPaused() {
				return false, "", fmt.Errorf("read side shard %d is stopped or paused: %v", sh.GetClusterShardNumber(), sh)
			}
			if sh.GetPending() != 0 {
				return false, fmt.Sprintf("shard %d: %d pending (failing %v, %s)", sh.GetClusterShardNumber(), sh.GetPending(), sh.GetFailing(), sh.GetLastError()), nil
			}
		}
		applied, err := s.readSideApplied(ctx)
		if err != nil {
			return false, "", err
		}
		for id, a := range b.ledger {
			got, ok := applied[id]
			if !ok || got.revision != a.credits+1 {
				return false, fmt.Sprintf("read side applied %s up to revision %d, want %d", id, got.revision, a.credits+1), nil
			}
			if got.balance != a.balance {
				return false, "", fmt.Errorf("read side has %s at revision %d with balance %d, want %d", id, got.revision, got.balance, a.balance)
			}
		}
		return true, "", nil
	})
}

// applied is the last event the example read side applied for an account.
type applied struct {
	revision uint32
	balance  int64
}

// appliedLine matches the example read side's log of an applied event (examples/bankaccount/readside).
var appliedLine = regexp.MustCompile(`readside: event applied .*\bentity=(\S+) revision=(\d+) .*\bbalance=(-?\d+)`)

// readSideApplied reads, from bankreadside's log, the highest revision it applied per account and the
// balance it projected then. The handler ignores revisions it already applied, so each revision is
// logged once per handler process.
func (s *stack) readSideApplied(ctx context.Context) (map[string]applied, error) {
	out, err := s.docker(ctx, "logs", s.ids["bankreadside"])
	if err != nil {
		return nil, fmt.Errorf("read side log: %w", err)
	}
	last := make(map[string]applied)
	for line := range strings.Lines(out) {
		m := appliedLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		rev, err1 := strconv.ParseUint(m[2], 10, 32)
		bal, err2 := strconv.ParseInt(m[3], 10, 64)
		if err := errors.Join(err1, err2); err != nil {
			return nil, fmt.Errorf("read side log line %q: %w", line, err)
		}
		if a := last[m[1]]; uint32(rev) > a.revision {
			last[m[1]] = applied{revision: uint32(rev), balance: bal}
		}
	}
	return last, nil
}

// freePort is a TCP port nothing listens on now, for the gateway's published port.
func freePort() (int, error) {
	return loopport.One()
}

// randomHex is n random bytes in hex: unique project names and command ids across runs.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return hex.EncodeToString(b)
}

package ctl_test

import (
	"context"
	"errors"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	"github.com/cosnats/cosnats/internal/costest"
	"github.com/cosnats/cosnats/pkg/config"
	"github.com/cosnats/cosnats/pkg/ctl"
)

// process turns JSON into the command, the state comes back as JSON; idempotency keys work; get
// reads the same; the exit codes say not found and refused.
func TestProcessGetAndTheirFailures(t *testing.T) {
	t.Parallel()
	s := startSystem(t)
	r := s.ok(t, "process", "acc-1", "bankaccount.v1.OpenAccount", `{"owner":"alice","initialBalance":"1000"}`)
	out := decode(t, r.stdout)
	if path(out, "state", "@type") != "type.googleapis.com/bankaccount.v1.BankAccount" || path(out, "state", "balance") != "1000" ||
		path(out, "state", "owner") != "alice" || path(out, "meta", "revision_number") != float64(1) || path(out, "meta", "entity_id") != "acc-1" {
		t.Fatalf("open: %s", r)
	}
	if id, _ := path(out, "command_id").(string); id == "" {
		t.Fatalf("no command_id (the gateway's): %s", r)
	}

	// Flags after the arguments, an idempotency key, and its retry answered from the log.
	credit := []string{"process", "acc-1", "bankaccount.v1.Credit", `{"amount":250}`, "--command-id", "pay-42"}
	first := decode(t, s.ok(t, credit...).stdout)
	again := decode(t, s.ok(t, credit...).stdout)
	if path(first, "state", "balance") != "1250" || path(first, "meta", "revision_number") != float64(2) || path(first, "command_id") != "pay-42" {
		t.Fatalf("credit: %v", first)
	}
	if path(again, "meta", "revision_number") != float64(2) || path(again, "meta", "revision_date") != path(first, "meta", "revision_date") {
		t.Fatalf("retry with the same command id applied again: %v", again)
	}

	got := decode(t, s.ok(t, "get", "acc-1").stdout)
	if path(got, "state", "balance") != "1250" || path(got, "meta", "revision_number") != float64(2) {
		t.Fatalf("get: %v", got)
	}
	table := s.ok(t, "get", "acc-1", "--output", "table").stdout
	rows := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(table), "\n") {
		k, v, _ := strings.Cut(line, " ")
		rows[k] = strings.TrimSpace(v)
	}
	if rows["entity_id"] != "acc-1" || rows["revision"] != "2" || !strings.Contains(rows["state"], `"balance":"1250"`) {
		t.Fatalf("get --output table:\n%s", table)
	}

	s.want(t, ctl.ExitNotFound, []string{"cosctl: NOT_FOUND: "}, "get", "nobody")
	// The handler's refusal, its message and details, on one line.
	r = s.want(t, ctl.ExitFailed, []string{"cosctl: FAILED_PRECONDITION: insufficient funds", "INSUFFICIENT_FUNDS", "exceeds balance 1250"},
		"process", "acc-1", "bankaccount.v1.Debit", `{"amount":"5000"}`)
	if strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 || r.stdout != "" {
		t.Fatalf("an error is one line on stderr: %s", r)
	}
	s.want(t, ctl.ExitFailed, []string{"cosctl: INVALID_ARGUMENT: empty entity ID"}, "get", "")
	// TLS to a plaintext gateway: no connection.
	s.want(t, ctl.ExitUnavailable, []string{"cosctl: UNAVAILABLE: "}, "get", "acc-1", "--tls", "--server-name", "gateway.example")
	// Nothing was debited.
	if got := decode(t, s.ok(t, "get", "acc-1").stdout); path(got, "state", "balance") != "1250" {
		t.Fatalf("after the refused debit: %v", got)
	}
}

// Bad command lines exit 2 before anything is sent; help exits 0.
func TestUsageErrors(t *testing.T) {
	t.Parallel()
	addr := closedAddr(t) // nothing is reached: a usage error must not be reported as unavailable
	for _, args := range [][]string{
		{},
		{"frobnicate"},
		{"get"},
		{"get", "a", "b"},
		{"get", "a", "--bogus"},
		{"get", "a", "--output", "yaml"},
		{"get", "a", "--timeout", "0s"},
		{"get", "a", "--cert", "c.pem"},
		{"get", "a", "--ca", "/nonexistent/ca.pem"},
		{"process", "a", "bankaccount.v1.Credit"},
		{"process", "a", "no.such.Type", "{}"},
		{"process", "a", "not a type", "{}"},
		{"process", "a", "bankaccount.v1.Credit", `{"amont":"1"}`},
		{"process", "a", "bankaccount.v1.Credit", `{"amount":`},
		{"process", "a", "bankaccount.v1.Credit", "{}", "--descriptors", "/nonexistent.pb"},
		{"watch", "--from-revision", "1"},
		{"watch", "a", "--from-sequence", "1"},
		{"watch", "a", "--from-revision", "x"},
		{"watch", "a", "b"},
		{"readside"},
		{"readside", "frob"},
		{"readside", "pause"},
		{"readside", "pause", "--id", "rs", "--shard", "-1"},
		{"readside", "pause", "rs"},
		{"readside", "replay", "--id", "rs", "--interval", "0s"},
		{"intake", "status", "extra"},
		{"help", "frob"},
	} {
		r := runCLI(context.Background(), nil, append(args, "--addr", addr)...)
		if r.code != ctl.ExitUsage || !strings.HasPrefix(r.stderr, "cosctl") || r.stdout != "" {
			t.Errorf("cosctl %q: want exit 2, got %s", args, r)
		}
	}
	for _, args := range [][]string{{"--help"}, {"help"}, {"help", "readside", "replay"}, {"process", "--help"},
		{"readside", "--help"}, {"readside", "rebuild", "-h"}, {"watch", "--help"}, {"intake", "status", "--help"}} {
		r := runCLI(context.Background(), nil, args...)
		if r.code != 0 || !strings.Contains(r.stdout, "cosctl") || r.stderr != "" {
			t.Errorf("cosctl %q: want help and exit 0, got %s", args, r)
		}
	}
	help := runCLI(context.Background(), nil, "--help").stdout
	for _, want := range []string{"Exit codes", "5  outcome unknown", "read the intake's stored outcomes from NATS", "readside replay", "intake status", "intake rejected", "--addr HOST:PORT"} {
		if !strings.Contains(help, want) {
			t.Errorf("cosctl --help lacks %q", want)
		}
	}
	// Each command's help says what it does, its flags and an example against the quickstart.
	for _, args := range [][]string{{"process", "--help"}, {"readside", "skip", "--help"}} {
		h := runCLI(context.Background(), nil, args...).stdout
		for _, want := range []string{"Usage: cosctl " + args[0], "Flags:", "Global flags", "Examples (against the quickstart)"} {
			if !strings.Contains(h, want) {
				t.Errorf("cosctl %q lacks %q:\n%s", args, want, h)
			}
		}
	}
}

// A gateway that is not there exits 3, for every kind of call; the address comes from
// COS_GATEWAY_ADDR when --addr is not given.
func TestGatewayNotListening(t *testing.T) {
	t.Parallel()
	addr := closedAddr(t)
	env := map[string]string{"COS_GATEWAY_ADDR": addr}
	for _, args := range [][]string{
		{"get", "acc-1"},
		{"process", "acc-1", "bankaccount.v1.Credit", `{"amount":"1"}`},
		{"readside", "status"},
		{"readside", "pause", "--id", "rs"},
		{"readside", "replay", "--id", "rs"},
		{"intake", "status"},
		{"watch", "acc-1"},
	} {
		r := runCLI(context.Background(), env, args...)
		if r.code != ctl.ExitUnavailable || !strings.Contains(r.stderr, "cosctl: UNAVAILABLE: ") || !strings.Contains(r.stderr, addr) {
			t.Errorf("cosctl %q against nothing: want exit 3, got %s", args, r)
		}
	}
}

// pause stops delivery until resume; status shows it; --shard uses the by-shard RPCs.
func TestReadSidePauseAndResume(t *testing.T) {
	t.Parallel()
	s := startSystem(t)
	s.open(t, "p-1", 10)
	s.rec.WaitFor(t, 30*time.Second, "the first event", received("p-1", 1))
	shard := shardOf(s, "p-1")
	s.waitCaughtUp(t)

	if r := s.ok(t, "readside", "pause", "--id", readSideID); !strings.Contains(r.stdout, "paused read side rs on every shard") {
		t.Fatalf("pause: %s", r)
	}
	table := s.ok(t, "readside", "status").stdout
	if states := stateCounts(table); states["paused"] != s.numShards || len(states) != 1 {
		t.Fatalf("status after pause:\n%s", table)
	}
	s.credit(t, "p-1", 5)
	if st := s.shardStatus(t, shard); st["paused"] != true || st["pending"] != "1" {
		t.Fatalf("paused shard with an event waiting: %v", st)
	}
	time.Sleep(300 * time.Millisecond) // a running shard delivers within milliseconds
	if got := s.rec.Received("p-1"); len(got) != 1 {
		t.Fatalf("delivered while paused: %v", got)
	}

	r := s.ok(t, "readside", "resume", "--id", readSideID, "--output", "json")
	if res := decode(t, r.stdout); res["successful"] != true || res["read_side_id"] != readSideID || res["shard"] != nil {
		t.Fatalf("resume: %s", r)
	}
	s.rec.WaitFor(t, 30*time.Second, "the event held by the pause", received("p-1", 2))
	costest.Eventually(t, 10*time.Second, "pending 0", func() bool { return s.shardStatus(t, shard)["pending"] == "0" })
	if table := s.ok(t, "readside", "status", "--id", readSideID).stdout; stateCounts(table)["running"] != s.numShards {
		t.Fatalf("status after resume:\n%s", table)
	}

	// One shard only.
	sh := strconv.Itoa(shard)
	if r := s.ok(t, "readside", "pause", "--id", readSideID, "--shard", sh); !strings.Contains(r.stdout, "on shard "+sh) {
		t.Fatalf("pause --shard: %s", r)
	}
	if table := s.ok(t, "readside", "status").stdout; stateCounts(table)["paused"] != 1 {
		t.Fatalf("one shard paused:\n%s", table)
	}
	s.credit(t, "p-1", 1)
	time.Sleep(300 * time.Millisecond)
	if got := s.rec.Received("p-1"); len(got) != 2 {
		t.Fatalf("delivered while its shard was paused: %v", got)
	}
	s.ok(t, "readside", "resume", "--id", readSideID, "--shard", sh)
	s.rec.WaitFor(t, 30*time.Second, "the third event", received("p-1", 3))

	s.want(t, ctl.ExitNotFound, []string{"cosctl: NOT_FOUND: ", "nope"}, "readside", "pause", "--id", "nope")
	s.want(t, ctl.ExitNotFound, []string{"cosctl: NOT_FOUND: "}, "readside", "status", "--id", "nope")
	s.want(t, ctl.ExitFailed, []string{"cosctl: INVALID_ARGUMENT: shard 99 out of range"}, "readside", "resume", "--id", readSideID, "--shard", "99")
}

// offsets are the stream sequences the read side acknowledged, per shard, the same the status shows.
func TestReadSideOffsets(t *testing.T) {
	t.Parallel()
	s := startSystem(t)
	s.open(t, "o-1", 1)
	s.credit(t, "o-1", 2)
	s.rec.WaitFor(t, 30*time.Second, "two events", received("o-1", 2))
	shard := shardOf(s, "o-1")
	s.waitCaughtUp(t)
	offset, _ := s.shardStatus(t, shard)["offset"].(string)
	if offset == "0" || offset == "" {
		t.Fatalf("status offset %q after two acknowledged events", offset)
	}
	table := s.ok(t, "readside", "offsets", "--id", readSideID).stdout
	rows := strings.Split(strings.TrimSpace(table), "\n")
	if len(rows) != s.numShards+1 || strings.Join(strings.Fields(rows[0]), " ") != "READ SIDE SHARD OFFSET" {
		t.Fatalf("offsets:\n%s", table)
	}
	for _, row := range rows[1:] {
		f := strings.Fields(row)
		want := "0"
		if f[1] == strconv.Itoa(shard) {
			want = offset
		}
		if len(f) != 3 || f[0] != readSideID || f[2] != want {
			t.Fatalf("offsets row %q, want offset %s on shard %d:\n%s", row, offset, shard, table)
		}
	}
	all := decode(t, s.ok(t, "readside", "offsets", "--id", readSideID, "--output", "json").stdout)
	if offs, _ := all["offsets"].([]any); len(offs) != s.numShards {
		t.Fatalf("offsets json: %v", all)
	}
	one := decode(t, s.ok(t, "readside", "offsets", "--id", readSideID, "--shard", strconv.Itoa(shard), "--output", "json").stdout)
	if path(one, "offsets", "offset") != offset || path(one, "offsets", "cluster_shard_number") != strconv.Itoa(shard) {
		t.Fatalf("offsets --shard: %v", one)
	}
	s.want(t, ctl.ExitNotFound, nil, "readside", "offsets", "--id", "nope")
}

// restart replays a shard from its first event: the read side receives the events again.
func TestReadSideRestart(t *testing.T) {
	t.Parallel()
	s := startSystem(t)
	s.open(t, "r-1", 1)
	s.credit(t, "r-1", 1)
	s.rec.WaitFor(t, 30*time.Second, "two events", received("r-1", 2))
	r := s.ok(t, "readside", "restart", "--id", readSideID, "--shard", strconv.Itoa(shardOf(s, "r-1")))
	if !strings.Contains(r.stdout, "restarted read side rs on shard") {
		t.Fatalf("restart: %s", r)
	}
	s.rec.WaitFor(t, 30*time.Second, "the events again", received("r-1", 4))
	if got := s.rec.Received("r-1"); got[2] != 1 || got[3] != 2 {
		t.Fatalf("after restart: %v", got)
	}
	s.ok(t, "readside", "restart", "--id", readSideID)
	s.rec.WaitFor(t, 30*time.Second, "the events a third time", received("r-1", 6))
}

// skip skips exactly the event a shard is stuck on, which status shows as failing; with nothing to
// skip the server answers successful=false and cosctl exits 1.
func TestReadSideSkip(t *testing.T) {
	t.Parallel()
	s := startSystem(t)
	s.rec.SetFail(func(_ context.Context, req *cospb.HandleReadSideRequest) (bool, error) {
		if req.GetMeta().GetEntityId() == "k-1" && req.GetMeta().GetRevisionNumber() == 2 {
			return false, errors.New("poison event")
		}
		return true, nil
	})
	s.open(t, "k-1", 1)
	s.credit(t, "k-1", 1)
	s.credit(t, "k-1", 1)
	shard := shardOf(s, "k-1")
	sh := strconv.Itoa(shard)
	costest.Eventually(t, 30*time.Second, "the shard failing", func() bool {
		st := s.shardStatus(t, shard)
		return st["failing"] == true && strings.Contains(st["last_error"].(string), "poison event")
	})
	table := s.ok(t, "readside", "status", "--id", readSideID).stdout
	if !strings.Contains(table, "failing") || !strings.Contains(table, "poison event") {
		t.Fatalf("status of a failing shard:\n%s", table)
	}
	if r := s.ok(t, "readside", "skip", "--id", readSideID, "--shard", sh); !strings.Contains(r.stdout, "skipped one event of read side rs on shard "+sh) {
		t.Fatalf("skip: %s", r)
	}
	s.rec.WaitFor(t, 30*time.Second, "the event after the skipped one", received("k-1", 2))
	if got := s.rec.Received("k-1"); len(got) != 2 || got[0] != 1 || got[1] != 3 {
		t.Fatalf("after skip: %v", got)
	}
	costest.Eventually(t, 10*time.Second, "the shard healthy", func() bool {
		st := s.shardStatus(t, shard)
		return st["failing"] == false && st["pending"] == "0"
	})
	s.want(t, ctl.ExitFailed, []string{"successful=false (nothing to skip)"}, "readside", "skip", "--id", readSideID, "--shard", sh)
	r := s.want(t, ctl.ExitFailed, nil, "readside", "skip", "--id", readSideID, "--output", "json")
	if res := decode(t, r.stdout); res["successful"] != false {
		t.Fatalf("skip with nothing to skip, json: %s", r)
	}
}

// replay restarts the read side, follows it to the end with progress, and the read side receives
// every event again.
func TestReadSideReplay(t *testing.T) {
	t.Parallel()
	s := startSystem(t)
	const n = 10 // events of the one entity; others add some on other shards
	s.open(t, "a-1", 1)
	for range n - 1 {
		s.credit(t, "a-1", 1)
	}
	others := []string{"a-2", "a-3", "a-4"}
	for _, id := range others {
		s.open(t, id, 1)
	}
	s.rec.WaitFor(t, 30*time.Second, "every event", received("a-1", n))
	for _, id := range others {
		s.rec.WaitFor(t, 30*time.Second, "every event", received(id, 1))
	}
	s.waitCaughtUp(t)

	// The total is every event of the read side, even those delivered again before the first poll (a
	// fast read side may have taken them all by then).
	all := strconv.Itoa(n + len(others))
	r := s.ok(t, "readside", "replay", "--id", readSideID, "--interval", "20ms")
	done := regexp.MustCompile(`(\d+)/(\d+) events 100% [0-9.]+ ev/s ETA 0s\n$`).FindStringSubmatch(r.stderr)
	if !strings.HasPrefix(r.stderr, "replay rs [") || done == nil || done[1] != all || done[2] != all {
		t.Fatalf("replay progress, want %s/%s: %s", all, all, r)
	}
	if !strings.HasPrefix(r.stdout, "read side rs caught up on every shard in ") || !strings.HasSuffix(r.stdout, "("+all+" events delivered since the restart)\n") {
		t.Fatalf("replay summary: %s", r)
	}
	// Caught up means acknowledged: every event was handled again by now.
	if err := inOrderAtLeastOnce(s.rec.Received("a-1")[n:], n); err != nil {
		t.Fatalf("a-1 after replay: %v: %v", err, s.rec.Received("a-1"))
	}
	for _, id := range others {
		s.rec.WaitFor(t, 30*time.Second, "every event again", received(id, 2))
	}

	// JSON progress lines, one shard, under the alias, with a read side that takes its time, so the
	// replay has progress to show.
	s.rec.SetFail(func(context.Context, *cospb.HandleReadSideRequest) (bool, error) {
		time.Sleep(20 * time.Millisecond)
		return true, nil
	})
	shard := shardOf(s, "a-1")
	inShard := n
	for _, id := range others {
		if shardOf(s, id) == shard {
			inShard++
		}
	}
	mark := len(s.rec.Received("a-1"))
	r = s.ok(t, "readside", "rebuild", "--id", readSideID, "--shard", strconv.Itoa(shard), "--interval", "20ms", "--output", "json")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	last := decode(t, lines[len(lines)-1])
	if last["finished"] != true || last["pending"] != float64(0) || last["total"] != last["done"] || last["total"] != float64(inShard) ||
		path(last, "shards").([]any)[0] != float64(shard) || r.stderr != "" {
		t.Fatalf("replay --output json: %s", r)
	}
	for _, l := range lines[:len(lines)-1] {
		if decode(t, l)["finished"] != false {
			t.Fatalf("a progress line before the end says finished: %s", r)
		}
	}
	if err := inOrderAtLeastOnce(s.rec.Received("a-1")[mark:], n); err != nil {
		t.Fatalf("a-1 after the shard's rebuild: %v: %v", err, s.rec.Received("a-1"))
	}

	mark = len(s.rec.Received("a-1"))
	if r := s.ok(t, "readside", "replay", "--id", readSideID, "--no-wait"); !strings.Contains(r.stdout, "(not waiting)") {
		t.Fatalf("replay --no-wait: %s", r)
	}
	s.rec.WaitFor(t, 30*time.Second, "the --no-wait replay", func(r *costest.Recorder) bool {
		return inOrderAtLeastOnce(r.Received("a-1")[mark:], n) == nil
	})
	s.waitCaughtUp(t)
	// A paused read side cannot catch up: the replay says so instead of waiting forever.
	s.ok(t, "readside", "pause", "--id", readSideID)
	before := s.rec.Total()
	s.want(t, ctl.ExitFailed, []string{"cannot be replayed now", "shard 0 is paused", "cosctl readside resume"}, "readside", "replay", "--id", readSideID, "--interval", "20ms")
	s.ok(t, "readside", "resume", "--id", readSideID)
	s.waitCaughtUp(t)
	if got := s.rec.Total(); got != before {
		t.Fatalf("a refused replay restarted the read side: %d deliveries, %d before", got, before)
	}
	s.want(t, ctl.ExitNotFound, nil, "readside", "replay", "--id", "nope")
}

// With an admin listener, the operator's commands go there (--admin-addr); the main port refuses them.
func TestAdminListener(t *testing.T) {
	t.Parallel()
	s := startSystemWith(t, func(c *config.Config) { c.AdminAddress = "127.0.0.1:0" })
	s.ok(t, "readside", "status")
	s.ok(t, "intake", "status")
	s.ok(t, "readside", "pause", "--id", readSideID)
	s.ok(t, "readside", "resume", "--id", readSideID)
	r := runCLI(context.Background(), nil, "readside", "status", "--addr", s.addr)
	checkResult(t, r, 1, []string{"UNIMPLEMENTED"}, []string{"readside", "status"})
	env := map[string]string{"COS_GATEWAY_ADDR": s.addr, "COS_ADMIN_ADDR": s.node.AdminAddr}
	if r := runCLI(context.Background(), env, "readside", "status"); r.code != 0 {
		t.Fatalf("COS_ADMIN_ADDR: %s", r)
	}
	s.open(t, "adm-1", 10) // commands still go to --addr
}

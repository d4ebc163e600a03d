package ctl

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	natspb "github.com/cosnats/cosnats/gen/cosnats/v1"
)

func shards(pending ...uint64) []*natspb.ReadSideShardStatus {
	var out []*natspb.ReadSideShardStatus
	for i, p := range pending {
		out = append(out, &natspb.ReadSideShardStatus{ReadSideId: "rs", ClusterShardNumber: uint64(i), Pending: p})
	}
	return out
}

// Done, total, rate and ETA; total grows with new events, done never goes back.
func TestProgress(t *testing.T) {
	start := time.Unix(1000, 0)
	p := &progress{readSide: "rs", start: start, now: start}
	p.observe(shards(60, 40), true)
	if p.total != 100 || p.done != 0 {
		t.Fatalf("start: %+v", p)
	}
	if got := p.text(); got != "replay rs [..............................] 0/100 events   0% 0.0 ev/s ETA ?" {
		t.Fatalf("start line %q", got)
	}
	p.now = start.Add(10 * time.Second)
	p.observe(shards(30, 20), false)
	if got := p.text(); got != "replay rs [###############...............] 50/100 events  50% 5.0 ev/s ETA 10s" {
		t.Fatalf("half-way line %q", got)
	}
	// More pending than total minus done: new events came; the total grows, done stays.
	p.now = start.Add(12 * time.Second)
	p.observe(shards(40, 20), false)
	if p.total != 110 || p.done != 50 || p.pending != 60 {
		t.Fatalf("with new events: %+v", p)
	}
	p.observe(shards(0, 0), false)
	j := p.json(true)
	if j.Done != 110 || j.Total != 110 || j.Percent != 100 || j.ETASeconds == nil || *j.ETASeconds != 0 || !j.Finished || len(j.Shards) != 2 {
		t.Fatalf("json %+v", j)
	}
	sh := shards(5)
	sh[0].Failing, sh[0].LastError = true, "boom\nagain"
	p.observe(sh, false)
	if !strings.HasSuffix(p.text(), "(shard 0 failing: boom again)") {
		t.Fatalf("failing shard: %q", p.text())
	}
}

// On a terminal the bar is redrawn in place; otherwise plain lines, at most one per plainEvery.
func TestProgressOutput(t *testing.T) {
	start := time.Unix(1000, 0)
	var tty bytes.Buffer
	o := &progressOut{w: &tty, mode: "tty"}
	p := &progress{readSide: "rs", start: start, now: start}
	p.observe(shards(2), true)
	o.show(p, false)
	p.observe(shards(0), false)
	o.show(p, true)
	if got := tty.String(); strings.Count(got, "\r") != 2 || !strings.HasSuffix(got, "2/2 events 100% 0.0 ev/s ETA 0s\x1b[K\n") {
		t.Fatalf("tty output %q", got)
	}

	var plain bytes.Buffer
	o = &progressOut{w: &plain, mode: "plain"}
	p = &progress{readSide: "rs", start: start, now: start}
	p.observe(shards(3), true)
	o.show(p, false)
	p.now = start.Add(time.Second)
	p.observe(shards(2), false)
	o.show(p, false) // too soon after the first line
	p.now = start.Add(plainEvery + time.Second)
	p.observe(shards(1), false)
	o.show(p, false)
	p.observe(shards(0), false)
	o.show(p, true)
	if lines := strings.Split(strings.TrimSuffix(plain.String(), "\n"), "\n"); len(lines) != 3 || strings.Contains(plain.String(), "\r") ||
		!strings.Contains(lines[2], "3/3 events 100%") {
		t.Fatalf("plain output %q", plain.String())
	}
	if isTerminal(&plain) {
		t.Fatal("a buffer is not a terminal")
	}
}

// UNKNOWN, and a call cut off by our own deadline after it reached the gateway, are "outcome
// unknown" (exit 5); a deadline before anything was sent is unavailable (3).
func TestProcessOutcomeUnknown(t *testing.T) {
	for _, tc := range []struct {
		err               error
		ourDeadline, sent bool
		want              int
	}{
		{status.Error(codes.Unknown, "outcome unknown"), false, true, ExitUnknown},
		{status.Error(codes.DeadlineExceeded, "context deadline exceeded"), true, true, ExitUnknown},
		{status.Error(codes.Canceled, "context canceled"), true, true, ExitUnknown},
		{status.Error(codes.DeadlineExceeded, "context deadline exceeded"), true, false, ExitUnavailable},
		{status.Error(codes.DeadlineExceeded, "command deadline passed: nothing was persisted"), false, true, ExitUnavailable},
		{status.Error(codes.Unavailable, "not processed"), false, true, ExitUnavailable},
		{status.Error(codes.FailedPrecondition, "insufficient funds"), false, true, ExitFailed},
	} {
		code, line := classify(processError(tc.err, tc.ourDeadline, tc.sent, "cmd-7"))
		if code != tc.want {
			t.Errorf("%v (our deadline %v, sent %v): exit %d, want %d (%s)", tc.err, tc.ourDeadline, tc.sent, code, tc.want, line)
		}
		if code == ExitUnknown && !strings.Contains(line, "retry with --command-id cmd-7") {
			t.Errorf("unknown outcome without the retry advice: %s", line)
		}
	}
	if got := codeName(codes.DeadlineExceeded); got != "DEADLINE_EXCEEDED" {
		t.Errorf("code name %q", got)
	}
	if code, line := classify(errors.New("plain\nerror")); code != ExitFailed || line != "plain error" {
		t.Errorf("plain error: %d %q", code, line)
	}
}

// Flags may follow the arguments; "--" ends them.
func TestParseInterleaved(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	v := fs.String("v", "", "")
	pos, err := parseInterleaved(fs, []string{"a", "-v", "x", "b", "--", "-c", "-v"})
	if err != nil || *v != "x" || strings.Join(pos, ",") != "a,b,-c,-v" {
		t.Fatalf("pos %q v %q err %v", pos, *v, err)
	}
}

package ctl_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cosnats/cosnats/internal/costest"
)

// watch prints one JSON line per event: an entity's history from a revision, every entity live, and
// it ends on --count or on a signal (ctx), exiting 0.
func TestWatch(t *testing.T) {
	t.Parallel()
	s := startSystem(t)
	s.open(t, "w-1", 1000)
	s.credit(t, "w-1", 250)

	r := s.ok(t, "watch", "w-1", "--from-revision", "1", "--count", "2", "--subscription-id", "sub-1")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 2 {
		t.Fatalf("watch --count 2: %s", r)
	}
	for i, l := range lines {
		ev := decode(t, l)
		if ev["subscription_id"] != "sub-1" || ev["entity_id"] != "w-1" || ev["revision"] != float64(i+1) ||
			ev["sequence"] == float64(0) || path(ev, "meta", "revision_number") != float64(i+1) {
			t.Fatalf("event line %d: %s", i, l)
		}
	}
	if first := decode(t, lines[0]); path(first, "event", "@type") != "type.googleapis.com/bankaccount.v1.AccountOpened" ||
		path(first, "resulting_state", "balance") != "1000" {
		t.Fatalf("first event: %s", lines[0])
	}
	if second := decode(t, lines[1]); path(second, "event", "amount") != "250" || path(second, "resulting_state", "balance") != "1250" {
		t.Fatalf("second event: %s", lines[1])
	}

	// Every entity, from a stream position: the first events ever stored.
	r = s.ok(t, "watch", "--from-sequence", "1", "--count", "2")
	lines = strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 2 || decode(t, lines[0])["entity_id"] != "w-1" || decode(t, lines[0])["revision"] != float64(1) ||
		decode(t, lines[1])["sequence"].(float64) <= decode(t, lines[0])["sequence"].(float64) {
		t.Fatalf("watch --from-sequence 1: %s", r)
	}

	// Live, every entity, two watches sharing a subscription id: commands go on until both see one.
	// A signal ends the first with exit 0, and its UnsubscribeAll ends the second (the server ends its
	// stream: exit 0, said on stderr).
	s.open(t, "w-2", 0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out1, err1, out2, err2 syncBuffer
	done1, done2 := make(chan int, 1), make(chan int, 1)
	go func() {
		done1 <- runWithWriters(ctx, []string{"watch", "--addr", s.addr, "--output", "table", "--subscription-id", "shared"}, &out1, &err1)
	}()
	go func() {
		done2 <- runWithWriters(context.Background(), []string{"watch", "--addr", s.addr, "--subscription-id", "shared"}, &out2, &err2)
	}()
	costest.Eventually(t, 30*time.Second, "a live event in both watches", func() bool {
		s.credit(t, "w-2", 1)
		return strings.Contains(out1.String(), "w-2") && strings.Contains(out2.String(), "w-2")
	})
	cancel()
	for i, w := range []struct {
		done     chan int
		out, err *syncBuffer
		want     string
	}{{done1, &out1, &err1, "bankaccount.v1.AccountCredited"}, {done2, &out2, &err2, `"entity_id":"w-2"`}} {
		select {
		case code := <-w.done:
			if code != 0 || !strings.Contains(w.out.String(), w.want) || (i == 1) != strings.Contains(w.err.String(), "the server ended subscription shared") {
				t.Fatalf("watch %d after the signal: exit %d\nstdout:\n%s\nstderr:\n%s", i+1, code, w.out.String(), w.err.String())
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("watch %d did not end", i+1)
		}
	}
}

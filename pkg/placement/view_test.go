package placement_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/cosnats/cosnats/internal/costest"
	"github.com/cosnats/cosnats/pkg/layout"
	"github.com/cosnats/cosnats/pkg/placement"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// A gateway's view follows the workers' heartbeats over a real NATS server: it learns who joins,
// forgets who says it leaves, who is reported down (until heard again) and who stops beating.
func TestViewFollowsHeartbeats(t *testing.T) {
	srv := costest.StartNATS(t)
	nc, _ := costest.JetStream(t, srv)
	lay := layout.Default()
	log := costest.Logger(t)
	const interval = 20 * time.Millisecond

	view := placement.NewView(nc, lay, interval, log)
	ctx, cancel := context.WithCancel(context.Background())
	viewDone := make(chan error, 1)
	go func() { viewDone <- view.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-viewDone; err != nil {
			t.Errorf("view: %v", err)
		}
	})
	<-view.Subscribed()
	if _, ok := view.Owner("cos.cmd.1.x"); ok {
		t.Fatal("an owner before any worker was heard")
	}

	type worker struct {
		a    *placement.Announcer
		stop context.CancelFunc
		done chan struct{}
	}
	start := func(id string) worker {
		wnc, err := nats.Connect(srv.ClientURL())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(wnc.Close)
		a, err := placement.NewAnnouncer(wnc, lay, id, interval, log)
		if err != nil {
			t.Fatal(err)
		}
		wctx, stop := context.WithCancel(context.Background())
		w := worker{a: a, stop: stop, done: make(chan struct{})}
		go func() {
			defer close(w.done)
			_ = a.Run(wctx)
		}()
		t.Cleanup(func() { stop(); <-w.done })
		return w
	}
	members := func(want ...string) func() bool {
		return func() bool { return slices.Equal(view.Workers(), want) }
	}

	a, b := start("w-a"), start("w-b")
	costest.Eventually(t, 10*time.Second, "both workers known", members("w-a", "w-b"))
	seen := map[string]bool{}
	for _, k := range []string{"cos.cmd.1.a", "cos.cmd.2.b", "cos.cmd.3.c", "cos.cmd.4.d", "cos.cmd.5.e", "cos.cmd.6.f", "cos.cmd.7.g", "cos.cmd.8.h"} {
		o, ok := view.Owner(k)
		if !ok {
			t.Fatalf("no owner for %s with two workers", k)
		}
		seen[o] = true
	}
	if !seen["w-a"] || !seen["w-b"] {
		t.Errorf("eight entities all went to one worker: %v", seen)
	}

	// Reported down: forgotten at once, back with its next heartbeat.
	view.Down("w-a")
	if slices.Contains(view.Workers(), "w-a") {
		t.Fatal("w-a still known right after Down")
	}
	costest.Eventually(t, 10*time.Second, "w-a heard again", members("w-a", "w-b"))

	// Leaving: forgotten once the notice arrives, and not brought back (it beats no more).
	a.stop()
	<-a.done
	a.a.Leave()
	costest.Eventually(t, 10*time.Second, "w-a forgotten after it left", members("w-b"))
	for range 3 {
		if o, _ := view.Owner("cos.cmd.1.a"); o != "w-b" {
			t.Fatalf("owner %q with only w-b alive", o)
		}
	}

	// Silent: a worker whose heartbeats stop (a lost connection) is forgotten after missed beats.
	b.stop()
	<-b.done
	costest.Eventually(t, 10*time.Second, "w-b forgotten after missed heartbeats", members())
	if _, ok := view.Owner("cos.cmd.1.a"); ok {
		t.Fatal("an owner with no worker alive")
	}
}

// Heartbeats on subjects that do not name a worker, and unknown payloads, change nothing.
func TestViewIgnoresForeignHeartbeats(t *testing.T) {
	srv := costest.StartNATS(t)
	nc, _ := costest.JetStream(t, srv)
	lay := layout.Default()
	view := placement.NewView(nc, lay, time.Hour, costest.Logger(t))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- view.Run(ctx) }()
	defer func() { cancel(); <-done }()
	<-view.Subscribed()
	for subject, data := range map[string]string{"cos.workers.w-x": "hello", "cos.workers.a%b": "up", "cos.workers.w-y": ""} {
		if err := nc.Publish(subject, []byte(data)); err != nil {
			t.Fatal(err)
		}
	}
	// A real heartbeat after them: once it is seen, the others were processed (one subscription, in order).
	if err := nc.Publish("cos.workers.w-z", []byte("up")); err != nil {
		t.Fatal(err)
	}
	costest.Eventually(t, 10*time.Second, "w-z known", func() bool { return len(view.Workers()) > 0 })
	if got := view.Workers(); !slices.Equal(got, []string{"w-z"}) {
		t.Fatalf("workers %v, want only w-z", got)
	}
	if _, err := placement.NewAnnouncer(nc, lay, "bad.id", 0, costest.Logger(t)); err == nil {
		t.Error("an announcer with a dotted id was accepted")
	}
}

package intake_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cosnats/cosnats/internal/costest"
	"github.com/cosnats/cosnats/pkg/intake"
	"github.com/cosnats/cosnats/pkg/layout"
)

// An outcome stored twice (a retried publish) reaches producers once: they hear the stream's republish
// of what it stored, not the publishes.
func TestOutcomesAreHeardOnce(t *testing.T) {
	srv := costest.StartNATS(t)
	nc, js := costest.JetStream(t, srv)
	ctx := context.Background()
	lay := layout.Default()
	if err := intake.Ensure(ctx, js, intake.AsyncConfig{Layout: lay}); err != nil {
		t.Fatal(err)
	}
	if err := intake.Ensure(ctx, js, intake.AsyncConfig{Layout: lay, MaxMessages: 5}); err != nil { // limits change in place
		t.Fatal(err)
	}
	heard, err := nc.SubscribeSync(lay.OutcomeSubject("c/1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for i, wantDup := range []bool{false, true} {
		m := nats.NewMsg(lay.OutcomeLogSubject("c/1"))
		m.Header.Set("Nats-Msg-Id", "c/1@7")
		m.Data = []byte("outcome")
		ack, err := js.PublishMsg(ctx, m)
		if err != nil || ack.Duplicate != wantDup {
			t.Fatalf("publish %d: %+v %v", i, ack, err)
		}
	}
	// A later outcome of the same command id (sent again after the window) is a new message.
	m := nats.NewMsg(lay.OutcomeLogSubject("c/1"))
	m.Header.Set("Nats-Msg-Id", "c/1@9")
	if _, err := js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	// Republished in storage order: a duplicate would come between the two.
	for _, want := range []string{"c/1@7", "c/1@9"} {
		got, err := heard.NextMsg(5 * time.Second)
		if err != nil || got.Header.Get("Nats-Msg-Id") != want {
			t.Fatalf("heard %v, want %s: %v", got, want, err)
		}
	}
	info, err := js.Stream(ctx, lay.IntakeStream())
	if err != nil || info.CachedInfo().Config.MaxMsgs != 5 {
		t.Fatalf("intake limits %v: %v", info, err)
	}
}

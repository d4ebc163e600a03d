package subscription_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	"github.com/cosnats/cosnats/internal/costest"
	"github.com/cosnats/cosnats/pkg/entity"
	"github.com/cosnats/cosnats/pkg/eventlog"
	"github.com/cosnats/cosnats/pkg/layout"
	"github.com/cosnats/cosnats/pkg/subscription"
)

// chanSink is a Sink that hands events to the test; Send blocks while hold is open.
type chanSink struct {
	live   chan struct{}
	events chan subscription.Event
	hold   chan struct{}
}

func newSink(held bool) *chanSink {
	s := &chanSink{live: make(chan struct{}), events: make(chan subscription.Event, 100), hold: make(chan struct{})}
	if !held {
		close(s.hold)
	}
	return s
}

func (s *chanSink) Live() error { close(s.live); return nil }

func (s *chanSink) Send(e subscription.Event) error {
	<-s.hold
	s.events <- e
	return nil
}

// hubOnNATS is a hub bound to its own NATS server (which the test may stop), with the event stream.
func hubOnNATS(t *testing.T, cfg subscription.Config) (*subscription.Hub, jetstream.JetStream, func()) {
	t.Helper()
	srv := costest.StartNATS(t)
	nc, err := nats.Connect(srv.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond), nats.ReconnectBufSize(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := eventlog.Open(ctx, js, eventlog.Config{Layout: layout.Default(), Replicas: 1, NumShards: 9}); err != nil {
		t.Fatal(err)
	}
	cfg.Layout = layout.Default()
	h := subscription.New(cfg, costest.Logger(t))
	h.Bind(js)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		h.Shutdown(ctx)
	})
	return h, js, srv.Shutdown
}

// publish stores an event of entity id (as a worker would) and returns its sequence.
func publish(t *testing.T, js jetstream.JetStream, id string, revision uint32) uint64 {
	t.Helper()
	key, _ := entity.NewKey(id, 9)
	data, err := proto.Marshal(&cospb.EventWrapper{Meta: &cospb.MetaData{EntityId: id, RevisionNumber: revision}})
	if err != nil {
		t.Fatal(err)
	}
	ack, err := js.Publish(context.Background(), layout.Default().EventSubject(key), data)
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

// next is the sink's next event; no event within 30 s fails the test.
func (s *chanSink) next(t *testing.T) subscription.Event {
	t.Helper()
	select {
	case e := <-s.events:
		return e
	case <-time.After(30 * time.Second):
		t.Fatal("no event")
	}
	return subscription.Event{}
}

// await waits until the subscription is live.
func (s *chanSink) await(t *testing.T) {
	t.Helper()
	select {
	case <-s.live:
	case <-time.After(30 * time.Second):
		t.Fatal("the subscription did not start")
	}
}

func subscribe(h *subscription.Hub, req subscription.Request, sink subscription.Sink) <-chan error {
	done := make(chan error, 1)
	go func() { done <- h.Subscribe(context.Background(), req, sink) }()
	return done
}

func endOf(t *testing.T, done <-chan error) *subscription.EndError {
	t.Helper()
	select {
	case err := <-done:
		var end *subscription.EndError
		if !errors.As(err, &end) {
			t.Fatalf("Subscribe returned %v, want an *EndError", err)
		}
		return end
	case <-time.After(30 * time.Second):
		t.Fatal("the subscription did not end")
	}
	return nil
}

// NATS gone for longer than MaxDisconnect ends a subscription as Disconnected, resuming after the last
// event handed over.
func TestNATSGoneEndsTheSubscription(t *testing.T) {
	h, js, stopNATS := hubOnNATS(t, subscription.Config{MaxDisconnect: 100 * time.Millisecond})
	sink := newSink(false)
	done := subscribe(h, subscription.Request{ID: "x"}, sink)
	sink.await(t)
	seq := publish(t, js, "e", 1)
	if e := sink.next(t); e.Sequence != seq || e.Wrapper.GetMeta().GetEntityId() != "e" {
		t.Fatalf("event %v, want sequence %d", e, seq)
	}
	stopNATS()
	end := endOf(t, done)
	if end.Reason != subscription.Disconnected || end.Kind != subscription.KindAll || end.Resume != seq+1 {
		t.Fatalf("ended %+v, want Disconnected resuming from %d", end, seq+1)
	}
}

// A sink that does not take events makes the subscription end as TooSlow once the buffer stays full;
// with nothing handed over, it resumes where it started. The blocked Send is released afterwards
// (Shutdown waits for it).
func TestStalledSinkIsCutOff(t *testing.T) {
	h, js, _ := hubOnNATS(t, subscription.Config{Buffer: 1, StallTimeout: 20 * time.Millisecond})
	sink := newSink(true)
	defer close(sink.hold)
	key, _ := entity.NewKey("e", 9)
	done := subscribe(h, subscription.Request{ID: "x", Entity: &key}, sink)
	sink.await(t)
	for rev := uint32(1); rev <= 5; rev++ {
		publish(t, js, "e", rev)
	}
	end := endOf(t, done)
	if end.Reason != subscription.TooSlow || end.Kind != subscription.KindEntity || end.Resume != 1 {
		t.Fatalf("ended %+v, want TooSlow resuming from revision 1", end)
	}
}

// Unsubscribe ends a local subscription before it returns, and only those of its kind.
func TestUnsubscribeEndsLocalStreamsBeforeReturning(t *testing.T) {
	h, js, _ := hubOnNATS(t, subscription.Config{})
	all, one := newSink(false), newSink(false)
	key, _ := entity.NewKey("e", 9)
	doneAll := subscribe(h, subscription.Request{ID: "same"}, all)
	doneOne := subscribe(h, subscription.Request{ID: "same", Entity: &key}, one)
	all.await(t)
	one.await(t)
	if err := h.Unsubscribe(context.Background(), subscription.KindEntity, "same"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-doneOne:
		if err != nil {
			t.Fatalf("an unsubscribed subscription returned %v", err)
		}
	default:
		t.Fatal("Unsubscribe returned before the subscription ended")
	}
	// The SubscribeAll one with the same id goes on.
	seq := publish(t, js, "e", 1)
	if e := all.next(t); e.Sequence != seq {
		t.Fatalf("event %v, want sequence %d", e, seq)
	}
	select {
	case err := <-doneAll:
		t.Fatalf("Unsubscribe ended a SubscribeAll subscription: %v", err)
	default:
	}
	if err := h.Unsubscribe(context.Background(), subscription.KindAll, "same"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-doneAll:
		if err != nil {
			t.Fatalf("an unsubscribed subscription returned %v", err)
		}
	default:
		t.Fatal("Unsubscribe returned before the subscription ended")
	}
}

package costest

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	"github.com/cosnats/cosnats/pkg/entity"
	"github.com/cosnats/cosnats/pkg/layout"
)

// Events reads every stored event of one entity, in stream order.
func Events(t testing.TB, js jetstream.JetStream, id string, numShards int) []*cospb.EventWrapper {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	key, err := entity.NewKey(id, numShards)
	if err != nil {
		t.Fatalf("key: %v", err)
	}
	lay := layout.Default()
	subject := lay.EventSubject(key)
	s, err := js.Stream(ctx, lay.EventStream())
	if err != nil {
		t.Fatalf("stream: %v", err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	want := info.State.Subjects[subject]
	if want == 0 {
		return nil
	}
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		t.Fatalf("consumer: %v", err)
	}
	var out []*cospb.EventWrapper
	for uint64(len(out)) < want {
		batch, err := c.Fetch(int(want)-len(out), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatalf("fetch: %v", err)
		}
		for m := range batch.Messages() {
			var w cospb.EventWrapper
			if err := proto.Unmarshal(m.Data(), &w); err != nil {
				t.Fatalf("decode event: %v", err)
			}
			out = append(out, &w)
		}
		if err := batch.Error(); err != nil {
			t.Fatalf("fetch: %v", err)
		}
	}
	return out
}

// CheckRevisions fails unless events carry revisions 1..n in order and, for counters built only of +1
// events, each resulting state equals its revision (each event was applied on the previous one).
func CheckRevisions(t testing.TB, events []*cospb.EventWrapper, n int, unitSteps bool) {
	t.Helper()
	if len(events) != n {
		t.Fatalf("got %d events, want %d", len(events), n)
	}
	for i, e := range events {
		if got := e.GetMeta().GetRevisionNumber(); got != uint32(i+1) {
			t.Fatalf("event %d has revision %d", i+1, got)
		}
		if unitSteps && Value(e.GetResultingState()) != int64(i+1) {
			t.Fatalf("event %d has resulting state %d: not applied on the previous state", i+1, Value(e.GetResultingState()))
		}
	}
}

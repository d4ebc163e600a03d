package costest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	"github.com/cosnats/cosnats/pkg/entity"
	"github.com/cosnats/cosnats/pkg/eventlog"
	"github.com/cosnats/cosnats/pkg/layout"
)

// Events reads every stored event of one entity, in stream order.
func Events(t testing.TB, js jetstream.JetStream, id string, numShards int) []*cospb.EventWrapper {
	t.Helper()
	var out []*cospb.EventWrapper
	for _, m := range eventMsgs(t, js, id, numShards) {
		var w cospb.EventWrapper
		if err := proto.Unmarshal(m.Data, &w); err != nil {
			t.Fatalf("decode event at sequence %d: %v", m.Sequence, err)
		}
		out = append(out, &w)
	}
	return out
}

// CommandIDs reads the command id stored with each event of one entity, in stream order (a command's
// events all carry its id).
func CommandIDs(t testing.TB, js jetstream.JetStream, id string, numShards int) []string {
	t.Helper()
	var out []string
	for _, m := range eventMsgs(t, js, id, numShards) {
		out = append(out, m.Header.Get(eventlog.HeaderCommandID))
	}
	return out
}

func eventMsgs(t testing.TB, js jetstream.JetStream, id string, numShards int) []*jetstream.RawStreamMsg {
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
	// Message gets by subject are answered by the stream leader; a fresh consumer's pull subject may
	// not yet have reached the client's server on a cluster ("no responders").
	var out []*jetstream.RawStreamMsg
	for seq := uint64(1); ; {
		m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			t.Fatalf("read %s from sequence %d: %v", subject, seq, err)
		}
		out = append(out, m)
		seq = m.Sequence + 1
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	if n := info.State.Subjects[subject]; n != uint64(len(out)) {
		t.Fatalf("read %d events of %q, the stream holds %d", len(out), id, n)
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

package eventlog

import (
	"fmt"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
)

func TestRecentPushLookupRoundTrip(t *testing.T) {
	var r Recent
	for i := 1; i <= 20; i++ {
		r = r.Push(fmt.Sprintf("cmd-%d", i), uint64(i*10), 16)
	}
	if len(r) != 16 {
		t.Fatalf("window not applied: %d entries", len(r))
	}
	if seq, ok := r.Lookup("cmd-20"); !ok || seq != 200 {
		t.Fatalf("newest: %d %v", seq, ok)
	}
	if seq, ok := r.Lookup("cmd-5"); !ok || seq != 50 {
		t.Fatalf("oldest kept: %d %v", seq, ok)
	}
	if _, ok := r.Lookup("cmd-4"); ok {
		t.Fatal("entry beyond the window still found")
	}
	back, err := ParseRecent(r.String())
	if err != nil || back.String() != r.String() {
		t.Fatalf("round trip: %v %v", back, err)
	}
	if r.Push("x", 1, 0) != nil {
		t.Fatal("window 0 must remember nothing")
	}
}

// The header form is what earlier versions wrote and read (stored events carry it): a list made today
// prints the same bytes, and those bytes parse back to it.
func TestRecentHeaderFormIsStable(t *testing.T) {
	const stored = "ubKSyFAUQl8f@7,9B4SxL70NlrC@42" // cmd-2 at 7, then cmd-1 at 42
	r := Recent{}.Push("cmd-1", 42, 16).Push("cmd-2", 7, 16)
	if got := r.String(); got != stored {
		t.Fatalf("header form %q, want %q", got, stored)
	}
	back, err := ParseRecent(stored)
	if err != nil || len(back) != 2 || back[0] != r[0] || back[1] != r[1] {
		t.Fatalf("ParseRecent(%q) = %v %v", stored, back, err)
	}
	if seq, ok := back.Lookup("cmd-1"); !ok || seq != 42 {
		t.Fatalf("lookup after parsing: %d %v", seq, ok)
	}
}

func TestParseRecentRejectsGarbage(t *testing.T) {
	for _, s := range []string{"abc", "abc@", "@12", "abc@x", "a@1,,b@2", "abc@1", "9B4SxL70NlrC@1,x", "9B4SxL70Nlr!@1", "9B4SxL70NlrCC@1", "9B4SxL70NlrC@-1"} {
		if _, err := ParseRecent(s); err == nil {
			t.Errorf("ParseRecent(%q) accepted", s)
		}
	}
}

func TestHeadApplied(t *testing.T) {
	h := Head{Seq: 7, CommandID: "last", Recent: Recent{}.Push("older", 3, 4)}
	if seq, ok := h.Applied("last"); !ok || seq != 7 {
		t.Fatalf("head command: %d %v", seq, ok)
	}
	if seq, ok := h.Applied("older"); !ok || seq != 3 {
		t.Fatalf("recent command: %d %v", seq, ok)
	}
	if _, ok := h.Applied(""); ok {
		t.Fatal("empty id matched")
	}
	if _, ok := (Head{}).Applied("last"); ok {
		t.Fatal("fresh entity matched")
	}
}

func BenchmarkRecentPushString(b *testing.B) {
	var r Recent
	for i := range 16 {
		r = r.Push(fmt.Sprint(i), uint64(i), 16)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		_ = r.Push("0b7c7d9e-3c55-4c1f-9a4e-1f0e2d3c4b5a", 1234567, 16).String()
	}
}

// BenchmarkEventWrapperRoundTrip is the per-event encoding work: marshal a wrapper, decode it as a head.
func BenchmarkEventWrapperRoundTrip(b *testing.B) {
	w := &cospb.EventWrapper{
		Event:          &anypb.Any{TypeUrl: "type.googleapis.com/bank.AccountCredited", Value: make([]byte, 32)},
		ResultingState: &anypb.Any{TypeUrl: "type.googleapis.com/bank.BankAccount", Value: make([]byte, 200)},
		Meta:           &cospb.MetaData{EntityId: "account-0123456789", RevisionNumber: 42, RevisionDate: timestamppb.Now()},
	}
	hdr := nats.Header{}
	hdr.Set(HeaderCommandID, "0b7c7d9e-3c55-4c1f-9a4e-1f0e2d3c4b5a")
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		data, err := proto.Marshal(w)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := decodeHead(&jetstream.RawStreamMsg{Data: data, Header: hdr, Sequence: 1}); err != nil {
			b.Fatal(err)
		}
	}
}

package layout

import (
	"testing"

	"github.com/cosnats/cosnats/pkg/entity"
)

func TestNames(t *testing.T) {
	l, err := New("Bank")
	if err != nil {
		t.Fatal(err)
	}
	k, _ := entity.NewKey("a.b", 9)
	if got := l.EventSubject(k); got != "bank.events.7.=YS5i" {
		t.Fatalf("event subject %s", got)
	}
	if l.EventStream() != "Bank_EVENTS" || l.StateBucket() != "Bank_STATE" || l.EventSubjects() != "bank.events.>" {
		t.Fatalf("names %s %s %s", l.EventStream(), l.StateBucket(), l.EventSubjects())
	}
	if got := l.CommandSubject(k); got != "bank.cmd.7.=YS5i" || !l.KeySubjectMatches(k, got) || l.KeySubjectMatches(k, "bank.cmd.7.other") {
		t.Fatalf("command subject %s", got)
	}
	if _, err := New("bad.prefix"); err == nil {
		t.Fatal("prefix with a dot accepted")
	}
}

func TestParse(t *testing.T) {
	l := Default()
	k, _ := entity.NewKey("a.b", 9)
	if shard, tok, ok := l.ParseEventSubject(l.EventSubject(k)); !ok || shard != k.Shard || tok != k.Token {
		t.Fatalf("ParseEventSubject = %d %q %v", shard, tok, ok)
	}
	for _, bad := range []string{"cos.events.sync", "cos.events.x.t", "cos.events.1", "cos.cmd.1.t", "cos.events.1.a.b", "cos.events.-1.t"} {
		if _, _, ok := l.ParseEventSubject(bad); ok {
			t.Errorf("ParseEventSubject(%q) accepted", bad)
		}
	}
	if id, shard, ok := l.ParseReadSideConsumer(l.ReadSideConsumer("my_read-side", 12)); !ok || id != "my_read-side" || shard != 12 {
		t.Fatalf("ParseReadSideConsumer = %q %d %v", id, shard, ok)
	}
	for _, bad := range []string{"COS_RS_x", "COS_RS__1", "OTHER_RS_x_1", "COS_RS_x_01", "COS_RS_x_y"} {
		if _, _, ok := l.ParseReadSideConsumer(bad); ok {
			t.Errorf("ParseReadSideConsumer(%q) accepted", bad)
		}
	}
}

// A worker's own command subjects carry the entity's command subject after its id, and map back to it.
func TestWorkerSubjects(t *testing.T) {
	l, _ := New("Bank")
	k, _ := entity.NewKey("a.b", 9)
	own := l.WorkerCommandSubject("w-1", l.CommandSubject(k))
	if own != "bank.wcmd.w-1.7.=YS5i" || l.WorkerCommandSubjects("w-1") != "bank.wcmd.w-1.*.*" || l.AllWorkerCommandSubjects() != "bank.wcmd.*.*.*" {
		t.Fatalf("worker command subjects %s %s %s", own, l.WorkerCommandSubjects("w-1"), l.AllWorkerCommandSubjects())
	}
	if got := l.CommandSubjectOf(own); got != l.CommandSubject(k) || !l.KeySubjectMatches(k, got) {
		t.Fatalf("CommandSubjectOf(%s) = %s", own, got)
	}
	for _, same := range []string{l.CommandSubject(k), "bank.wcmd.w-1", "other.wcmd.w-1.7.x"} {
		if got := l.CommandSubjectOf(same); got != same {
			t.Errorf("CommandSubjectOf(%q) = %q, want it unchanged", same, got)
		}
	}
	if id, ok := l.ParseWorkerHeartbeat(l.WorkerHeartbeatSubject("w-1")); !ok || id != "w-1" || l.WorkerHeartbeats() != "bank.workers.*" {
		t.Fatalf("ParseWorkerHeartbeat = %q %v", id, ok)
	}
	for _, bad := range []string{"bank.workers.", "bank.workers.a%b", "cos.workers.w-1", "bank.workers.a.b"} {
		if _, ok := l.ParseWorkerHeartbeat(bad); ok {
			t.Errorf("ParseWorkerHeartbeat(%q) accepted", bad)
		}
	}
}

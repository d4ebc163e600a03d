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
	shard, tok, err := l.ParseCommandSubject(l.CommandSubject(k))
	if err != nil || shard != k.Shard || tok != k.Token {
		t.Fatalf("parse: %d %s %v", shard, tok, err)
	}
	for _, bad := range []string{"bank.cmd.x.y", "bank.cmd.1", "bank.events.1.a", "bank.cmd.1.a.b"} {
		if _, _, err := l.ParseCommandSubject(bad); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
	if _, err := New("bad.prefix"); err == nil {
		t.Fatal("prefix with a dot accepted")
	}
}

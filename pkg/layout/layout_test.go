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

package statecache

import (
	"fmt"
	"testing"

	"github.com/cosnats/cosnats/pkg/eventlog"
)

func TestLRUBoundAndOrder(t *testing.T) {
	l := newLRU(3)
	for i := 1; i <= 4; i++ {
		l.put(fmt.Sprint(i), eventlog.Head{Seq: uint64(i)})
	}
	if _, ok := l.get("1"); ok {
		t.Fatal("oldest entry not evicted")
	}
	l.get("2") // 2 becomes most recent; 3 is now the oldest
	l.put("5", eventlog.Head{Seq: 5})
	if _, ok := l.get("3"); ok {
		t.Fatal("least recently used entry not evicted")
	}
	if _, ok := l.get("2"); !ok {
		t.Fatal("recently used entry evicted")
	}
	if l.order.Len() != 3 || len(l.items) != 3 {
		t.Fatalf("size %d/%d", l.order.Len(), len(l.items))
	}
}

func TestLRUKeepsNewerHead(t *testing.T) {
	l := newLRU(2)
	l.put("a", eventlog.Head{Seq: 9})
	l.put("a", eventlog.Head{Seq: 4})
	if h, _ := l.get("a"); h.Seq != 9 {
		t.Fatalf("older head replaced a newer one: %d", h.Seq)
	}
	l.remove("a")
	if _, ok := l.get("a"); ok {
		t.Fatal("remove")
	}
	var nilLRU *lru
	nilLRU.put("a", eventlog.Head{Seq: 1})
	if _, ok := nilLRU.get("a"); ok {
		t.Fatal("disabled cache returned an entry")
	}
}

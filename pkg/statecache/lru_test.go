package statecache

import (
	"fmt"
	"testing"

	"google.golang.org/protobuf/types/known/anypb"

	"github.com/cosnats/cosnats/pkg/eventlog"
)

func TestLRUBoundAndOrder(t *testing.T) {
	l := newLRU(3, 1<<20)
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
	l := newLRU(2, 1<<20)
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

// The cache is bounded by the size of what it holds as well: a few large states evict small ones, and a
// state larger than the whole bound is not kept at all.
func TestLRUBoundedInBytes(t *testing.T) {
	big := func(n int) eventlog.Head {
		return eventlog.Head{Seq: 1, State: &anypb.Any{TypeUrl: "t", Value: make([]byte, n)}}
	}
	l := newLRU(1000, 10_000)
	for i := range 20 {
		l.put(fmt.Sprint("small", i), eventlog.Head{Seq: 1})
	}
	l.put("big1", big(4000))
	l.put("big2", big(4000))
	if l.bytes > l.maxBytes {
		t.Fatalf("holds %d bytes, bound %d", l.bytes, l.maxBytes)
	}
	if _, ok := l.get("big1"); !ok {
		t.Fatal("a recent entry was evicted")
	}
	if _, ok := l.get("small0"); ok {
		t.Fatal("the oldest small entry survived the large ones")
	}
	l.put("huge", big(20_000))
	if _, ok := l.get("huge"); ok {
		t.Fatal("an entry larger than the bound was kept")
	}
	var sum int64
	for e := l.order.Front(); e != nil; e = e.Next() {
		sum += e.Value.(*lruEntry).size
	}
	if sum != l.bytes {
		t.Fatalf("accounted %d bytes, entries hold %d", l.bytes, sum)
	}
}

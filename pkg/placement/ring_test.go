package placement

import (
	"fmt"
	"testing"
)

// Owners spread evenly, every key has exactly one, and a member that joins or leaves moves only the
// keys it takes or gives up: the property that keeps every other worker's cache warm.
func TestOwnerSpreadsAndMovesOnlyWhatItMust(t *testing.T) {
	const keys = 30000
	key := func(i int) string { return fmt.Sprintf("cos.cmd.%d.acc-%d", i%9, i) }
	three := newRing([]string{"w-c", "w-a", "w-b"})
	owners := make([]string, keys)
	count := map[string]int{}
	for i := range keys {
		o, ok := three.owner(key(i))
		if !ok {
			t.Fatal("no owner with three members")
		}
		owners[i] = o
		count[o]++
	}
	for _, id := range []string{"w-a", "w-b", "w-c"} {
		// An even split is 10,000 each; 9,000..11,000 is far outside chance for a fair hash.
		if n := count[id]; n < 9000 || n > 11000 {
			t.Errorf("%s owns %d of %d keys: not an even split %v", id, n, keys, count)
		}
	}

	four := newRing([]string{"w-a", "w-b", "w-c", "w-d"})
	two := newRing([]string{"w-a", "w-c"})
	var joined, left int
	for i := range keys {
		o4, _ := four.owner(key(i))
		switch {
		case o4 == "w-d":
			joined++
		case o4 != owners[i]:
			t.Fatalf("key %d moved from %s to %s when w-d joined", i, owners[i], o4)
		}
		o2, _ := two.owner(key(i))
		switch {
		case owners[i] == "w-b":
			left++
		case o2 != owners[i]:
			t.Fatalf("key %d moved from %s to %s when w-b left", i, owners[i], o2)
		}
	}
	if joined < 6000 || joined > 9000 || left != count["w-b"] {
		t.Errorf("w-d took %d keys (want about a quarter), %d moved when w-b left", joined, left)
	}

	if _, ok := newRing(nil).owner("x"); ok {
		t.Error("an empty ring named an owner")
	}
	// The same members in another order give the same owners (every gateway agrees).
	again := newRing([]string{"w-b", "w-c", "w-a"})
	for i := range 1000 {
		if o, _ := again.owner(key(i)); o != owners[i] {
			t.Fatalf("key %d: %s, then %s with the members listed in another order", i, owners[i], o)
		}
	}
}

func BenchmarkOwner(b *testing.B) {
	r := newRing([]string{"w-a", "w-b", "w-c", "w-d", "w-e", "w-f", "w-g", "w-h"})
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		r.owner("cos.cmd.3.account-000123")
	}
}

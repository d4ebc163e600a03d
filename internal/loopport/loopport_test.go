package loopport

import (
	"fmt"
	"net"
	"testing"
)

func TestPickIsDistinctAndBindable(t *testing.T) {
	seen := map[int]bool{}
	for range 50 {
		ports, err := Pick(20)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range ports {
			if p < low || p >= low+span {
				t.Fatalf("port %d outside %d-%d", p, low, low+span-1)
			}
			if seen[p] {
				t.Fatalf("port %d handed out twice", p)
			}
			seen[p] = true
		}
	}
	// A port handed out is free to bind right after.
	p, err := One()
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
	if err != nil {
		t.Fatalf("bind picked port: %v", err)
	}
	_ = lis.Close()
}

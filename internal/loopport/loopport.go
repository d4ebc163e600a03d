// Package loopport picks loopback TCP ports for servers that a test or a local cluster starts later,
// in another process or after a restart.
//
// A port is drawn below Linux's ephemeral range (32768–60999): a port in that range may become the
// local port of any outgoing connection between the pick and the bind. A port is never handed out
// twice by one process, so servers started from one list cannot collide with each other; a
// listener closed right after the check does not reserve anything in the kernel.
package loopport

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
)

const (
	low  = 20000
	span = 12000 // up to 31999
)

var (
	mu     sync.Mutex
	handed = map[int]bool{}
)

// Pick returns n distinct loopback ports that nothing listens on now and that this process has not
// handed out before.
func Pick(n int) ([]int, error) {
	mu.Lock()
	defer mu.Unlock()
	ports := make([]int, 0, n)
	for try := 0; len(ports) < n; try++ {
		if try == 20000 {
			return nil, errors.New("pick a loopback port: none free in 20000-31999")
		}
		port := low + rand.IntN(span)
		if handed[port] {
			continue
		}
		lis, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		_ = lis.Close()
		handed[port] = true
		ports = append(ports, port)
	}
	return ports, nil
}

// One is Pick(1).
func One() (int, error) {
	ports, err := Pick(1)
	if err != nil {
		return 0, err
	}
	return ports[0], nil
}

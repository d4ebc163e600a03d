package costest

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// clusterReadyTimeout bounds how long a cluster may take to form (or re-form after a restart).
const clusterReadyTimeout = 30 * time.Second

// Cluster is a JetStream cluster of embedded nats-servers on loopback, each with its own store
// directory and a random client port. Clients connect over TCP (ClientURL), never in-process, so they
// behave as they would against a real deployment.
type Cluster struct {
	t       testing.TB
	opts    []*server.Options
	servers []*server.Server // nil while a node is down
}

// StartCluster starts n clustered servers and waits until JetStream is ready on every one of them: all
// routes up, one meta leader, every server current with it and known to it, so streams with up to n
// replicas can be created at once. The servers stop when the test ends.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	if n < 1 {
		t.Fatalf("StartCluster: need at least one server, got %d", n)
	}
	clusterPorts := freePorts(t, n)
	routes := make([]string, n)
	for i, p := range clusterPorts {
		routes[i] = fmt.Sprintf("nats://127.0.0.1:%d", p)
	}
	c := &Cluster{t: t, opts: make([]*server.Options, n), servers: make([]*server.Server, n)}
	t.Cleanup(c.shutdown)
	for i := range n {
		opts := &server.Options{
			ServerName: fmt.Sprintf("cos-test-%d", i),
			Host:       "127.0.0.1",
			Port:       server.RANDOM_PORT,
			JetStream:  true,
			StoreDir:   t.TempDir(),
			NoSigs:     true,
			NoLog:      true,
			Cluster: server.ClusterOpts{
				Name: "cos-test",
				Host: "127.0.0.1",
				Port: clusterPorts[i],
			},
			Routes: server.RoutesFromStr(strings.Join(routes, ",")),
		}
		c.opts[i] = opts
		c.start(i)
	}
	c.WaitReady()
	// Keep each client URL stable across Kill/Restart.
	for i, s := range c.servers {
		c.opts[i].Port = s.Addr().(*net.TCPAddr).Port
	}
	return c
}

// freePorts picks n distinct free TCP ports on 127.0.0.1 by listening on :0 and closing again.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	ports := make([]int, n)
	listeners := make([]net.Listener, n)
	for i := range n {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("pick a free port: %v", err)
		}
		listeners[i] = lis // held until all are picked, so the n ports are distinct
		ports[i] = lis.Addr().(*net.TCPAddr).Port
	}
	for _, lis := range listeners {
		_ = lis.Close()
	}
	return ports
}

func (c *Cluster) start(i int) {
	c.t.Helper()
	s, err := server.NewServer(c.opts[i].Clone())
	if err != nil {
		c.t.Fatalf("nats-server %d: %v", i, err)
	}
	go s.Start()
	if !s.ReadyForConnections(clusterReadyTimeout) {
		s.Shutdown()
		c.t.Fatalf("nats-server %d did not accept connections within %s", i, clusterReadyTimeout)
	}
	c.servers[i] = s
}

func (c *Cluster) shutdown() {
	for i, s := range c.servers {
		if s != nil {
			s.Shutdown()
			s.WaitForShutdown()
			c.servers[i] = nil
		}
	}
}

// Size is the number of servers, running or not.
func (c *Cluster) Size() int { return len(c.opts) }

// Server is the i-th server, nil while it is down.
func (c *Cluster) Server(i int) *server.Server { return c.servers[i] }

// ClientURL is the i-th server's client URL; it stays the same across Kill and Restart.
func (c *Cluster) ClientURL(i int) string {
	return fmt.Sprintf("nats://127.0.0.1:%d", c.opts[i].Port)
}

// ClientURLs lists every server's client URL.
func (c *Cluster) ClientURLs() []string {
	urls := make([]string, c.Size())
	for i := range urls {
		urls[i] = c.ClientURL(i)
	}
	return urls
}

// URLList is every client URL, comma-separated, as COS_NATS_URL accepts it.
func (c *Cluster) URLList() string { return strings.Join(c.ClientURLs(), ",") }

// Kill stops the i-th server (its store directory is kept for Restart).
func (c *Cluster) Kill(i int) {
	c.t.Helper()
	s := c.servers[i]
	if s == nil {
		c.t.Fatalf("Kill: nats-server %d is not running", i)
	}
	s.Shutdown()
	s.WaitForShutdown()
	c.servers[i] = nil
}

// Restart starts the i-th server again on its store directory and client port, and waits until the
// cluster is ready again.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	if c.servers[i] != nil {
		c.t.Fatalf("Restart: nats-server %d is running", i)
	}
	c.start(i)
	c.WaitReady()
}

// WaitReady waits until every running server is routed to every other running one, exactly one of
// them is the JetStream meta leader, the leader sees all of them online, and each is current with the
// meta group.
func (c *Cluster) WaitReady() {
	c.t.Helper()
	var why string
	if !poll(clusterReadyTimeout, func() bool {
		why = c.notReady()
		return why == ""
	}) {
		c.t.Fatalf("JetStream cluster not ready within %s: %s", clusterReadyTimeout, why)
	}
}

// notReady says why the cluster is not ready yet, or "" when it is.
func (c *Cluster) notReady() string {
	var running []*server.Server
	for _, s := range c.servers {
		if s != nil {
			running = append(running, s)
		}
	}
	var leader *server.Server
	for _, s := range running {
		if !s.JetStreamEnabled() {
			return s.Name() + " has no JetStream"
		}
		if got := routedTo(s); got < len(running)-1 {
			return fmt.Sprintf("%s is routed to %d of %d servers", s.Name(), got, len(running)-1)
		}
		if s.JetStreamIsLeader() {
			if leader != nil {
				return "two meta leaders: " + leader.Name() + " and " + s.Name()
			}
			leader = s
		}
	}
	if leader == nil {
		return "no meta leader"
	}
	if peers := leader.JetStreamClusterPeers(); len(peers) < len(running) {
		return fmt.Sprintf("meta leader %s sees %d of %d servers online: %v", leader.Name(), len(peers), len(running), peers)
	}
	for _, s := range running {
		if !s.JetStreamIsCurrent() {
			return s.Name() + " is not current with the meta leader"
		}
	}
	return ""
}

// routedTo counts the distinct servers s has a route to (a pooled route is several connections).
func routedTo(s *server.Server) int {
	rz, err := s.Routez(nil)
	if err != nil {
		return 0
	}
	remotes := make(map[string]bool)
	for _, r := range rz.Routes {
		remotes[r.RemoteID] = true
	}
	return len(remotes)
}

// WaitForInterest waits until every running server has at least n subscriptions matching subject, e.g.
// until the queue subscriptions of n workers on different servers have reached every server (routes
// propagate interest asynchronously, so a request sent too early gets no responders).
func (c *Cluster) WaitForInterest(subject string, n int) {
	c.t.Helper()
	var why string
	if !poll(clusterReadyTimeout, func() bool {
		why = ""
		for _, s := range c.servers {
			if s == nil {
				continue
			}
			if got := s.GlobalAccount().Interest(subject); got < n {
				why = fmt.Sprintf("%s has %d subscriptions on %s, want %d", s.Name(), got, subject, n)
				return false
			}
		}
		return true
	}) {
		c.t.Fatalf("interest not propagated within %s: %s", clusterReadyTimeout, why)
	}
}

// poll calls cond every few milliseconds until it returns true or timeout passes.
func poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		<-tick.C
	}
}

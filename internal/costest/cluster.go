package costest

import (
	"fmt"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/cosnats/cosnats/internal/faultproxy"
	"github.com/cosnats/cosnats/pkg/natsembed"
)

// clusterReadyTimeout bounds how long a cluster may take to form (or re-form after a restart), and how
// long WaitForInterest waits.
const clusterReadyTimeout = natsembed.ClusterReadyTimeout

// Cluster is a JetStream cluster of embedded nats-servers on loopback (natsembed.Cluster) tied to a
// test: failures end the test, and the servers stop when it ends. Clients connect over TCP (ClientURL),
// never in-process, so they behave as they would against a real deployment.
type Cluster struct {
	t      testing.TB
	c      *natsembed.Cluster
	routes map[[2]int]*faultproxy.Proxy // [from, to]: the proxy server from routes to server to through
}

// StartCluster starts n clustered servers, each storing in its own directory under t.TempDir(), and
// waits until JetStream is ready on every one of them: all routes up, one meta leader, every server
// current with it and known to it, so streams with up to n replicas can be created at once. The servers
// stop when the test ends.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	c, err := natsembed.StartCluster(natsembed.ClusterConfig{Size: n, StoreDir: t.TempDir(), Name: "cos-test"})
	if err != nil {
		t.Fatalf("StartCluster: %v", err)
	}
	t.Cleanup(c.Shutdown) // registered after t.TempDir, so it runs before the directory is removed
	return &Cluster{t: t, c: c}
}

// StartIsolatableCluster is StartCluster with every route through a proxy, so Isolate can cut a server
// off from its peers while its clients still reach it: the partition in which a stream leader keeps
// believing it leads after the others elected a new one.
func StartIsolatableCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	routes := map[[2]int]*faultproxy.Proxy{}
	var proxyErr error
	c, err := natsembed.StartCluster(natsembed.ClusterConfig{Size: n, StoreDir: t.TempDir(), Name: "cos-test",
		Route: func(from, to, port int) string {
			px, err := faultproxy.Start("", fmt.Sprintf("127.0.0.1:%d", port))
			if err != nil {
				proxyErr = err
				return fmt.Sprintf("nats-route://127.0.0.1:%d", port)
			}
			routes[[2]int{from, to}] = px
			return "nats-route://" + px.Addr()
		}})
	for _, px := range routes {
		t.Cleanup(px.Close)
	}
	if err == nil {
		err = proxyErr
	}
	if err != nil {
		t.Fatalf("StartIsolatableCluster: %v", err)
	}
	t.Cleanup(c.Shutdown)
	return &Cluster{t: t, c: c, routes: routes}
}

// Isolate blackholes every route to and from server i (connections stay open, nothing passes); its
// clients still reach it. Only on a cluster from StartIsolatableCluster.
func (c *Cluster) Isolate(i int) { c.eachRoute(i, (*faultproxy.Proxy).Blackhole) }

// Rejoin ends Isolate.
func (c *Cluster) Rejoin(i int) { c.eachRoute(i, (*faultproxy.Proxy).Heal) }

func (c *Cluster) eachRoute(i int, fn func(*faultproxy.Proxy)) {
	c.t.Helper()
	if c.routes == nil {
		c.t.Fatal("Isolate/Rejoin need a cluster from StartIsolatableCluster")
	}
	for key, px := range c.routes {
		if key[0] == i || key[1] == i {
			fn(px)
		}
	}
}

// Size is the number of servers, running or not.
func (c *Cluster) Size() int { return c.c.Size() }

// Server is the i-th server, nil while it is down.
func (c *Cluster) Server(i int) *server.Server { return c.c.Server(i) }

// ClientURL is the i-th server's client URL; it stays the same across Kill and Restart.
func (c *Cluster) ClientURL(i int) string { return c.c.ClientURL(i) }

// ClientURLs lists every server's client URL.
func (c *Cluster) ClientURLs() []string { return c.c.ClientURLs() }

// URLList is every client URL, comma-separated, as COS_NATS_URL accepts it.
func (c *Cluster) URLList() string { return c.c.URLList() }

// Kill stops the i-th server (its store directory is kept for Restart).
func (c *Cluster) Kill(i int) {
	c.t.Helper()
	if err := c.c.Kill(i); err != nil {
		c.t.Fatalf("Kill: %v", err)
	}
}

// Restart starts the i-th server again on its store directory and client port, and waits until the
// cluster is ready again.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	if err := c.c.Restart(i); err != nil {
		c.t.Fatalf("Restart: %v", err)
	}
}

// WaitReady waits until every running server is routed to every other running one, exactly one of
// them is the JetStream meta leader, the leader sees all of them online, and each is current with the
// meta group.
func (c *Cluster) WaitReady() {
	c.t.Helper()
	if err := c.c.WaitReady(clusterReadyTimeout); err != nil {
		c.t.Fatal(err)
	}
}

// WaitForInterest waits until every running server has at least n subscriptions matching subject, e.g.
// until the queue subscriptions of n workers on different servers have reached every server (routes
// propagate interest asynchronously, so a request sent too early gets no responders).
func (c *Cluster) WaitForInterest(subject string, n int) {
	c.t.Helper()
	var why string
	Eventually(c.t, clusterReadyTimeout, "interest on "+subject, func() bool {
		why = ""
		for i := range c.Size() {
			s := c.Server(i)
			if s == nil {
				continue
			}
			if got := s.GlobalAccount().Interest(subject); got < n {
				why = fmt.Sprintf("%s has %d subscriptions on %s, want %d", s.Name(), got, subject, n)
				return false
			}
		}
		return true
	}, &why)
}

package natsembed

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/cosnats/cosnats/internal/loopport"
)

// ClusterReadyTimeout bounds how long StartCluster and Restart wait for a cluster to form (or re-form).
const ClusterReadyTimeout = 30 * time.Second

// ClusterConfig describes a JetStream cluster of embedded servers on loopback.
type ClusterConfig struct {
	// Size is the number of servers (at least 1). A single server runs JetStream standalone, without
	// routes: nats-server cannot form a one-server JetStream cluster (the meta group would count the
	// route to itself as a second peer and never reach a quorum).
	Size int
	// StoreDir is the parent directory of the servers' stores: server <Name>-<i> stores in
	// StoreDir/<Name>-<i>.
	StoreDir string
	// Name is the cluster name, "cos" when empty. The servers are named <Name>-0 … <Name>-<Size-1>.
	Name string
	// SyncAlways fsyncs every write before acknowledging it (sync_interval: always) on every server.
	SyncAlways bool
	// Route, when set, is the URL server from dials to reach server to, whose route listener is on port:
	// a test puts a proxy there to cut routes. The servers then do not advertise their route addresses,
	// so they cannot route around it.
	Route func(from, to, port int) string
}

// Cluster is a JetStream cluster of embedded nats-servers on 127.0.0.1, each with its own store
// directory and a client and a route port picked below the ephemeral range (freePorts). Clients
// connect over TCP (ClientURL), never in-process, so they behave as they would against a real
// deployment. Its methods are safe for concurrent use; Kill, Restart and Shutdown run one at a time.
type Cluster struct {
	opts []*server.Options // fixed client and route ports (see freePorts); never changed after StartCluster

	lifecycle sync.Mutex // serialises Kill, Restart and Shutdown

	mu      sync.Mutex
	servers []*server.Server // nil while a server is down
}

// StartCluster starts cfg.Size clustered servers and waits until JetStream is ready on every one of
// them: all routes up, one meta leader, every server current with it and known to it, so streams with up
// to cfg.Size replicas can be created at once. On error, whatever it started is shut down again.
func StartCluster(cfg ClusterConfig) (*Cluster, error) {
	if cfg.Size < 1 {
		return nil, fmt.Errorf("embedded NATS cluster: need at least one server, got %d", cfg.Size)
	}
	if cfg.StoreDir == "" {
		return nil, errors.New("embedded NATS cluster: a store directory is required")
	}
	name := cfg.Name
	if name == "" {
		name = "cos"
	}
	// Client and route ports, fixed for the cluster's life: Restart binds them again.
	ports, err := loopport.Pick(2 * cfg.Size)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS cluster: %w", err)
	}
	clientPorts, routePorts := ports[:cfg.Size], ports[cfg.Size:]
	var routes []string
	if cfg.Size > 1 {
		for _, p := range routePorts {
			routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", p))
		}
	}
	c := &Cluster{opts: make([]*server.Options, cfg.Size), servers: make([]*server.Server, cfg.Size)}
	for i := range cfg.Size {
		serverName := fmt.Sprintf("%s-%d", name, i)
		c.opts[i] = &server.Options{
			ServerName: serverName,
			Host:       "127.0.0.1",
			Port:       clientPorts[i],
			JetStream:  true,
			StoreDir:   filepath.Join(cfg.StoreDir, serverName),
			SyncAlways: cfg.SyncAlways,
			NoSigs:     true,
			NoLog:      true,
		}
		if cfg.Size > 1 {
			c.opts[i].Cluster = server.ClusterOpts{Name: name, Host: "127.0.0.1", Port: routePorts[i]}
			c.opts[i].Routes = server.RoutesFromStr(strings.Join(routes, ","))
			if cfg.Route != nil {
				var via []string
				for to, port := range routePorts {
					if to != i {
						via = append(via, cfg.Route(i, to, port))
					}
				}
				c.opts[i].Routes = server.RoutesFromStr(strings.Join(via, ","))
				c.opts[i].Cluster.Advertise, c.opts[i].Cluster.NoAdvertise = "127.0.0.1:1", true
			}
		}
		if err := c.start(i); err != nil {
			c.Shutdown()
			return nil, err
		}
	}
	if err := c.WaitReady(ClusterReadyTimeout); err != nil {
		c.Shutdown()
		return nil, err
	}
	return c, nil
}

// start starts the i-th server and waits until it accepts connections. The caller holds c.lifecycle
// (or owns c exclusively).
func (c *Cluster) start(i int) error {
	s, err := server.NewServer(c.opts[i].Clone())
	if err != nil {
		return fmt.Errorf("nats-server %s: %w", c.opts[i].ServerName, err)
	}
	go s.Start()
	if !s.ReadyForConnections(ClusterReadyTimeout) {
		s.Shutdown()
		s.WaitForShutdown()
		return fmt.Errorf("nats-server %s did not accept connections within %s", c.opts[i].ServerName, ClusterReadyTimeout)
	}
	c.mu.Lock()
	c.servers[i] = s
	c.mu.Unlock()
	return nil
}

// stop stops the i-th server, if it is running, and waits for it.
func (c *Cluster) stop(i int) {
	c.mu.Lock()
	s := c.servers[i]
	c.servers[i] = nil
	c.mu.Unlock()
	if s != nil {
		s.Shutdown()
		s.WaitForShutdown()
	}
}

// Shutdown stops every running server and waits for them. Store directories are left in place. It may be
// called more than once.
func (c *Cluster) Shutdown() {
	c.lifecycle.Lock()
	defer c.lifecycle.Unlock()
	for i := range c.opts {
		c.stop(i)
	}
}

// Size is the number of servers, running or not.
func (c *Cluster) Size() int { return len(c.opts) }

// Server is the i-th server, nil while it is down.
func (c *Cluster) Server(i int) *server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.servers[i]
}

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

// URLList is every client URL, comma-separated, as nats.Connect and COS_NATS_URL accept it.
func (c *Cluster) URLList() string { return strings.Join(c.ClientURLs(), ",") }

// Kill stops the i-th server and waits for it; its store directory is kept for Restart.
func (c *Cluster) Kill(i int) error {
	if err := c.checkIndex(i); err != nil {
		return fmt.Errorf("kill: %w", err)
	}
	c.lifecycle.Lock()
	defer c.lifecycle.Unlock()
	if c.Server(i) == nil {
		return fmt.Errorf("kill: nats-server %s is not running", c.opts[i].ServerName)
	}
	c.stop(i)
	return nil
}

// Restart starts the i-th server again on its store directory and client port, and waits (up to
// ClusterReadyTimeout) until the cluster is ready again.
func (c *Cluster) Restart(i int) error {
	if err := c.checkIndex(i); err != nil {
		return fmt.Errorf("restart: %w", err)
	}
	if err := c.restart(i); err != nil {
		return err
	}
	return c.WaitReady(ClusterReadyTimeout)
}

func (c *Cluster) restart(i int) error {
	c.lifecycle.Lock()
	defer c.lifecycle.Unlock()
	if c.Server(i) != nil {
		return fmt.Errorf("restart: nats-server %s is running", c.opts[i].ServerName)
	}
	if err := c.start(i); err != nil {
		return fmt.Errorf("restart: %w", err)
	}
	return nil
}

func (c *Cluster) checkIndex(i int) error {
	if i < 0 || i >= c.Size() {
		return fmt.Errorf("no nats-server %d in a cluster of %d", i, c.Size())
	}
	return nil
}

// WaitReady waits until every running server is routed to every other running one, exactly one of
// them is the JetStream meta leader, the leader sees all of them online, and each is current with the
// meta group (a one-server cluster is ready once JetStream is enabled). It fails at once when no server
// is running.
func (c *Cluster) WaitReady(timeout time.Duration) error {
	var why string
	ready := poll(timeout, func() bool {
		why = c.notReady()
		return why == "" || why == noServerRunning
	})
	switch {
	case why == noServerRunning:
		return errors.New("JetStream cluster not ready: " + noServerRunning)
	case !ready:
		return fmt.Errorf("JetStream cluster not ready within %s: %s", timeout, why)
	}
	return nil
}

const noServerRunning = "no server is running"

// running lists the servers that are up.
func (c *Cluster) running() []*server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	var up []*server.Server
	for _, s := range c.servers {
		if s != nil {
			up = append(up, s)
		}
	}
	return up
}

// notReady says why the cluster is not ready yet, or "" when it is.
func (c *Cluster) notReady() string {
	running := c.running()
	if len(running) == 0 {
		return noServerRunning
	}
	if c.Size() == 1 {
		if s := running[0]; !s.JetStreamEnabled() {
			return s.Name() + " has no JetStream"
		}
		return ""
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

// poll calls cond every few milliseconds until it returns true or timeout passes; it reports whether
// cond returned true.
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

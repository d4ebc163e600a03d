package fault

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cosnats/cosnats/internal/faultproxy"
	"github.com/cosnats/cosnats/pkg/layout"
	"github.com/cosnats/cosnats/pkg/natsperm"
)

// natsCluster is three nats-server processes. Every connection to a node goes through a fault proxy of
// the test's: clients through one per node, routes through one per ordered pair of nodes, so a node can
// be partitioned from the others and from its clients, or its connections dropped.
type natsCluster struct {
	nodes   []*proc
	monitor []string              // host:port of each node's monitoring endpoint
	clients []*faultproxy.Proxy   // per node: clients → node
	routes  [][]*faultproxy.Proxy // [from][to]: node from → node to
}

const clusterSize = 3

// harnessUser is the test's own NATS user: every permission in the account, for reading the log,
// leader step-downs and the like. Our processes connect as their roles' restricted users
// (pkg/natsperm), as a hardened deployment runs them.
const harnessUser, harnessPassword = "cos-fault", "fault-harness"

// rolePassword is the password of a role's NATS user in the fault cluster.
func rolePassword(r natsperm.Role) string { return "fault-" + string(r) }

// accountsConf is the nats-server accounts block: natsperm's users and permissions, plus the harness.
func accountsConf() string {
	conf := natsperm.Conf(layout.Default())
	users := "    users: [\n"
	if !strings.Contains(conf, users) {
		panic("natsperm.Conf changed shape: no users list found")
	}
	return strings.Replace(conf, users, users+fmt.Sprintf("      { user: %q, password: %q }\n", harnessUser, harnessPassword), 1)
}

func startNATSProxies(t testing.TB, dir string) *natsCluster {
	t.Helper()
	c := &natsCluster{routes: make([][]*faultproxy.Proxy, clusterSize)}
	clientPorts, routePorts := make([]int, clusterSize), make([]int, clusterSize)
	for i := range clusterSize {
		clientPorts[i], routePorts[i] = freePort(t), freePort(t)
		c.monitor = append(c.monitor, fmt.Sprintf("127.0.0.1:%d", freePort(t)))
		px, err := faultproxy.Start("", fmt.Sprintf("127.0.0.1:%d", clientPorts[i]))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(px.Close)
		c.clients = append(c.clients, px)
	}
	for from := range clusterSize {
		c.routes[from] = make([]*faultproxy.Proxy, clusterSize)
		for to := range clusterSize {
			if from == to {
				continue
			}
			px, err := faultproxy.Start("", fmt.Sprintf("127.0.0.1:%d", routePorts[to]))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(px.Close)
			c.routes[from][to] = px
		}
	}
	for i := range clusterSize {
		var routes []string
		for to := range clusterSize {
			if to != i {
				routes = append(routes, fmt.Sprintf("%q", "nats-route://"+c.routes[i][to].Addr()))
			}
		}
		store := filepath.Join(dir, fmt.Sprintf("n%d", i))
		// Pings every 2 s: a node or client behind a blackhole is noticed within seconds. Routes advertise
		// an address nobody listens on, so servers never route around the proxies.
		conf := accountsConf() + fmt.Sprintf(`server_name: n%d
listen: 127.0.0.1:%d
http: %s
ping_interval: "2s"
ping_max: 2
write_deadline: "5s"
jetstream {
  store_dir: %q
  max_memory_store: 256MB
  max_file_store: 4GB
}
cluster {
  name: cos-fault
  listen: 127.0.0.1:%d
  advertise: "127.0.0.1:1"
  no_advertise: true
  routes: [%s]
}
`, i, clientPorts[i], c.monitor[i], store, routePorts[i], strings.Join(routes, ", "))
		path := filepath.Join(dir, fmt.Sprintf("n%d.conf", i))
		if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		env := os.Environ()
		for _, r := range natsperm.Roles {
			env = append(env, natsperm.PasswordEnv(r)+"="+rolePassword(r))
		}
		c.nodes = append(c.nodes, &proc{
			name: fmt.Sprintf("nats-%d", i), bin: filepath.Join(bin, "nats-server"), args: []string{"-c", path},
			env: env, log: filepath.Join(dir, fmt.Sprintf("nats-%d.log", i)),
		})
	}
	return c
}

// URLs is what processes get as COS_NATS_URL: every node, through its client proxy.
func (c *natsCluster) URLs() string {
	var urls []string
	for _, px := range c.clients {
		urls = append(urls, px.URL())
	}
	return strings.Join(urls, ",")
}

func (c *natsCluster) start() error {
	for _, n := range c.nodes {
		if err := n.start(); err != nil {
			return err
		}
	}
	return nil
}

// healthy waits until every running node answers /healthz (JetStream current with the cluster).
func (c *natsCluster) healthy(ctx context.Context) error {
	for i, m := range c.monitor {
		if !c.nodes[i].alive() {
			continue
		}
		for {
			resp, err := (&http.Client{Timeout: time.Second}).Get("http://" + m + "/healthz")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("nats-%d not healthy: %v", i, err)
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	return nil
}

// partition cuts node k off from the other nodes and from its clients (connections stay open, nothing
// passes); heal ends it.
func (c *natsCluster) partition(k int) { c.eachOf(k, (*faultproxy.Proxy).Blackhole) }
func (c *natsCluster) heal(k int)      { c.eachOf(k, (*faultproxy.Proxy).Heal) }

// isolate cuts node k off from the other nodes only: its clients still reach it. A stream leader cut
// off this way believes it leads for seconds after the others elected a new one; rejoin ends it.
func (c *natsCluster) isolate(k int) { c.eachRoute(k, (*faultproxy.Proxy).Blackhole) }
func (c *natsCluster) rejoin(k int)  { c.eachRoute(k, (*faultproxy.Proxy).Heal) }

func (c *natsCluster) eachOf(k int, fn func(*faultproxy.Proxy)) {
	fn(c.clients[k])
	c.eachRoute(k, fn)
}

func (c *natsCluster) eachRoute(k int, fn func(*faultproxy.Proxy)) {
	for j := range clusterSize {
		if j != k {
			fn(c.routes[k][j])
			fn(c.routes[j][k])
		}
	}
}

// metaLeader is the index of the JetStream meta leader, as the first node that answers says.
func (c *natsCluster) metaLeader() (int, error) {
	var last error
	for k := range clusterSize {
		resp, err := (&http.Client{Timeout: 2 * time.Second}).Get("http://" + c.monitor[k] + "/jsz")
		if err != nil {
			last = err
			continue
		}
		var jsz struct {
			Meta *struct {
				Leader string `json:"leader"`
			} `json:"meta_cluster"`
		}
		err = json.NewDecoder(resp.Body).Decode(&jsz)
		resp.Body.Close()
		if err != nil || jsz.Meta == nil {
			last = fmt.Errorf("nats-%d jsz: %v", k, err)
			continue
		}
		for i := range clusterSize {
			if jsz.Meta.Leader == fmt.Sprintf("n%d", i) {
				return i, nil
			}
		}
		last = fmt.Errorf("nats-%d says the meta leader is %q", k, jsz.Meta.Leader)
	}
	return 0, last
}

// dropClientConnections closes every client connection to every node; clients reconnect at once.
func (c *natsCluster) dropClientConnections() {
	for _, px := range c.clients {
		px.DropConnections()
	}
}

// jetStream opens a test connection to the cluster for the JetStream API, closed when the test ends.
func (c *natsCluster) jetStream(t *testing.T) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := c.connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// connect opens a test connection to the cluster (directly to the nodes' proxies).
func (c *natsCluster) connect() (*nats.Conn, error) {
	return nats.Connect(c.URLs(), nats.UserInfo(harnessUser, harnessPassword), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
}

// violations returns the permission violations the nodes logged: a process of ours that needed a
// subject its role's permission set does not grant (only in a path the other tests do not take, such
// as a recovery).
func (c *natsCluster) violations() []string {
	var out []string
	for _, n := range c.nodes {
		b, err := os.ReadFile(n.log)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, "Violation") {
				out = append(out, n.name+": "+line)
			}
		}
	}
	return out
}

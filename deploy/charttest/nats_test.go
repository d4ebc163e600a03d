package charttest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// natsAuth is decentralized (JWT) authentication for the test cluster, so that the chart's
// credentials Secret is really needed: an operator, the system account, an application account with
// JetStream, and one user of it whose credentials file the processes get through the Secret.
type natsAuth struct {
	operatorJWT string
	systemPub   string
	accounts    map[string]string // public key → account JWT, preloaded into every server
	userCreds   []byte            // the credentials file (user JWT and seed)
}

func newNATSAuth(t testing.TB) natsAuth {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	operator, err := nkeys.CreateOperator()
	must(err)
	operatorPub, err := operator.PublicKey()
	must(err)

	newAccount := func(name string, jetstream bool) (nkeys.KeyPair, string, string) {
		kp, err := nkeys.CreateAccount()
		must(err)
		pub, err := kp.PublicKey()
		must(err)
		claims := jwt.NewAccountClaims(pub)
		claims.Name = name
		if jetstream {
			// -1: unlimited; any non-zero storage limit enables JetStream for the account.
			claims.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1, MaxAckPending: -1}
		}
		token, err := claims.Encode(operator)
		must(err)
		return kp, pub, token
	}
	_, sysPub, sysJWT := newAccount("SYS", false)
	app, appPub, appJWT := newAccount("COS", true)

	opClaims := jwt.NewOperatorClaims(operatorPub)
	opClaims.Name = "charttest"
	opClaims.SystemAccount = sysPub
	opJWT, err := opClaims.Encode(operator)
	must(err)

	user, err := nkeys.CreateUser()
	must(err)
	userPub, err := user.PublicKey()
	must(err)
	uc := jwt.NewUserClaims(userPub)
	uc.Name = "cos"
	userJWT, err := uc.Encode(app)
	must(err)
	seed, err := user.Seed()
	must(err)
	creds, err := jwt.FormatUserConfig(userJWT, seed)
	must(err)
	return natsAuth{operatorJWT: opJWT, systemPub: sysPub, accounts: map[string]string{sysPub: sysJWT, appPub: appJWT}, userCreds: creds}
}

// natsCluster is nats-server processes forming one JetStream cluster on 127.0.0.1.
type natsCluster struct {
	clientURLs []string
	monitor    []string // host:port of each node's monitoring endpoint
}

// startNATSCluster starts the cluster the NATS example values describe (deploy/helm/examples/
// nats-values.yaml): its size, JetStream on files, and the settings it merges into nats.conf.
func startNATSCluster(t testing.TB, ps *procs, bin, dir string, auth natsAuth, example natsExample) *natsCluster {
	t.Helper()
	size := example.Config.Cluster.Replicas
	if size < 1 || !example.Config.JetStream.Enabled || !example.Config.JetStream.FileStore.Enabled {
		t.Fatalf("the NATS example does not describe a JetStream cluster with file storage: %+v", example.Config)
	}
	c := &natsCluster{}
	clientPorts, routePorts := make([]int, size), make([]int, size)
	for i := range size {
		clientPorts[i], routePorts[i] = freePort(t), freePort(t)
		c.clientURLs = append(c.clientURLs, fmt.Sprintf("nats://127.0.0.1:%d", clientPorts[i]))
		c.monitor = append(c.monitor, fmt.Sprintf("127.0.0.1:%d", freePort(t)))
	}
	opPath := filepath.Join(dir, "operator.jwt")
	if err := os.WriteFile(opPath, []byte(auth.operatorJWT), 0o600); err != nil {
		t.Fatal(err)
	}
	// The example's merged settings (ping_interval, ping_max, …), as JSON values nats.conf accepts.
	var merged []string
	for k, v := range example.Config.Merge {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		merged = append(merged, fmt.Sprintf("%s: %s", k, b))
	}
	sort.Strings(merged)
	var preload []string
	for pub, token := range auth.accounts {
		preload = append(preload, fmt.Sprintf("  %s: %q", pub, token))
	}
	sort.Strings(preload)
	for i := range size {
		var routes []string
		for j := range size {
			routes = append(routes, fmt.Sprintf("%q", fmt.Sprintf("nats-route://127.0.0.1:%d", routePorts[j])))
		}
		conf := fmt.Sprintf(`server_name: n%d
listen: 127.0.0.1:%d
http: %s
%s
operator: %q
system_account: %s
resolver: MEMORY
resolver_preload: {
%s
}
jetstream {
  store_dir: %q
}
cluster {
  name: charttest
  listen: 127.0.0.1:%d
  routes: [%s]
}
`, i, clientPorts[i], c.monitor[i], strings.Join(merged, "\n"), opPath, auth.systemPub, strings.Join(preload, "\n"),
			filepath.Join(dir, fmt.Sprintf("n%d", i)), routePorts[i], strings.Join(routes, ", "))
		path := filepath.Join(dir, fmt.Sprintf("n%d.conf", i))
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		ps.add(startProc(t, fmt.Sprintf("nats-%d", i), bin, []string{"-c", path}, nil, dir, dir))
	}
	return c
}

// healthy waits until every node reports healthy (/healthz: JetStream current with the cluster).
func (c *natsCluster) healthy(t testing.TB, ctx context.Context) {
	t.Helper()
	client := &http.Client{Timeout: time.Second}
	waitFor(t, ctx, "NATS cluster healthy", 60*time.Second, func(ctx context.Context) error {
		for _, m := range c.monitor {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+m+"/healthz", nil)
			if err != nil {
				return err
			}
			resp, err := client.Do(req)
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("%s/healthz: %s", m, resp.Status)
			}
		}
		return nil
	})
}

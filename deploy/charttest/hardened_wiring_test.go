package charttest

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	cosv1 "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	cosnatsv1 "github.com/cosnats/cosnats/gen/cosnats/v1"
	"github.com/cosnats/cosnats/internal/testpki"
	"github.com/cosnats/cosnats/pkg/natsperm"
)

// TestHardenedWiring runs the chart with ci/hardened-values.yaml as TestWiring runs the example values:
// the Secrets the values name hold real certificates and passwords made here, a 3-node NATS cluster
// takes TLS client connections only and authenticates the users of the rendered accounts.conf (with
// their permissions), the handlers sit behind TLS endpoints that require a client certificate, and the
// rendered gateway, worker and projector run as processes with the pods' environment and mounted
// Secrets. A command sent over mTLS to the gateway is stored and reaches the read side through the
// projector's mTLS connection; a plaintext or certificate-less client is refused by the gateway, a
// plaintext client by NATS, and the read-side services are only on the admin listener.
func TestHardenedWiring(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	ps := &procs{}
	ps.dumpOnFailure(t)
	bin := buildBinaries(t)

	// The PKI: one CA per Secret of CAs the values name, so a certificate from the wrong one fails.
	natsCA, gatewayCA, clientsCA, handlersCA := testpki.NewCA(t, "nats"), testpki.NewCA(t, "gateway"), testpki.NewCA(t, "clients"), testpki.NewCA(t, "handlers")
	natsCert := natsCA.Server("", "nats", "nats.nats.svc")
	gatewayCert := gatewayCA.Server("", "gateway", "cos-cosnats-gateway.ledger.svc")
	clientCert := clientsCA.Client("", "api-client", "api-client")
	handlerServer := handlersCA.Server("", "bank-handlers", "bank-handler.bank.svc", "bank-readside.bank.svc")
	handlerClient := handlersCA.Client("", "cos", "cos")

	// Per-role NATS passwords; nats-server reads them from COS_<ROLE>_PASSWORD.
	passwords := map[natsperm.Role]string{}
	var natsEnv []string
	for _, r := range natsperm.Roles {
		b := make([]byte, 12)
		if _, err := rand.Read(b); err != nil {
			t.Fatal(err)
		}
		passwords[r] = "pw" + hex.EncodeToString(b)
		natsEnv = append(natsEnv, natsperm.PasswordEnv(r)+"="+passwords[r])
	}

	// The handlers in plaintext on local ports, each behind a TLS endpoint requiring a client
	// certificate of the handlers' CA (the example handlers do not serve TLS themselves).
	handlerPort, readSidePort, gatewayPort, adminPort := freePort(t), freePort(t), freePort(t), freePort(t)
	bank := decodeAll(t, map[string]string{"bank-example.yaml": string(readFile(t, filepath.Join(examplesDir, "bank-example.yaml")))})
	handlerAddr := map[string]int{"bank-handler": handlerPort, "bank-readside": readSidePort}
	var handlers []*podProcess
	for _, d := range find[*appsv1.Deployment](t, bank, 2) {
		port := handlerAddr[d.Name]
		envName := map[string]string{"bank-handler": "BANK_HANDLER_ADDR", "bank-readside": "BANK_READSIDE_ADDR"}[d.Name]
		cp := d.Spec.Template.Spec.Containers[0].Ports[0].ContainerPort
		handlers = append(handlers, newPodProcess(t, d, newCluster(bank), adjustments{
			binDir: bin,
			ports:  map[int32]int{cp: port},
			env:    map[string]func(string) (string, error){envName: listenAddr(cp, port)},
		}, dir))
	}
	handlerTLS := startMTLSProxy(t, handlerServer, handlersCA, handlerPort)
	readSideTLS := startMTLSProxy(t, handlerServer, handlersCA, readSidePort)

	// The chart, rendered with the hardened values and the local addresses.
	vals := readValues(t, []string{valuesFile("hardened")},
		"writeSide.host=127.0.0.1", "writeSide.port="+strconv.Itoa(handlerTLS.port),
		"readSides.bank-balances.host=127.0.0.1", "readSides.bank-balances.port="+strconv.Itoa(readSideTLS.port),
		"gateway.port="+strconv.Itoa(gatewayPort),
	)
	// NATS: the cluster below, 3 nodes as nats.replicas says.
	const natsNodes = 3
	clientPorts := make([]int, natsNodes)
	var urls []string
	for i := range clientPorts {
		clientPorts[i] = freePort(t)
		urls = append(urls, fmt.Sprintf("tls://127.0.0.1:%d", clientPorts[i]))
	}
	vals["nats"].(map[string]any)["url"] = strings.Join(urls, ",")
	files, err := render(t, loadChart(t), renderOpts{vals: vals})
	if err != nil {
		t.Fatal(err)
	}
	objs := decodeAll(t, files)

	// The NATS cluster: TLS on the client port, the accounts and users of the rendered ConfigMap.
	accounts := configMap(t, objs, "cos-cosnats-nats-permissions").Data["accounts.conf"]
	nc := startTLSNATSCluster(t, ps, filepath.Join(bin, "nats-server"), dir, clientPorts, natsCert, accounts, natsEnv)

	secret := func(name string, typ corev1.SecretType, data map[string]string) *corev1.Secret {
		s := &corev1.Secret{Type: typ, StringData: data}
		s.Name = name
		return s
	}
	tlsData := func(p testpki.Pair) map[string]string {
		cert, key := p.PEM(t)
		return map[string]string{"tls.crt": string(cert), "tls.key": string(key)}
	}
	secrets := []*corev1.Secret{
		secret("cos-nats-ca", corev1.SecretTypeOpaque, map[string]string{"ca.crt": string(natsCA.PEM())}),
		secret("cos-gateway-tls", corev1.SecretTypeTLS, tlsData(gatewayCert)),
		secret("cos-clients-ca", corev1.SecretTypeOpaque, map[string]string{"ca.crt": string(clientsCA.PEM())}),
		secret("cos-handlers-ca", corev1.SecretTypeOpaque, map[string]string{"ca.crt": string(handlersCA.PEM())}),
		secret("cos-handlers-client", corev1.SecretTypeTLS, tlsData(handlerClient)),
	}
	for _, r := range []natsperm.Role{natsperm.Gateway, natsperm.Worker, natsperm.Projector} {
		secrets = append(secrets, secret("cos-nats-"+string(r), corev1.SecretTypeOpaque,
			map[string]string{"user": natsperm.User(r), "password": passwords[r]}))
	}
	cl := newCluster(objs, secrets...)

	var roles []*podProcess
	byRole := map[string]*podProcess{}
	for _, d := range find[*appsv1.Deployment](t, objs, 3) {
		metricsPort := freePort(t)
		var containerMetrics int32
		for _, cp := range d.Spec.Template.Spec.Containers[0].Ports {
			if cp.Name == "metrics" {
				containerMetrics = cp.ContainerPort
			}
		}
		adj := adjustments{
			binDir: bin,
			ports:  map[int32]int{containerMetrics: metricsPort},
			env:    map[string]func(string) (string, error){"COS_METRICS_ADDRESS": listenAddr(containerMetrics, metricsPort)},
		}
		if role(d) == "gateway" {
			// The admin listener is on the pod's loopback; here each process needs its own port.
			adj.ports[9001] = adminPort
			adj.env["COS_ADMIN_ADDRESS"] = listenAddr(9001, adminPort)
		}
		pp := newPodProcess(t, d, cl, adj, dir)
		roles = append(roles, pp)
		byRole[role(d)] = pp
	}
	if byRole["gateway"] == nil || byRole["worker"] == nil || byRole["projector"] == nil {
		t.Fatalf("want a gateway, a worker and a projector Deployment, got %v", keys(byRole))
	}
	for r, pp := range byRole {
		if pp.env["COS_NATS_USER"] != "cos-"+r || pp.env["COS_NATS_PASSWORD_FILE"] == "" || pp.env["COS_NATS_TLS_CA_FILE"] == "" {
			t.Fatalf("%s: not the hardened NATS login: %q", r, pp.environ())
		}
	}

	// The read-side file names the mounted TLS files by their container paths: map them as the
	// environment's are (newPodProcess does it for env and args only).
	localizeReadSides(t, byRole["projector"])

	// The handlers and NATS first, the roles once the cluster is healthy (started together, the
	// roles' first JetStream request waits out its 10 s timeout while the cluster elects a leader).
	all := append(append([]*podProcess{}, handlers...), roles...)
	running := map[*podProcess]*proc{}
	for _, pp := range handlers {
		running[pp] = ps.add(startProc(t, pp.name, pp.bin, pp.args, pp.environ(), dir, dir))
	}
	nc.healthy(t, ctx)
	for _, pp := range roles {
		running[pp] = ps.add(startProc(t, pp.name, pp.bin, pp.args, pp.environ(), dir, dir))
	}
	for _, pp := range all {
		waitFor(t, ctx, pp.name+" readiness probe", 30*time.Second, func(ctx context.Context) error {
			if !running[pp].running() {
				t.Fatalf("%s exited: %v\n%s", pp.name, running[pp].err, running[pp].tail(20))
			}
			return pp.probe(t, ctx, pp.container.ReadinessProbe)
		})
	}

	// A client with a certificate of the clients' CA, trusting the gateway's CA.
	clientTLS := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: gatewayCA.Pool(), Certificates: []tls.Certificate{clientCert.KeyPair(t)}}
	gatewayAddr := "127.0.0.1:" + strconv.Itoa(gatewayPort)
	conn, err := grpc.NewClient(gatewayAddr, grpc.WithTransportCredentials(credentials.NewTLS(clientTLS)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cos := cosv1.NewChiefOfStateServiceClient(conn)
	const account = "acc-hardened"
	openAndCredit(t, ctx, cos, account, 500, 70) // over mTLS
	// Stored: read back through GetState.
	st, err := cos.GetState(ctx, &cosv1.GetStateRequest{EntityId: account})
	if err != nil || st.GetMeta().GetRevisionNumber() != 2 {
		t.Fatalf("GetState over mTLS: revision %d, %v; want 2", st.GetMeta().GetRevisionNumber(), err)
	}

	// The events reach the read side, read from the admin listener (mTLS too).
	admin, err := grpc.NewClient("127.0.0.1:"+strconv.Itoa(adminPort), grpc.WithTransportCredentials(credentials.NewTLS(clientTLS)))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	waitReadSideCaughtUp(t, ctx, admin, cl, 30*time.Second)
	readSideLogged(t, running, 570)
	// The worker and the projector reached the handlers only through the mTLS endpoints, with the
	// client certificate of the mounted Secret.
	for name, p := range map[string]*mtlsProxy{"write handler": handlerTLS, "read side": readSideTLS} {
		if cns := p.clients(); len(cns) == 0 || cns[0] != "cos" {
			t.Errorf("%s: verified client certificates %q, want the handlers client's (CN cos)", name, cns)
		}
	}

	// The read-side services are not on the gateway's main port.
	_, err = cosnatsv1.NewReadSideStatusServiceClient(conn).GetReadSideStatus(ctx, &cosnatsv1.GetReadSideStatusRequest{ReadSideId: "bank-balances"})
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("ReadSideStatus on the gateway's main port: %v, want UNIMPLEMENTED", err)
	}

	// Refused: a plaintext client, and a TLS client without a client certificate.
	refused := func(what string, creds credentials.TransportCredentials) {
		t.Helper()
		c, err := grpc.NewClient(gatewayAddr, grpc.WithTransportCredentials(creds))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err = cosv1.NewChiefOfStateServiceClient(c).GetState(cctx, &cosv1.GetStateRequest{EntityId: account})
		if err == nil {
			t.Errorf("%s: GetState succeeded; want it refused", what)
			return
		}
		t.Logf("%s refused: %v", what, err)
	}
	refused("plaintext client", insecure.NewCredentials())
	refused("TLS client without a certificate", credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12, RootCAs: gatewayCA.Pool()}))
	// (Presented even though the gateway names only the clients' CA as acceptable.)
	other := handlerClient.KeyPair(t)
	refused("TLS client with a certificate of another CA", credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12, RootCAs: gatewayCA.Pool(),
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &other, nil }}))
	// NATS takes no plaintext client either: it requires TLS and closes a connection that speaks plaintext.
	checkNATSRefusesPlaintext(t, clientPorts[0])

	// SIGTERM: each role drains and exits 0 within its grace period.
	stopAll(t, roles, running)
}

// startTLSNATSCluster starts nats-server nodes on clientPorts forming one JetStream cluster, with TLS
// on the client listener and accounts (a nats.conf accounts block) appended; env holds the variables
// the accounts block refers to.
func startTLSNATSCluster(t testing.TB, ps *procs, bin, dir string, clientPorts []int, cert testpki.Pair, accounts string, env []string) *natsCluster {
	t.Helper()
	c := &natsCluster{}
	certFile, keyFile := cert.CertFile, cert.KeyFile
	routePorts := make([]int, len(clientPorts))
	for i := range clientPorts {
		routePorts[i] = freePort(t)
		c.clientURLs = append(c.clientURLs, fmt.Sprintf("tls://127.0.0.1:%d", clientPorts[i]))
		c.monitor = append(c.monitor, fmt.Sprintf("127.0.0.1:%d", freePort(t)))
	}
	var routes []string
	for _, p := range routePorts {
		routes = append(routes, fmt.Sprintf("%q", fmt.Sprintf("nats-route://127.0.0.1:%d", p)))
	}
	sort.Strings(routes)
	for i := range clientPorts {
		conf := fmt.Sprintf(`server_name: hn%d
listen: 127.0.0.1:%d
http: %s
ping_interval: "2s"
ping_max: 2
tls {
  cert_file: %q
  key_file: %q
  timeout: 2
}
jetstream {
  store_dir: %q
}
cluster {
  name: charttest-hardened
  listen: 127.0.0.1:%d
  routes: [%s]
}
%s
`, i, clientPorts[i], c.monitor[i], certFile, keyFile, filepath.Join(dir, fmt.Sprintf("hn%d", i)), routePorts[i], strings.Join(routes, ", "), accounts)
		path := filepath.Join(dir, fmt.Sprintf("hn%d.conf", i))
		writeFileT(t, path, []byte(conf))
		ps.add(startProc(t, fmt.Sprintf("nats-%d", i), bin, []string{"-c", path}, env, dir, dir))
	}
	return c
}

// checkNATSRefusesPlaintext connects to a NATS client port without TLS: the INFO must require TLS, and
// a plaintext CONNECT and PING must get no PONG.
func checkNATSRefusesPlaintext(t testing.TB, port int) {
	t.Helper()
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	info, err := r.ReadString('\n')
	if err != nil || !strings.Contains(info, `"tls_required":true`) {
		t.Errorf("NATS INFO %q, %v: want tls_required", info, err)
	}
	if _, err := io.WriteString(c, "CONNECT {\"verbose\":false}\r\nPING\r\n"); err != nil {
		return // closed already
	}
	rest, _ := io.ReadAll(r)
	if strings.Contains(string(rest), "PONG") {
		t.Errorf("NATS answered a plaintext client: %q", rest)
	}
}

// localizeReadSides rewrites the string values of the projector's read-side files that are paths in
// its mounts to the local directories holding them.
func localizeReadSides(t testing.TB, pp *podProcess) {
	t.Helper()
	dir := pp.env["COS_READ_SIDE_CONFIG"]
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".yaml") {
			continue
		}
		path := filepath.Join(dir, e.Name())
		var rs map[string]any
		if err := yaml.Unmarshal(readFile(t, path), &rs); err != nil {
			t.Fatal(err)
		}
		for k, v := range rs {
			if s, ok := v.(string); ok {
				rs[k] = pp.localPath(s)
			}
		}
		b, err := yaml.Marshal(rs)
		if err != nil {
			t.Fatal(err)
		}
		// The volume's files are read-only for the pod; here they are the test's to rewrite.
		_ = os.Chmod(path, 0o644)
		writeFileT(t, path, b)
	}
}

func writeFileT(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// mtlsProxy is a TLS endpoint requiring a client certificate of a CA, forwarding each connection to a
// plaintext backend on 127.0.0.1.
type mtlsProxy struct {
	port int
	mu   sync.Mutex
	cns  []string // common names of the verified client certificates, in order
}

func (p *mtlsProxy) clients() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string{}, p.cns...)
}

func startMTLSProxy(t testing.TB, server testpki.Pair, clientCA *testpki.CA, backend int) *mtlsProxy {
	t.Helper()
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{server.KeyPair(t)},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    clientCA.Pool(),
		NextProtos:   []string{"h2"},
	})
	if err != nil {
		t.Fatal(err)
	}
	p := &mtlsProxy{port: l.Addr().(*net.TCPAddr).Port}
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	track := func(c net.Conn) {
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
	}
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			track(c)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				tc := c.(*tls.Conn)
				_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
				if err := tc.Handshake(); err != nil {
					return
				}
				_ = tc.SetDeadline(time.Time{})
				if certs := tc.ConnectionState().PeerCertificates; len(certs) > 0 {
					p.mu.Lock()
					p.cns = append(p.cns, certs[0].Subject.CommonName)
					p.mu.Unlock()
				}
				b, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(backend))
				if err != nil {
					return
				}
				track(b)
				defer b.Close()
				done := make(chan struct{}, 2)
				go func() { _, _ = io.Copy(b, tc); done <- struct{}{} }()
				go func() { _, _ = io.Copy(tc, b); done <- struct{}{} }()
				<-done
			}()
		}
	}()
	return p
}

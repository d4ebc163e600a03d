package node_test

import (
	"context"
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	natspb "github.com/cosnats/cosnats/gen/cosnats/v1"
	"github.com/cosnats/cosnats/internal/costest"
	"github.com/cosnats/cosnats/internal/testpki"
	"github.com/cosnats/cosnats/pkg/config"
	"github.com/cosnats/cosnats/pkg/node"
	"github.com/cosnats/cosnats/pkg/tlsfiles"
)

// serveTLS starts a gRPC server on loopback with the TLS configuration of pair (and, when clientCA is
// set, requiring client certificates it signed) and returns its port.
func serveTLS(t *testing.T, pair testpki.Pair, clientCA string, register func(*grpc.Server)) int {
	t.Helper()
	cfg, err := tlsfiles.Server(tlsfiles.Options{CertFile: pair.CertFile, KeyFile: pair.KeyFile, CAFile: clientCA})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(grpc.Creds(credentials.NewTLS(cfg)))
	register(s)
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Serve(lis) }()
	t.Cleanup(func() { s.Stop(); <-done })
	return lis.Addr().(*net.TCPAddr).Port
}

// tlsClient returns a client configuration trusting caFile and presenting pair (when given).
func tlsClient(t *testing.T, caFile string, pair *testpki.Pair) *tls.Config {
	t.Helper()
	o := tlsfiles.Options{CAFile: caFile}
	if pair != nil {
		o.CertFile, o.KeyFile = pair.CertFile, pair.KeyFile
	}
	c, err := tlsfiles.Client(o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// dialTLS opens a client connection to addr with creds; it is closed when the test ends.
func dialTLS(t *testing.T, addr string, creds credentials.TransportCredentials) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func process(conn *grpc.ClientConn, id, cmd string) (*cospb.ProcessCommandResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return cospb.NewChiefOfStateServiceClient(conn).ProcessCommand(ctx, &cospb.ProcessCommandRequest{EntityId: id, Command: costest.Cmd(cmd)})
}

// The gateway with COS_TLS_* set serves TLS only and, with a client CA, only to clients with a
// certificate it signed; its certificate is reloaded from disk without a restart.
func TestGatewayMutualTLS(t *testing.T) {
	ca, other := testpki.NewCA(t, "gateway"), testpki.NewCA(t, "other")
	dir := t.TempDir()
	srvPair := ca.Server(dir, "gateway")
	h := &costest.Counter{}
	cfg := costest.Config(t, "", costest.ServeGRPC(t, h.Register))
	cfg.TLS = config.ServerTLS{CertFile: srvPair.CertFile, KeyFile: srvPair.KeyFile, ClientCAFile: ca.CAFile}
	n := costest.StartNode(t, cfg, node.Roles{})

	refused := func(what string, conn *grpc.ClientConn) {
		t.Helper()
		if _, err := process(conn, "refused", "add:1"); status.Code(err) != codes.Unavailable {
			t.Fatalf("%s: %v, want UNAVAILABLE (refused connection)", what, err)
		}
	}
	refused("a plaintext client", costest.Conn(t, n.GRPCAddr))
	refused("a TLS client without a certificate", dialTLS(t, n.GRPCAddr, credentials.NewTLS(tlsClient(t, ca.CAFile, nil))))
	stranger := other.Client("", "stranger", "app")
	refused("a client certificate from another CA", dialTLS(t, n.GRPCAddr, credentials.NewTLS(tlsClient(t, ca.CAFile, &stranger))))

	good := ca.Client("", "client", "app")
	clientTLS := tlsClient(t, ca.CAFile, &good)
	resp, err := process(dialTLS(t, n.GRPCAddr, credentials.NewTLS(clientTLS)), "acct", "add:5")
	if err != nil {
		t.Fatalf("a client with a good certificate: %v", err)
	}
	if got := costest.Value(resp.GetState()); got != 5 {
		t.Fatalf("state %d, want 5", got)
	}
	if len(h.Commands()) != 1 {
		t.Fatalf("the handler saw %d commands, want 1 (refused clients must not reach it)", len(h.Commands()))
	}

	// Reload: replace the files; a new connection sees the new certificate, without a restart.
	servedSerial := func() string {
		conn := dialTLS(t, n.GRPCAddr, credentials.NewTLS(clientTLS))
		defer conn.Close()
		var p peer.Peer
		if _, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{}, grpc.Peer(&p)); err != nil {
			t.Fatalf("health over mTLS: %v", err)
		}
		return p.AuthInfo.(credentials.TLSInfo).State.PeerCertificates[0].SerialNumber.String()
	}
	if s := servedSerial(); s != srvPair.Serial.String() {
		t.Fatalf("served serial %s, want %s", s, srvPair.Serial)
	}
	next := ca.Server("", "next")
	testpki.CopyPair(t, next, srvPair)
	var seen string
	costest.Eventually(t, 30*time.Second, "the gateway to serve the replaced certificate", func() bool {
		seen = servedSerial()
		return seen == next.Serial.String()
	}, &seen)
	if _, err := process(dialTLS(t, n.GRPCAddr, credentials.NewTLS(clientTLS)), "acct", "add:1"); err != nil {
		t.Fatalf("after the reload: %v", err)
	}
}

// Start-up errors name the setting and the problem.
func TestGatewayTLSStartupErrors(t *testing.T) {
	ca := testpki.NewCA(t, "ca")
	a, b := ca.Server("", "a"), ca.Server("", "b")
	for _, c := range []struct {
		name string
		tls  config.ServerTLS
		want string
	}{
		{"missing file", config.ServerTLS{CertFile: filepath.Join(t.TempDir(), "nope.pem"), KeyFile: a.KeyFile}, "COS_TLS_CERT_FILE/COS_TLS_KEY_FILE/COS_TLS_CLIENT_CA_FILE: certificate file: open"},
		{"mismatched key", config.ServerTLS{CertFile: a.CertFile, KeyFile: b.KeyFile}, "does not hold the private key"},
		{"CA without certificates", config.ServerTLS{CertFile: a.CertFile, KeyFile: a.KeyFile, ClientCAFile: a.KeyFile}, "no PEM certificate found"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := costest.Config(t, "", 1)
			cfg.TLS = c.tls
			r := costest.Launch(t, cfg, node.Options{})
			<-r.Done()
			if r.Err() == nil || !strings.Contains(r.Err().Error(), c.want) {
				t.Fatalf("Run: %v, want an error containing %q", r.Err(), c.want)
			}
		})
	}
}

// The write handler behind mTLS: commands work with the right CA and client certificate; with a CA that
// does not sign the handler's certificate, or without a client certificate, the command fails
// UNAVAILABLE and nothing is stored (fail closed, no plaintext fallback).
func TestWriteSideMutualTLS(t *testing.T) {
	ca, other := testpki.NewCA(t, "handlers"), testpki.NewCA(t, "other")
	srv := costest.StartNATS(t)
	_, js := costest.JetStream(t, srv)
	h := &costest.Counter{}
	port := serveTLS(t, ca.Server("", "handler", "handler.internal"), ca.CAFile, h.Register)
	client := ca.Client("", "cos", "cos")

	numShards := costest.Config(t, srv.ClientURL(), port).NumShards
	start := func(ws config.ClientTLS) *grpc.ClientConn {
		cfg := costest.Config(t, srv.ClientURL(), port)
		cfg.WriteSide.TLS = ws
		cfg.WriteSide.Reflection = false
		n := costest.StartNode(t, cfg, node.Roles{Gateway: true, Worker: true})
		return costest.Conn(t, n.GRPCAddr)
	}
	good := start(config.ClientTLS{CAFile: ca.CAFile, CertFile: client.CertFile, KeyFile: client.KeyFile, ServerName: "handler.internal"})
	if resp, err := process(good, "ok", "add:3"); err != nil || costest.Value(resp.GetState()) != 3 {
		t.Fatalf("with mTLS to the handler: %v %v", resp, err)
	}
	for name, ws := range map[string]config.ClientTLS{
		"wrong CA":              {CAFile: other.CAFile, CertFile: client.CertFile, KeyFile: client.KeyFile},
		"no client certificate": {CAFile: ca.CAFile},
		"wrong server name":     {CAFile: ca.CAFile, CertFile: client.CertFile, KeyFile: client.KeyFile, ServerName: "elsewhere.internal"},
	} {
		t.Run(name, func(t *testing.T) {
			id := "closed-" + strings.ReplaceAll(name, " ", "-")
			_, err := process(start(ws), id, "add:1")
			if status.Code(err) != codes.Unavailable {
				t.Fatalf("%v, want UNAVAILABLE", err)
			}
			t.Logf("refused as expected: %v", err)
			if evs := costest.Events(t, js, id, numShards); len(evs) != 0 {
				t.Fatalf("%d events stored for a command the handler never saw", len(evs))
			}
		})
	}
	if len(h.Commands()) != 1 {
		t.Fatalf("the handler saw %d commands, want 1", len(h.Commands()))
	}
}

// Read sides with TLS and mTLS receive events; one whose CA does not sign the handler's certificate
// receives nothing and its status says it is failing.
func TestReadSideMutualTLS(t *testing.T) {
	ca, other := testpki.NewCA(t, "readsides"), testpki.NewCA(t, "other")
	srv := costest.StartNATS(t)
	h := &costest.Counter{}
	good, bad := costest.NewRecorder(), costest.NewRecorder()
	goodPort := serveTLS(t, ca.Server("", "good"), ca.CAFile, good.Register)
	badPort := serveTLS(t, ca.Server("", "bad"), ca.CAFile, bad.Register)
	client := ca.Client("", "projector", "projector")
	cfg := costest.Config(t, srv.ClientURL(), costest.ServeGRPC(t, h.Register))
	cfg.ReadSideEnabled = true
	rs := func(id string, port int, caFile string) config.ReadSide {
		return config.ReadSide{ID: id, Host: "127.0.0.1", Port: port, AutoStart: true, Enabled: true, Timeout: 5 * time.Second,
			MaxInFlight: 8, TLS: config.ClientTLS{CAFile: caFile, CertFile: client.CertFile, KeyFile: client.KeyFile}}
	}
	cfg.ReadSides = []config.ReadSide{rs("distrusting", badPort, other.CAFile), rs("secure", goodPort, ca.CAFile)}
	n := costest.StartNode(t, cfg, node.Roles{Gateway: true, Worker: true, Projector: true})
	conn := costest.Conn(t, n.GRPCAddr)
	for _, cmd := range []string{"add:1", "add:2"} {
		if _, err := process(conn, "acct", cmd); err != nil {
			t.Fatal(err)
		}
	}
	good.WaitFor(t, 30*time.Second, "the TLS read side to receive both events", func(r *costest.Recorder) bool {
		return len(r.Received("acct")) >= 2
	})
	statusClient := natspb.NewReadSideStatusServiceClient(conn)
	var why string
	costest.Eventually(t, 30*time.Second, "the distrusting read side to show failing", func() bool {
		resp, err := statusClient.GetReadSideStatus(context.Background(), &natspb.GetReadSideStatusRequest{ReadSideId: "distrusting"})
		if err != nil {
			why = err.Error()
			return false
		}
		for _, sh := range resp.GetShards() {
			if sh.GetFailing() && strings.Contains(sh.GetLastError(), "certificate") {
				return true
			}
			why = sh.String()
		}
		return false
	}, &why)
	if bad.Total() != 0 {
		t.Fatalf("the read side that does not trust its handler delivered %d events", bad.Total())
	}
}

// secureNATS starts a nats-server with JetStream on loopback, TLS with a certificate from ca, and the
// authentication auth sets; it returns its URL.
func secureNATS(t *testing.T, ca *testpki.CA, auth func(*server.Options)) string {
	t.Helper()
	pair := ca.Server("", "nats")
	tc, err := tlsfiles.Server(tlsfiles.Options{CertFile: pair.CertFile, KeyFile: pair.KeyFile})
	if err != nil {
		t.Fatal(err)
	}
	opts := &server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true, StoreDir: t.TempDir(),
		NoLog: true, NoSigs: true, TLS: true, TLSConfig: tc, TLSTimeout: 2}
	auth(opts)
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s.ClientURL()
}

// A node reaches a NATS server that requires TLS (custom CA) and user/password, token or nkey; with
// wrong or missing credentials, or without trusting the server's CA, it waits, not ready, saying why.
func TestNATSTLSAndAuthentication(t *testing.T) {
	ca := testpki.NewCA(t, "nats")
	seed := func(t *testing.T) (pub, file string) {
		kp, err := nkeys.CreateUser()
		if err != nil {
			t.Fatal(err)
		}
		s, _ := kp.Seed()
		pub, _ = kp.PublicKey()
		file = filepath.Join(t.TempDir(), "user.nk")
		if err := os.WriteFile(file, s, 0o600); err != nil {
			t.Fatal(err)
		}
		return pub, file
	}
	pub, seedFile := seed(t)
	_, strangerSeed := seed(t)
	userPass := func(o *server.Options) { o.Username, o.Password = "cos", "s3cret" }
	token := func(o *server.Options) { o.Authorization = "t0ken" }
	nkey := func(o *server.Options) { o.Nkeys = []*server.NkeyUser{{Nkey: pub}} }
	for _, c := range []struct {
		name  string
		auth  func(*server.Options)
		set   func(*config.NATS)
		noCA  bool
		ready bool
		why   string
	}{
		{"user and password", userPass, func(n *config.NATS) { n.User, n.Password = "cos", "s3cret" }, false, true, ""},
		{"token", token, func(n *config.NATS) { n.Token = "t0ken" }, false, true, ""},
		{"nkey", nkey, func(n *config.NATS) { n.NkeyFile = seedFile }, false, true, ""},
		{"wrong password", userPass, func(n *config.NATS) { n.User, n.Password = "cos", "guess" }, false, false, "Authorization Violation"},
		{"no credentials", token, func(*config.NATS) {}, false, false, "Authorization Violation"},
		{"unknown nkey", nkey, func(n *config.NATS) { n.NkeyFile = strangerSeed }, false, false, "Authorization Violation"},
		{"untrusted server certificate", userPass, func(n *config.NATS) { n.User, n.Password = "cos", "s3cret" }, true, false, "certificate"},
	} {
		t.Run(c.name, func(t *testing.T) {
			url := secureNATS(t, ca, c.auth)
			h := &costest.Counter{}
			cfg := costest.Config(t, url, costest.ServeGRPC(t, h.Register))
			if !c.noCA {
				cfg.NATS.TLSCAFile = ca.CAFile
			} else {
				// TLS with the system roots, which do not include the test CA.
				cfg.NATS.URL = strings.Replace(url, "nats://", "tls://", 1)
			}
			c.set(&cfg.NATS)
			r := costest.Launch(t, cfg, node.Options{Roles: node.Roles{Gateway: true, Worker: true}})
			if c.ready {
				waitReady(t, r, 30*time.Second)
				if _, err := process(costest.Conn(t, r.Addrs.GRPCAddr), "acct", "add:1"); err != nil {
					t.Fatal(err)
				}
				return
			}
			waitWaiting(t, r, c.why)
			running(t, r)
		})
	}
}

// The embedded server's listener with credentials: the node itself runs (in-process, no credentials);
// a TCP client needs them.
func TestEmbeddedListenerCredentials(t *testing.T) {
	h := &costest.Counter{}
	cfg := costest.Config(t, "", costest.ServeGRPC(t, h.Register))
	cfg.NATS.Listen, cfg.NATS.ListenUser, cfg.NATS.ListenPassword = "127.0.0.1:0", "tools", "pw"
	n := costest.StartNode(t, cfg, node.Roles{})
	if _, err := process(costest.Conn(t, n.GRPCAddr), "acct", "add:1"); err != nil {
		t.Fatal(err)
	}
	if nc, err := nats.Connect(n.NATSURL); err == nil {
		nc.Close()
		t.Fatal("an unauthenticated TCP client connected to the embedded server")
	}
	nc, err := nats.Connect(n.NATSURL, nats.UserInfo("tools", "pw"))
	if err != nil {
		t.Fatalf("an authenticated TCP client: %v", err)
	}
	nc.Close()
}

// Handler TLS material that cannot be loaded stops the start before NATS is reached.
func TestHandlerTLSStartupErrors(t *testing.T) {
	ca := testpki.NewCA(t, "ca")
	a, b := ca.Client("", "a", "a"), ca.Client("", "b", "b")
	missing := filepath.Join(t.TempDir(), "missing.pem")
	t.Run("write side", func(t *testing.T) {
		cfg := costest.Config(t, "nats://"+freeAddr(t), 1)
		cfg.WriteSide.TLS = config.ClientTLS{CertFile: a.CertFile, KeyFile: b.KeyFile}
		r := costest.Launch(t, cfg, node.Options{Roles: node.Roles{Worker: true}})
		<-r.Done()
		if r.Err() == nil || !strings.Contains(r.Err().Error(), "COS_WRITE_SIDE_TLS_*: key file") {
			t.Fatalf("Run: %v", r.Err())
		}
	})
	t.Run("read side", func(t *testing.T) {
		cfg := costest.Config(t, "nats://"+freeAddr(t), 1)
		cfg.ReadSideEnabled = true
		cfg.ReadSides = []config.ReadSide{{ID: "rs", Host: "127.0.0.1", Port: 1, AutoStart: true, Enabled: true,
			Timeout: time.Second, MaxInFlight: 1, TLS: config.ClientTLS{CAFile: missing}}}
		r := costest.Launch(t, cfg, node.Options{Roles: node.Roles{Projector: true}})
		<-r.Done()
		if r.Err() == nil || !strings.Contains(r.Err().Error(), "read side rs TLS (TLS_* settings): CA file: open "+missing) {
			t.Fatalf("Run: %v", r.Err())
		}
	})
}

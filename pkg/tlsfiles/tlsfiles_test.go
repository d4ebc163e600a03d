package tlsfiles_test

import (
	"crypto/tls"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/cosnats/cosnats/internal/testpki"
	"github.com/cosnats/cosnats/pkg/tlsfiles"
)

// handshake serves one TLS connection with server and dials it with client; it returns the serial of
// the server's certificate the client saw and the errors of both sides.
func handshake(t *testing.T, server, client *tls.Config) (serial string, clientErr, serverErr error) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := lis.Accept()
		if err != nil {
			serverErr = err
			return
		}
		defer c.Close()
		tc := tls.Server(c, server)
		serverErr = tc.Handshake()
		if serverErr == nil {
			// TLS 1.3: the client learns of a refused certificate on its first read.
			_, _ = tc.Write([]byte{1})
		}
	}()
	c, err := tls.Dial("tcp", lis.Addr().String(), client)
	if err == nil {
		buf := make([]byte, 1)
		if _, err = c.Read(buf); err == nil {
			serial = c.ConnectionState().PeerCertificates[0].SerialNumber.String()
		}
		c.Close()
	}
	wg.Wait()
	return serial, err, serverErr
}

func TestServerAndClientMutualTLS(t *testing.T) {
	ca, other := testpki.NewCA(t, "good"), testpki.NewCA(t, "other")
	srvPair := ca.Server("", "server")
	server, err := tlsfiles.Server(tlsfiles.Options{CertFile: srvPair.CertFile, KeyFile: srvPair.KeyFile, CAFile: ca.CAFile})
	if err != nil {
		t.Fatal(err)
	}
	if server.MinVersion != tls.VersionTLS12 {
		t.Fatalf("min version %x", server.MinVersion)
	}
	good := ca.Client("", "client", "app")
	client, err := tlsfiles.Client(tlsfiles.Options{CAFile: ca.CAFile, CertFile: good.CertFile, KeyFile: good.KeyFile})
	if err != nil {
		t.Fatal(err)
	}
	if serial, cerr, serr := handshake(t, server, client); cerr != nil || serr != nil || serial != srvPair.Serial.String() {
		t.Fatalf("good client: serial %s, client %v, server %v", serial, cerr, serr)
	}

	// No client certificate, or one from another CA: refused by the server.
	noCert, _ := tlsfiles.Client(tlsfiles.Options{CAFile: ca.CAFile})
	if _, cerr, serr := handshake(t, server, noCert); cerr == nil || serr == nil {
		t.Fatalf("a client without a certificate was accepted: client %v, server %v", cerr, serr)
	}
	bad := other.Client("", "client", "intruder")
	wrong, _ := tlsfiles.Client(tlsfiles.Options{CAFile: ca.CAFile, CertFile: bad.CertFile, KeyFile: bad.KeyFile})
	if _, cerr, serr := handshake(t, server, wrong); cerr == nil || serr == nil {
		t.Fatalf("a client certificate from another CA was accepted: client %v, server %v", cerr, serr)
	}
	// A client trusting another CA refuses the server.
	distrust, _ := tlsfiles.Client(tlsfiles.Options{CAFile: other.CAFile, CertFile: good.CertFile, KeyFile: good.KeyFile})
	if _, cerr, _ := handshake(t, server, distrust); cerr == nil || !strings.Contains(cerr.Error(), "certificate") {
		t.Fatalf("the client accepted a server from an untrusted CA: %v", cerr)
	}
	// The server name override is what is verified.
	named, _ := tlsfiles.Client(tlsfiles.Options{CAFile: ca.CAFile, CertFile: good.CertFile, KeyFile: good.KeyFile, ServerName: "elsewhere.example"})
	if _, cerr, _ := handshake(t, server, named); cerr == nil || !strings.Contains(cerr.Error(), "elsewhere.example") {
		t.Fatalf("server name override: %v", cerr)
	}
}

// Replacing the files changes what new handshakes use; a broken replacement keeps the last good
// material and is reported.
func TestServerReloadsChangedFiles(t *testing.T) {
	ca := testpki.NewCA(t, "ca")
	dir := t.TempDir()
	first := ca.Server(dir, "server")
	var mu sync.Mutex
	var reported []error
	server, err := tlsfiles.Server(tlsfiles.Options{CertFile: first.CertFile, KeyFile: first.KeyFile, CheckEvery: -1,
		OnError: func(err error) { mu.Lock(); reported = append(reported, err); mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	client, _ := tlsfiles.Client(tlsfiles.Options{CAFile: ca.CAFile})
	if serial, cerr, _ := handshake(t, server, client); cerr != nil || serial != first.Serial.String() {
		t.Fatalf("first: %s %v", serial, cerr)
	}
	second := ca.Server("", "next")
	testpki.CopyPair(t, second, first)
	if serial, cerr, _ := handshake(t, server, client); cerr != nil || serial != second.Serial.String() {
		t.Fatalf("after the change: serial %s (want %s) %v", serial, second.Serial, cerr)
	}
	// A key that does not match: the second certificate stays in use.
	third := ca.Server("", "third")
	key, _ := os.ReadFile(third.KeyFile)
	testpki.WriteFile(t, first.KeyFile, key)
	if serial, cerr, _ := handshake(t, server, client); cerr != nil || serial != second.Serial.String() {
		t.Fatalf("after a broken change: serial %s (want %s) %v", serial, second.Serial, cerr)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(reported) != 1 || !strings.Contains(reported[0].Error(), "does not hold the private key") {
		t.Fatalf("reported: %v", reported)
	}
}

// With a check interval, files are not looked at again before it passed.
func TestClientCertificateReload(t *testing.T) {
	ca := testpki.NewCA(t, "ca")
	srvPair := ca.Server("", "server")
	server, _ := tlsfiles.Server(tlsfiles.Options{CertFile: srvPair.CertFile, KeyFile: srvPair.KeyFile, CAFile: ca.CAFile})
	other := testpki.NewCA(t, "other")
	dir := t.TempDir()
	stale := other.Client(dir, "client", "app")
	client, err := tlsfiles.Client(tlsfiles.Options{CAFile: ca.CAFile, CertFile: stale.CertFile, KeyFile: stale.KeyFile, CheckEvery: -1})
	if err != nil {
		t.Fatal(err)
	}
	if _, cerr, _ := handshake(t, server, client); cerr == nil {
		t.Fatal("a client certificate of another CA was accepted")
	}
	testpki.CopyPair(t, ca.Client("", "fresh", "app"), stale)
	if _, cerr, serr := handshake(t, server, client); cerr != nil || serr != nil {
		t.Fatalf("after replacing the client certificate: %v / %v", cerr, serr)
	}
}

func TestStartupErrors(t *testing.T) {
	ca := testpki.NewCA(t, "ca")
	p := ca.Server("", "server")
	q := ca.Server("", "other")
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")
	for _, c := range []struct {
		name   string
		server bool
		o      tlsfiles.Options
		want   string
	}{
		{"cert without key", true, tlsfiles.Options{CertFile: p.CertFile}, "both a certificate file and a key file"},
		{"client cert without key", false, tlsfiles.Options{CertFile: p.CertFile}, "both a certificate file and a key file"},
		{"missing cert", true, tlsfiles.Options{CertFile: missing, KeyFile: p.KeyFile}, "certificate file: open " + missing},
		{"missing key", true, tlsfiles.Options{CertFile: p.CertFile, KeyFile: missing}, "key file: open " + missing},
		{"mismatched key", true, tlsfiles.Options{CertFile: p.CertFile, KeyFile: q.KeyFile}, "does not hold the private key"},
		{"cert not PEM", true, tlsfiles.Options{CertFile: garbage, KeyFile: p.KeyFile}, "no PEM certificate found"},
		{"CA not PEM", true, tlsfiles.Options{CertFile: p.CertFile, KeyFile: p.KeyFile, CAFile: garbage}, "CA file " + garbage + ": no PEM certificate found"},
		{"client CA missing", false, tlsfiles.Options{CAFile: missing}, "CA file: open " + missing},
		{"client key mismatch", false, tlsfiles.Options{CertFile: p.CertFile, KeyFile: q.KeyFile}, "does not hold the private key"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var err error
			if c.server {
				_, err = tlsfiles.Server(c.o)
			} else {
				_, err = tlsfiles.Client(c.o)
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error containing %q", err, c.want)
			}
			if strings.Contains(c.want, "open") && !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("%v does not wrap os.ErrNotExist", err)
			}
		})
	}
}

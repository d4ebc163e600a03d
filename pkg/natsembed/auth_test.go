package natsembed_test

import (
	"errors"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cosnats/cosnats/internal/testpki"
	"github.com/cosnats/cosnats/pkg/natsembed"
	"github.com/cosnats/cosnats/pkg/tlsfiles"
)

// A listener with credentials refuses TCP clients without them (or with wrong ones) and accepts those
// with them; the in-process connections of the node need none, and have JetStream.
func TestListenerRequiresCredentials(t *testing.T) {
	srv, err := natsembed.Start(natsembed.Config{StoreDir: t.TempDir(), Listen: "127.0.0.1:0", User: "app", Password: "pw"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	for name, opts := range map[string][]nats.Option{
		"no credentials":  nil,
		"wrong password":  {nats.UserInfo("app", "nope")},
		"internal user":   {nats.UserInfo("cos-internal", "")},
		"a token instead": {nats.Token("pw")},
	} {
		nc, err := nats.Connect(srv.ClientURL(), opts...)
		if err == nil {
			nc.Close()
			t.Fatalf("%s: connected", name)
		}
		if !errors.Is(err, nats.ErrAuthorization) {
			t.Fatalf("%s: %v, want an authorization violation", name, err)
		}
	}
	nc, err := nats.Connect(srv.ClientURL(), nats.UserInfo("app", "pw"))
	if err != nil {
		t.Fatalf("with credentials: %v", err)
	}
	js := jetStream(t, nc)
	if _, err := js.CreateStream(ctx(t), jetstream.StreamConfig{Name: "TCP", Subjects: []string{"tcp.>"}}); err != nil {
		t.Fatalf("JetStream over TCP: %v", err)
	}
	inproc, err := srv.Connect("node")
	if err != nil {
		t.Fatalf("in-process: %v", err)
	}
	if _, err := jetStream(t, inproc).Stream(ctx(t), "TCP"); err != nil {
		t.Fatalf("in-process JetStream sees the same account: %v", err)
	}
}

func TestListenerTLS(t *testing.T) {
	ca := testpki.NewCA(t, "nats")
	pair := ca.Server("", "nats")
	serverTLS, err := tlsfiles.Server(tlsfiles.Options{CertFile: pair.CertFile, KeyFile: pair.KeyFile})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := natsembed.Start(natsembed.Config{StoreDir: t.TempDir(), Listen: "127.0.0.1:0", User: "app", Password: "pw", TLS: serverTLS})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	if nc, err := nats.Connect(srv.ClientURL(), nats.UserInfo("app", "pw")); err == nil {
		nc.Close()
		t.Fatal("a client not trusting the server's CA connected")
	}
	clientTLS, err := tlsfiles.Client(tlsfiles.Options{CAFile: ca.CAFile})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(srv.ClientURL(), nats.Secure(clientTLS), nats.UserInfo("app", "pw"))
	if err != nil {
		t.Fatalf("TLS client: %v", err)
	}
	defer nc.Close()
	if !nc.TLSRequired() {
		t.Fatal("the server does not require TLS")
	}
	inproc, err := srv.Connect("node")
	if err != nil {
		t.Fatalf("in-process: %v", err)
	}
	inproc.Close()
}

package composetest

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	bankv1 "github.com/cosnats/cosnats/examples/bankaccount/gen/bankaccount/v1"
	cosv1 "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	natsv1 "github.com/cosnats/cosnats/gen/cosnats/v1"
)

// hardenedBudget bounds TestHardenedCompose, an image build included when it is the first test to
// ask for the images.
const hardenedBudget = 6 * time.Minute

// TestHardenedCompose runs docker-compose.yml with docker-compose.hardened.yml and the certificates
// and passwords of scripts/devcerts, and checks what the overlay promises: the gateway serves only
// mTLS clients with a certificate of the demo CA and keeps the operator's services off its port; NATS
// refuses plaintext and unauthenticated connections and a producer's forged event; and the system
// works: a command is stored, GetState returns it and the read side applies it.
func TestHardenedCompose(t *testing.T) {
	ctx, env := prepare(t, hardenedBudget)
	began, root, composeCmd, image, natsImage := env.began, env.root, env.compose, env.image, env.natsImage

	// The demo's material, made by the documented command, and a second set whose CA the stack does
	// not know.
	certs, stranger := filepath.Join(t.TempDir(), "hardened"), filepath.Join(t.TempDir(), "stranger")
	for _, dir := range []string{certs, stranger} {
		if _, err := run(ctx, root, os.Environ(), "go", "run", "./scripts/devcerts", "-out", dir); err != nil {
			t.Fatal(err)
		}
	}

	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	s := &stack{
		t:       t,
		root:    root,
		compose: composeCmd,
		project: "coshardened" + randomHex(4),
		files:   []string{"docker-compose.hardened.yml", "deploy/composetest/monitoring.yml", "deploy/composetest/hardened.yml"},
		env: append(os.Environ(),
			"COS_IMAGE="+image, "NATS_IMAGE="+natsImage, "COS_GATEWAY_PORT="+strconv.Itoa(port),
			"COS_HARDENED_DIR="+certs, "OTEL_EXPORTER_OTLP_ENDPOINT="),
	}
	t.Logf("compose %q, project %s, images %s and %s, gateway on :%d, certificates in %s", composeCmd, s.project, image, natsImage, port, certs)
	s.bringUp(t, ctx)

	addr := fmt.Sprintf("127.0.0.1:%d", port)
	ca := readFile(t, filepath.Join(certs, "ca.pem"))

	// 1. The gateway refuses plaintext, TLS without a client certificate, and a certificate of another CA.
	refused := []struct {
		what  string
		creds credentials.TransportCredentials
	}{
		{"plaintext", insecure.NewCredentials()},
		{"TLS without a client certificate", tlsCreds(t, ca, "", "")},
		{"a client certificate of another CA", tlsCreds(t, ca, filepath.Join(stranger, "client.pem"), filepath.Join(stranger, "client-key.pem"))},
	}
	for _, r := range refused {
		err := getState(ctx, addr, r.creds, "acc-refused")
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("gateway, %s: GetState answered %v, want UNAVAILABLE (connection refused)", r.what, err)
		}
		t.Logf("gateway refuses %s: %v", r.what, err)
	}

	// 2. A client with the demo's certificate runs bank commands; GetState returns them, the read side
	// applies them.
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(
		tlsCreds(t, ca, filepath.Join(certs, "client.pem"), filepath.Join(certs, "client-key.pem"))))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	b := &bank{cos: cosv1.NewChiefOfStateServiceClient(conn), run: randomHex(4), ledger: make(map[string]*account)}
	const id = "acc-hardened"
	b.ledger[id] = &account{}
	if _, err := b.command(ctx, id, &bankv1.OpenAccount{Owner: "owner of " + id}); err != nil {
		t.Fatal(err)
	}
	if err := b.credit(ctx, id, 250); err != nil {
		t.Fatal(err)
	}
	cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
	resp, err := b.cos.GetState(cctx, &cosv1.GetStateRequest{EntityId: id})
	ccancel()
	if err != nil {
		t.Fatalf("GetState %s: %v", id, err)
	}
	acc := &bankv1.BankAccount{}
	if err := resp.GetState().UnmarshalTo(acc); err != nil {
		t.Fatal(err)
	}
	if acc.GetBalance() != 250 || resp.GetMeta().GetRevisionNumber() != 2 {
		t.Fatalf("GetState %s: balance %d at revision %d, want 250 at revision 2", id, acc.GetBalance(), resp.GetMeta().GetRevisionNumber())
	}
	t.Logf("over mTLS: %s opened and credited; GetState says balance %d at revision 2", id, acc.GetBalance())
	err = poll(ctx, time.Minute, 500*time.Millisecond, "the read side to apply "+id, func() (bool, string, error) {
		applied, err := s.readSideApplied(ctx)
		if err != nil {
			return false, "", err
		}
		got := applied[id]
		return got.revision == 2 && got.balance == 250, fmt.Sprintf("read side has %s at revision %d, balance %d", id, got.revision, got.balance), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the read side applied %s at revision 2", id)

	// The operator's services are on the admin listener (127.0.0.1:9001 inside the container), not here.
	cctx, ccancel = context.WithTimeout(ctx, 10*time.Second)
	_, err = natsv1.NewReadSideStatusServiceClient(conn).GetReadSideStatus(cctx, &natsv1.GetReadSideStatusRequest{ReadSideId: readSideID})
	ccancel()
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("GetReadSideStatus on the gateway's port answered %v, want UNIMPLEMENTED (COS_ADMIN_ADDRESS)", err)
	}

	// 3. NATS, through nats-1's client port that hardened.yml publishes for the test.
	out, err := s.do(ctx, "port", "nats-1", "4222")
	if err != nil {
		t.Fatal(err)
	}
	natsURL := "nats://" + strings.TrimSpace(out)
	caFile := filepath.Join(certs, "ca.pem")
	if err := natsPlaintext(strings.TrimPrefix(natsURL, "nats://")); err != nil {
		t.Fatal(err)
	}
	t.Log("NATS requires TLS: a plaintext CONNECT is refused")
	if nc, err := natsConnect(natsURL, nats.RootCAs(caFile)); !errors.Is(err, nats.ErrAuthorization) {
		if err == nil {
			nc.Close()
		}
		t.Fatalf("NATS over TLS without credentials: %v, want %v", err, nats.ErrAuthorization)
	} else {
		t.Logf("NATS refuses a TLS connection without credentials: %v", err)
	}
	if err := forgeEvent(ctx, natsURL, caFile, certs); err != nil {
		t.Fatal(err)
	}
	t.Log("NATS refuses an event forged by cos-producer (permissions violation) and COS_EVENTS has none")
	t.Logf("hardened stack checked in %v", time.Since(began).Round(time.Second))
}

// forgeEvent publishes an event on the event stream's subjects as the producer, and checks that NATS
// refuses it (a permissions violation) and, asked as the admin user, that the stream has not got it.
func forgeEvent(ctx context.Context, natsURL, caFile, certs string) error {
	var mu sync.Mutex
	var asyncErrs []error
	producer, err := natsConnect(natsURL, nats.RootCAs(caFile),
		nats.UserInfo("cos-producer", password(certs, "producer")),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			mu.Lock()
			asyncErrs = append(asyncErrs, err)
			mu.Unlock()
		}))
	if err != nil {
		return fmt.Errorf("NATS as cos-producer: %w", err)
	}
	defer producer.Close()
	subject := "cos.events.1.forged-" + randomHex(4)
	if err := producer.Publish(subject, []byte("forged")); err != nil {
		return fmt.Errorf("publish %s: %w", subject, err)
	}
	err = poll(ctx, 10*time.Second, 100*time.Millisecond, "NATS to refuse the forged event", func() (bool, string, error) {
		mu.Lock()
		defer mu.Unlock()
		for _, e := range asyncErrs {
			if errors.Is(e, nats.ErrPermissionViolation) && strings.Contains(e.Error(), subject) {
				return true, "", nil
			}
		}
		_ = producer.Flush()
		return false, fmt.Sprintf("asynchronous errors so far: %v", asyncErrs), nil
	})
	if err != nil {
		return err
	}

	admin, err := natsConnect(natsURL, nats.RootCAs(caFile), nats.UserInfo("cos-admin", password(certs, "admin")))
	if err != nil {
		return fmt.Errorf("NATS as cos-admin: %w", err)
	}
	defer admin.Close()
	js, err := jetstream.New(admin)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	stream, err := js.Stream(cctx, "COS_EVENTS")
	if err != nil {
		return fmt.Errorf("COS_EVENTS as cos-admin: %w", err)
	}
	msg, err := stream.GetLastMsgForSubject(cctx, subject)
	if !errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("last message of %s in COS_EVENTS: %v, %v; want none", subject, msg, err)
	}
	return nil
}

// natsConnect connects to one NATS server once: no reconnects, and not to the servers it advertises
// (the nodes' addresses on the Compose network).
func natsConnect(url string, opts ...nats.Option) (*nats.Conn, error) {
	return nats.Connect(url, append([]nats.Option{nats.NoReconnect(), nats.IgnoreDiscoveredServers(),
		nats.Timeout(5 * time.Second), nats.Name("composetest")}, opts...)...)
}

// natsPlaintext speaks the NATS protocol without TLS to addr, as an old or misconfigured client would
// (nats.go upgrades to TLS by itself when the server asks), and checks that the server requires TLS
// and answers a plaintext CONNECT and PING with an error or by closing the connection, never PONG.
func natsPlaintext(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return fmt.Errorf("NATS at %s: %w", addr, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(conn)
	info, err := r.ReadString('\n')
	if err != nil {
		return fmt.Errorf("NATS INFO: %w", err)
	}
	if !strings.HasPrefix(info, "INFO ") || !strings.Contains(info, `"tls_required":true`) {
		return fmt.Errorf("NATS INFO does not require TLS: %s", strings.TrimSpace(info))
	}
	if _, err := conn.Write([]byte("CONNECT {\"verbose\":false,\"pedantic\":false}\r\nPING\r\n")); err != nil {
		return nil // already closed
	}
	line, err := r.ReadString('\n')
	switch {
	case err != nil && !errors.Is(err, os.ErrDeadlineExceeded):
		return nil // closed: refused
	case strings.HasPrefix(line, "-ERR"):
		return nil
	default:
		return fmt.Errorf("NATS answered a plaintext CONNECT and PING with %q (err %v), want an error or the connection closed", line, err)
	}
}

// password is the NATS password devcerts made for role.
func password(certs, role string) string {
	b, err := os.ReadFile(filepath.Join(certs, role+".password"))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// getState calls GetState on a fresh connection with creds.
func getState(ctx context.Context, addr string, creds credentials.TransportCredentials, entity string) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = cosv1.NewChiefOfStateServiceClient(conn).GetState(ctx, &cosv1.GetStateRequest{EntityId: entity})
	return err
}

// tlsCreds trusts caPEM and presents the certificate of certFile and keyFile when they are set.
func tlsCreds(t *testing.T, caPEM []byte, certFile, keyFile string) credentials.TransportCredentials {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("no certificate in ca.pem")
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}
	if certFile != "" {
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return credentials.NewTLS(cfg)
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

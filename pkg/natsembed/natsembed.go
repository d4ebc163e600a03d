// Package natsembed runs a nats-server with JetStream inside this process: the single-process default
// (COS_NATS_URL unset) and the tests. StartCluster runs several clustered on loopback, for tests and
// benchmarks that need replicated streams.
package natsembed

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Config describes the embedded server.
type Config struct {
	StoreDir string
	// Listen is an optional host:port for TCP clients (e.g. the nats CLI); empty = in-process only.
	Listen string
	// SyncAlways fsyncs every write before acknowledging it (sync_interval: always).
	SyncAlways bool
	// User and Password, when set, are required of TCP clients. Connect's in-process connections
	// use an internal user with a random password instead, so they need neither.
	User, Password string
	// TLS, when set, makes the listener require TLS with this configuration.
	TLS *tls.Config
}

// internalUser is the user of the in-process connections when the listener requires a password.
const internalUser = "cos-internal"

// Server is a running embedded server.
type Server struct {
	srv      *server.Server
	internal []nats.Option // credentials of the in-process connections
}

// Start starts the server and waits until it accepts connections.
func Start(cfg Config) (*Server, error) {
	if cfg.StoreDir == "" {
		return nil, errors.New("embedded NATS: a store directory is required")
	}
	opts := &server.Options{
		ServerName: "cos-embedded",
		JetStream:  true,
		StoreDir:   cfg.StoreDir,
		NoSigs:     true,
		NoLog:      true,
		SyncAlways: cfg.SyncAlways,
		DontListen: cfg.Listen == "",
	}
	if cfg.Listen != "" {
		host, port, err := net.SplitHostPort(cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("embedded NATS listen address %q: %w", cfg.Listen, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return nil, fmt.Errorf("embedded NATS listen port %q: %w", port, err)
		}
		if p == 0 {
			p = server.RANDOM_PORT // nats-server reads 0 as 4222
		}
		opts.Host, opts.Port = host, p
	}
	var internal []nats.Option
	if cfg.User != "" || cfg.Password != "" {
		if cfg.User == "" || cfg.Password == "" || cfg.User == internalUser {
			return nil, fmt.Errorf("embedded NATS: the listener needs both a user (not %q) and a password", internalUser)
		}
		secret := make([]byte, 24)
		if _, err := rand.Read(secret); err != nil {
			return nil, fmt.Errorf("embedded NATS: %w", err)
		}
		pw := hex.EncodeToString(secret)
		opts.Users = []*server.User{{Username: cfg.User, Password: cfg.Password}, {Username: internalUser, Password: pw}}
		internal = []nats.Option{nats.UserInfo(internalUser, pw)}
	}
	if cfg.TLS != nil {
		opts.TLS, opts.TLSConfig, opts.TLSTimeout = true, cfg.TLS, 2
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		return nil, errors.New("embedded NATS did not become ready within 30s")
	}
	return &Server{srv: srv, internal: internal}, nil
}

// Connect opens an in-process client connection; opts add to the defaults.
func (s *Server) Connect(name string, opts ...nats.Option) (*nats.Conn, error) {
	nc, err := nats.Connect("", append(append([]nats.Option{nats.InProcessServer(s.srv), nats.Name(name), nats.MaxReconnects(-1)}, s.internal...), opts...)...)
	if err != nil {
		return nil, fmt.Errorf("connect to embedded NATS: %w", err)
	}
	return nc, nil
}

// ClientURL is the TCP URL when the server listens, else "".
func (s *Server) ClientURL() string {
	if s.srv.Addr() == nil {
		return ""
	}
	return s.srv.ClientURL()
}

// Shutdown stops the server and waits for it.
func (s *Server) Shutdown() {
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
}

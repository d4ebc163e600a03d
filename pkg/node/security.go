package node

import (
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/cosnats/cosnats/pkg/tlsfiles"
)

// security is the TLS material and credentials of a node, loaded once at start so that a missing,
// unreadable or mismatched file is a clear start-up error; certificates are then reloaded from their
// files when they change (pkg/tlsfiles).
type security struct {
	server     *tls.Config                      // gateway gRPC server; nil = plaintext
	writeSide  credentials.TransportCredentials // to the write handler
	nats       *tls.Config                      // to an external NATS; nil = as the URL says
	natsListen *tls.Config                      // the embedded server's TCP listener; nil = plaintext
}

// loadSecurity fills n.sec from the configuration.
func (n *node) loadSecurity() error {
	cfg := n.cfg
	onError := func(what string) func(error) {
		return func(err error) { n.log.Error("TLS material reload failed", "what", what, "err", err) }
	}
	var err error
	if n.opts.Roles.Gateway && cfg.TLS.Enabled() {
		n.sec.server, err = tlsfiles.Server(tlsfiles.Options{CertFile: cfg.TLS.CertFile, KeyFile: cfg.TLS.KeyFile,
			CAFile: cfg.TLS.ClientCAFile, OnError: onError("gRPC server certificate")})
		if err != nil {
			return fmt.Errorf("COS_TLS_CERT_FILE/COS_TLS_KEY_FILE/COS_TLS_CLIENT_CA_FILE: %w", err)
		}
	}
	ws := cfg.WriteSide
	// Only the roles that call the write handler (see dialWriteSide) need its material.
	if n.opts.Roles.Worker || n.opts.Roles.Gateway && ws.Host != "" {
		n.sec.writeSide, err = tlsfiles.ClientCredentials(ws.UseTLS, tlsfiles.Options{CAFile: ws.TLS.CAFile,
			CertFile: ws.TLS.CertFile, KeyFile: ws.TLS.KeyFile, ServerName: ws.TLS.ServerName,
			OnError: onError("write-side client certificate")})
		if err != nil {
			return fmt.Errorf("COS_WRITE_SIDE_TLS_*: %w", err)
		}
	}
	if n.opts.Roles.Projector {
		// The projector loads them again when it starts (after NATS is reached): checked now to fail fast.
		for _, rs := range cfg.EnabledReadSides() {
			if _, err := tlsfiles.ClientCredentials(rs.UseTLS, tlsfiles.Options{CAFile: rs.TLS.CAFile,
				CertFile: rs.TLS.CertFile, KeyFile: rs.TLS.KeyFile, ServerName: rs.TLS.ServerName}); err != nil {
				return fmt.Errorf("read side %s TLS (TLS_* settings): %w", rs.ID, err)
			}
		}
	}
	nc := cfg.NATS
	if f := nc.NkeyFile; f != "" {
		if _, err := nats.NkeyOptionFromSeed(f); err != nil {
			return fmt.Errorf("COS_NATS_NKEY_FILE: %w", err)
		}
	}
	if nc.TLSCAFile != "" || nc.TLSCertFile != "" {
		n.sec.nats, err = tlsfiles.Client(tlsfiles.Options{CAFile: nc.TLSCAFile, CertFile: nc.TLSCertFile,
			KeyFile: nc.TLSKeyFile, OnError: onError("NATS client certificate")})
		if err != nil {
			return fmt.Errorf("COS_NATS_TLS_*: %w", err)
		}
	}
	if nc.ListenTLSCertFile != "" {
		n.sec.natsListen, err = tlsfiles.Server(tlsfiles.Options{CertFile: nc.ListenTLSCertFile,
			KeyFile: nc.ListenTLSKeyFile, OnError: onError("embedded NATS listener certificate")})
		if err != nil {
			return fmt.Errorf("COS_NATS_LISTEN_TLS_CERT_FILE/COS_NATS_LISTEN_TLS_KEY_FILE: %w", err)
		}
	}
	return nil
}

// serverOptions are the gRPC server options of the gateway's TLS, none when it is plaintext.
func (s security) serverOptions() []grpc.ServerOption {
	if s.server == nil {
		return nil
	}
	return []grpc.ServerOption{grpc.Creds(credentials.NewTLS(s.server))}
}

// natsSecurityOptions are the TLS and authentication options of a connection to an external NATS. The
// in-process connections to the embedded server need none.
func (n *node) natsSecurityOptions() []nats.Option {
	c := n.cfg.NATS
	var opts []nats.Option
	if n.sec.nats != nil {
		opts = append(opts, nats.Secure(n.sec.nats))
	}
	switch {
	case c.CredsFile != "":
		opts = append(opts, nats.UserCredentials(c.CredsFile))
	case c.NkeyFile != "":
		// Checked by loadSecurity; read again here so the seed is not kept in memory in between.
		if o, err := nats.NkeyOptionFromSeed(c.NkeyFile); err == nil {
			opts = append(opts, o)
		}
	case c.User != "":
		opts = append(opts, nats.UserInfo(c.User, string(c.Password)))
	case c.Token != "":
		opts = append(opts, nats.Token(string(c.Token)))
	}
	// Wrong credentials are waited out like an unreachable server (they may be fixed on the server):
	// the node reports why it is not ready instead of giving up.
	return append(opts, nats.IgnoreAuthErrorAbort())
}

// isSecurityError reports whether a connection attempt failed on authentication or TLS.
func isSecurityError(err error) bool {
	var cert *tls.CertificateVerificationError
	var alert tls.AlertError
	return errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) || errors.Is(err, nats.ErrAuthRevoked) ||
		errors.Is(err, nats.ErrSecureConnRequired) || errors.Is(err, nats.ErrSecureConnWanted) ||
		errors.As(err, &cert) || errors.As(err, &alert) || strings.Contains(strings.ToLower(err.Error()), "tls")
}

// lastError remembers the text of the last error reported, so a retry loop logs each distinct one once.
type lastError struct {
	mu   sync.Mutex
	last string
}

// changed records err and reports whether it differs from the previous one.
func (l *lastError) changed(err error) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := err.Error()
	if s == l.last {
		return false
	}
	l.last = s
	return true
}

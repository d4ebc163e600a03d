package ctl

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/cosnats/cosnats/pkg/schema"
)

// defaultAddr is the quickstart's gateway.
const defaultAddr = "localhost:9000"

// globals are the flags every command accepts: how to reach the gateway and how to print.
type globals struct {
	addr       string
	adminAddr  string // "" = addr
	timeout    time.Duration
	output     string
	tls        bool
	ca         string
	cert, key  string
	serverName string
}

func (g *globals) defaults(getenv func(string) string) {
	g.addr = defaultAddr
	if v := getenv("COS_GATEWAY_ADDR"); v != "" {
		g.addr = v
	}
	g.adminAddr = getenv("COS_ADMIN_ADDR")
	g.timeout = 10 * time.Second
}

// register adds the global flags to fs with the current values as defaults, so flags given before the
// command survive the command's own parse.
func (g *globals) register(fs *flag.FlagSet) {
	fs.StringVar(&g.addr, "addr", g.addr, "gateway gRPC `HOST:PORT` (env COS_GATEWAY_ADDR)")
	fs.StringVar(&g.adminAddr, "admin-addr", g.adminAddr,
		"the gateway's admin listener `HOST:PORT` for readside and intake status commands, when it has one (COS_ADMIN_ADDRESS); default --addr (env COS_ADMIN_ADDR)")
	fs.DurationVar(&g.timeout, "timeout", g.timeout, "deadline of each call to the gateway, a `DURATION` like 10s or 1m")
	fs.StringVar(&g.output, "output", g.output, "`FORMAT`: json or table (default: json for states and events, table for status)")
	fs.BoolVar(&g.tls, "tls", g.tls, "use TLS to the gateway (system roots unless --ca); plaintext by default")
	fs.StringVar(&g.ca, "ca", g.ca, "PEM `FILE` of the CAs that sign the gateway's certificate (implies --tls)")
	fs.StringVar(&g.cert, "cert", g.cert, "client certificate PEM `FILE` for mutual TLS, with --key (implies --tls)")
	fs.StringVar(&g.key, "key", g.key, "client key PEM `FILE`, with --cert")
	fs.StringVar(&g.serverName, "server-name", g.serverName, "`NAME` expected in the gateway's certificate (implies --tls)")
}

func (g *globals) validate() error {
	switch g.output {
	case "", "json", "table":
	default:
		return fmt.Errorf("--output must be json or table, got %q", g.output)
	}
	if g.timeout <= 0 {
		return fmt.Errorf("--timeout must be positive, got %v", g.timeout)
	}
	if g.addr == "" {
		return errors.New("--addr is empty")
	}
	if (g.cert == "") != (g.key == "") {
		return errors.New("--cert and --key go together")
	}
	return nil
}

// format is the output format of cmd: the flag, or the command's default.
func (c *call) format() string {
	if c.g.output != "" {
		return c.g.output
	}
	return c.cmd.output
}

// dial makes the gateway's client connection (lazily connecting: the first call finds out whether
// the gateway is there).
func (c *call) dial() (*grpc.ClientConn, error) { return c.dialTo("--addr", c.g.addr) }

// dialAdmin connects to the gateway's operator services: its admin listener when --admin-addr is
// given, else the main port.
func (c *call) dialAdmin() (*grpc.ClientConn, error) {
	if c.g.adminAddr != "" {
		return c.dialTo("--admin-addr", c.g.adminAddr)
	}
	return c.dial()
}

func (c *call) dialTo(flagName, addr string) (*grpc.ClientConn, error) {
	creds, err := c.g.credentials()
	if err != nil {
		return nil, usagef(c.cmd, "%v", err)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, usagef(c.cmd, "%s %q: %v", flagName, addr, err)
	}
	return conn, nil
}

func (g *globals) credentials() (credentials.TransportCredentials, error) {
	if !g.tls && g.ca == "" && g.cert == "" && g.serverName == "" {
		return insecure.NewCredentials(), nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: g.serverName}
	if g.ca != "" {
		pem, err := os.ReadFile(g.ca)
		if err != nil {
			return nil, fmt.Errorf("--ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca %s: no PEM certificate in it", g.ca)
		}
		cfg.RootCAs = pool
	}
	if g.cert != "" {
		pair, err := tls.LoadX509KeyPair(g.cert, g.key)
		if err != nil {
			return nil, fmt.Errorf("--cert/--key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return credentials.NewTLS(cfg), nil
}

// schemaFlags say where the application's message types come from: a descriptor set and/or the write
// handler's gRPC reflection.
type schemaFlags struct {
	descriptors string
	handler     string
	handlerTLS  bool
}

func (s *schemaFlags) register(fs *flag.FlagSet, getenv func(string) string) {
	s.descriptors = getenv("COS_WRITE_SIDE_DESCRIPTORS")
	if host, port := getenv("COS_WRITE_SIDE_HOST"), getenv("COS_WRITE_SIDE_PORT"); host != "" && port != "" {
		s.handler = net.JoinHostPort(host, port)
	}
	s.handlerTLS = getenv("COS_WRITE_SIDE_USE_TLS") == "true"
	fs.StringVar(&s.descriptors, "descriptors", s.descriptors,
		"FileDescriptorSet `FILE` with the application's messages (protoc --include_imports --descriptor_set_out) (env COS_WRITE_SIDE_DESCRIPTORS)")
	fs.StringVar(&s.handler, "handler", s.handler,
		"write handler `HOST:PORT` to ask for message types by gRPC reflection (env COS_WRITE_SIDE_HOST:COS_WRITE_SIDE_PORT)")
	fs.BoolVar(&s.handlerTLS, "handler-tls", s.handlerTLS, "use TLS (system roots) for reflection on the write handler (env COS_WRITE_SIDE_USE_TLS)")
}

// resolver builds the type resolver; close releases the reflection connection.
func (s *schemaFlags) resolver(c *call) (r *schema.Resolver, closeFn func(), err error) {
	opts := schema.Options{DescriptorSet: s.descriptors, Timeout: c.g.timeout}
	closeFn = func() {}
	if s.handler != "" {
		var creds credentials.TransportCredentials = insecure.NewCredentials()
		if s.handlerTLS {
			creds = credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12})
		}
		conn, err := grpc.NewClient(s.handler, grpc.WithTransportCredentials(creds))
		if err != nil {
			return nil, nil, usagef(c.cmd, "--handler %q: %v", s.handler, err)
		}
		opts.Reflection = conn
		closeFn = func() { _ = conn.Close() }
	}
	r, err = schema.New(opts)
	if err != nil {
		closeFn()
		return nil, nil, usagef(c.cmd, "--descriptors: %v", err)
	}
	return r, closeFn, nil
}

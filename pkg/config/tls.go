package config

import (
	"log/slog"
	"net"
	"os"
	"strings"
)

// ServerTLS is the TLS of the gateway's gRPC server.
type ServerTLS struct {
	// CertFile (COS_TLS_CERT_FILE) and KeyFile (COS_TLS_KEY_FILE) are the server certificate (chain)
	// and key, PEM; when set the gRPC port serves TLS 1.2 or later only. Both or neither.
	CertFile string
	KeyFile  string
	// ClientCAFile (COS_TLS_CLIENT_CA_FILE), PEM: when set, clients must present a certificate
	// signed by one of its authorities (mTLS). Requires CertFile.
	ClientCAFile string
}

// Enabled reports whether the gRPC server serves TLS.
func (s ServerTLS) Enabled() bool { return s.CertFile != "" }

func (s ServerTLS) check(k *checker) {
	checkPair(k, "COS_TLS_CERT_FILE", s.CertFile, "COS_TLS_KEY_FILE", s.KeyFile)
	if s.ClientCAFile != "" && s.CertFile == "" {
		k.fail("COS_TLS_CLIENT_CA_FILE: requires COS_TLS_CERT_FILE and COS_TLS_KEY_FILE (mTLS needs a server certificate)")
	}
}

// ClientTLS is the TLS of a connection to a handler, beyond USE_TLS. Any field set turns TLS on.
type ClientTLS struct {
	CAFile     string // PEM authorities the handler's certificate must chain to [system roots]
	CertFile   string // client certificate (mTLS), PEM; with KeyFile
	KeyFile    string // key of CertFile, PEM
	ServerName string // name the handler's certificate is verified against [the host]
}

// Set reports whether any field is set.
func (c ClientTLS) Set() bool {
	return c.CAFile != "" || c.CertFile != "" || c.KeyFile != "" || c.ServerName != ""
}

// check validates c; name maps a field (CA_FILE, CERT_FILE, KEY_FILE) to the name of its setting.
func (c ClientTLS) check(k *checker, name func(string) string) {
	checkPair(k, name("CERT_FILE"), c.CertFile, name("KEY_FILE"), c.KeyFile)
	if c.ServerName != "" && !validHost(c.ServerName) {
		k.fail("%s: %q is not a host name", name("SERVER_NAME"), c.ServerName)
	}
}

// checkPair requires a certificate and its key together.
func checkPair(k *checker, certName, cert, keyName, key string) {
	switch {
	case cert != "" && key == "":
		k.fail("%s: required when %s is set", keyName, certName)
	case cert == "" && key != "":
		k.fail("%s: required when %s is set", certName, keyName)
	}
}

// Secret is a value that must not be logged: it prints as [redacted] with fmt and slog.
type Secret string

// String returns "[redacted]" for a set secret and "" for an empty one.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "[redacted]"
}

// GoString is String, for %#v.
func (s Secret) GoString() string { return s.String() }

// LogValue is String, for slog.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalText is String, for encoders.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// secret reads a secret from name or from the file named by name_FILE (trailing newlines and spaces
// dropped); both set is an error.
func (p *parser) secret(name string, dst *Secret) {
	v, inline := p.lookup(name)
	file, fromFile := p.lookup(name + "_FILE")
	switch {
	case inline && fromFile:
		p.fail("%s and %s_FILE: set only one", name, name)
	case inline:
		*dst = Secret(v)
	case fromFile:
		data, err := os.ReadFile(file)
		if err != nil {
			p.fail("%s_FILE: %v", name, err)
			return
		}
		s := strings.TrimRight(string(data), "\r\n\t ")
		if s == "" {
			p.fail("%s_FILE: %s is empty", name, file)
			return
		}
		*dst = Secret(s)
	}
}

// isLoopback reports whether the host of a host:port is a loopback address or localhost; an empty
// host (all interfaces) is not.
func isLoopback(hostPort string) bool {
	host, _, err := net.SplitHostPort(hostPort)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// authMethods names the NATS authentication settings in use.
func (n NATS) authMethods() []string {
	var m []string
	if n.CredsFile != "" {
		m = append(m, "COS_NATS_CREDS")
	}
	if n.NkeyFile != "" {
		m = append(m, "COS_NATS_NKEY_FILE")
	}
	if n.User != "" || n.Password != "" {
		m = append(m, "COS_NATS_USER/COS_NATS_PASSWORD")
	}
	if n.Token != "" {
		m = append(m, "COS_NATS_TOKEN")
	}
	return m
}

// checkSecurity validates the NATS TLS and authentication settings.
func (n NATS) checkSecurity(k *checker) {
	external := []struct {
		name string
		set  bool
	}{
		{"COS_NATS_CREDS", n.CredsFile != ""},
		{"COS_NATS_NKEY_FILE", n.NkeyFile != ""},
		{"COS_NATS_USER", n.User != ""},
		{"COS_NATS_PASSWORD", n.Password != ""},
		{"COS_NATS_TOKEN", n.Token != ""},
		{"COS_NATS_TLS_CA_FILE", n.TLSCAFile != ""},
		{"COS_NATS_TLS_CERT_FILE", n.TLSCertFile != ""},
		{"COS_NATS_TLS_KEY_FILE", n.TLSKeyFile != ""},
	}
	listen := []struct {
		name string
		set  bool
	}{
		{"COS_NATS_LISTEN_USER", n.ListenUser != ""},
		{"COS_NATS_LISTEN_PASSWORD", n.ListenPassword != ""},
		{"COS_NATS_LISTEN_TLS_CERT_FILE", n.ListenTLSCertFile != ""},
		{"COS_NATS_LISTEN_TLS_KEY_FILE", n.ListenTLSKeyFile != ""},
	}
	if n.Embedded() {
		for _, s := range external {
			if s.set {
				k.fail("%s: only applies to an external NATS server; set COS_NATS_URL or unset %s", s.name, s.name)
			}
		}
		for _, s := range listen {
			if s.set && n.Listen == "" {
				k.fail("%s: only applies to the embedded server's listener; set COS_NATS_LISTEN or unset %s", s.name, s.name)
			}
		}
		if n.Listen == "" {
			return
		}
		switch {
		case n.ListenUser != "" && n.ListenPassword == "":
			k.fail("COS_NATS_LISTEN_PASSWORD (or COS_NATS_LISTEN_PASSWORD_FILE): required when COS_NATS_LISTEN_USER is set")
		case n.ListenUser == "" && n.ListenPassword != "":
			k.fail("COS_NATS_LISTEN_USER: required when COS_NATS_LISTEN_PASSWORD is set")
		case n.ListenUser == "" && !isLoopback(n.Listen):
			k.fail("COS_NATS_LISTEN_USER and COS_NATS_LISTEN_PASSWORD (or COS_NATS_LISTEN_PASSWORD_FILE): required when COS_NATS_LISTEN %q is not a loopback address (anyone reaching it could publish forged events or delete the stream)", n.Listen)
		}
		checkPair(k, "COS_NATS_LISTEN_TLS_CERT_FILE", n.ListenTLSCertFile, "COS_NATS_LISTEN_TLS_KEY_FILE", n.ListenTLSKeyFile)
		return
	}
	for _, s := range listen {
		if s.set {
			k.fail("%s: only applies to the embedded NATS server (COS_NATS_URL unset)", s.name)
		}
	}
	if m := n.authMethods(); len(m) > 1 {
		k.fail("NATS authentication: use one method at a time, got %s", strings.Join(m, ", "))
	}
	switch {
	case n.User != "" && n.Password == "":
		k.fail("COS_NATS_PASSWORD (or COS_NATS_PASSWORD_FILE): required when COS_NATS_USER is set")
	case n.User == "" && n.Password != "":
		k.fail("COS_NATS_USER: required when COS_NATS_PASSWORD is set")
	}
	checkPair(k, "COS_NATS_TLS_CERT_FILE", n.TLSCertFile, "COS_NATS_TLS_KEY_FILE", n.TLSKeyFile)
}

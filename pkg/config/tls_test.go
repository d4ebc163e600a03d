package config

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFromEnvSecuritySettings(t *testing.T) {
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "pw")
	if err := os.WriteFile(pwFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, _, err := FromEnv([]string{
		"COS_TLS_CERT_FILE=/tls/tls.crt", "COS_TLS_KEY_FILE=/tls/tls.key", "COS_TLS_CLIENT_CA_FILE=/tls/ca.crt",
		"COS_WRITE_SIDE_TLS_CA_FILE=/h/ca.crt", "COS_WRITE_SIDE_TLS_CERT_FILE=/h/c.crt", "COS_WRITE_SIDE_TLS_KEY_FILE=/h/c.key",
		"COS_WRITE_SIDE_TLS_SERVER_NAME=handler.internal",
		"COS_NATS_URL=tls://nats:4222", "COS_NATS_USER=cos", "COS_NATS_PASSWORD_FILE=" + pwFile,
		"COS_NATS_TLS_CA_FILE=/n/ca.crt", "COS_NATS_TLS_CERT_FILE=/n/c.crt", "COS_NATS_TLS_KEY_FILE=/n/c.key",
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := (ServerTLS{CertFile: "/tls/tls.crt", KeyFile: "/tls/tls.key", ClientCAFile: "/tls/ca.crt"}); c.TLS != want {
		t.Errorf("TLS = %+v", c.TLS)
	}
	if want := (ClientTLS{CAFile: "/h/ca.crt", CertFile: "/h/c.crt", KeyFile: "/h/c.key", ServerName: "handler.internal"}); c.WriteSide.TLS != want {
		t.Errorf("WriteSide.TLS = %+v", c.WriteSide.TLS)
	}
	n := c.NATS
	if n.User != "cos" || n.Password != "s3cret" || n.TLSCAFile != "/n/ca.crt" || n.TLSCertFile != "/n/c.crt" || n.TLSKeyFile != "/n/c.key" {
		t.Errorf("NATS = %+v", n)
	}

	// Secrets never print: fmt, slog (text and JSON).
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("config", "nats", n, "password", n.Password)
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("config", "nats", n, "password", n.Password)
	out := buf.String() + fmt.Sprintf("%v %+v %#v %s", c, c, c, n.Password)
	if strings.Contains(out, "s3cret") {
		t.Fatalf("the password was printed:\n%s", out)
	}
	if !strings.Contains(out, "[redacted]") {
		t.Fatalf("no redacted marker:\n%s", out)
	}

	c, _, err = FromEnv([]string{"COS_NATS_URL=nats://n:4222", "COS_NATS_TOKEN=tok"})
	if err != nil || c.NATS.Token != "tok" {
		t.Fatalf("token: %v %q", err, string(c.NATS.Token))
	}
	c, _, err = FromEnv([]string{"COS_NATS_URL=nats://n:4222", "COS_NATS_NKEY_FILE=/n/seed.nk"})
	if err != nil || c.NATS.NkeyFile != "/n/seed.nk" {
		t.Fatalf("nkey: %v %+v", err, c.NATS)
	}
	// The embedded listener: open on loopback, with credentials anywhere.
	for _, listen := range []string{"127.0.0.1:4222", "localhost:4222", "[::1]:4222"} {
		if _, _, err := FromEnv([]string{"COS_NATS_LISTEN=" + listen}); err != nil {
			t.Errorf("loopback %s without credentials: %v", listen, err)
		}
	}
	c, _, err = FromEnv([]string{"COS_NATS_LISTEN=0.0.0.0:4222", "COS_NATS_LISTEN_USER=app", "COS_NATS_LISTEN_PASSWORD=pw",
		"COS_NATS_LISTEN_TLS_CERT_FILE=/l/c.crt", "COS_NATS_LISTEN_TLS_KEY_FILE=/l/c.key"})
	if err != nil || c.NATS.ListenUser != "app" || c.NATS.ListenPassword != "pw" || c.NATS.ListenTLSCertFile != "/l/c.crt" || c.NATS.ListenTLSKeyFile != "/l/c.key" {
		t.Fatalf("listener credentials: %v %+v", err, c.NATS)
	}
}

func TestFromEnvSecurityErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing")
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ext := "COS_NATS_URL=nats://n:4222"
	tests := []struct {
		env  []string
		want string
	}{
		{[]string{"COS_TLS_CERT_FILE=/c"}, "COS_TLS_KEY_FILE: required when COS_TLS_CERT_FILE is set"},
		{[]string{"COS_TLS_KEY_FILE=/k"}, "COS_TLS_CERT_FILE: required when COS_TLS_KEY_FILE is set"},
		{[]string{"COS_TLS_CLIENT_CA_FILE=/ca"}, "COS_TLS_CLIENT_CA_FILE: requires COS_TLS_CERT_FILE"},
		{[]string{"COS_WRITE_SIDE_TLS_CERT_FILE=/c"}, "COS_WRITE_SIDE_TLS_KEY_FILE: required when COS_WRITE_SIDE_TLS_CERT_FILE is set"},
		{[]string{"COS_WRITE_SIDE_TLS_KEY_FILE=/k"}, "COS_WRITE_SIDE_TLS_CERT_FILE: required when"},
		{[]string{"COS_WRITE_SIDE_TLS_SERVER_NAME=a b"}, `COS_WRITE_SIDE_TLS_SERVER_NAME: "a b" is not a host name`},
		{[]string{ext, "COS_NATS_USER=u", "COS_NATS_TOKEN=t", "COS_NATS_PASSWORD=p"}, "NATS authentication: use one method at a time, got COS_NATS_USER/COS_NATS_PASSWORD, COS_NATS_TOKEN"},
		{[]string{ext, "COS_NATS_CREDS=/c", "COS_NATS_NKEY_FILE=/n"}, "use one method at a time, got COS_NATS_CREDS, COS_NATS_NKEY_FILE"},
		{[]string{ext, "COS_NATS_USER=u"}, "COS_NATS_PASSWORD (or COS_NATS_PASSWORD_FILE): required when COS_NATS_USER is set"},
		{[]string{ext, "COS_NATS_PASSWORD=p"}, "COS_NATS_USER: required when COS_NATS_PASSWORD is set"},
		{[]string{ext, "COS_NATS_PASSWORD=p", "COS_NATS_PASSWORD_FILE=/p"}, "COS_NATS_PASSWORD and COS_NATS_PASSWORD_FILE: set only one"},
		{[]string{ext, "COS_NATS_TOKEN_FILE=" + missing}, "COS_NATS_TOKEN_FILE: open " + missing},
		{[]string{ext, "COS_NATS_TOKEN_FILE=" + empty}, "COS_NATS_TOKEN_FILE: " + empty + " is empty"},
		{[]string{ext, "COS_NATS_TLS_CERT_FILE=/c"}, "COS_NATS_TLS_KEY_FILE: required when COS_NATS_TLS_CERT_FILE is set"},
		{[]string{ext, "COS_NATS_TLS_KEY_FILE=/k"}, "COS_NATS_TLS_CERT_FILE: required when"},
		{[]string{ext, "COS_NATS_LISTEN_USER=u"}, "COS_NATS_LISTEN_USER: only applies to the embedded NATS server"},
		{[]string{ext, "COS_NATS_LISTEN_TLS_CERT_FILE=/c"}, "COS_NATS_LISTEN_TLS_CERT_FILE: only applies to the embedded"},
		{[]string{"COS_NATS_TOKEN=t"}, "COS_NATS_TOKEN: only applies to an external NATS server"},
		{[]string{"COS_NATS_NKEY_FILE=/n"}, "COS_NATS_NKEY_FILE: only applies to an external NATS server"},
		{[]string{"COS_NATS_USER=u"}, "COS_NATS_USER: only applies to an external NATS server"},
		{[]string{"COS_NATS_PASSWORD=p"}, "COS_NATS_PASSWORD: only applies to an external NATS server"},
		{[]string{"COS_NATS_TLS_CA_FILE=/ca"}, "COS_NATS_TLS_CA_FILE: only applies to an external NATS server"},
		{[]string{"COS_NATS_TLS_CERT_FILE=/c"}, "COS_NATS_TLS_CERT_FILE: only applies to an external NATS server"},
		{[]string{"COS_NATS_TLS_KEY_FILE=/c"}, "COS_NATS_TLS_KEY_FILE: only applies to an external NATS server"},
		{[]string{"COS_NATS_LISTEN=0.0.0.0:4222"}, `COS_NATS_LISTEN_USER and COS_NATS_LISTEN_PASSWORD (or COS_NATS_LISTEN_PASSWORD_FILE): required when COS_NATS_LISTEN "0.0.0.0:4222" is not a loopback address`},
		{[]string{"COS_NATS_LISTEN=:4222"}, "is not a loopback address"},
		{[]string{"COS_NATS_LISTEN=nats.example:4222"}, "is not a loopback address"},
		{[]string{"COS_NATS_LISTEN=127.0.0.1:4222", "COS_NATS_LISTEN_USER=u"}, "COS_NATS_LISTEN_PASSWORD (or COS_NATS_LISTEN_PASSWORD_FILE): required when COS_NATS_LISTEN_USER is set"},
		{[]string{"COS_NATS_LISTEN=127.0.0.1:4222", "COS_NATS_LISTEN_PASSWORD=p"}, "COS_NATS_LISTEN_USER: required when COS_NATS_LISTEN_PASSWORD is set"},
		{[]string{"COS_NATS_LISTEN=127.0.0.1:4222", "COS_NATS_LISTEN_PASSWORD_FILE=" + missing}, "COS_NATS_LISTEN_PASSWORD_FILE: open"},
		{[]string{"COS_NATS_LISTEN=127.0.0.1:4222", "COS_NATS_LISTEN_TLS_CERT_FILE=/c"}, "COS_NATS_LISTEN_TLS_KEY_FILE: required when COS_NATS_LISTEN_TLS_CERT_FILE is set"},
		{[]string{"COS_NATS_LISTEN_USER=u", "COS_NATS_LISTEN_PASSWORD=p"}, "COS_NATS_LISTEN_USER: only applies to the embedded server's listener; set COS_NATS_LISTEN"},
		{[]string{"COS_READ_SIDE_CONFIG__HOST__a=h", "COS_READ_SIDE_CONFIG__PORT__a=1", "COS_READ_SIDE_CONFIG__TLS_CERT_FILE__a=/c"},
			"COS_READ_SIDE_CONFIG__TLS_KEY_FILE__a: required when COS_READ_SIDE_CONFIG__TLS_CERT_FILE__a is set"},
		{[]string{"COS_READ_SIDE_CONFIG__HOST__a=h", "COS_READ_SIDE_CONFIG__PORT__a=1", "COS_READ_SIDE_CONFIG__TLS_SERVER_NAME__a=x/y"},
			`COS_READ_SIDE_CONFIG__TLS_SERVER_NAME__a: "x/y" is not a host name`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.env, " "), func(t *testing.T) {
			_, _, err := FromEnv(tt.env)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestReadSideTLSSettings(t *testing.T) {
	c, _, err := FromEnv([]string{
		"COS_READ_SIDE_CONFIG__HOST__a=h", "COS_READ_SIDE_CONFIG__PORT__a=1",
		"COS_READ_SIDE_CONFIG__TLS_CA_FILE__a=/ca", "COS_READ_SIDE_CONFIG__TLS_CERT_FILE__a=/c",
		"COS_READ_SIDE_CONFIG__TLS_KEY_FILE__a=/k", "COS_READ_SIDE_CONFIG__TLS_SERVER_NAME__a=rs.internal",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := ClientTLS{CAFile: "/ca", CertFile: "/c", KeyFile: "/k", ServerName: "rs.internal"}
	if len(c.ReadSides) != 1 || c.ReadSides[0].TLS != want {
		t.Fatalf("env form: %+v", c.ReadSides)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "rs.yaml")
	yml := "readSideId: b\nhost: h\nport: 2\ntlsCaFile: /ca\ntlsCertFile: /c\ntlsKeyFile: /k\ntlsServerName: rs.internal\n" +
		"---\nreadSideId: c\nhost: h\nport: 3\ntlsKeyFile: /k\n"
	if err := os.WriteFile(file, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err = FromEnv([]string{"COS_READ_SIDE_CONFIG=" + file})
	if err == nil || !strings.Contains(err.Error(), "document 2: tlsCertFile: required when") {
		t.Fatalf("file form error: %v", err)
	}
	yml = yml[:strings.Index(yml, "---")]
	if err := os.WriteFile(file, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	c, _, err = FromEnv([]string{"COS_READ_SIDE_CONFIG=" + file})
	if err != nil || len(c.ReadSides) != 1 || c.ReadSides[0].TLS != want {
		t.Fatalf("file form: %v %+v", err, c.ReadSides)
	}
	if !want.Set() || (ClientTLS{}).Set() {
		t.Fatal("Set")
	}
}

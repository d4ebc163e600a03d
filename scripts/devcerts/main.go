// Command devcerts writes the certificates and passwords of the hardened Compose demo
// (docker-compose.hardened.yml) into a directory:
//
//	go run ./scripts/devcerts -out deploy/hardened
//
//	ca.pem                          a fresh CA (its key is not kept: run devcerts again for new certificates)
//	nats.pem, nats-key.pem          NATS servers: nats-1, nats-2, nats-3, localhost, 127.0.0.1
//	                                (server and client use: the cluster routes verify each other too)
//	gateway.pem, gateway-key.pem    the gateway's gRPC server: gateway, localhost, 127.0.0.1
//	client.pem, client-key.pem      a client certificate for callers of the gateway (mTLS)
//	<role>.password                 a random NATS password per role: gateway, worker, projector, producer, admin
//	nats.env                        the same as COS_<ROLE>_PASSWORD=… for nats-server (deploy/nats/permissions.conf)
//
// Everything is ECDSA P-256, valid for a year. The containers run as UID 65532, not as the owner of
// these files, so every file is written world-readable (0644), keys and passwords included, and the
// directory 0755: fine for a demo on your machine, not for production, where secrets come from a
// secret store with the right owner. The directory must not be committed (.gitignore has
// deploy/hardened/).
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// roles are the NATS users of deploy/nats/permissions.conf, cos-<role>, whose passwords nats-server
// reads from COS_<ROLE>_PASSWORD.
var roles = []string{"gateway", "worker", "projector", "producer", "admin"}

const validity = 365 * 24 * time.Hour

func main() {
	out := flag.String("out", "", "`DIR` to write into (created; existing files are replaced)")
	flag.Parse()
	if *out == "" || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: go run ./scripts/devcerts -out DIR")
		os.Exit(2)
	}
	if err := generate(*out); err != nil {
		fmt.Fprintf(os.Stderr, "devcerts: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("devcerts: wrote the CA, certificates and NATS passwords of the hardened demo into %s\n", *out)
}

// issuer is a CA that signs leaf certificates.
type issuer struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func generate(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	// MkdirAll leaves an existing directory's mode alone, and the umask applies to a new one.
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	ca, caPEM, err := newCA("cosnats demo CA")
	if err != nil {
		return err
	}
	files := map[string][]byte{"ca.pem": caPEM}
	leaves := []struct {
		name string
		cn   string
		sans []string
		use  []x509.ExtKeyUsage
	}{
		{"nats", "nats", []string{"nats-1", "nats-2", "nats-3", "localhost", "127.0.0.1"},
			[]x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}},
		{"gateway", "gateway", []string{"gateway", "localhost", "127.0.0.1"},
			[]x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}},
		{"client", "cosnats demo client", nil, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}},
	}
	for _, l := range leaves {
		certPEM, keyPEM, err := ca.issue(l.cn, l.sans, l.use)
		if err != nil {
			return fmt.Errorf("%s certificate: %w", l.name, err)
		}
		files[l.name+".pem"], files[l.name+"-key.pem"] = certPEM, keyPEM
	}
	var env strings.Builder
	env.WriteString("# nats-server's environment (docker-compose.hardened.yml): the passwords of deploy/nats/permissions.conf.\n")
	for _, role := range roles {
		pw, err := password()
		if err != nil {
			return err
		}
		files[role+".password"] = []byte(pw + "\n")
		fmt.Fprintf(&env, "COS_%s_PASSWORD=%s\n", strings.ToUpper(role), pw)
	}
	files["nats.env"] = []byte(env.String())
	for name, data := range files {
		if err := writeFile(filepath.Join(dir, name), data); err != nil {
			return err
		}
	}
	return nil
}

// writeFile writes data to path with mode 0644 whatever the umask (see the package comment).
func writeFile(path string, data []byte) error {
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return err
	}
	return os.Chmod(path, 0o644)
}

// password is 32 random letters and digits starting with a letter: nats-server parses an environment
// variable's value as a configuration value, so it must read as a string (not a number), and it needs
// no quoting in URLs or env files.
func password() (string, error) {
	const letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	const alphabet = letters + "0123456789"
	b := make([]byte, 32)
	for i := range b {
		set := alphabet
		if i == 0 {
			set = letters
		}
		n, err := rand.Int(rand.Reader, big.NewInt(int64(len(set))))
		if err != nil {
			return "", err
		}
		b[i] = set[n.Int64()]
	}
	return string(b), nil
}

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

func newCA(cn string) (*issuer, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	sn, err := serial()
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"cosnats demo"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return &issuer{cert: cert, key: key}, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// issue signs a leaf certificate for cn with sans (DNS names or IP addresses) and returns it and its
// key in PEM.
func (ca *issuer) issue(cn string, sans []string, use []x509.ExtKeyUsage) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	sn, err := serial()
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"cosnats demo"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  use,
	}
	for _, s := range sans {
		if ip := net.ParseIP(s); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, s)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, errors.Join(errors.New("marshal key"), err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), nil
}

// Package testpki makes certificate authorities and leaf certificates for tests, written as PEM files
// in a test's temporary directory.
package testpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// CA is a certificate authority.
type CA struct {
	t      testing.TB
	dir    string
	Name   string
	cert   *x509.Certificate
	key    *ecdsa.PrivateKey
	CAFile string // the CA certificate, PEM
}

// Pair names the files of a leaf certificate and its key.
type Pair struct {
	CertFile, KeyFile string
	Serial            *big.Int
}

func nextSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		panic(err)
	}
	return n
}

// NewCA makes a CA named name and writes its certificate to <tempdir>/<name>-ca.pem.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          nextSerial(),
		Subject:               pkix.Name{CommonName: name + " test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &CA{t: t, dir: t.TempDir(), Name: name, cert: cert, key: key}
	ca.CAFile = filepath.Join(ca.dir, name+"-ca.pem")
	WriteFile(t, ca.CAFile, pemBlock("CERTIFICATE", der))
	return ca
}

// Server issues a server certificate for 127.0.0.1, ::1, localhost and names, written to
// <dir>/<file>.pem and <dir>/<file>-key.pem (dir = a new temporary directory when empty). It may also
// serve as a client certificate, as a NATS server's does on the routes it dials.
func (ca *CA) Server(dir, file string, names ...string) Pair {
	return ca.issue(dir, file, x509.ExtKeyUsageServerAuth, "server", append([]string{"localhost"}, names...))
}

// Pool is a certificate pool holding the CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// PEM is the CA certificate in PEM.
func (ca *CA) PEM() []byte { return readFile(ca.t, ca.CAFile) }

// PEM returns the certificate and the key in PEM.
func (p Pair) PEM(t testing.TB) (cert, key []byte) {
	t.Helper()
	return readFile(t, p.CertFile), readFile(t, p.KeyFile)
}

// KeyPair loads the pair for a tls.Config.
func (p Pair) KeyPair(t testing.TB) tls.Certificate {
	t.Helper()
	kp, err := tls.LoadX509KeyPair(p.CertFile, p.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Client issues a client certificate with common name cn.
func (ca *CA) Client(dir, file, cn string) Pair {
	return ca.issue(dir, file, x509.ExtKeyUsageClientAuth, cn, nil)
}

func (ca *CA) issue(dir, file string, usage x509.ExtKeyUsage, cn string, names []string) Pair {
	t := ca.t
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	key := newKey(t)
	s := nextSerial()
	tmpl := &x509.Certificate{
		SerialNumber: s,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		DNSNames:     names,
	}
	if usage == x509.ExtKeyUsageServerAuth {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	p := Pair{CertFile: filepath.Join(dir, file+".pem"), KeyFile: filepath.Join(dir, file+"-key.pem"), Serial: s}
	WriteFile(t, p.KeyFile, pemBlock("PRIVATE KEY", keyDER))
	WriteFile(t, p.CertFile, pemBlock("CERTIFICATE", der))
	return p
}

// WriteFile replaces path with data atomically (a rename, as a mounted Kubernetes secret changes) and
// sets a modification time later than any before, so a reload never misses it on a coarse clock.
func WriteFile(t testing.TB, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	mod := time.Now()
	if fi, err := os.Stat(path); err == nil && !fi.ModTime().Before(mod) {
		mod = fi.ModTime().Add(time.Second)
	}
	if err := os.Chtimes(tmp, mod, mod); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// CopyPair copies the files of p over those of dst.
func CopyPair(t testing.TB, p, dst Pair) {
	t.Helper()
	for _, f := range [][2]string{{p.KeyFile, dst.KeyFile}, {p.CertFile, dst.CertFile}} {
		data, err := os.ReadFile(f[0])
		if err != nil {
			t.Fatal(err)
		}
		WriteFile(t, f[1], data)
	}
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

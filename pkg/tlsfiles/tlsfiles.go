// Package tlsfiles provides TLS configurations whose certificates, keys and certificate authorities
// are loaded from PEM files and reloaded from them, without a restart, when the files change.
//
// Files are checked at most every CheckEvery (a stat of each, comparing modification time and size);
// when one changed, the whole set is read again and replaces the one in use only if it is valid. A
// reload that fails keeps the last good material and is reported once to OnError (again only when the
// files change again). The first load happens in the constructor, whose errors name the file and what
// is wrong with it: unreadable, no PEM certificate, a key that does not match its certificate.
package tlsfiles

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// DefaultCheckEvery is how often files are checked for changes when Options.CheckEvery is 0.
const DefaultCheckEvery = 5 * time.Second

// Options are the files of a server or client TLS configuration.
type Options struct {
	// CertFile and KeyFile are this side's certificate (chain) and private key. A server requires
	// them; a client presents them when the server asks (mTLS). Both or neither.
	CertFile string
	KeyFile  string
	// CAFile holds the PEM certificates of the authorities to trust: for a server, those that sign
	// client certificates (set = client certificates required and verified); for a client, those that
	// sign the server's (empty = the system roots).
	CAFile string
	// ServerName (client only) overrides the name the server certificate is verified against.
	ServerName string
	// CheckEvery is the minimum time between two checks of the files [DefaultCheckEvery]; < 0 checks on
	// every handshake (tests).
	CheckEvery time.Duration
	// OnError, when set, is told about a reload that failed (the previous material stays in use).
	OnError func(error)
}

// Server returns a server configuration (TLS 1.2 or later) serving the certificate of CertFile and
// KeyFile and, when CAFile is set, requiring client certificates signed by one of its authorities.
// Each handshake uses the files' current content (see the package comment).
func Server(o Options) (*tls.Config, error) {
	if o.CertFile == "" || o.KeyFile == "" {
		return nil, errors.New("a TLS server needs both a certificate file and a key file")
	}
	w, err := newWatcher(o, func() (material, error) { return loadMaterial(o) })
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			m := w.get()
			c := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{*m.cert}}
			if m.pool != nil {
				c.ClientCAs, c.ClientAuth = m.pool, tls.RequireAndVerifyClientCert
			}
			return c, nil
		},
	}, nil
}

// Client returns a client configuration (TLS 1.2 or later) trusting the authorities of CAFile (the
// system roots when empty), verifying the server as ServerName when set, and presenting the
// certificate of CertFile and KeyFile when set. The client certificate is reloaded when its files
// change; the authorities are read once.
func Client(o Options) (*tls.Config, error) {
	if (o.CertFile == "") != (o.KeyFile == "") {
		return nil, errors.New("a client certificate needs both a certificate file and a key file")
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: o.ServerName}
	if o.CAFile != "" {
		pool, err := loadPool(o.CAFile)
		if err != nil {
			return nil, err
		}
		c.RootCAs = pool
	}
	if o.CertFile != "" {
		certOnly := o
		certOnly.CAFile = ""
		w, err := newWatcher(certOnly, func() (material, error) { return loadMaterial(certOnly) })
		if err != nil {
			return nil, err
		}
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return w.get().cert, nil
		}
	}
	return c, nil
}

// material is what one set of files holds.
type material struct {
	cert *tls.Certificate // nil without CertFile
	pool *x509.CertPool   // nil without CAFile
}

func loadMaterial(o Options) (material, error) {
	var m material
	if o.CertFile != "" {
		c, err := loadPair(o.CertFile, o.KeyFile)
		if err != nil {
			return m, err
		}
		m.cert = c
	}
	if o.CAFile != "" {
		p, err := loadPool(o.CAFile)
		if err != nil {
			return m, err
		}
		m.pool = p
	}
	return m, nil
}

// loadPair reads a certificate and its key, saying which file is wrong.
func loadPair(certFile, keyFile string) (*tls.Certificate, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("certificate file: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	if _, err := parseCerts(certPEM); err != nil {
		return nil, fmt.Errorf("certificate file %s: %w", certFile, err)
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("key file %s does not hold the private key of certificate file %s: %w", keyFile, certFile, err)
	}
	return &c, nil
}

// loadPool reads a file of PEM certificates.
func loadPool(file string) (*x509.CertPool, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("CA file: %w", err)
	}
	certs, err := parseCerts(data)
	if err != nil {
		return nil, fmt.Errorf("CA file %s: %w", file, err)
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool, nil
}

// stamp identifies the version of a file on disk.
type stamp struct {
	mod  time.Time
	size int64
	err  bool
}

// watcher holds the material of a set of files and reloads it when they change.
type watcher struct {
	files   []string
	every   time.Duration
	load    func() (material, error)
	onError func(error)

	mu      sync.Mutex
	checked time.Time
	stamps  []stamp
	cur     material
}

func newWatcher(o Options, load func() (material, error)) (*watcher, error) {
	w := &watcher{every: o.CheckEvery, load: load, onError: o.OnError}
	if w.every == 0 {
		w.every = DefaultCheckEvery
	}
	for _, f := range []string{o.CertFile, o.KeyFile, o.CAFile} {
		if f != "" {
			w.files = append(w.files, f)
		}
	}
	w.stamps = w.stat()
	m, err := load()
	if err != nil {
		return nil, err
	}
	w.cur, w.checked = m, time.Now()
	return w, nil
}

func (w *watcher) stat() []stamp {
	out := make([]stamp, len(w.files))
	for i, f := range w.files {
		if fi, err := os.Stat(f); err != nil {
			out[i].err = true
		} else {
			out[i] = stamp{mod: fi.ModTime(), size: fi.Size()}
		}
	}
	return out
}

// get returns the material to use now, reloading it first when the files changed.
func (w *watcher) get() material {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := time.Now()
	if w.every > 0 && now.Sub(w.checked) < w.every {
		return w.cur
	}
	w.checked = now
	stamps := w.stat()
	if equalStamps(stamps, w.stamps) {
		return w.cur
	}
	// Remembered even when the load fails, so a broken set is reported once, not at every check.
	w.stamps = stamps
	m, err := w.load()
	if err != nil {
		if w.onError != nil {
			w.onError(fmt.Errorf("reload failed, keeping the previous certificates: %w", err))
		}
		return w.cur
	}
	w.cur = m
	return w.cur
}

func equalStamps(a, b []stamp) bool {
	for i := range a {
		if a[i].err != b[i].err || a[i].size != b[i].size || !a[i].mod.Equal(b[i].mod) {
			return false
		}
	}
	return true
}

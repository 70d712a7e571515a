// Package certs serves the interceptor's TLS material from mounted files, read again when they
// change so that a renewal takes effect without a restart: its key pairs (Store), several read
// from Secrets and one chosen per handshake by the name the client asks for (SNI), without
// touching the connections already open; and CA bundles (Bundle), such as the one the
// certificates of apps served over HTTPS are verified with.
package certs

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
)

// The file names of a key pair in its folder, as a Secret of type kubernetes.io/tls (and
// cert-manager) presents them when mounted as a volume.
const (
	// CertFile holds the certificate chain, leaf first (PEM).
	CertFile = "tls.crt"
	// KeyFile holds the private key of the leaf (PEM).
	KeyFile = "tls.key"
)

// Options configure a Store.
type Options struct {
	// Dirs are the folders of the key pairs, each holding CertFile and KeyFile. The first is the
	// default: it answers clients that send no server name, or one that no pair names. Required.
	Dirs []string
	// Interval is how often the files are checked for changes; 0 means 10s.
	Interval time.Duration
	// Log receives reloads at info level, and failed reloads as errors.
	Log logr.Logger
}

// Store holds the current key pairs and picks one per handshake. Its GetCertificate reads one
// immutable snapshot and takes no lock; Start swaps a new snapshot in when files change.
type Store struct {
	opts Options
	cur  atomic.Pointer[set]
	// files is the raw content each pair was last built from, to tell a change; only Start's
	// goroutine (and New, before it) touches it.
	files []pairFiles
}

// pairFiles is the content of one pair's files.
type pairFiles struct{ cert, key []byte }

// set is an immutable snapshot of the pairs, indexed by the names they are valid for.
type set struct {
	// pairs are the pairs in folder order; the first is the default.
	pairs []*tls.Certificate
	def   *tls.Certificate
	// exact maps a lower-case DNS name to the first pair that names it.
	exact map[string]*tls.Certificate
	// wildcard maps the parent domain of a wildcard name ("example.com" for "*.example.com") to
	// the first pair that names it.
	wildcard map[string]*tls.Certificate
}

// ErrNoKeyPairs is returned by New without any folder.
var ErrNoKeyPairs = errors.New("no TLS key pair folders given")

// New reads every key pair. It fails, naming the folder, when a file is missing or unreadable,
// when a certificate and its key do not match, or when a certificate has expired: the
// interceptor must not start serving TLS it cannot serve.
func New(opts Options) (*Store, error) {
	if len(opts.Dirs) == 0 {
		return nil, ErrNoKeyPairs
	}
	if opts.Interval <= 0 {
		opts.Interval = 10 * time.Second
	}
	s := &Store{opts: opts, files: make([]pairFiles, len(opts.Dirs))}
	pairs := make([]*tls.Certificate, len(opts.Dirs))
	for i, dir := range opts.Dirs {
		f, err := readPair(dir)
		if err != nil {
			return nil, err
		}
		if pairs[i], err = parsePair(dir, f, time.Now()); err != nil {
			return nil, err
		}
		s.files[i] = f
	}
	s.cur.Store(newSet(pairs))
	return s, nil
}

// TLSConfig returns a server configuration that serves the store's pairs with HTTP/2 and
// HTTP/1.1 offered by ALPN, at least minVersion, and, when cipherSuites is not empty, those
// suites only for TLS 1.2 (TLS 1.3's suites are not configurable in Go).
func (s *Store) TLSConfig(minVersion uint16, cipherSuites []uint16) *tls.Config {
	return &tls.Config{
		MinVersion:     minVersion,
		CipherSuites:   cipherSuites,
		GetCertificate: s.GetCertificate,
		NextProtos:     []string{"h2", "http/1.1"},
	}
}

// GetCertificate returns the pair for the handshake's server name: a pair that names it exactly,
// else one whose wildcard covers it (one label deep, as RFC 6125 says), else the default pair.
func (s *Store) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	return s.cur.Load().pick(hello.ServerName), nil
}

func (c *set) pick(name string) *tls.Certificate {
	if name == "" {
		return c.def
	}
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	if p := c.exact[name]; p != nil {
		return p
	}
	if _, parent, ok := strings.Cut(name, "."); ok {
		if p := c.wildcard[parent]; p != nil {
			return p
		}
	}
	return c.def
}

// newSet indexes pairs by the DNS names of their leaf certificates; the first pair that names a
// name wins it.
func newSet(pairs []*tls.Certificate) *set {
	c := &set{pairs: pairs, def: pairs[0], exact: map[string]*tls.Certificate{}, wildcard: map[string]*tls.Certificate{}}
	for _, p := range pairs {
		for _, n := range p.Leaf.DNSNames {
			n = strings.TrimSuffix(strings.ToLower(n), ".")
			if parent, ok := strings.CutPrefix(n, "*."); ok {
				if c.wildcard[parent] == nil {
					c.wildcard[parent] = p
				}
				continue
			}
			if c.exact[n] == nil {
				c.exact[n] = p
			}
		}
	}
	return c
}

// Start checks the files every Interval until ctx ends, and swaps in the pairs read from them
// when any changed. A pair that fails to load (a renewal half written, a key that does not match
// yet) keeps its previous version and is logged; the next check tries again.
func (s *Store) Start(ctx context.Context) error {
	t := time.NewTicker(s.opts.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			s.reload(time.Now())
		}
	}
}

// reload reads every pair again, and publishes a new snapshot when some pair changed and loaded.
func (s *Store) reload(now time.Time) {
	old := s.cur.Load()
	pairs := make([]*tls.Certificate, len(s.opts.Dirs))
	changed := false
	for i, dir := range s.opts.Dirs {
		pairs[i] = old.pairs[i]
		f, err := readPair(dir)
		if err != nil {
			s.opts.Log.Error(err, "keeping the previous TLS key pair", "dir", dir)
			continue
		}
		if bytes.Equal(f.cert, s.files[i].cert) && bytes.Equal(f.key, s.files[i].key) {
			continue
		}
		p, err := parsePair(dir, f, now)
		if err != nil {
			s.opts.Log.Error(err, "keeping the previous TLS key pair", "dir", dir)
			continue
		}
		pairs[i], s.files[i], changed = p, f, true
		s.opts.Log.Info("TLS key pair reloaded", "dir", dir, "names", p.Leaf.DNSNames, "notAfter", p.Leaf.NotAfter)
	}
	if changed {
		s.cur.Store(newSet(pairs))
	}
}

// readPair reads the two files of the pair in dir. Reading through the folder follows the
// symbolic links a Secret volume swaps on update, so a read sees one version of each file.
func readPair(dir string) (pairFiles, error) {
	cert, err := os.ReadFile(filepath.Join(dir, CertFile))
	if err != nil {
		return pairFiles{}, fmt.Errorf("read TLS certificate: %w", err)
	}
	key, err := os.ReadFile(filepath.Join(dir, KeyFile))
	if err != nil {
		return pairFiles{}, fmt.Errorf("read TLS key: %w", err)
	}
	return pairFiles{cert: cert, key: key}, nil
}

// parsePair builds the key pair of dir from its files, and refuses a certificate that has
// expired at now.
func parsePair(dir string, f pairFiles, now time.Time) (*tls.Certificate, error) {
	p, err := tls.X509KeyPair(f.cert, f.key)
	if err != nil {
		return nil, fmt.Errorf("load TLS key pair in %s: %w", dir, err)
	}
	if p.Leaf == nil { // Go fills Leaf since 1.23; parse it when an older default is in force.
		if p.Leaf, err = x509.ParseCertificate(p.Certificate[0]); err != nil {
			return nil, fmt.Errorf("load TLS key pair in %s: %w", dir, err)
		}
	}
	if now.After(p.Leaf.NotAfter) {
		return nil, fmt.Errorf("load TLS key pair in %s: the certificate expired at %s", dir, p.Leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return &p, nil
}

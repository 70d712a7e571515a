package certs

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
)

// Bundle is a CA bundle read from a PEM file, such as the upstream CAs mounted from a ConfigMap
// or Secret, and read again when the file changes, so that a rotated CA is trusted without a
// restart. Pool costs one atomic load.
type Bundle struct {
	file     string
	interval time.Duration
	log      logr.Logger
	pool     atomic.Pointer[x509.CertPool]
	// last is the content the pool was built from; only Start's goroutine touches it after
	// NewBundle.
	last []byte
}

// NewBundle reads file, which must hold at least one PEM certificate, and checks it for
// changes every interval (0 means 10s) once started.
func NewBundle(file string, interval time.Duration, log logr.Logger) (*Bundle, error) {
	if interval <= 0 {
		interval = 10 * time.Second
	}
	b := &Bundle{file: file, interval: interval, log: log}
	pem, pool, err := readBundle(file)
	if err != nil {
		return nil, err
	}
	b.last = pem
	b.pool.Store(pool)
	return b, nil
}

// Pool returns the current pool of the bundle's certificates.
func (b *Bundle) Pool() *x509.CertPool { return b.pool.Load() }

// Start checks the file every interval until ctx ends, and swaps in a new pool when its content
// changed and still holds a certificate; otherwise the previous pool stays, and the failure is
// logged.
func (b *Bundle) Start(ctx context.Context) error {
	t := time.NewTicker(b.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			b.reload()
		}
	}
}

func (b *Bundle) reload() {
	raw, err := os.ReadFile(b.file)
	if err == nil && bytes.Equal(raw, b.last) {
		return
	}
	pem, pool, err := readBundle(b.file)
	if err != nil {
		b.log.Error(err, "keeping the previous CA bundle", "file", b.file)
		return
	}
	b.last = pem
	b.pool.Store(pool)
	b.log.Info("CA bundle reloaded", "file", b.file)
}

// errNoCertificate is returned for a bundle without a PEM certificate.
var errNoCertificate = errors.New("no PEM certificate in it")

// readBundle reads file and returns its content and the pool of its certificates.
func readBundle(file string) ([]byte, *x509.CertPool, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, nil, fmt.Errorf("read CA bundle: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(raw) {
		return nil, nil, fmt.Errorf("read CA bundle %s: %w", file, errNoCertificate)
	}
	return raw, pool, nil
}

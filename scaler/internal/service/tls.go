package service

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"sync"
	"time"
)

// TLSConfig returns the gRPC server's TLS configuration: the key pair in certFile and keyFile,
// read again whenever either file changes (so a renewed Secret takes effect without a restart),
// and, when clientCAFile is set, client certificates required and verified against its CAs.
func TLSConfig(certFile, keyFile, clientCAFile string) (*tls.Config, error) {
	kp := &keyPair{certFile: certFile, keyFile: keyFile}
	if _, err := kp.get(); err != nil {
		return nil, err
	}
	c := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return kp.get() },
	}
	if clientCAFile != "" {
		pem, err := os.ReadFile(clientCAFile)
		if err != nil {
			return nil, fmt.Errorf("read client CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("read client CA file %s: no PEM certificate in it", clientCAFile)
		}
		c.ClientCAs = pool
		c.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return c, nil
}

// keyPair caches a key pair and reloads it when a file's modification time changes.
type keyPair struct {
	certFile, keyFile string

	mu     sync.Mutex
	cert   *tls.Certificate
	stamps [2]time.Time
}

func (k *keyPair) get() (*tls.Certificate, error) {
	var stamps [2]time.Time
	for i, f := range []string{k.certFile, k.keyFile} {
		st, err := os.Stat(f)
		if err != nil {
			return nil, fmt.Errorf("load TLS key pair: %w", err)
		}
		stamps[i] = st.ModTime()
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.cert != nil && stamps == k.stamps {
		return k.cert, nil
	}
	c, err := tls.LoadX509KeyPair(k.certFile, k.keyFile)
	if err != nil {
		if k.cert != nil {
			return k.cert, nil // A half-written renewal: keep serving the previous pair.
		}
		return nil, fmt.Errorf("load TLS key pair %s, %s: %w", k.certFile, k.keyFile, err)
	}
	k.cert, k.stamps = &c, stamps
	return k.cert, nil
}

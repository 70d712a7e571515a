package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
)

// UpstreamTLS says how the forwarder verifies the apps it reaches over HTTPS (a Service port
// with appProtocol https). The request goes to a pod IP, but nobody issues certificates for pod
// IPs: an app's certificate names its Service, so that is the name it is verified against.
type UpstreamTLS struct {
	// Roots returns the CAs an app's certificate must chain to. It is called at each handshake,
	// so a bundle that changes is trusted from the next connection on. Nil, or a nil pool,
	// means the system's roots.
	Roots func() *x509.CertPool
	// ClusterDomain is the cluster's DNS domain; "" means cluster.local.
	ClusterDomain string
}

// serviceNames returns the names a certificate of the Service may be valid for, the one sent as
// the server name (SNI) first: <service>.<namespace>.svc and <service>.<namespace>.svc.<domain>.
func (u UpstreamTLS) serviceNames(namespace, service string) []string {
	domain := u.ClusterDomain
	if domain == "" {
		domain = "cluster.local"
	}
	svc := service + "." + namespace + ".svc"
	return []string{svc, svc + "." + domain}
}

// clientConfig returns the TLS configuration of the connections to the Service's endpoints.
// Built once per Service (see transportKey), never per request. With insecure, the app's
// certificate is not verified at all.
func (u UpstreamTLS) clientConfig(namespace, service string, insecure bool) *tls.Config {
	names := u.serviceNames(namespace, service)
	c := &tls.Config{
		ServerName: names[0],
		// Go verifies against ServerName alone; the certificate may name either Service name,
		// so VerifyConnection does the whole verification instead.
		InsecureSkipVerify: true,
		MinVersion:         tls.VersionTLS12,
	}
	if insecure {
		return c
	}
	roots := u.Roots
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		var pool *x509.CertPool
		if roots != nil {
			pool = roots()
		}
		return verifyServiceCertificate(cs, pool, names)
	}
	return c
}

// verifyServiceCertificate checks that the peer's chain leads to roots (the system's when nil)
// and that its leaf names one of names. Its errors are *tls.CertificateVerificationError.
func verifyServiceCertificate(cs tls.ConnectionState, roots *x509.CertPool, names []string) error {
	if len(cs.PeerCertificates) == 0 {
		return &tls.CertificateVerificationError{Err: errors.New("the upstream sent no certificate")}
	}
	leaf := cs.PeerCertificates[0]
	opts := x509.VerifyOptions{Roots: roots, Intermediates: x509.NewCertPool()}
	for _, c := range cs.PeerCertificates[1:] {
		opts.Intermediates.AddCert(c)
	}
	if _, err := leaf.Verify(opts); err != nil {
		return &tls.CertificateVerificationError{UnverifiedCertificates: cs.PeerCertificates, Err: err}
	}
	for _, n := range names {
		if leaf.VerifyHostname(n) == nil {
			return nil
		}
	}
	return &tls.CertificateVerificationError{
		UnverifiedCertificates: cs.PeerCertificates,
		Err:                    fmt.Errorf("certificate is valid for %s, not for %s", certNames(leaf), strings.Join(names, " or ")),
	}
}

// certNames lists the DNS names of c for messages.
func certNames(c *x509.Certificate) string {
	if len(c.DNSNames) == 0 {
		return "no DNS name"
	}
	return strings.Join(c.DNSNames, ", ")
}

package framework

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// certValidity is how long every generated certificate is valid. A cluster lives for one test
// run; a day leaves room for a kept folder to be inspected.
const certValidity = 24 * time.Hour

// authority is a certificate authority generated for one cluster.
type authority struct {
	cert *x509.Certificate
	key  crypto.Signer
	// certFile is the PEM file of cert.
	certFile string
}

// keyPair names the PEM files of a certificate and its private key.
type keyPair struct {
	certFile, keyFile string
}

// certRequest describes a leaf certificate.
type certRequest struct {
	commonName    string
	organizations []string
	dnsNames      []string
	ips           []net.IP
	server        bool
	client        bool
}

// newKey makes the private key of a certificate: ECDSA P-256, which every component accepts
// and which is far quicker to generate than RSA.
func newKey() (*ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	return key, nil
}

func serialNumber() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("generate serial number: %w", err)
	}
	return n, nil
}

// newAuthority generates a self-signed CA and writes its certificate to dir/name.crt.
func newAuthority(dir, name, commonName string) (*authority, error) {
	key, err := newKey()
	if err != nil {
		return nil, err
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(certValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate %s: %w", commonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate %s: %w", commonName, err)
	}
	a := &authority{cert: cert, key: key, certFile: filepath.Join(dir, name+".crt")}
	if err := writePEM(a.certFile, "CERTIFICATE", der); err != nil {
		return nil, err
	}
	if err := writeKey(filepath.Join(dir, name+".key"), key); err != nil {
		return nil, err
	}
	return a, nil
}

// issue signs a leaf certificate and writes it to dir/name.crt and dir/name.key.
func (a *authority) issue(dir, name string, req certRequest) (keyPair, error) {
	key, err := newKey()
	if err != nil {
		return keyPair{}, err
	}
	serial, err := serialNumber()
	if err != nil {
		return keyPair{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: req.commonName, Organization: req.organizations},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(certValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		DNSNames:     req.dnsNames,
		IPAddresses:  req.ips,
	}
	if req.server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	if req.client {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, key.Public(), a.key)
	if err != nil {
		return keyPair{}, fmt.Errorf("create certificate %s: %w", req.commonName, err)
	}
	kp := keyPair{certFile: filepath.Join(dir, name+".crt"), keyFile: filepath.Join(dir, name+".key")}
	if err := writePEM(kp.certFile, "CERTIFICATE", der); err != nil {
		return keyPair{}, err
	}
	if err := writeKey(kp.keyFile, key); err != nil {
		return keyPair{}, err
	}
	return kp, nil
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("encode key %s: %w", path, err)
	}
	return writePEM(path, "PRIVATE KEY", der)
}

func writePEM(path, blockType string, der []byte) error {
	data := pem.EncodeToMemory(&pem.Block{Type: blockType, Bytes: der})
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// pki is every certificate and key a cluster uses, as files in one folder.
type pki struct {
	dir string
	// ca signs the API server's serving certificate and every client certificate; clients
	// trust it and the API server verifies client certificates with it.
	ca *authority
	// frontProxyCA signs frontProxyClient, the identity the aggregation layer presents to
	// extension API servers such as the KEDA metrics adapter.
	frontProxyCA     *authority
	frontProxyClient keyPair
	apiserver        keyPair
	// saKey signs service-account tokens; saPub verifies them.
	saKey, saPub string
	admin        keyPair
	// controllerManager is the controller manager's client identity
	// (system:kube-controller-manager, bound by the default RBAC policy) and
	// controllerManagerServing its serving certificate.
	controllerManager        keyPair
	controllerManagerServing keyPair
	// kedaCA, kedaTLS: KEDA's operator and metrics adapter authenticate each other over gRPC
	// with mutual TLS from one folder holding ca.crt, tls.crt and tls.key, and the adapter
	// serves the external metrics API with the same pair.
	kedaCA  *authority
	kedaDir string
	// kedaClient is the KEDA components' identity towards the API server.
	kedaClient keyPair
}

// newPKI generates every certificate of a cluster whose control plane listens on cpAddr and
// whose KEDA metrics adapter listens on adapterAddr.
func newPKI(dir string, cpAddr, adapterAddr net.IP) (*pki, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create certificate folder: %w", err)
	}
	p := &pki{dir: dir, kedaDir: filepath.Join(dir, "keda")}
	var err error
	if p.ca, err = newAuthority(dir, "ca", "lobby-e2e-ca"); err != nil {
		return nil, err
	}
	if p.frontProxyCA, err = newAuthority(dir, "front-proxy-ca", "lobby-e2e-front-proxy-ca"); err != nil {
		return nil, err
	}
	if p.frontProxyClient, err = p.frontProxyCA.issue(dir, "front-proxy-client",
		certRequest{commonName: "front-proxy-client", client: true}); err != nil {
		return nil, err
	}
	if p.apiserver, err = p.ca.issue(dir, "apiserver", certRequest{
		commonName: "kube-apiserver",
		dnsNames: []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc",
			"kubernetes.default.svc.cluster.local", "localhost"},
		ips:    []net.IP{cpAddr, net.IPv4(127, 0, 0, 1), serviceIP(1)},
		server: true,
	}); err != nil {
		return nil, err
	}
	if p.admin, err = p.ca.issue(dir, "admin", certRequest{
		commonName: "lobby-e2e-admin", organizations: []string{"system:masters"}, client: true,
	}); err != nil {
		return nil, err
	}
	if p.controllerManager, err = p.ca.issue(dir, "controller-manager", certRequest{
		commonName: "system:kube-controller-manager", client: true,
	}); err != nil {
		return nil, err
	}
	if p.controllerManagerServing, err = p.ca.issue(dir, "controller-manager-serving", certRequest{
		commonName: "kube-controller-manager", dnsNames: []string{"localhost"}, ips: []net.IP{cpAddr}, server: true,
	}); err != nil {
		return nil, err
	}
	// KEDA has no narrower built-in role; it runs as a member of system:masters under its own
	// name, so its requests stay distinguishable in the API server's logs.
	if p.kedaClient, err = p.ca.issue(dir, "keda-client", certRequest{
		commonName: "keda", organizations: []string{"system:masters"}, client: true,
	}); err != nil {
		return nil, err
	}
	saKey, err := newKey()
	if err != nil {
		return nil, err
	}
	p.saKey, p.saPub = filepath.Join(dir, "sa.key"), filepath.Join(dir, "sa.pub")
	if err := writeKey(p.saKey, saKey); err != nil {
		return nil, err
	}
	pub, err := x509.MarshalPKIXPublicKey(saKey.Public())
	if err != nil {
		return nil, fmt.Errorf("encode service-account public key: %w", err)
	}
	if err := writePEM(p.saPub, "PUBLIC KEY", pub); err != nil {
		return nil, err
	}

	if err := os.MkdirAll(p.kedaDir, 0o700); err != nil {
		return nil, fmt.Errorf("create KEDA certificate folder: %w", err)
	}
	if p.kedaCA, err = newAuthority(p.kedaDir, "ca", "KEDA"); err != nil {
		return nil, err
	}
	var dns []string
	for _, svc := range []string{"keda-operator", "keda-metrics-apiserver"} {
		dns = append(dns, svc, svc+".keda", svc+".keda.svc", svc+".keda.svc.cluster.local")
	}
	if _, err = p.kedaCA.issue(p.kedaDir, "tls", certRequest{
		commonName: "keda", dnsNames: dns, ips: []net.IP{cpAddr, adapterAddr}, server: true, client: true,
	}); err != nil {
		return nil, err
	}
	return p, nil
}

// serviceIP returns the n-th address of the Service CIDR (the first is the kubernetes Service).
func serviceIP(n byte) net.IP { return net.IPv4(10, 96, 0, n) }

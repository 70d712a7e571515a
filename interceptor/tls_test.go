package main

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/rest"

	"github.com/lobby-http/lobby/internal/testpki"
)

// tlsConfig returns the default configuration with TLS served from dirs.
func tlsConfig(t *testing.T, dirs ...string) Config {
	t.Helper()
	cfg, err := loadConfig(func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	cfg.ProxyTLSAddr, cfg.ProxyTLSCertDirs = "127.0.0.1:0", dirs
	cfg.DrainDelay = 0
	cfg.PodName = "interceptor-test"
	return cfg
}

// noAPIServer is a Kubernetes client configuration whose server refuses connections: the proxy
// serves (with no routes) whether the informers have synced or not.
var noAPIServer = &rest.Config{Host: "http://127.0.0.1:1"}

// TestBuildRefusesWhatItCannotServe requires the interceptor to stop at start, with an error
// naming the file, when its TLS key pair or its upstream CA bundle cannot be used.
func TestBuildRefusesWhatItCannotServe(t *testing.T) {
	ca := testpki.NewCA(t, "test CA")
	a, b := ca.Issue(t, "a.example.com"), ca.Issue(t, "b.example.com")
	good, mismatched := t.TempDir(), t.TempDir()
	a.WriteSecretDir(t, good)
	testpki.Leaf{CertPEM: a.CertPEM, KeyPEM: b.KeyPEM}.WriteSecretDir(t, mismatched)
	noPEM := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(noPEM, []byte("not PEM"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		change func(*Config)
		want   []string
	}{
		{"a key pair whose key does not match its certificate", func(c *Config) { c.ProxyTLSCertDirs = []string{good, mismatched} },
			[]string{mismatched, "private key does not match public key"}},
		{"a key pair folder that does not exist", func(c *Config) { c.ProxyTLSCertDirs = []string{"/nonexistent"} },
			[]string{"/nonexistent/tls.crt", "no such file"}},
		{"an upstream CA bundle that does not exist", func(c *Config) { c.UpstreamCAFile = "/nonexistent/ca.crt" },
			[]string{"upstream CA bundle", "/nonexistent/ca.crt"}},
		{"an upstream CA bundle without a certificate", func(c *Config) { c.UpstreamCAFile = noPEM },
			[]string{noPEM, "no PEM certificate"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tlsConfig(t, good)
			tc.change(&cfg)
			_, err := build(cfg, logr.Discard(), noAPIServer, prometheus.NewPedanticRegistry(), nil)
			if err == nil {
				t.Fatal("build succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

// TestTLSListenerServesTheProxy runs the interceptor with two key pairs and requires its TLS port
// to answer through the proxy chain (the 404 of no route) over HTTP/2 and HTTP/1.1, with the pair
// the client's server name asks for, at the configured minimum version.
func TestTLSListenerServesTheProxy(t *testing.T) {
	ca := testpki.NewCA(t, "test CA")
	def, shop := t.TempDir(), t.TempDir()
	ca.Issue(t, "lobby.example.com").WriteSecretDir(t, def)
	ca.Issue(t, "*.shop.example.com").WriteSecretDir(t, shop)
	cfg := tlsConfig(t, def, shop)
	cfg.ProxyTLSMinVersion = tls.VersionTLS13
	ic, err := build(cfg, logr.Discard(), noAPIServer, prometheus.NewPedanticRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	listen := func() net.Listener {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return ln
	}
	ic.proxy.Listener, ic.tlsProxy.Listener, ic.adminServer.Listener = listen(), listen(), listen()
	url := "https://" + ic.tlsProxy.Listener.Addr().String() + "/"
	signals, stop := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- ic.run(signals) }()
	t.Cleanup(func() {
		stop()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("the interceptor did not stop within 20s")
		}
	})

	cases := []struct {
		name       string
		serverName string
		http2      bool
		maxVersion uint16
		wantName   string
		wantProto  string
		wantErr    string
	}{
		{name: "an HTTP/2 client gets h2 and the default pair", serverName: "lobby.example.com", http2: true, wantName: "lobby.example.com", wantProto: "HTTP/2.0"},
		{name: "an HTTP/1.1 client gets HTTP/1.1", serverName: "lobby.example.com", wantName: "lobby.example.com", wantProto: "HTTP/1.1"},
		{name: "a server name under the wildcard gets the wildcard's pair", serverName: "cart.shop.example.com", http2: true, wantName: "*.shop.example.com", wantProto: "HTTP/2.0"},
		{name: "a client below the minimum version is refused", serverName: "lobby.example.com", maxVersion: tls.VersionTLS12, wantErr: "protocol version"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tr := &http.Transport{
				TLSClientConfig:   &tls.Config{ServerName: tc.serverName, RootCAs: ca.Pool(), MaxVersion: tc.maxVersion},
				ForceAttemptHTTP2: tc.http2,
			}
			defer tr.CloseIdleConnections()
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
			req.Host = "unrouted.example.com"
			resp, err := tr.RoundTrip(req)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one saying %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusNotFound || resp.Proto != tc.wantProto {
				t.Errorf("got %d over %s, want the proxy's 404 over %s", resp.StatusCode, resp.Proto, tc.wantProto)
			}
			if got := resp.TLS.PeerCertificates[0].DNSNames[0]; got != tc.wantName {
				t.Errorf("served the pair for %s, want the one for %s", got, tc.wantName)
			}
		})
	}
}

package proxy_test

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"

	"github.com/lobby-http/lobby/interceptor/internal/certs"
	"github.com/lobby-http/lobby/interceptor/internal/endpoints"
	"github.com/lobby-http/lobby/interceptor/internal/proxy"
	"github.com/lobby-http/lobby/interceptor/internal/routing"
	"github.com/lobby-http/lobby/internal/testpki"
)

// tlsApp is an app served over HTTPS with one certificate; it records the server names clients
// ask for and counts handshakes.
type tlsApp struct {
	srv        *httptest.Server
	handshakes atomic.Int64
	mu         sync.Mutex
	sni        []string
}

func newTLSApp(t *testing.T, leaf testpki.Leaf) *tlsApp {
	a := &tlsApp{}
	cert := leaf.TLSCertificate(t)
	a.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s over TLS", r.Proto)
	}))
	a.srv.EnableHTTP2 = true
	a.srv.TLS = &tls.Config{GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		a.handshakes.Add(1)
		a.mu.Lock()
		a.sni = append(a.sni, hello.ServerName)
		a.mu.Unlock()
		return &cert, nil
	}}
	a.srv.StartTLS()
	t.Cleanup(a.srv.Close)
	return a
}

// poolOf returns a Roots function that always returns p; nil for a nil pool (system roots).
func poolOf(p *x509.CertPool) func() *x509.CertPool {
	if p == nil {
		return nil
	}
	return func() *x509.CertPool { return p }
}

// TestHTTPSTargetVerifiedAgainstItsService serves the app "app" of namespace "ns" over HTTPS
// with various certificates and requires the forwarder to accept exactly those valid for the
// Service's DNS names and signed by the configured CA, unless the route opts out.
func TestHTTPSTargetVerifiedAgainstItsService(t *testing.T) {
	ca := testpki.NewCA(t, "cluster CA")
	other := testpki.NewCA(t, "some other CA")
	tests := []struct {
		name          string
		leaf          testpki.Leaf
		roots         *x509.CertPool
		clusterDomain string
		skipVerify    bool
		wantCode      int
		wantBody      string
	}{
		{name: "a certificate for <service>.<namespace>.svc from the configured CA is accepted, over HTTP/2",
			leaf: ca.Issue(t, "app.ns.svc"), roots: ca.Pool(), wantCode: http.StatusOK, wantBody: "HTTP/2.0 over TLS"},
		{name: "a certificate for the name in the cluster domain is accepted",
			leaf: ca.Issue(t, "app.ns.svc.cluster.local"), roots: ca.Pool(), wantCode: http.StatusOK, wantBody: "HTTP/2.0 over TLS"},
		{name: "a certificate for the name in a configured cluster domain is accepted",
			leaf: ca.Issue(t, "app.ns.svc.corp.example"), roots: ca.Pool(), clusterDomain: "corp.example", wantCode: http.StatusOK, wantBody: "HTTP/2.0 over TLS"},
		{name: "a certificate for another Service is refused with 502",
			leaf: ca.Issue(t, "other.ns.svc", "other.ns.svc.cluster.local"), roots: ca.Pool(), wantCode: http.StatusBadGateway, wantBody: "bad gateway\n"},
		{name: "a certificate for the same Service in another namespace is refused",
			leaf: ca.Issue(t, "app.other.svc"), roots: ca.Pool(), wantCode: http.StatusBadGateway, wantBody: "bad gateway\n"},
		{name: "a certificate for the name in a cluster domain other than the configured one is refused",
			leaf: ca.Issue(t, "app.ns.svc.corp.example"), roots: ca.Pool(), wantCode: http.StatusBadGateway, wantBody: "bad gateway\n"},
		{name: "a certificate from a CA not in the bundle is refused",
			leaf: other.Issue(t, "app.ns.svc"), roots: ca.Pool(), wantCode: http.StatusBadGateway, wantBody: "bad gateway\n"},
		{name: "without a bundle the system's roots decide, and they do not know the cluster CA",
			leaf: ca.Issue(t, "app.ns.svc"), wantCode: http.StatusBadGateway, wantBody: "bad gateway\n"},
		{name: "a route that opts out accepts a certificate for another name from an unknown CA",
			leaf: other.Issue(t, "localhost"), roots: ca.Pool(), skipVerify: true, wantCode: http.StatusOK, wantBody: "HTTP/2.0 over TLS"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnvWith(t, testr.New(t), proxy.ForwarderOptions{UpstreamTLS: proxy.UpstreamTLS{Roots: poolOf(tc.roots), ClusterDomain: tc.clusterDomain}})
			app := newTLSApp(t, tc.leaf)
			e.mapPod("10.0.0.1", app.srv.Listener.Addr().String())
			route := e.route("tls.test", "app", func(r *routing.Route) { r.InsecureSkipVerify = tc.skipVerify })
			route.Target = e.target("app", endpoints.HTTPS)
			e.ready("app", "10.0.0.1")
			if r := e.fetch(t.Context(), "tls.test"); r.code != tc.wantCode || r.body != tc.wantBody {
				t.Errorf("response = %d %q, want %d %q", r.code, r.body, tc.wantCode, tc.wantBody)
			}
			app.mu.Lock()
			sni := append([]string(nil), app.sni...)
			app.mu.Unlock()
			if len(sni) == 0 || sni[0] != "app.ns.svc" {
				t.Errorf("the app was asked for server names %q, want app.ns.svc", sni)
			}
			wantErrors := 0.0
			if tc.wantCode == http.StatusBadGateway {
				wantErrors = 1
			}
			if got := counter(t, e, "lobby_interceptor_upstream_errors_total", "ns/app", "reason", "certificate"); got != wantErrors {
				t.Errorf("certificate errors counted %v, want %v", got, wantErrors)
			}
		})
	}
}

// TestHTTPSTargetReusesItsConnections sends requests one after the other to an HTTPS app: one
// handshake serves them all, since the transport (and its TLS configuration) is built once per
// Service, not per request.
func TestHTTPSTargetReusesItsConnections(t *testing.T) {
	ca := testpki.NewCA(t, "cluster CA")
	e := newEnvWith(t, testr.New(t), proxy.ForwarderOptions{UpstreamTLS: proxy.UpstreamTLS{Roots: poolOf(ca.Pool())}})
	app := newTLSApp(t, ca.Issue(t, "app.ns.svc"))
	e.mapPod("10.0.0.1", app.srv.Listener.Addr().String())
	route := e.route("tls.test", "app", nil)
	route.Target = e.target("app", endpoints.HTTPS)
	e.ready("app", "10.0.0.1")
	for i := range 20 {
		if r := e.fetch(t.Context(), "tls.test"); r.code != http.StatusOK {
			t.Fatalf("request %d: %d %q", i, r.code, r.body)
		}
	}
	if n := app.handshakes.Load(); n != 1 {
		t.Errorf("%d TLS handshakes for 20 requests in a row, want 1", n)
	}
}

// TestHTTPSTargetTrustsARotatedBundle serves an app whose certificate a second CA signed: the
// forwarder refuses it while its bundle holds the first CA only, and serves it once the bundle
// file also holds the second, without a new forwarder.
func TestHTTPSTargetTrustsARotatedBundle(t *testing.T) {
	first, second := testpki.NewCA(t, "first CA"), testpki.NewCA(t, "second CA")
	file := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(file, first.PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	bundle, err := certs.NewBundle(file, 10*time.Millisecond, testr.New(t))
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = bundle.Start(t.Context()) }()
	e := newEnvWith(t, testr.New(t), proxy.ForwarderOptions{UpstreamTLS: proxy.UpstreamTLS{Roots: bundle.Pool}})
	app := newTLSApp(t, second.Issue(t, "app.ns.svc"))
	e.mapPod("10.0.0.1", app.srv.Listener.Addr().String())
	route := e.route("tls.test", "app", nil)
	route.Target = e.target("app", endpoints.HTTPS)
	e.ready("app", "10.0.0.1")
	if r := e.fetch(t.Context(), "tls.test"); r.code != http.StatusBadGateway {
		t.Fatalf("before the rotation: %d %q, want 502", r.code, r.body)
	}
	if err := os.WriteFile(file, append(append([]byte{}, first.PEM...), second.PEM...), 0o600); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the rotated bundle is trusted", func() bool {
		return e.fetch(t.Context(), "tls.test").code == http.StatusOK
	})
}

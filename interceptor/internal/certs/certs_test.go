package certs_test

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/lobby-http/lobby/interceptor/internal/certs"
	"github.com/lobby-http/lobby/internal/testpki"
)

// newDir writes leaf as a mounted Secret into a fresh folder and returns the folder.
func newDir(t *testing.T, leaf testpki.Leaf) string {
	t.Helper()
	dir := t.TempDir()
	leaf.WriteSecretDir(t, dir)
	return dir
}

func TestGetCertificateBySNI(t *testing.T) {
	ca := testpki.NewCA(t, "test CA")
	def := ca.Issue(t, "default.example.net")
	shop := ca.Issue(t, "shop.example.com", "*.example.org")
	wild := ca.Issue(t, "*.example.com")
	// A later pair naming shop.example.com again loses it to the first.
	later := ca.Issue(t, "shop.example.com")
	s, err := certs.New(certs.Options{Dirs: []string{newDir(t, def), newDir(t, shop), newDir(t, wild), newDir(t, later)}})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		sni  string
		want testpki.Leaf
	}{
		{"a client that sends no server name gets the default pair", "", def},
		{"an exact name gets the pair that names it", "shop.example.com", shop},
		{"names match whatever their case and a trailing dot", "SHOP.Example.COM.", shop},
		{"an exact name wins over a wildcard that covers it too", "shop.example.com", shop},
		{"a name one label under a wildcard gets the wildcard's pair", "api.example.com", wild},
		{"a wildcard in a pair with other names matches", "a.example.org", shop},
		{"a wildcard does not cover names two labels under it", "a.b.example.com", def},
		{"a wildcard does not cover its parent domain", "example.org", def},
		{"a name no pair names gets the default pair", "unknown.test", def},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.GetCertificate(&tls.ClientHelloInfo{ServerName: tc.sni})
			if err != nil {
				t.Fatal(err)
			}
			if !got.Leaf.Equal(tc.want.Cert) {
				t.Errorf("SNI %q got the pair for %v, want the one for %v", tc.sni, got.Leaf.DNSNames, tc.want.Cert.DNSNames)
			}
		})
	}
}

func TestNewRefusesWhatItCannotServe(t *testing.T) {
	ca := testpki.NewCA(t, "test CA")
	good := ca.Issue(t, "good.example.com")
	other := ca.Issue(t, "other.example.com")
	mismatched := t.TempDir()
	testpki.Leaf{CertPEM: good.CertPEM, KeyPEM: other.KeyPEM}.WriteSecretDir(t, mismatched)
	noKey := t.TempDir()
	if err := os.WriteFile(filepath.Join(noKey, certs.CertFile), good.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	expired := newDir(t, ca.IssueUntil(t, time.Now().Add(-time.Minute), "old.example.com"))
	garbage := t.TempDir()
	testpki.Leaf{CertPEM: []byte("not a certificate"), KeyPEM: good.KeyPEM}.WriteSecretDir(t, garbage)

	cases := []struct {
		name string
		dirs []string
		want []string // substrings of the error
	}{
		{"a certificate with another certificate's key is refused, naming its folder", []string{newDir(t, good), mismatched}, []string{mismatched, "private key does not match public key"}},
		{"a folder without its key file is refused, naming the file", []string{noKey}, []string{filepath.Join(noKey, certs.KeyFile)}},
		{"a folder that does not exist is refused", []string{"/nonexistent/tls"}, []string{"/nonexistent/tls/tls.crt"}},
		{"an expired certificate is refused", []string{expired}, []string{expired, "expired"}},
		{"a certificate file without PEM is refused", []string{garbage}, []string{garbage}},
		{"no folder at all is refused", nil, []string{certs.ErrNoKeyPairs.Error()}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := certs.New(certs.Options{Dirs: tc.dirs})
			if err == nil {
				t.Fatal("New succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

// TestReloadKeepsLiveConnections serves HTTPS from a store, keeps a connection open, and swaps
// the mounted Secret as the kubelet does: new handshakes get the new certificate, the open
// connection keeps serving on the old one, and a broken update is ignored.
func TestReloadKeepsLiveConnections(t *testing.T) {
	ca := testpki.NewCA(t, "test CA")
	v1 := ca.Issue(t, "app.example.com")
	v2 := ca.Issue(t, "app.example.com")
	dir := newDir(t, v1)
	s, err := certs.New(certs.Options{Dirs: []string{dir}, Interval: 10 * time.Millisecond, Log: logr.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Start(t.Context()) }()

	ln, err := tls.Listen("tcp", "127.0.0.1:0", s.TLSConfig(tls.VersionTLS12, nil))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") })}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })

	dial := func() *tls.Conn {
		t.Helper()
		c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{ServerName: "app.example.com", RootCAs: ca.Pool(), NextProtos: []string{"http/1.1"}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	served := func(c *tls.Conn) *x509.Certificate { return c.ConnectionState().PeerCertificates[0] }

	live := dial()
	if !served(live).Equal(v1.Cert) {
		t.Fatal("the first connection did not get the first certificate")
	}
	get(t, live)

	v2.WriteSecretDir(t, dir)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if c := dial(); served(c).Equal(v2.Cert) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("new connections did not get the renewed certificate within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The connection opened before the renewal still serves requests.
	get(t, live)
	get(t, live)

	// A broken update (a key that does not match) keeps the renewed pair in service.
	testpki.Leaf{CertPEM: v1.CertPEM, KeyPEM: v2.KeyPEM}.WriteSecretDir(t, dir)
	time.Sleep(100 * time.Millisecond) // Ten checks.
	if c := dial(); !served(c).Equal(v2.Cert) {
		t.Error("a broken update replaced the pair in service")
	}
}

// get sends one request on c and requires a 200.
func get(t *testing.T, c *tls.Conn) {
	t.Helper()
	if _, err := fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: app.example.com\r\n\r\n"); err != nil {
		t.Fatalf("write on the open connection: %v", err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("read on the open connection: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d on the open connection", resp.StatusCode)
	}
}

func TestTLSConfigRestrictsVersionAndCipherSuites(t *testing.T) {
	ca := testpki.NewCA(t, "test CA")
	s, err := certs.New(certs.Options{Dirs: []string{newDir(t, ca.Issue(t, "app.example.com"))}})
	if err != nil {
		t.Fatal(err)
	}
	allowed, other := tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
	cases := []struct {
		name       string
		min        uint16
		suites     []uint16
		clientMax  uint16
		clientOffs []uint16
		wantErr    bool
	}{
		{"a TLS 1.2 client offering an allowed suite is served", tls.VersionTLS12, []uint16{allowed}, tls.VersionTLS12, []uint16{other, allowed}, false},
		{"a TLS 1.2 client offering only other suites is refused", tls.VersionTLS12, []uint16{allowed}, tls.VersionTLS12, []uint16{other}, true},
		{"a TLS 1.2 client is refused when 1.3 is the minimum", tls.VersionTLS13, nil, tls.VersionTLS12, nil, true},
		{"a TLS 1.3 client is served whatever the 1.2 suites", tls.VersionTLS12, []uint16{allowed}, tls.VersionTLS13, nil, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := tls.Listen("tcp", "127.0.0.1:0", s.TLSConfig(tc.min, tc.suites))
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go func() {
				c, err := ln.Accept()
				if err == nil {
					_ = c.(*tls.Conn).Handshake()
					c.Close()
				}
			}()
			c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{
				ServerName: "app.example.com", RootCAs: ca.Pool(), MaxVersion: tc.clientMax, CipherSuites: tc.clientOffs,
			})
			if (err != nil) != tc.wantErr {
				t.Fatalf("handshake error %v, want an error: %v", err, tc.wantErr)
			}
			if err == nil {
				if cs := c.ConnectionState(); tc.clientMax == tls.VersionTLS12 && cs.CipherSuite != allowed {
					t.Errorf("negotiated %s, want %s", tls.CipherSuiteName(cs.CipherSuite), tls.CipherSuiteName(allowed))
				}
				c.Close()
			}
		})
	}
}

func TestBundle(t *testing.T) {
	first, second := testpki.NewCA(t, "first CA"), testpki.NewCA(t, "second CA")
	leaf := second.Issue(t, "app.example.com")
	verifies := func(b *certs.Bundle) bool {
		_, err := leaf.Cert.Verify(x509.VerifyOptions{Roots: b.Pool(), DNSName: "app.example.com"})
		return err == nil
	}
	file := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(file, first.PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := certs.NewBundle(file, 10*time.Millisecond, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = b.Start(t.Context()) }()
	if verifies(b) {
		t.Fatal("a bundle of the first CA trusts the second's certificate")
	}
	// The rotation adds the second CA: it is trusted within a few checks.
	if err := os.WriteFile(file, append(append([]byte{}, first.PEM...), second.PEM...), 0o600); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !verifies(b) {
		if time.Now().After(deadline) {
			t.Fatal("the rotated bundle was not trusted within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A bundle emptied by mistake keeps the last good one.
	if err := os.WriteFile(file, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if !verifies(b) {
		t.Error("an empty bundle replaced the good one")
	}

	for _, tc := range []struct{ name, content, want string }{
		{"a bundle without a certificate is refused at start", "not PEM", "no PEM certificate"},
		{"a bundle that does not exist is refused at start", "", "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := filepath.Join(t.TempDir(), "ca.crt")
			if tc.content != "" {
				if err := os.WriteFile(f, []byte(tc.content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := certs.NewBundle(f, 0, logr.Discard()); err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), f) {
				t.Errorf("NewBundle: %v, want an error naming %s and saying %q", err, f, tc.want)
			}
		})
	}
}

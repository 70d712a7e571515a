//go:build e2e

package system

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/utils/ptr"

	"github.com/lobby-http/lobby/e2e/deploy"
	"github.com/lobby-http/lobby/operator/api/v1alpha1"
)

// TestInterceptorAtItsConnectionCap runs an interceptor configured by the chart with
// interceptor.maxConnections 2. Two kept-alive client connections take both slots; a third
// connection is not refused or reset but waits in the listen backlog, its request unanswered,
// while the admin port and the release's other interceptors answer as usual; when one of the two
// closes, the third is accepted and its request answered 200. The metrics show the cap, the open
// connections and the wait.
func TestInterceptorAtItsConnectionCap(t *testing.T) {
	ns := testNamespace(t)
	ctx := t.Context()
	rel := suite.lobby
	a := deployApp(t, ns, appSpec{name: "capped", replicas: 1, hso: v1alpha1.HTTPScaledObjectSpec{
		Hosts:    []string{"capped.example.com"},
		Replicas: &v1alpha1.ReplicaStruct{Min: ptr.To[int32](1), Max: ptr.To[int32](1)},
	}})
	a.waitReady(t, 1)

	in, err := rel.StartVariant(ctx, "interceptor", deploy.VariantOptions{
		Name:        "cap-" + randomSuffix(),
		ValuesFiles: []string{filepath.Join("testdata", "values.yaml")},
		Set:         map[string]string{"interceptor.maxConnections": "2"},
	})
	if err != nil {
		t.Fatalf("start an interceptor with a cap of 2 connections: %v", err)
	}
	t.Cleanup(func() { _ = in.Process.Stop() })
	metrics := in.URL("admin") + "/metrics"
	proxyAddr := netip.AddrPortFrom(in.Addr, uint16(in.Ports["http"])).String()
	waitRoutingOn(t, []*deploy.Instance{in}, a.key(), 30*time.Second)
	if v, err := scrapeSample(metrics, "lobby_interceptor_proxy_max_connections", nil); err != nil || v != 2 {
		t.Fatalf("lobby_interceptor_proxy_max_connections = %v (%v), want 2 from interceptor.maxConnections", v, err)
	}

	// Two connections, each kept alive after one answered request, take both slots.
	var held []*capConn
	for i := range 2 {
		c := newCapConn(proxyAddr)
		t.Cleanup(c.Close)
		if code, err := c.get(ctx, "capped.example.com", 10*time.Second); err != nil || code != http.StatusOK {
			t.Fatalf("connection %d: status %d, %v; want 200", i+1, code, err)
		}
		held = append(held, c)
	}
	if v, err := scrapeSample(metrics, "lobby_interceptor_proxy_open_connections", nil); err != nil || v != 2 {
		t.Fatalf("lobby_interceptor_proxy_open_connections = %v (%v), want 2", v, err)
	}

	// A third connection completes its handshake in the kernel and sends its request; the
	// interceptor does not take it while both slots are taken. A refused or reset connection
	// would end the request with an error at once.
	third := newCapConn(proxyAddr)
	t.Cleanup(third.Close)
	answered := make(chan capAnswer, 1)
	go func() {
		code, err := third.get(ctx, "capped.example.com", time.Minute)
		answered <- capAnswer{code, err}
	}()
	select {
	case r := <-answered:
		t.Fatalf("the third connection was answered at the cap (status %d, %v); want it to wait", r.code, r.err)
	case <-time.After(time.Second):
	}
	if v, err := scrapeSample(metrics, "lobby_interceptor_proxy_open_connections", nil); err != nil || v != 2 {
		t.Errorf("lobby_interceptor_proxy_open_connections = %v (%v) with a third connection waiting, want 2", v, err)
	}
	if v, err := scrapeSample(metrics, "lobby_interceptor_proxy_connection_waits_total", nil); err != nil || v < 1 {
		t.Errorf("lobby_interceptor_proxy_connection_waits_total = %v (%v), want at least 1", v, err)
	}
	// Only the proxy port is capped: the admin port answers, and so does the release.
	if _, err := queue(in.URL("admin")); err != nil {
		t.Errorf("the admin port at the proxy's cap: %v", err)
	}
	if r := send(ctx, http.MethodGet, rel.Instances("interceptor")[0].URL("http")+"/", "capped.example.com", nil); r.err != nil || r.code != http.StatusOK {
		t.Errorf("the release's interceptor while the variant is at its cap: status %d, %v", r.code, r.err)
	}

	// One slot frees: the waiting connection is taken and its request answered.
	held[0].Close()
	select {
	case r := <-answered:
		if r.err != nil || r.code != http.StatusOK {
			t.Fatalf("the third connection after a slot freed: status %d, %v; want 200", r.code, r.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the third connection was not answered within 30s of a slot freeing")
	}
	// The second connection was never disturbed: it answers again, on the connection it dialled
	// first.
	if code, err := held[1].get(ctx, "capped.example.com", 10*time.Second); err != nil || code != http.StatusOK || held[1].dials.Load() != 1 {
		t.Errorf("the second connection after the wait: status %d, %v, %d dials; want 200 on its one connection", code, err, held[1].dials.Load())
	}
}

// capConn is one client connection, kept alive between requests sent one at a time.
type capConn struct {
	tr    *http.Transport
	hc    *http.Client
	url   string
	dials atomic.Int32
}

type capAnswer struct {
	code int
	err  error
}

// newCapConn returns a client of the proxy at addr that never opens a second connection; its
// first request dials.
func newCapConn(addr string) *capConn {
	c := &capConn{url: "http://" + addr + "/"}
	var d net.Dialer
	c.tr = &http.Transport{MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1, DisableCompression: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c.dials.Add(1)
			return d.DialContext(ctx, network, addr)
		}}
	c.hc = &http.Client{Transport: c.tr}
	return c
}

// get sends GET / for host and reads the whole answer within timeout.
func (c *capConn) get(ctx context.Context, host string, timeout time.Duration) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return getStatus(ctx, c.hc, c.url, host)
}

// Close closes the connection, which is idle between requests.
func (c *capConn) Close() { c.tr.CloseIdleConnections() }

//go:build e2e

package system

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
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
	eventually(t, time.Minute, "the app's pod to be ready", func() error {
		_, ready, err := a.replicas(ctx)
		if err == nil && ready != 1 {
			err = fmt.Errorf("%d ready replicas", ready)
		}
		return err
	})

	b := make([]byte, 3)
	_, _ = rand.Read(b)
	in, err := rel.StartVariant(ctx, "interceptor", deploy.VariantOptions{
		Name:        "cap-" + hex.EncodeToString(b),
		ValuesFiles: []string{filepath.Join("testdata", "values.yaml")},
		Set:         map[string]string{"interceptor.maxConnections": "2"},
	})
	if err != nil {
		t.Fatalf("start an interceptor with a cap of 2 connections: %v", err)
	}
	t.Cleanup(func() { _ = in.Process.Stop() })
	metrics := in.URL("admin") + "/metrics"
	proxyAddr := netip.AddrPortFrom(in.Addr, uint16(in.Ports["http"])).String()
	eventually(t, 30*time.Second, in.Process.Name+" to route "+a.key(), func() error {
		q, err := queue(in.URL("admin"))
		if err == nil {
			if _, ok := q[a.key()]; !ok {
				err = fmt.Errorf("no route yet")
			}
		}
		return err
	})
	if v, err := scrapeSample(metrics, "lobby_interceptor_proxy_max_connections", nil); err != nil || v != 2 {
		t.Fatalf("lobby_interceptor_proxy_max_connections = %v (%v), want 2 from interceptor.maxConnections", v, err)
	}

	// Two connections, each kept alive after one answered request, take both slots.
	var held []*capConn
	for i := range 2 {
		c, err := dialCapConn(proxyAddr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if code, err := c.get("capped.example.com", 10*time.Second); err != nil || code != http.StatusOK {
			t.Fatalf("connection %d: status %d, %v; want 200", i+1, code, err)
		}
		held = append(held, c)
	}
	if v, err := scrapeSample(metrics, "lobby_interceptor_proxy_open_connections", nil); err != nil || v != 2 {
		t.Fatalf("lobby_interceptor_proxy_open_connections = %v (%v), want 2", v, err)
	}

	// A third connection completes its handshake in the kernel and sends its request; the
	// interceptor does not take it while both slots are taken.
	third, err := dialCapConn(proxyAddr)
	if err != nil {
		t.Fatalf("dial a third connection at the cap: %v; want it to wait in the backlog", err)
	}
	t.Cleanup(func() { third.Close() })
	answered := make(chan capAnswer, 1)
	go func() {
		code, err := third.get("capped.example.com", time.Minute)
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
	// The second connection was never disturbed.
	if code, err := held[1].get("capped.example.com", 10*time.Second); err != nil || code != http.StatusOK {
		t.Errorf("the second connection after the wait: status %d, %v; want 200", code, err)
	}
}

// capConn is one client connection that sends HTTP/1.1 requests one at a time and keeps alive.
type capConn struct {
	net.Conn
	r *bufio.Reader
}

type capAnswer struct {
	code int
	err  error
}

func dialCapConn(addr string) (*capConn, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	return &capConn{Conn: c, r: bufio.NewReader(c)}, nil
}

// get sends GET / for host and reads the whole answer within timeout.
func (c *capConn) get(host string, timeout time.Duration) (int, error) {
	if err := c.SetDeadline(time.Now().Add(timeout)); err != nil {
		return 0, err
	}
	req, err := http.NewRequest(http.MethodGet, "http://"+host+"/", nil)
	if err != nil {
		return 0, err
	}
	if err := req.Write(c); err != nil {
		return 0, err
	}
	resp, err := http.ReadResponse(c.r, req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return 0, err
	}
	return resp.StatusCode, nil
}

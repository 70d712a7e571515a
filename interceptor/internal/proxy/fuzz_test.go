package proxy_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/lobby-http/lobby/interceptor/internal/endpoints"
	"github.com/lobby-http/lobby/interceptor/internal/proxy"
	"github.com/lobby-http/lobby/interceptor/internal/routing"
	"github.com/lobby-http/lobby/operator/api/v1alpha1"
)

// fuzzWarmHost and fuzzWarmPrefix are the one route with a ready pod in FuzzRawRequest; the
// other route, fuzzColdHost, has none and holds its requests for a few milliseconds.
const (
	fuzzWarmHost   = "warm.example.com"
	fuzzWarmPrefix = "/app"
	fuzzColdHost   = "cold.example.com"
	fuzzWarmPod    = "10.0.0.1"
)

// fuzzStatuses are the answers the proxy may give to anything a client sends: the app's (200),
// net/http's for requests it cannot parse or will not take (400, 417, 431, 501, 505), and the
// chain's own (404 unrouted, 502, 503 queue full, 504 cold-start timeout).
var fuzzStatuses = []int{200, 400, 404, 417, 431, 501, 502, 503, 504, 505}

// fuzzProxy is the chain as main wires it, behind a server with the interceptor's header limits,
// a real routing table, and a dialer that records every address the proxy asks for.
type fuzzProxy struct {
	env    *env
	table  *routing.Table
	server *httptest.Server

	mu     sync.Mutex
	panics []string // handler panics with their stacks
	dials  []string // addresses dialled other than the warm pod's
	seen   []*http.Request
}

func newFuzzProxy(f *testing.F) *fuzzProxy {
	fp := &fuzzProxy{env: newEnv(f, logr.Discard())}
	e := fp.env
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fp.mu.Lock()
		fp.seen = append(fp.seen, r)
		fp.mu.Unlock()
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "warm")
	}))
	f.Cleanup(backend.Close)
	warmAddr := fmt.Sprintf("%s:%d", fuzzWarmPod, podPort)
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		if addr != warmAddr {
			fp.mu.Lock()
			fp.dials = append(fp.dials, addr)
			fp.mu.Unlock()
			return nil, fmt.Errorf("no pod at %s", addr)
		}
		return (&net.Dialer{}).DialContext(ctx, network, backend.Listener.Addr().String())
	}

	e.target("warm", endpoints.HTTP1)
	e.target("cold", endpoints.HTTP1)
	objs := []*v1alpha1.HTTPScaledObject{
		fuzzObject("warm", []string{fuzzWarmHost}, []string{fuzzWarmPrefix}),
		fuzzObject("cold", []string{fuzzColdHost}, nil),
	}
	table, conflicts := routing.Build(objs, e.targets, e.counts, routing.Defaults{
		ColdStartTimeout:      5 * time.Millisecond,
		ResponseHeaderTimeout: 2 * time.Second,
		MaxPending:            8,
	})
	if table.Len() != 2 || len(conflicts) != 0 {
		f.Fatalf("table has %d routes and %d conflicts, want 2 and 0", table.Len(), len(conflicts))
	}
	fp.table = table
	router := routing.NewRouter()
	router.SetTable(table)
	e.ready("warm", fuzzWarmPod)

	metrics, err := proxy.NewMetrics(prometheus.NewRegistry())
	if err != nil {
		f.Fatal(err)
	}
	fwd, err := proxy.NewForwarder(proxy.ForwarderOptions{Dial: dial, Log: logr.Discard()})
	if err != nil {
		f.Fatal(err)
	}
	chain := proxy.Route(router, metrics, logr.Discard(), nil, nil, fwd, proxy.Count(proxy.Wait(nil, fwd)))
	fp.server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if p := recover(); p != nil && p != http.ErrAbortHandler {
				fp.mu.Lock()
				fp.panics = append(fp.panics, fmt.Sprintf("%v\n%s", p, debug.Stack()))
				fp.mu.Unlock()
				panic(http.ErrAbortHandler)
			}
		}()
		chain.ServeHTTP(w, r)
	}))
	// The interceptor's limits (interceptor/config.go), scaled down so that the fuzzer reaches
	// them: a 4 KiB header block.
	fp.server.Config.MaxHeaderBytes = 4096
	fp.server.Config.ReadHeaderTimeout = time.Second
	fp.server.Config.IdleTimeout = time.Second
	fp.server.Start()
	f.Cleanup(fp.server.Close)
	return fp
}

func fuzzObject(name string, hosts, prefixes []string) *v1alpha1.HTTPScaledObject {
	return &v1alpha1.HTTPScaledObject{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Generation: 1},
		Spec: v1alpha1.HTTPScaledObjectSpec{
			Hosts: hosts, PathPrefixes: prefixes,
			ScaleTargetRef: v1alpha1.ScaleTargetRef{Name: name, Service: name, PortName: "http"},
		},
	}
}

// exchange writes raw to a new connection, half-closes it, and reads every response the proxy
// sends back until it closes the connection.
func (fp *fuzzProxy) exchange(raw []byte) ([]*http.Response, error) {
	conn, err := net.Dial("tcp", fp.server.Listener.Addr().String())
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return nil, err
	}
	if _, err := conn.Write(raw); err != nil && !errors.Is(err, net.ErrClosed) && !isReset(err) {
		return nil, err
	}
	conn.(*net.TCPConn).CloseWrite()
	br := bufio.NewReader(conn)
	var out []*http.Response
	for {
		if _, err := br.Peek(1); err != nil {
			if err == io.EOF || isReset(err) {
				return out, nil
			}
			return out, fmt.Errorf("waiting for a response: %w", err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return out, fmt.Errorf("the proxy sent something that is not an HTTP response: %w", err)
		}
		if _, err := io.Copy(io.Discard, resp.Body); err != nil && !isReset(err) {
			return out, fmt.Errorf("reading a %d response's body: %w", resp.StatusCode, err)
		}
		resp.Body.Close()
		out = append(out, resp)
	}
}

func isReset(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "connection reset") || strings.Contains(err.Error(), "broken pipe"))
}

// FuzzRawRequest writes arbitrary bytes to the proxy as a client and checks what must hold for
// any input: every answer is a well-formed HTTP response with a status the proxy defines, no
// handler panics, the app's pod sees only requests that route to it, the proxy dials no address
// but the pod's, and a normal request to the app is served afterwards.
func FuzzRawRequest(f *testing.F) {
	for _, seed := range []string{
		"GET /app HTTP/1.1\r\nHost: warm.example.com\r\n\r\n",
		"GET /app/x HTTP/1.1\r\nHost: WARM.example.com.:80\r\nConnection: close\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: cold.example.com\r\n\r\n",
		"GET //app/../app HTTP/1.1\r\nHost: warm.example.com\r\n\r\n",
		"GET /%2e%2e/app HTTP/1.1\r\nHost: warm.example.com\r\n\r\n",
		"GET http://127.0.0.1:1/app HTTP/1.1\r\nHost: warm.example.com\r\n\r\n",
		"GET /app HTTP/1.1\r\nHost: warm.example.com\r\nX-Forwarded-Host: 127.0.0.1:1\r\nForwarded: host=127.0.0.1\r\n\r\n",
		"POST /app HTTP/1.1\r\nHost: warm.example.com\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"POST /app HTTP/1.1\r\nHost: warm.example.com\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
		"POST /app HTTP/1.1\r\nHost: warm.example.com\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		"GET /app HTTP/1.1\r\nHost: warm.example.com\r\nX-A: a\nX-B: b\r\n\r\n",
		"GET /app HTTP/1.1\r\nHost: warm.example.com\r\nX-A: a\r\n b\r\n\r\n",
		"GET /app HTTP/1.1\r\n\r\n",
		"GET /app HTTP/1.0\r\n\r\n",
		"GET /app HTTP/1.1\r\nHost: warm.example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
		"CONNECT warm.example.com:80 HTTP/1.1\r\nHost: warm.example.com\r\n\r\n",
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
		"GET /app HTTP/1.1\r\nHost: warm.example.com\r\n\r\nGET / HTTP/1.1\r\nHost: cold.example.com\r\n\r\n",
		"\x00\x01garbage",
	} {
		f.Add([]byte(seed))
	}
	fp := newFuzzProxy(f)
	f.Fuzz(func(t *testing.T, raw []byte) {
		fp.mu.Lock()
		fp.seen, fp.dials = nil, nil
		fp.mu.Unlock()
		resps, err := fp.exchange(raw)
		if err != nil {
			t.Fatalf("request %q: %v", raw, err)
		}
		for _, resp := range resps {
			if !slices.Contains(fuzzStatuses, resp.StatusCode) {
				t.Errorf("request %q: status %d, want one of %v", raw, resp.StatusCode, fuzzStatuses)
			}
		}
		fp.mu.Lock()
		panics, seen, dials := fp.panics, fp.seen, fp.dials
		fp.mu.Unlock()
		if len(panics) > 0 {
			t.Fatalf("request %q: the handler panicked:\n%s", raw, panics[0])
		}
		if len(dials) > 0 {
			t.Errorf("request %q made the proxy dial %v; only the warm pod %s:%d may be dialled", raw, dials, fuzzWarmPod, podPort)
		}
		for _, r := range seen {
			// The pod sees the request as rewritten: Host and path kept, hop-by-hop headers gone,
			// X-Forwarded-* added. It must still be one the warm route takes.
			if got := fp.table.Lookup(r.Host, r.URL.Path, r.Header); got == nil || got.Name != "warm" {
				t.Errorf("request %q reached the warm pod as %s %q host %q, which does not route to it", raw, r.Method, r.URL.Path, r.Host)
			}
			for _, h := range []string{"Keep-Alive", "Proxy-Connection", "Proxy-Authorization", "Trailer"} {
				if v := r.Header.Get(h); v != "" {
					t.Errorf("request %q reached the pod with hop-by-hop header %s: %q", raw, h, v)
				}
			}
			if v := r.Header.Get("Te"); v != "" && v != "trailers" {
				t.Errorf("request %q reached the pod with TE: %q", raw, v)
			}
		}
		resp, err := fp.env.client.Do(mustRequest(t, fp.server.URL+fuzzWarmPrefix, fuzzWarmHost))
		if err != nil {
			t.Fatalf("after request %q, a normal request failed: %v", raw, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("after request %q, a normal request got %d", raw, resp.StatusCode)
		}
	})
}

func mustRequest(t *testing.T, url, host string) *http.Request {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	return req
}

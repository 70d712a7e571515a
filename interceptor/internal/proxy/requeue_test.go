package proxy_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"golang.org/x/net/websocket"

	"github.com/lobby-http/lobby/interceptor/internal/proxy"
	"github.com/lobby-http/lobby/interceptor/internal/routing"
)

// counter returns the value of the counter name for route with the given further labels, or 0
// when there is no such series.
func counter(t *testing.T, e *env, name, route string, labels ...string) float64 {
	t.Helper()
	mfs, err := e.prom.Gather()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"route": route}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if got[k] != v {
					continue series
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// podAddr returns the loopback address the pod ip:podPort maps to.
func (e *env) podAddr(ip string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.pods[fmt.Sprintf("%s:%d", ip, podPort)]
}

// requeues returns lobby_interceptor_requeues_total of the route ns/app.
func requeues(t *testing.T, e *env) float64 {
	return counter(t, e, "lobby_interceptor_requeues_total", "ns/app")
}

// heldAgain waits until the route holds one request and has held requests again.
func heldAgain(t *testing.T, e *env, route *routing.Route) {
	t.Helper()
	eventually(t, "the request is held again", func() bool {
		h, f, _ := countsOf(route)
		return h == 1 && f == 0 && requeues(t, e) >= 1
	})
}

// notAnswered fails t when the request has been answered already.
func notAnswered(t *testing.T, ch <-chan result) {
	t.Helper()
	select {
	case r := <-ch:
		t.Fatalf("answered %d %q (%v) while no endpoint could take it", r.code, r.body, r.err)
	default:
	}
}

func TestRequestToARefusingLastEndpointIsHeldForTheNextPod(t *testing.T) {
	tests := []struct {
		name string
		// ready are the pods of the EndpointSlice update that brings the replacement.
		ready []string
	}{
		{name: "the update drops the dead pod and adds its replacement", ready: []string{"10.0.0.2"}},
		{name: "the update adds the replacement while it still lists the dead pod", ready: []string{"10.0.0.1", "10.0.0.2"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t)
			e.refusing("10.0.0.1")
			e.backend("10.0.0.2", hello("replacement"))
			route := e.route("app.test", "app", nil)
			e.ready("app", "10.0.0.1")

			res := e.fetchAsync(t.Context(), "app.test")
			heldAgain(t, e, route)
			notAnswered(t, res)

			e.ready("app", tc.ready...)
			r := <-res
			if r.err != nil || r.code != http.StatusOK || r.body != "hello from replacement" {
				t.Fatalf("response = %d %q (%v), want 200 from the replacement", r.code, r.body, r.err)
			}
			if d, err := time.ParseDuration(r.header.Get(proxy.ColdStartHeader)); err != nil || d <= 0 {
				t.Errorf("%s = %q, want the time it was held", proxy.ColdStartHeader, r.header.Get(proxy.ColdStartHeader))
			}
			eventually(t, "the route is idle", func() bool { return idle(route) })
			if c := route.Counts.Counts(time.Now()); c.Requests != 1 {
				t.Errorf("requests counted = %d, want 1: holding again is not a new request", c.Requests)
			}
			if n := counter(t, e, "lobby_interceptor_upstream_errors_total", "ns/app", "reason", "connect"); n < 1 {
				t.Errorf("connect errors = %v, want the refused connection counted", n)
			}
			if n := mustCounter(t, e, "ns/app", "200"); n != 1 {
				t.Errorf("requests_total{code=200} = %v, want 1", n)
			}

			// Requests after the replacement are not held.
			if r := e.fetch(t.Context(), "app.test"); r.code != http.StatusOK || r.header.Get(proxy.ColdStartHeader) != "" {
				t.Errorf("next response = %d with %s %q, want 200 without waiting", r.code, proxy.ColdStartHeader, r.header.Get(proxy.ColdStartHeader))
			}
		})
	}
}

func TestRequestToARefusingLastEndpointTimesOutLikeAColdStart(t *testing.T) {
	for _, tc := range timeoutOutcomes {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t)
			e.refusing("10.0.0.1")
			route := e.route("app.test", "app", func(r *routing.Route) { r.ColdStartTimeout = 300 * time.Millisecond })
			tc.change(e, route)
			e.ready("app", "10.0.0.1")

			r := e.fetch(t.Context(), "app.test")
			if r.err != nil || r.code != tc.wantCode || r.body != tc.wantBody {
				t.Fatalf("response = %d %q (%v), want %d %q", r.code, r.body, r.err, tc.wantCode, tc.wantBody)
			}
			if d, err := time.ParseDuration(r.header.Get(proxy.ColdStartHeader)); err != nil || d <= 0 {
				t.Errorf("%s = %q, want the time it was held", proxy.ColdStartHeader, r.header.Get(proxy.ColdStartHeader))
			}
			if n := requeues(t, e); n < 1 {
				t.Errorf("requeues = %v, want at least 1", n)
			}
			if n := mustCounter(t, e, "ns/app", "502"); n != 0 {
				t.Errorf("requests_total{code=502} = %v, want none", n)
			}
			eventually(t, "the route is idle", func() bool { return idle(route) })
		})
	}
}

func TestOneRefusingEndpointOfTwoIsPassedOverWithoutHolding(t *testing.T) {
	var mu sync.Mutex
	dead, deadDials := "", 0
	e := newEnvWith(t, testr.New(t), proxy.ForwarderOptions{Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		mu.Lock()
		if addr == dead {
			deadDials++
		}
		mu.Unlock()
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}})
	e.refusing("10.0.0.1")
	mu.Lock()
	dead = e.podAddr("10.0.0.1")
	mu.Unlock()
	e.backend("10.0.0.2", hello("live"))
	route := e.route("app.test", "app", nil)
	e.ready("app", "10.0.0.1", "10.0.0.2")

	start := time.Now()
	const n = 20
	for i := range n {
		r := e.fetch(t.Context(), "app.test")
		if r.code != http.StatusOK || r.body != "hello from live" || r.header.Get(proxy.ColdStartHeader) != "" {
			t.Fatalf("request %d: response = %d %q with %s %q, want 200 from the live pod, not held",
				i, r.code, r.body, proxy.ColdStartHeader, r.header.Get(proxy.ColdStartHeader))
		}
	}
	elapsed := time.Since(start)
	if n := requeues(t, e); n != 0 {
		t.Errorf("requeues = %v, want none while a live endpoint is left", n)
	}
	// Once refused, the dead pod is passed over; it is tried again at most once per second (when
	// its mark runs out), never by every request.
	mu.Lock()
	got := deadDials
	mu.Unlock()
	if limit := 1 + int(elapsed/time.Second); got > limit {
		t.Errorf("%d connections attempted to the refusing pod in %s for %d requests, want at most %d", got, elapsed, n, limit)
	}
	eventually(t, "the route is idle", func() bool { return idle(route) })
}

// crashingBackend makes the pod ip:podPort a server that, for the first request, calls during
// (which may read part of the body), signals arrived, and, once crash is closed, stops listening
// and resets the connection before any response byte: the pod died in the middle of the request.
func crashingBackend(e *env, ip string, during func(r *http.Request), arrived chan<- struct{}, crash <-chan struct{}) {
	var stop func() error
	srv := e.backend(ip, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/warm" {
			// Answered, to leave a kept-alive connection behind; the body names it.
			fmt.Fprint(w, r.RemoteAddr)
			return
		}
		during(r)
		arrived <- struct{}{}
		<-crash
		_ = stop()
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			panic(err)
		}
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // Close sends a reset, as the kernel does for a killed process.
		}
		conn.Close()
	}))
	stop = srv.Listener.Close
}

func TestPodCrashingMidRequestFailsOnlyThatRequest(t *testing.T) {
	tests := []struct {
		name string
		// body is the crashing request's body; during is what the pod reads before it crashes.
		body   string
		during func(r *http.Request)
		// reused sends a request first, so that the crashing one goes on a kept-alive connection:
		// the transport then sends it again on a new connection, whose dial is refused.
		reused bool
	}{
		{name: "the pod crashes after reading the request", during: func(*http.Request) {}},
		{name: "the pod crashes after reading a request sent on a kept-alive connection", during: func(*http.Request) {}, reused: true},
		{
			name: "the pod crashes after reading part of the request body",
			body: strings.Repeat("x", 64<<10),
			during: func(r *http.Request) {
				if _, err := io.ReadFull(r.Body, make([]byte, 1024)); err != nil {
					panic(err)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t)
			arrived, crash := make(chan struct{}, 1), make(chan struct{})
			var crashConn atomic.Value
			crashingBackend(e, "10.0.0.1", func(r *http.Request) { crashConn.Store(r.RemoteAddr); tc.during(r) }, arrived, crash)
			route := e.route("app.test", "app", nil)
			e.ready("app", "10.0.0.1")
			var warmConn string
			if tc.reused {
				resp, err := e.get(t.Context(), "app.test", "/warm")
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				warmConn = string(b)
			}

			first := make(chan result, 1)
			go func() {
				method, body := http.MethodGet, io.Reader(nil)
				if tc.body != "" {
					method, body = http.MethodPost, strings.NewReader(tc.body)
				}
				req, _ := http.NewRequestWithContext(t.Context(), method, e.proxy.URL, body)
				req.Host = "app.test"
				resp, err := e.client.Do(req)
				if err != nil {
					first <- result{err: err}
					return
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				first <- result{code: resp.StatusCode, body: string(b)}
			}()
			<-arrived
			if tc.reused && crashConn.Load() != warmConn {
				t.Fatalf("the crashing request came on connection %v, the first one on %s: want the same, kept alive", crashConn.Load(), warmConn)
			}
			close(crash)
			select {
			case r := <-first:
				if r.code != http.StatusBadGateway || r.body != "bad gateway\n" {
					t.Fatalf("request at the pod when it crashed: %d %q (%v), want 502", r.code, r.body, r.err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("request at the pod when it crashed: no answer 10s after the crash, want 502 at once")
			}
			if n := requeues(t, e); n != 0 {
				t.Errorf("requeues = %v after the crash, want none: the pod had the request", n)
			}

			// The next request finds the pod gone and waits for its replacement.
			second := e.fetchAsync(t.Context(), "app.test")
			heldAgain(t, e, route)
			notAnswered(t, second)
			e.backend("10.0.0.2", hello("replacement"))
			e.ready("app", "10.0.0.2")
			if r := <-second; r.code != http.StatusOK || r.body != "hello from replacement" {
				t.Fatalf("request after the crash: %d %q (%v), want 200 from the replacement", r.code, r.body, r.err)
			}
			if n := mustCounter(t, e, "ns/app", "502"); n != 1 {
				t.Errorf("requests_total{code=502} = %v, want 1", n)
			}
			eventually(t, "the route is idle", func() bool { return idle(route) })
		})
	}
}

func TestRequestBodyIsDeliveredWholeAfterBeingHeldAgain(t *testing.T) {
	e := newTestEnv(t)
	e.refusing("10.0.0.1")
	e.backend("10.0.0.2", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%d %x", n, h.Sum(nil))
	}))
	route := e.route("app.test", "app", nil)
	e.ready("app", "10.0.0.1")

	body := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB, more than the socket buffers
	sum := sha256.Sum256(body)
	res := make(chan result, 1)
	go func() {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPut, e.proxy.URL, bytes.NewReader(body))
		req.Host = "app.test"
		resp, err := e.client.Do(req)
		if err != nil {
			res <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		res <- result{code: resp.StatusCode, body: string(b)}
	}()
	heldAgain(t, e, route)
	e.ready("app", "10.0.0.2")
	want := fmt.Sprintf("%d %x", len(body), sum)
	if r := <-res; r.code != http.StatusOK || r.body != want {
		t.Fatalf("response = %d %q (%v), want 200 %q: the whole body", r.code, r.body, r.err, want)
	}
	eventually(t, "the route is idle", func() bool { return idle(route) })
}

func TestRequestHeldAgainFindsTheQueueFull(t *testing.T) {
	// The first two connection attempts to the dead pod wait until the test lets them fail, so
	// that the test decides which request is held again first.
	var mu sync.Mutex
	dead, gated := "", 0
	dialing := make(chan chan struct{})
	e := newEnvWith(t, testr.New(t), proxy.ForwarderOptions{Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		mu.Lock()
		gate := addr == dead && gated < 2
		if gate {
			gated++
		}
		mu.Unlock()
		if gate {
			release := make(chan struct{})
			dialing <- release
			<-release
		}
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}})
	e.refusing("10.0.0.1")
	mu.Lock()
	dead = e.podAddr("10.0.0.1")
	mu.Unlock()
	route := e.route("app.test", "app", func(r *routing.Route) { r.MaxPending = 1 })
	e.ready("app", "10.0.0.1")

	first := e.fetchAsync(t.Context(), "app.test")
	releaseFirst := <-dialing
	second := e.fetchAsync(t.Context(), "app.test")
	releaseSecond := <-dialing
	close(releaseSecond)
	eventually(t, "the second request is held again", func() bool { h, _, _ := countsOf(route); return h == 1 })
	close(releaseFirst)
	r := <-first
	if r.code != http.StatusServiceUnavailable || r.header.Get("Retry-After") != "1" {
		t.Fatalf("request held again with the queue full: %d %q Retry-After %q, want 503 with Retry-After",
			r.code, r.body, r.header.Get("Retry-After"))
	}
	if n := counter(t, e, "lobby_interceptor_queue_rejections_total", "ns/app"); n != 1 {
		t.Errorf("queue rejections = %v, want 1", n)
	}
	e.backend("10.0.0.2", hello("replacement"))
	e.ready("app", "10.0.0.2")
	if r := <-second; r.code != http.StatusOK {
		t.Fatalf("held request: %d %q (%v), want 200", r.code, r.body, r.err)
	}
	eventually(t, "the route is idle", func() bool { return idle(route) })
}

func TestEndpointThatRefusedOnceIsTriedAgain(t *testing.T) {
	// The pod is healthy but refuses its first connection: the request is held, and when the
	// suspect mark runs out it tries the pod again and is served, with no EndpointSlice update.
	var mu sync.Mutex
	dials := 0
	e := newEnvWith(t, testr.New(t), proxy.ForwarderOptions{Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		mu.Lock()
		dials++
		n := dials
		mu.Unlock()
		if n == 1 {
			return nil, &net.OpError{Op: "dial", Net: network, Err: syscall.ECONNREFUSED}
		}
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}})
	e.backend("10.0.0.1", hello("app"))
	route := e.route("app.test", "app", nil)
	e.ready("app", "10.0.0.1")

	r := e.fetch(t.Context(), "app.test")
	if r.err != nil || r.code != http.StatusOK || r.body != "hello from app" {
		t.Fatalf("response = %d %q (%v), want 200 from the pod", r.code, r.body, r.err)
	}
	if r.header.Get(proxy.ColdStartHeader) == "" {
		t.Errorf("no %s: the request should have been held", proxy.ColdStartHeader)
	}
	if n := requeues(t, e); n != 1 {
		t.Errorf("requeues = %v, want 1", n)
	}
	if ep := route.Target.Snapshot().Endpoints[0]; ep.Suspect() {
		t.Errorf("the pod is still suspect after it answered")
	}
	// Answered, the pod is no longer passed over.
	if r := e.fetch(t.Context(), "app.test"); r.code != http.StatusOK || r.header.Get(proxy.ColdStartHeader) != "" {
		t.Errorf("next response = %d with %s %q, want 200 without waiting", r.code, proxy.ColdStartHeader, r.header.Get(proxy.ColdStartHeader))
	}
	eventually(t, "the route is idle", func() bool { return idle(route) })
}

func TestWebSocketToARefusingLastEndpointIsHeldForTheNextPod(t *testing.T) {
	e := newTestEnv(t)
	e.refusing("10.0.0.1")
	release := make(chan struct{})
	e.backend("10.0.0.2", websocket.Handler(func(c *websocket.Conn) {
		var msg string
		for websocket.Message.Receive(c, &msg) == nil {
			if err := websocket.Message.Send(c, "echo "+msg); err != nil {
				return
			}
		}
		<-release
	}))
	route := e.route("ws.test", "app", nil)
	e.ready("app", "10.0.0.1")

	type dialed struct {
		ws  *websocket.Conn
		err error
	}
	done := make(chan dialed, 1)
	go func() {
		cfg, err := websocket.NewConfig("ws://ws.test/chat", "http://ws.test/")
		if err != nil {
			done <- dialed{err: err}
			return
		}
		conn, err := net.Dial("tcp", e.proxy.Listener.Addr().String())
		if err != nil {
			done <- dialed{err: err}
			return
		}
		ws, err := websocket.NewClient(cfg, conn)
		if err != nil {
			conn.Close()
		}
		done <- dialed{ws, err}
	}()
	heldAgain(t, e, route)
	e.ready("app", "10.0.0.2")
	d := <-done
	if d.err != nil {
		t.Fatalf("upgrade through the proxy: %v", d.err)
	}
	if err := websocket.Message.Send(d.ws, "hi"); err != nil {
		t.Fatal(err)
	}
	var got string
	if err := websocket.Message.Receive(d.ws, &got); err != nil || got != "echo hi" {
		t.Fatalf("received %q (%v), want %q", got, err, "echo hi")
	}
	if h, f, o := countsOf(route); h != 0 || f != 0 || o != 1 {
		t.Errorf("while open: held %d, in flight %d, open %d; want only one open", h, f, o)
	}
	d.ws.Close()
	close(release)
	eventually(t, "the route is idle", func() bool { return idle(route) })
}

func TestPodKilledDuringAColdStartLeavesItsRequestsHeldForTheReplacement(t *testing.T) {
	const n = 20
	e := newTestEnv(t)
	e.refusing("10.0.0.1")
	e.backend("10.0.0.2", hello("replacement"))
	route := e.route("app.test", "app", func(r *routing.Route) { r.MaxPending = n })

	results := make([]<-chan result, n)
	for i := range results {
		results[i] = e.fetchAsync(t.Context(), "app.test")
	}
	eventually(t, "every request is held", func() bool { h, _, _ := countsOf(route); return h == n })
	// The pod turns ready and is killed before the requests released to it connect: those that
	// try it are held again, and those that pick after it refused keep waiting.
	e.ready("app", "10.0.0.1")
	eventually(t, "every request is held again", func() bool {
		h, f, _ := countsOf(route)
		return h == n && f == 0 && requeues(t, e) >= 1 && route.Target.Snapshot().Endpoints[0].Suspect()
	})
	e.ready("app", "10.0.0.2")
	for i, ch := range results {
		if r := <-ch; r.code != http.StatusOK || r.body != "hello from replacement" {
			t.Errorf("request %d: %d %q (%v), want 200 from the replacement", i, r.code, r.body, r.err)
		}
	}
	eventually(t, "the route is idle", func() bool { return idle(route) })
	if c := route.Counts.Counts(time.Now()); c.Requests != n {
		t.Errorf("requests counted = %d, want %d", c.Requests, n)
	}
}

package proxy_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/net/websocket"

	"github.com/lobby-http/lobby/interceptor/internal/endpoints"
	"github.com/lobby-http/lobby/interceptor/internal/proxy"
	"github.com/lobby-http/lobby/interceptor/internal/routing"
)

// hello answers every request with "hello from <name>".
func hello(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s", name)
	})
}

// result is a response read in full, or the error of getting it.
type result struct {
	code   int
	body   string
	header http.Header
	err    error
}

func (e *env) fetch(ctx context.Context, host string) result {
	resp, err := e.get(ctx, host, "/")
	if err != nil {
		return result{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return result{code: resp.StatusCode, body: string(b), header: resp.Header, err: err}
}

// fetchAsync sends a request in the background and returns where its result will arrive.
func (e *env) fetchAsync(ctx context.Context, host string) <-chan result {
	ch := make(chan result, 1)
	go func() { ch <- e.fetch(ctx, host) }()
	return ch
}

func TestHeldThenReady(t *testing.T) {
	e := newTestEnv(t)
	e.backend("10.0.0.1", hello("app"))
	route := e.route("app.test", "app", nil)

	res := e.fetchAsync(t.Context(), "app.test")
	eventually(t, "the request is held", func() bool { h, _, _ := countsOf(route); return h == 1 })
	e.ready("app", "10.0.0.1")
	r := <-res
	if r.err != nil || r.code != http.StatusOK || r.body != "hello from app" {
		t.Fatalf("response = %d %q (%v), want 200 from the app", r.code, r.body, r.err)
	}
	if d, err := time.ParseDuration(r.header.Get(proxy.ColdStartHeader)); err != nil || d <= 0 {
		t.Errorf("%s = %q, want a positive duration", proxy.ColdStartHeader, r.header.Get(proxy.ColdStartHeader))
	}
	eventually(t, "the route is idle", func() bool { return idle(route) })

	// A request that does not wait gets no cold-start header.
	if r := e.fetch(t.Context(), "app.test"); r.code != http.StatusOK || r.header.Get(proxy.ColdStartHeader) != "" {
		t.Errorf("warm response = %d with %s %q, want 200 without it", r.code, proxy.ColdStartHeader, r.header.Get(proxy.ColdStartHeader))
	}
	if c := route.Counts.Counts(time.Now()); c.Requests != 2 {
		t.Errorf("requests = %d, want 2", c.Requests)
	}
}

// timeoutOutcome is what a request gets when its cold-start timeout ends, for a route changed by
// change.
type timeoutOutcome struct {
	name     string
	change   func(e *env, r *routing.Route)
	wantCode int
	wantBody string
}

// timeoutOutcomes are the answers to a request whose cold-start timeout ended, whatever kept it
// waiting: 504, the failover, the placeholder, and the placeholder when the failover has no
// endpoint either.
var timeoutOutcomes = []timeoutOutcome{
	{
		name:     "without a failover or placeholder it gets 504",
		change:   func(*env, *routing.Route) {},
		wantCode: http.StatusGatewayTimeout, wantBody: "gateway timeout\n",
	},
	{
		name: "it goes to the failover service",
		change: func(e *env, r *routing.Route) {
			e.backend("10.0.0.9", hello("failover"))
			r.Failover = e.target("failover", endpoints.HTTP1)
			e.ready("failover", "10.0.0.9")
		},
		wantCode: http.StatusOK, wantBody: "hello from failover",
	},
	{
		name: "it gets the placeholder",
		change: func(_ *env, r *routing.Route) {
			r.Placeholder = &routing.Placeholder{StatusCode: 202, Body: []byte("starting up"),
				Header: http.Header{"Content-Type": {"text/plain"}, "Content-Length": {"11"}, "Refresh": {"5"}}}
		},
		wantCode: http.StatusAccepted, wantBody: "starting up",
	},
	{
		name: "a failover without endpoints falls back to the placeholder",
		change: func(e *env, r *routing.Route) {
			r.Failover = e.target("failover", endpoints.HTTP1)
			r.Placeholder = &routing.Placeholder{StatusCode: 503, Body: []byte("soon"),
				Header: http.Header{"Content-Length": {"4"}}}
		},
		wantCode: http.StatusServiceUnavailable, wantBody: "soon",
	},
}

func TestHeldThenTimeout(t *testing.T) {
	for _, tc := range timeoutOutcomes {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t)
			route := e.route("app.test", "app", func(r *routing.Route) { r.ColdStartTimeout = 50 * time.Millisecond })
			tc.change(e, route)
			r := e.fetch(t.Context(), "app.test")
			if r.err != nil || r.code != tc.wantCode || r.body != tc.wantBody {
				t.Fatalf("response = %d %q (%v), want %d %q", r.code, r.body, r.err, tc.wantCode, tc.wantBody)
			}
			if d, err := time.ParseDuration(r.header.Get(proxy.ColdStartHeader)); err != nil || d < 50*time.Millisecond {
				t.Errorf("%s = %q, want at least the timeout", proxy.ColdStartHeader, r.header.Get(proxy.ColdStartHeader))
			}
			eventually(t, "the route is idle", func() bool { return idle(route) })
		})
	}
}

func TestQueueFull(t *testing.T) {
	tests := []struct {
		name     string
		overflow routing.Overflow
		wantCode int
		wantBody string
		wantHdr  string
	}{
		{name: "a full queue answers 503 with Retry-After", overflow: routing.OverflowReject,
			wantCode: http.StatusServiceUnavailable, wantBody: "service unavailable: too many requests waiting, retry later\n", wantHdr: "1"},
		{name: "a full queue answers the placeholder when the route says so", overflow: routing.OverflowPlaceholder,
			wantCode: http.StatusTeapot, wantBody: "full"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t)
			e.backend("10.0.0.1", hello("app"))
			route := e.route("app.test", "app", func(r *routing.Route) {
				r.MaxPending = 2
				r.Overflow = tc.overflow
				r.Placeholder = &routing.Placeholder{StatusCode: http.StatusTeapot, Body: []byte("full"), Header: http.Header{"Content-Length": {"4"}}}
			})
			first, second := e.fetchAsync(t.Context(), "app.test"), e.fetchAsync(t.Context(), "app.test")
			eventually(t, "two requests are held", func() bool { h, _, _ := countsOf(route); return h == 2 })
			r := e.fetch(t.Context(), "app.test")
			if r.code != tc.wantCode || r.body != tc.wantBody || r.header.Get("Retry-After") != tc.wantHdr {
				t.Errorf("third response = %d %q Retry-After %q, want %d %q %q", r.code, r.body, r.header.Get("Retry-After"), tc.wantCode, tc.wantBody, tc.wantHdr)
			}
			e.ready("app", "10.0.0.1")
			for _, ch := range []<-chan result{first, second} {
				if r := <-ch; r.code != http.StatusOK {
					t.Errorf("held response = %d %q (%v), want 200", r.code, r.body, r.err)
				}
			}
			eventually(t, "the route is idle", func() bool { return idle(route) })
			want := `
# HELP lobby_interceptor_queue_rejections_total Requests refused because the route's hold queue was full.
# TYPE lobby_interceptor_queue_rejections_total counter
lobby_interceptor_queue_rejections_total{route="ns/app"} 1
`
			if err := testutil.GatherAndCompare(e.prom, strings.NewReader(want), "lobby_interceptor_queue_rejections_total"); err != nil {
				t.Error(err)
			}
			code := fmt.Sprint(tc.wantCode)
			if n := mustCounter(t, e, "ns/app", code); n != 1 {
				t.Errorf("requests_total{code=%s} = %v, want 1", code, n)
			}
		})
	}
}

func TestHeldLimitOverAllRoutes(t *testing.T) {
	e := newTestEnv(t)
	e.counts.LimitHeld(2)
	e.backend("10.0.0.1", hello("a"))
	a := e.route("a.test", "a", nil)
	b := e.route("b.test", "b", nil)
	first, second := e.fetchAsync(t.Context(), "a.test"), e.fetchAsync(t.Context(), "b.test")
	eventually(t, "two requests are held", func() bool { return e.counts.Held() == 2 })
	r := e.fetch(t.Context(), "b.test")
	if r.code != http.StatusServiceUnavailable || r.header.Get("Retry-After") != "1" {
		t.Errorf("a third request over all routes got %d Retry-After %q, want 503 with Retry-After 1", r.code, r.header.Get("Retry-After"))
	}
	want := `
# HELP lobby_interceptor_held_limit_rejections_total Requests refused because the interceptor held its cap of requests over all routes (LOBBY_MAX_HELD_REQUESTS), by the route they were for.
# TYPE lobby_interceptor_held_limit_rejections_total counter
lobby_interceptor_held_limit_rejections_total{route="ns/a"} 0
lobby_interceptor_held_limit_rejections_total{route="ns/b"} 1
# HELP lobby_interceptor_queue_rejections_total Requests refused because the route's hold queue was full.
# TYPE lobby_interceptor_queue_rejections_total counter
lobby_interceptor_queue_rejections_total{route="ns/a"} 0
lobby_interceptor_queue_rejections_total{route="ns/b"} 0
`
	if err := testutil.GatherAndCompare(e.prom, strings.NewReader(want), "lobby_interceptor_held_limit_rejections_total", "lobby_interceptor_queue_rejections_total"); err != nil {
		t.Error(err)
	}
	// A warm route is not held, so the cap does not touch it.
	e.ready("a", "10.0.0.1")
	if r := <-first; r.code != http.StatusOK {
		t.Errorf("the held request for a got %d, want 200", r.code)
	}
	if r := e.fetch(t.Context(), "a.test"); r.code != http.StatusOK {
		t.Errorf("a warm request got %d, want 200", r.code)
	}
	e.backend("10.0.0.2", hello("b"))
	e.ready("b", "10.0.0.2")
	if r := <-second; r.code != http.StatusOK {
		t.Errorf("the held request for b got %d, want 200", r.code)
	}
	eventually(t, "nothing is held", func() bool { return e.counts.Held() == 0 && idle(a) && idle(b) })
}

// mustCounter returns the value of lobby_interceptor_requests_total for route and code.
func mustCounter(t *testing.T, e *env, route, code string) float64 {
	t.Helper()
	mfs, err := e.prom.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "lobby_interceptor_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["route"] == route && labels["code"] == code {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func TestClientGivesUpWhileHeld(t *testing.T) {
	e := newTestEnv(t)
	route := e.route("app.test", "app", nil)
	// Warm everything up that lives on (the proxy's listener goroutines) before counting.
	if r := e.fetch(t.Context(), "nobody.test"); r.code != http.StatusNotFound {
		t.Fatalf("warm-up = %d, want 404", r.code)
	}
	before := runtime.NumGoroutine()

	ctx, cancel := context.WithCancel(t.Context())
	res := e.fetchAsync(ctx, "app.test")
	eventually(t, "the request is held", func() bool { h, _, _ := countsOf(route); return h == 1 })
	cancel()
	if r := <-res; !errors.Is(r.err, context.Canceled) {
		t.Fatalf("client result = %d %v, want its own cancellation", r.code, r.err)
	}
	eventually(t, "the route is idle", func() bool { return idle(route) })
	eventually(t, "the client is counted as gone", func() bool { return mustCounter(t, e, "ns/app", "499") == 1 })
	want := `
# HELP lobby_interceptor_client_gone_total Requests whose client went away before the response headers were sent, held ones included.
# TYPE lobby_interceptor_client_gone_total counter
lobby_interceptor_client_gone_total{route="ns/app"} 1
`
	if err := testutil.GatherAndCompare(e.prom, strings.NewReader(want), "lobby_interceptor_client_gone_total"); err != nil {
		t.Error(err)
	}
	settleGoroutines(t, before)
}

func TestUnknownHost(t *testing.T) {
	e := newTestEnv(t)
	e.route("app.test", "app", nil)
	r := e.fetch(t.Context(), "other.test")
	if r.code != http.StatusNotFound || r.body != "not found\n" || !strings.HasPrefix(r.header.Get("Content-Type"), "text/plain") {
		t.Errorf("response = %d %q %q, want a plain 404", r.code, r.body, r.header.Get("Content-Type"))
	}
	if n := mustCounter(t, e, "", "404"); n != 1 {
		t.Errorf("requests_total{route=\"\",code=404} = %v, want 1", n)
	}
}

func TestRequestHeaders(t *testing.T) {
	e := newTestEnv(t)
	got := make(chan http.Header, 1)
	var gotHost string
	e.backend("10.0.0.1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotHost = r.Host
		got <- r.Header.Clone()
	}))
	e.route("app.test", "app", nil)
	e.ready("app", "10.0.0.1")

	tests := []struct {
		name  string
		set   http.Header
		check func(h http.Header) string
	}{
		{
			name: "a direct request gets X-Forwarded-For, -Host and -Proto and loses hop-by-hop headers",
			set:  http.Header{"Connection": {"X-Secret"}, "X-Secret": {"1"}, "Keep-Alive": {"timeout=5"}},
			check: func(h http.Header) string {
				if h.Get("X-Forwarded-For") != "127.0.0.1" || h.Get("X-Forwarded-Host") != "app.test" || h.Get("X-Forwarded-Proto") != "http" {
					return fmt.Sprintf("forwarded headers = %q %q %q", h.Get("X-Forwarded-For"), h.Get("X-Forwarded-Host"), h.Get("X-Forwarded-Proto"))
				}
				if h.Get("X-Secret") != "" || h.Get("Keep-Alive") != "" {
					return "hop-by-hop headers were forwarded"
				}
				return ""
			},
		},
		{
			name: "a request through an ingress keeps its forwarded host and proto and extends the client chain",
			set:  http.Header{"X-Forwarded-For": {"203.0.113.7, 10.1.0.1"}, "X-Forwarded-Host": {"public.example"}, "X-Forwarded-Proto": {"https"}},
			check: func(h http.Header) string {
				if h.Get("X-Forwarded-For") != "203.0.113.7, 10.1.0.1, 127.0.0.1" || h.Get("X-Forwarded-Host") != "public.example" || h.Get("X-Forwarded-Proto") != "https" {
					return fmt.Sprintf("forwarded headers = %q %q %q", h.Get("X-Forwarded-For"), h.Get("X-Forwarded-Host"), h.Get("X-Forwarded-Proto"))
				}
				return ""
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, e.proxy.URL+"/p?q=1", nil)
			req.Host = "app.test"
			for k, v := range tc.set {
				req.Header[k] = v
			}
			resp, err := e.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			h := <-got
			if gotHost != "app.test" {
				t.Errorf("Host = %q, want app.test", gotHost)
			}
			if msg := tc.check(h); msg != "" {
				t.Error(msg)
			}
		})
	}
}

func TestUpstreamFailures(t *testing.T) {
	t.Run("a refused connection is retried on another endpoint, with the body", func(t *testing.T) {
		e := newTestEnv(t)
		e.refusing("10.0.0.1")
		e.backend("10.0.0.2", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			fmt.Fprintf(w, "got %s", b)
		}))
		route := e.route("app.test", "app", nil)
		e.ready("app", "10.0.0.1", "10.0.0.2")
		// Two random picks land on the refusing endpoint first about half of the time.
		for i := range 20 {
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, e.proxy.URL, strings.NewReader(fmt.Sprint("body ", i)))
			req.Host = "app.test"
			resp, err := e.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || string(b) != fmt.Sprint("got body ", i) {
				t.Fatalf("request %d: response = %d %q, want 200 with its body", i, resp.StatusCode, b)
			}
		}
		eventually(t, "the route is idle", func() bool { return idle(route) })
		for _, ep := range route.Target.Snapshot().Endpoints {
			if ep.InFlight() != 0 {
				t.Errorf("endpoint %s has %d in flight after all requests", ep.Host, ep.InFlight())
			}
		}
	})

	t.Run("slow response headers get 504", func(t *testing.T) {
		e := newTestEnv(t)
		e.backend("10.0.0.1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-time.After(10 * time.Second):
			}
		}))
		route := e.route("app.test", "app", func(r *routing.Route) { r.ResponseHeaderTimeout = 50 * time.Millisecond })
		e.ready("app", "10.0.0.1")
		if r := e.fetch(t.Context(), "app.test"); r.code != http.StatusGatewayTimeout {
			t.Errorf("response = %d %q, want 504", r.code, r.body)
		}
		eventually(t, "the route is idle", func() bool { return idle(route) })
	})

	t.Run("an exchange longer than the request timeout gets 504", func(t *testing.T) {
		e := newTestEnv(t)
		e.backend("10.0.0.1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			<-r.Context().Done()
		}))
		e.route("app.test", "app", func(r *routing.Route) { r.RequestTimeout = 50 * time.Millisecond })
		e.ready("app", "10.0.0.1")
		if r := e.fetch(t.Context(), "app.test"); r.code != http.StatusGatewayTimeout {
			t.Errorf("response = %d %q, want 504", r.code, r.body)
		}
	})
}

func TestWebSocket(t *testing.T) {
	e := newTestEnv(t)
	release := make(chan struct{})
	e.backend("10.0.0.1", websocket.Handler(func(c *websocket.Conn) {
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

	cfg, err := websocket.NewConfig("ws://ws.test/chat", "http://ws.test/")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", e.proxy.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	ws, err := websocket.NewClient(cfg, conn)
	if err != nil {
		t.Fatalf("upgrade through the proxy: %v", err)
	}
	for _, msg := range []string{"one", "two"} {
		if err := websocket.Message.Send(ws, msg); err != nil {
			t.Fatal(err)
		}
		var got string
		if err := websocket.Message.Receive(ws, &got); err != nil || got != "echo "+msg {
			t.Fatalf("received %q (%v), want %q", got, err, "echo "+msg)
		}
	}
	if h, f, o := countsOf(route); h != 0 || f != 0 || o != 1 || !route.Counts.Busy() {
		t.Errorf("while open: held %d, in flight %d, open %d; want only one open", h, f, o)
	}
	ws.Close()
	close(release)
	eventually(t, "the route is idle", func() bool { return idle(route) })
	if n := mustCounter(t, e, "ns/app", "101"); n != 1 {
		t.Errorf("requests_total{code=101} = %v, want 1", n)
	}
}

// h2cClient speaks HTTP/2 over clear text with prior knowledge.
func h2cClient() *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: &p}}
}

func TestH2CWithTrailers(t *testing.T) {
	e := newTestEnv(t)
	e.backend("10.0.0.1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor != 2 {
			http.Error(w, "want HTTP/2, got "+r.Proto, http.StatusHTTPVersionNotSupported)
			return
		}
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Trailer", "Grpc-Status")
		w.WriteHeader(http.StatusOK)
		fmt.Fprintf(w, "reply to %s over %s", b, r.Proto)
		w.Header().Set("Grpc-Status", "0")
	}))
	route := e.route("grpc.test", "app", func(r *routing.Route) {})
	route.Target = e.target("app", endpoints.H2C)
	e.ready("app", "10.0.0.1")

	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, e.proxy.URL+"/pkg.Svc/Call", strings.NewReader("ping"))
	req.Host = "grpc.test"
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("Te", "trailers")
	resp, err := h2cClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || string(b) != "reply to ping over HTTP/2.0" || resp.ProtoMajor != 2 {
		t.Fatalf("response = %s %d %q, want HTTP/2 200 with the reply", resp.Proto, resp.StatusCode, b)
	}
	if got := resp.Trailer.Get("Grpc-Status"); got != "0" {
		t.Errorf("trailer Grpc-Status = %q, want 0", got)
	}
}

func TestServerSentEvents(t *testing.T) {
	e := newTestEnv(t)
	next := make(chan struct{})
	e.backend("10.0.0.1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		rc := http.NewResponseController(w)
		for i := range 3 {
			fmt.Fprintf(w, "data: event %d\n\n", i)
			if err := rc.Flush(); err != nil {
				return
			}
			select {
			case <-next:
			case <-r.Context().Done():
				return
			}
		}
	}))
	route := e.route("sse.test", "app", nil)
	e.ready("app", "10.0.0.1")
	resp, err := e.get(t.Context(), "sse.test", "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	for i := range 3 {
		// The backend sends the next event only once this one has arrived.
		line, err := br.ReadString('\n')
		if err != nil || line != fmt.Sprintf("data: event %d\n", i) {
			t.Fatalf("line = %q (%v), want event %d", line, err, i)
		}
		if _, err := br.ReadString('\n'); err != nil {
			t.Fatal(err)
		}
		if _, f, _ := countsOf(route); f != 1 {
			t.Errorf("in flight while streaming = %d, want 1", f)
		}
		next <- struct{}{}
	}
}

func TestLargeStreamingBody(t *testing.T) {
	e := newTestEnv(t)
	const size = 32 << 20
	e.backend("10.0.0.1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		w.Header().Set("X-Received", fmt.Sprint(n))
		_, _ = io.CopyN(w, zeros{}, size)
	}))
	e.route("big.test", "app", nil)
	e.ready("app", "10.0.0.1")
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPut, e.proxy.URL, io.LimitReader(zeros{}, size))
	req.Host = "big.test"
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil || n != size || resp.Header.Get("X-Received") != fmt.Sprint(size) {
		t.Errorf("sent %s and got %d bytes back (%v), want %d each way", resp.Header.Get("X-Received"), n, err, size)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// pacedDialer opens connections after a delay and records how many it opened and how many were
// being opened at once at most.
type pacedDialer struct {
	delay time.Duration

	mu                 sync.Mutex
	now, most, dialled int
}

func (d *pacedDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	d.mu.Lock()
	d.now++
	d.dialled++
	d.most = max(d.most, d.now)
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		d.now--
		d.mu.Unlock()
	}()
	time.Sleep(d.delay)
	return (&net.Dialer{}).DialContext(ctx, network, addr)
}

func (d *pacedDialer) counts() (most, dialled int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.most, d.dialled
}

// getAll sends n GETs for host at once and fails t unless every one is answered 200.
func getAll(t *testing.T, e *env, host string, n int) {
	t.Helper()
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			resp, err := e.get(t.Context(), host, "/")
			if err != nil {
				t.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("status %d", resp.StatusCode)
			}
		})
	}
	wg.Wait()
}

func TestDialsToOneEndpointArePacedWithoutCappingItsConnections(t *testing.T) {
	d := &pacedDialer{delay: 20 * time.Millisecond}
	e := newEnvWith(t, testr.New(t), proxy.ForwarderOptions{Dial: d.dial, MaxDialsPerHost: 2})
	// Every request stays at the app until all ten are there, so each needs a connection of its
	// own: pacing must delay dials, never refuse them or bound the connections.
	var arrived sync.WaitGroup
	arrived.Add(10)
	e.backend("10.0.0.1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived.Done()
		arrived.Wait()
	}))
	e.route("app.test", "app", nil)
	e.ready("app", "10.0.0.1")
	getAll(t, e, "app.test", 10)
	if most, dialled := d.counts(); most > 2 || dialled != 10 {
		t.Errorf("%d dials at most at once and %d in all; want at most 2 at once and 10 in all", most, dialled)
	}
}

func TestRequestsReleasedTogetherShareConnectionsAsTheyFree(t *testing.T) {
	d := &pacedDialer{delay: 50 * time.Millisecond}
	e := newEnvWith(t, testr.New(t), proxy.ForwarderOptions{Dial: d.dial, MaxDialsPerHost: 1})
	e.backend("10.0.0.1", hello("app"))
	route := e.route("app.test", "app", nil)
	done := make(chan struct{})
	go func() {
		defer close(done)
		getAll(t, e, "app.test", 20)
	}()
	eventually(t, "every request is held", func() bool { h, _, _ := countsOf(route); return h == 20 })
	e.ready("app", "10.0.0.1")
	<-done
	// The first connection answers the others long before a second dial could finish; the dials
	// that waited for their slot meanwhile are dropped.
	if _, dialled := d.counts(); dialled >= 20 {
		t.Errorf("%d connections opened for 20 requests released together, want fewer", dialled)
	}
}

func TestNegativeForwarderOptionsAreRefused(t *testing.T) {
	for _, opts := range []proxy.ForwarderOptions{{MaxDialsPerHost: -1}, {MaxIdleConnsPerHost: -1}, {IdleConnTimeout: -time.Second}} {
		if _, err := proxy.NewForwarder(opts); err == nil || !strings.Contains(err.Error(), "must not be negative") {
			t.Errorf("NewForwarder(%+v) = %v, want an error naming the negative option", opts, err)
		}
	}
}

func TestUpgradeOtherThanWebSocketIsForwardedAsAPlainRequest(t *testing.T) {
	tests := []struct {
		name        string
		upgrade     string
		wantUpgrade string // what the app sees in Upgrade
		wantCode    int
	}{
		{name: "An h2c upgrade reaches the app as an ordinary request.", upgrade: "h2c", wantCode: http.StatusOK},
		{name: "An unknown protocol reaches the app as an ordinary request.", upgrade: "tls/1.3, foo", wantCode: http.StatusOK},
		{name: "A WebSocket offered beside h2c is the only protocol forwarded.", upgrade: "h2c, websocket", wantUpgrade: "websocket", wantCode: http.StatusSwitchingProtocols},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t)
			// The app switches to whatever it is offered, as an h2c-capable server would.
			seen := make(chan string, 1)
			e.backend("10.0.0.1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				seen <- r.Header.Get("Upgrade")
				if up := r.Header.Get("Upgrade"); up != "" {
					w.Header().Set("Connection", "Upgrade")
					w.Header().Set("Upgrade", up)
					w.WriteHeader(http.StatusSwitchingProtocols)
					return
				}
				w.WriteHeader(http.StatusOK)
			}))
			e.route("up.test", "app", nil)
			e.ready("app", "10.0.0.1")

			conn, err := net.Dial("tcp", e.proxy.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: up.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: %s\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n", tc.upgrade)
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.wantCode {
				t.Errorf("status = %d, want %d", resp.StatusCode, tc.wantCode)
			}
			if got := <-seen; got != tc.wantUpgrade {
				t.Errorf("the app saw Upgrade %q, want %q", got, tc.wantUpgrade)
			}
		})
	}
}

package proxy_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/lobby-http/lobby/interceptor/internal/counts"
	"github.com/lobby-http/lobby/interceptor/internal/endpoints"
	"github.com/lobby-http/lobby/interceptor/internal/proxy"
	"github.com/lobby-http/lobby/interceptor/internal/routing"
)

// ns is the namespace of every test object.
const ns = "ns"

// podPort is the container port every test EndpointSlice announces.
const podPort = 8080

// env is a proxy chain wired as main wires it, with the targets' ready addresses published the
// way the EndpointSlice store publishes them, and a dialer that maps pod addresses to loopback
// backends.
type env struct {
	t       testing.TB
	targets *targets
	counts  *counts.Registry
	prom    *prometheus.Registry
	// activations counts the routes' idle→busy edges, each of which would wake a target.
	activations atomic.Int64
	proxy       *httptest.Server
	// client talks HTTP/1.1 to the proxy and keeps no idle connections.
	client *http.Client

	mu     sync.Mutex
	routes map[string]*routing.Route // by host, for the fixed router
	pods   map[string]string         // pod "ip:port" → loopback address
	// router, when set, replaces the fixed host → route map.
	router proxy.Router
	// tracer, when set before the proxy starts (newTracedEnv), traces the chain.
	tracer trace.Tracer
}

// routerFunc adapts a function to proxy.Router.
type routerFunc func(*http.Request) *routing.Route

func (f routerFunc) Route(r *http.Request) *routing.Route { return f(r) }

func newEnv(t testing.TB, log logr.Logger) *env { return newEnvWith(t, log, proxy.ForwarderOptions{}) }

// newEnvWith is newEnv with forwarder options. Log is the env's; Dial, when set, is called with
// the loopback address the pod address maps to.
func newEnvWith(t testing.TB, log logr.Logger, opts proxy.ForwarderOptions) *env {
	return newEnvFull(t, log, opts, nil, nil)
}

// newEnvChain is newEnvWith with a stage between Wait and the forwarder, as main adds optional
// ones; nil adds none.
func newEnvChain(t testing.TB, log logr.Logger, opts proxy.ForwarderOptions, stage func(proxy.ForwardHandler) proxy.ForwardHandler) *env {
	return newEnvFull(t, log, opts, nil, stage)
}

// newTracedEnv is newEnv with the chain traced by tracer.
func newTracedEnv(t testing.TB, log logr.Logger, tracer trace.Tracer) *env {
	return newEnvFull(t, log, proxy.ForwarderOptions{}, tracer, nil)
}

// newEnvFull builds the env with forwarder options, a tracer (nil traces nothing) and a stage
// between Wait and the forwarder (nil adds none).
func newEnvFull(t testing.TB, log logr.Logger, opts proxy.ForwarderOptions, tracer trace.Tracer, stage func(proxy.ForwardHandler) proxy.ForwardHandler) *env {
	e := &env{
		tracer:  tracer,
		t:       t,
		targets: newTargets(),
		prom:    prometheus.NewPedanticRegistry(),
		routes:  map[string]*routing.Route{},
		pods:    map[string]string{},
	}
	e.counts = counts.NewRegistry(func(*counts.Route) { e.activations.Add(1) }, nil)
	next := opts.Dial
	if next == nil {
		next = (&net.Dialer{}).DialContext
	}
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		e.mu.Lock()
		real, ok := e.pods[addr]
		e.mu.Unlock()
		if !ok {
			return nil, fmt.Errorf("test dialer: no backend for %s", addr)
		}
		return next(ctx, network, real)
	}
	metrics, err := proxy.NewMetrics(e.prom)
	if err != nil {
		t.Fatal(err)
	}
	opts.Dial, opts.Log = dial, log
	fwd, err := proxy.NewForwarder(opts)
	if err != nil {
		t.Fatal(err)
	}
	router := routerFunc(func(r *http.Request) *routing.Route {
		e.mu.Lock()
		rt, custom := e.routes[r.Host], e.router
		e.mu.Unlock()
		if custom != nil {
			return custom.Route(r)
		}
		return rt
	})
	var last proxy.ForwardHandler = fwd
	if stage != nil {
		last = stage(fwd)
	}
	e.proxy = httptest.NewUnstartedServer(proxy.Route(router, metrics, log, nil, e.tracer, fwd,
		proxy.Count(proxy.Wait(nil, last))))
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	e.proxy.Config.Protocols = &p
	e.proxy.Start()
	t.Cleanup(e.proxy.Close)
	e.client = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	return e
}

func newTestEnv(t *testing.T) *env { return newEnv(t, testr.New(t)) }

// backend starts an HTTP server for h and makes it the pod ip:podPort. h2c servers also speak
// HTTP/2 over clear text.
func (e *env) backend(ip string, h http.Handler) *httptest.Server {
	s := httptest.NewUnstartedServer(h)
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	s.Config.Protocols = &p
	s.Start()
	e.t.Cleanup(s.Close)
	e.mapPod(ip, s.Listener.Addr().String())
	return s
}

// refusing makes the pod ip:podPort an address where connections are refused.
func (e *env) refusing(ip string) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	e.mapPod(ip, addr)
}

func (e *env) mapPod(ip, addr string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.pods[fmt.Sprintf("%s:%d", ip, podPort)] = addr
}

// target returns the Target of Service svc's port "http", spoken to with p.
func (e *env) target(svc string, p endpoints.Protocol) *endpoints.Target {
	return e.targets.declare(svc, p)
}

// ready publishes the given ready pod IPs, at podPort, as every target of Service svc's.
func (e *env) ready(svc string, ips ...string) {
	addrs := make([]netip.AddrPort, 0, len(ips))
	for _, ip := range ips {
		addrs = append(addrs, netip.AddrPortFrom(netip.MustParseAddr(ip), podPort))
	}
	e.targets.publish(svc, addrs)
}

// targets hands out one endpoints.Target per Service port, as the EndpointSlice store does for
// the routing table, and publishes to all the targets of a Service the pods a test makes ready.
// Every Service of the tests is in namespace ns and has one port, so its targets, whatever port
// they name, share its ready pods and its protocol.
type targets struct {
	mu    sync.Mutex
	byKey map[targetKey]*endpoints.Target
	svcs  map[string]*testService
}

type targetKey struct {
	namespace, service string
	port               int32
	portName           string
}

// testService is what a test declared of a Service: its protocol and its ready pods.
type testService struct {
	proto endpoints.Protocol
	ready []netip.AddrPort
}

var _ routing.Targets = (*targets)(nil)

func newTargets() *targets {
	return &targets{byKey: map[targetKey]*endpoints.Target{}, svcs: map[string]*testService{}}
}

// Target returns the target of a Service port, with the Service's ready pods.
func (ts *targets) Target(namespace, service string, port int32, portName string) *endpoints.Target {
	if port > 0 {
		portName = ""
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	k := targetKey{namespace, service, port, portName}
	t := ts.byKey[k]
	if t == nil {
		t = endpoints.NewTarget(namespace, service, port, portName)
		ts.byKey[k] = t
		if s := ts.svcs[service]; s != nil && namespace == ns {
			t.Publish(s.proto, s.ready)
		}
	}
	return t
}

// declare records Service svc's protocol and returns the target of its port "http".
func (ts *targets) declare(svc string, p endpoints.Protocol) *endpoints.Target {
	ts.mu.Lock()
	s := ts.svcs[svc]
	if s == nil {
		s = &testService{}
		ts.svcs[svc] = s
	}
	s.proto = p
	ts.mu.Unlock()
	ts.publish(svc, nil)
	return ts.Target(ns, svc, 0, "http")
}

// publish makes addrs the ready pods of Service svc, on every target of it.
func (ts *targets) publish(svc string, addrs []netip.AddrPort) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	s := ts.svcs[svc]
	if s == nil {
		s = &testService{}
		ts.svcs[svc] = s
	}
	if addrs != nil {
		s.ready = addrs
	}
	for k, t := range ts.byKey {
		if k.namespace == ns && k.service == svc {
			t.Publish(s.proto, s.ready)
		}
	}
}

// route adds a route for host to Service svc, with the given changes to its defaults.
func (e *env) route(host, svc string, change func(*routing.Route)) *routing.Route {
	r := &routing.Route{
		Key:                   ns + "/" + svc,
		Namespace:             ns,
		Name:                  svc,
		Target:                e.target(svc, endpoints.HTTP1),
		ColdStartTimeout:      10 * time.Second,
		ResponseHeaderTimeout: 10 * time.Second,
		MaxPending:            100,
		Counts:                e.counts.Route(ns+"/"+svc, time.Minute, time.Second),
	}
	if change != nil {
		change(r)
	}
	e.mu.Lock()
	e.routes[host] = r
	e.mu.Unlock()
	return r
}

// get sends a GET for host to the proxy.
func (e *env) get(ctx context.Context, host, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.proxy.URL+path, nil)
	if err != nil {
		return nil, err
	}
	req.Host = host
	return e.client.Do(req)
}

// eventually polls cond until it holds, failing the test after 10s.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// countsOf returns the route's counts now.
func countsOf(r *routing.Route) (held, inFlight, open int64) {
	c := r.Counts.Counts(time.Now())
	return c.Held, c.InFlight, c.Open
}

// idle reports whether the route's counters are back to zero.
func idle(r *routing.Route) bool {
	h, f, o := countsOf(r)
	return h == 0 && f == 0 && o == 0 && !r.Counts.Busy()
}

// settleGoroutines waits until no more goroutines run than before, failing the test with their
// stacks after 10s.
func settleGoroutines(t *testing.T, before int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines still run, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// readAll returns the response body as a string.
func readAll(resp *http.Response) string {
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

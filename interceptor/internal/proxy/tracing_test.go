package proxy_test

import (
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/lobby-http/lobby/interceptor/internal/routing"
)

// traced is a test env whose chain records spans in memory, and whose apps record the trace
// headers they receive.
type traced struct {
	*env
	spans *tracetest.InMemoryExporter

	mu      sync.Mutex
	headers []http.Header // trace headers the apps received, in order
}

func newTraced(t *testing.T) *traced {
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans), sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.AlwaysSample())))
	t.Cleanup(func() { _ = tp.Shutdown(t.Context()) })
	return &traced{env: newTracedEnv(t, testr.New(t), tp.Tracer("test")), spans: spans}
}

// app starts a backend at ip that records the trace headers it gets.
func (tr *traced) app(ip string) {
	tr.backend(ip, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tr.mu.Lock()
		tr.headers = append(tr.headers, http.Header{"Traceparent": r.Header["Traceparent"], "Tracestate": r.Header["Tracestate"]})
		tr.mu.Unlock()
		_, _ = w.Write([]byte("ok"))
	}))
}

func (tr *traced) lastHeaders() http.Header {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if len(tr.headers) == 0 {
		return nil
	}
	return tr.headers[len(tr.headers)-1]
}

// request sends a GET for host with header.
func (tr *traced) request(t *testing.T, host string, header http.Header) int {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, tr.proxy.URL+"/orders", nil)
	req.Host = host
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := tr.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// byName returns the ended spans called name.
func (tr *traced) byName(name string) []tracetest.SpanStub {
	var out []tracetest.SpanStub
	for _, s := range tr.spans.GetSpans() {
		if s.Name == name {
			out = append(out, s)
		}
	}
	return out
}

// attrs returns a span's attributes by key.
func attrs(s tracetest.SpanStub) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes {
		m[kv.Key] = kv.Value
	}
	return m
}

// checkAttrs fails t unless s has each of want.
func checkAttrs(t *testing.T, s tracetest.SpanStub, want ...attribute.KeyValue) {
	t.Helper()
	got := attrs(s)
	for _, w := range want {
		if v, ok := got[w.Key]; !ok || v != w.Value {
			t.Errorf("span %q: %s = %v (set: %v), want %v", s.Name, w.Key, v.Emit(), ok, w.Value.Emit())
		}
	}
}

const (
	clientTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	clientSpan  = "00f067aa0ba902b7"
)

func TestTracedWarmRequestContinuesTheClientsTrace(t *testing.T) {
	tr := newTraced(t)
	tr.app("10.0.0.1")
	tr.route("app.test", "app", nil)
	tr.ready("app", "10.0.0.1")

	code := tr.request(t, "app.test", http.Header{
		"Traceparent": {"00-" + clientTrace + "-" + clientSpan + "-01"},
		"Tracestate":  {"vendor=opaque"},
	})
	if code != http.StatusOK {
		t.Fatalf("status %d", code)
	}
	spans := tr.byName("GET ns/app")
	if len(spans) != 1 || len(tr.spans.GetSpans()) != 1 {
		t.Fatalf("spans %v, want one named GET ns/app and no hold span", tr.spans.GetSpans().Snapshots())
	}
	s := spans[0]
	if s.SpanContext.TraceID().String() != clientTrace || s.Parent.SpanID().String() != clientSpan || !s.Parent.IsRemote() {
		t.Errorf("span in trace %s with parent %s, want trace %s, parent %s from the client", s.SpanContext.TraceID(), s.Parent.SpanID(), clientTrace, clientSpan)
	}
	if s.SpanKind != trace.SpanKindServer {
		t.Errorf("kind %v, want server", s.SpanKind)
	}
	checkAttrs(t, s,
		attribute.String("lobby.route", "ns/app"),
		attribute.String("http.request.method", "GET"),
		attribute.String("server.address", "app.test"),
		attribute.String("url.path", "/orders"),
		attribute.Int("http.response.status_code", 200),
		attribute.Int("lobby.upstream.status_code", 200),
		attribute.Bool("lobby.held", false),
		attribute.String("lobby.endpoint", "10.0.0.1:8080"),
		attribute.Int("lobby.connect_retries", 0),
		attribute.Int("lobby.requeues", 0),
	)
	// The app gets the interceptor's span as its parent, in the client's trace, with the
	// client's tracestate.
	h := tr.lastHeaders()
	sc := trace.SpanContextFromContext(propagation.TraceContext{}.Extract(t.Context(), propagation.HeaderCarrier(h)))
	if sc.TraceID().String() != clientTrace || sc.SpanID() != s.SpanContext.SpanID() || !sc.IsSampled() {
		t.Errorf("the app got traceparent %q, want trace %s with parent %s, sampled", h.Get("Traceparent"), clientTrace, s.SpanContext.SpanID())
	}
	if got := h.Get("Tracestate"); got != "vendor=opaque" {
		t.Errorf("the app got tracestate %q, want the client's", got)
	}
}

func TestTracedHeldRequestHasAHoldSpan(t *testing.T) {
	tr := newTraced(t)
	tr.app("10.0.0.1")
	route := tr.route("app.test", "app", nil)
	res := make(chan int, 1)
	go func() { res <- tr.request(t, "app.test", nil) }()
	eventually(t, "the request is held", func() bool { h, _, _ := countsOf(route); return h == 1 })
	time.Sleep(20 * time.Millisecond)
	tr.ready("app", "10.0.0.1")
	if code := <-res; code != http.StatusOK {
		t.Fatalf("status %d", code)
	}
	server, holds := tr.byName("GET ns/app"), tr.byName("hold")
	if len(server) != 1 || len(holds) != 1 {
		t.Fatalf("spans %v, want the request's and one hold", tr.spans.GetSpans().Snapshots())
	}
	s, h := server[0], holds[0]
	if h.Parent.SpanID() != s.SpanContext.SpanID() || h.SpanContext.TraceID() != s.SpanContext.TraceID() {
		t.Errorf("the hold span's parent is %s, want the request's span %s", h.Parent.SpanID(), s.SpanContext.SpanID())
	}
	held := h.EndTime.Sub(h.StartTime)
	if held < 20*time.Millisecond || h.StartTime.Before(s.StartTime) || h.EndTime.After(s.EndTime) {
		t.Errorf("the hold span lasts %v from %v, want at least 20ms within the request's span", held, h.StartTime)
	}
	checkAttrs(t, h, attribute.String("lobby.hold.outcome", "ready"))
	checkAttrs(t, s, attribute.Bool("lobby.held", true), attribute.Int("http.response.status_code", 200))
	if v := attrs(s)["lobby.hold.duration_seconds"].AsFloat64(); v < 0.02 {
		t.Errorf("lobby.hold.duration_seconds = %v, want at least 0.02", v)
	}
	// Without a traceparent from the client, the request starts a trace, which the app joins.
	if s.Parent.SpanID().IsValid() {
		t.Errorf("the request's span has parent %s, want none", s.Parent.SpanID())
	}
	if sc := trace.SpanContextFromContext(propagation.TraceContext{}.Extract(t.Context(), propagation.HeaderCarrier(tr.lastHeaders()))); sc.SpanID() != s.SpanContext.SpanID() {
		t.Errorf("the app's parent span is %s, want %s", sc.SpanID(), s.SpanContext.SpanID())
	}
}

func TestTracedTimeoutEndsTheHoldInError(t *testing.T) {
	tr := newTraced(t)
	tr.route("app.test", "app", func(r *routing.Route) { r.ColdStartTimeout = 50 * time.Millisecond })
	if code := tr.request(t, "app.test", nil); code != http.StatusGatewayTimeout {
		t.Fatalf("status %d, want 504", code)
	}
	server, holds := tr.byName("GET ns/app"), tr.byName("hold")
	if len(server) != 1 || len(holds) != 1 {
		t.Fatalf("spans %v, want the request's and one hold", tr.spans.GetSpans().Snapshots())
	}
	checkAttrs(t, holds[0], attribute.String("lobby.hold.outcome", "timeout"))
	if holds[0].Status.Code != codes.Error || server[0].Status.Code != codes.Error {
		t.Errorf("statuses %v and %v, want errors", holds[0].Status, server[0].Status)
	}
	checkAttrs(t, server[0], attribute.Int("http.response.status_code", 504), attribute.Bool("lobby.held", true))
	if _, ok := attrs(server[0])["lobby.upstream.status_code"]; ok {
		t.Error("an upstream status on a request that never reached the app")
	}
}

func TestTracedRetryOnARefusedEndpointIsCounted(t *testing.T) {
	tr := newTraced(t)
	tr.refusing("10.0.0.1")
	tr.app("10.0.0.2")
	tr.route("app.test", "app", nil)
	tr.ready("app", "10.0.0.1", "10.0.0.2")
	// Each request picks either endpoint first; once one tries the refusing one, it is retried
	// on the other (and the refusing one is passed over for a while).
	for i := 0; i < 40; i++ {
		if code := tr.request(t, "app.test", nil); code != http.StatusOK {
			t.Fatalf("status %d", code)
		}
		for _, s := range tr.byName("GET ns/app") {
			if attrs(s)["lobby.connect_retries"].AsInt64() == 1 {
				checkAttrs(t, s, attribute.String("lobby.endpoint", "10.0.0.2:8080"), attribute.Int("http.response.status_code", 200))
				return
			}
		}
	}
	t.Fatal("no request of 40 was retried after a refused connection")
}

func TestTracedUnroutedRequestIsNotAnError(t *testing.T) {
	tr := newTraced(t)
	if code := tr.request(t, "nobody.test", nil); code != http.StatusNotFound {
		t.Fatalf("status %d", code)
	}
	spans := tr.byName("GET")
	if len(spans) != 1 || spans[0].Status.Code == codes.Error {
		t.Fatalf("spans %v, want one named GET, not in error", tr.spans.GetSpans().Snapshots())
	}
	checkAttrs(t, spans[0], attribute.Int("http.response.status_code", 404))
}

func TestUntracedChainPassesTheClientsTraceThrough(t *testing.T) {
	e := newTestEnv(t)
	var got http.Header
	e.backend("10.0.0.1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got = r.Header.Clone() }))
	e.route("app.test", "app", nil)
	e.ready("app", "10.0.0.1")
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, e.proxy.URL, nil)
	req.Host = "app.test"
	parent := "00-" + clientTrace + "-" + clientSpan + "-01"
	req.Header.Set("Traceparent", parent)
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got.Get("Traceparent") != parent {
		t.Errorf("the app got traceparent %q, want the client's %q untouched", got.Get("Traceparent"), parent)
	}
}

package proxy_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/lobby-http/lobby/interceptor/internal/endpoints"
	"github.com/lobby-http/lobby/interceptor/internal/routing"
	"github.com/lobby-http/lobby/internal/httpso"
	"github.com/lobby-http/lobby/operator/api/v1beta1"
)

// interceptorRoute is an InterceptorRoute named and backed by Service svc, for hosts, created at
// created, changed by change.
func interceptorRoute(svc string, created time.Time, hosts []string, change func(*v1beta1.InterceptorRouteSpec)) *v1beta1.InterceptorRoute {
	ir := &v1beta1.InterceptorRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: svc, CreationTimestamp: metav1.NewTime(created)},
		Spec: v1beta1.InterceptorRouteSpec{
			Target:        v1beta1.TargetRef{Service: svc, PortName: "http"},
			Rules:         []v1beta1.RoutingRule{{Hosts: hosts}},
			ScalingMetric: v1beta1.ScalingMetricSpec{Concurrency: &v1beta1.ConcurrencyTargetSpec{TargetValue: 10}},
		},
	}
	if change != nil {
		change(&ir.Spec)
	}
	return ir
}

func staticRoute(path string, mode v1beta1.StaticRouteResponseMode, code int32, body string) v1beta1.StaticRoute {
	return v1beta1.StaticRoute{
		Rules:        []v1beta1.RoutingRule{{Paths: []v1beta1.PathMatch{{Value: path}}}},
		Response:     v1beta1.StaticResponse{StatusCode: code, Body: &body},
		ResponseMode: mode,
	}
}

// fetchPath sends a GET for host and path and reads the response in full.
func (e *env) fetchPath(ctx context.Context, host, path string) result {
	resp, err := e.get(ctx, host, path)
	if err != nil {
		return result{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return result{code: resp.StatusCode, body: string(b), header: resp.Header, err: err}
}

// fakeConfigMaps serves ConfigMap data from a map keyed "namespace/name".
type fakeConfigMaps map[string]map[string]string

func (f fakeConfigMaps) Data(namespace, name string) (map[string]string, error) {
	d, ok := f[namespace+"/"+name]
	if !ok {
		return nil, errors.New("not found")
	}
	return d, nil
}

// useObjects routes the env through a table built from objs, as the Watcher builds it.
func (e *env) useObjects(t *testing.T, cms routing.ConfigMaps, objs ...*httpso.Object) map[httpso.Ref]httpso.Conflict {
	t.Helper()
	table, conflicts := routing.BuildObjects(objs, e.targets, e.counts, cms, routing.Defaults{
		ColdStartTimeout: 10 * time.Second, ResponseHeaderTimeout: 10 * time.Second, MaxPending: 10,
	})
	router := routing.NewRouter()
	router.SetTable(table)
	e.mu.Lock()
	e.router = router
	e.mu.Unlock()
	return conflicts
}

// countingBackend answers "hello from name" and counts the requests it got.
func countingBackend(name string, n *atomic.Int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		hello(name).ServeHTTP(w, r)
	})
}

func TestStaticRoutesAreNeverCountedHeldOrWoken(t *testing.T) {
	e := newTestEnv(t)
	var hits atomic.Int64
	e.backend("10.0.2.1", countingBackend("app", &hits))
	e.target("app", endpoints.HTTP1)
	ir := interceptorRoute("app", time.Unix(1_700_000_000, 0), []string{"shop.example.com"}, func(s *v1beta1.InterceptorRouteSpec) {
		s.StaticRoutes = []v1beta1.StaticRoute{
			staticRoute("/healthz", v1beta1.StaticRouteAlways, 200, "ok"),
			staticRoute("/status", v1beta1.StaticRouteWhenUnavailable, 503, "down"),
		}
	})
	e.useObjects(t, nil, httpso.FromInterceptorRoute(ir))
	counts := e.counts.Lookup(ns + "/app")

	tests := []struct {
		name     string
		ready    bool
		path     string
		wantCode int
		wantBody string
		// wantHits is the number of requests the app gets.
		wantHits int64
	}{
		{"an Always static route answers while the app is at zero", false, "/healthz", 200, "ok", 0},
		{"a WhenUnavailable static route answers at once while the app is at zero", false, "/status", 503, "down", 0},
		{"an Always static route answers even while the app is ready", true, "/healthz", 200, "ok", 0},
		{"a WhenUnavailable static route is forwarded while the app is ready", true, "/status", 200, "hello from app", 1},
		{"below a static path the static route still answers", false, "/healthz/deep", 200, "ok", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.ready {
				e.ready("app", "10.0.2.1")
			} else {
				e.ready("app")
			}
			hits.Store(0)
			activations := e.activations.Load()
			start := time.Now()
			resp, err := e.get(t.Context(), "shop.example.com", tt.path)
			if err != nil {
				t.Fatal(err)
			}
			body := readAll(resp)
			resp.Body.Close()
			if resp.StatusCode != tt.wantCode || body != tt.wantBody {
				t.Errorf("response = %d %q, want %d %q", resp.StatusCode, body, tt.wantCode, tt.wantBody)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("answered after %s: the request was held", d)
			}
			if got := hits.Load(); got != tt.wantHits {
				t.Errorf("app got %d requests, want %d", got, tt.wantHits)
			}
			if c := counts.Counts(time.Now()); c.Requests != 0 || c.Held != 0 || c.InFlight != 0 || counts.Busy() {
				t.Errorf("counts = %+v, want nothing counted", c)
			}
			if got := e.activations.Load(); got != activations {
				t.Errorf("the route was activated %d times", got-activations)
			}
		})
	}

	t.Run("a request off the static paths is held and counted as usual", func(t *testing.T) {
		e.ready("app")
		done := make(chan result, 1)
		go func() { done <- e.fetchPath(t.Context(), "shop.example.com", "/cart") }()
		eventually(t, "the request is held", func() bool { h, _, _ := countsOf(&routing.Route{Counts: counts}); return h == 1 })
		if e.activations.Load() == 0 {
			t.Error("the held request did not activate the route")
		}
		e.ready("app", "10.0.2.1")
		if r := <-done; r.err != nil || r.code != 200 || r.body != "hello from app" {
			t.Errorf("held request got %+v", r)
		}
	})
}

func TestImmediatePlaceholderAnswersAtZeroAndWakesTheApp(t *testing.T) {
	e := newTestEnv(t)
	var hits atomic.Int64
	e.backend("10.0.3.1", countingBackend("app", &hits))
	e.target("app", endpoints.HTTP1)
	body := "warming up"
	ir := interceptorRoute("app", time.Unix(1_700_000_000, 0), []string{"shop.example.com"}, func(s *v1beta1.InterceptorRouteSpec) {
		s.ColdStart = &v1beta1.ColdStartSpec{Placeholder: &v1beta1.ColdStartPlaceholder{Response: &v1beta1.StaticResponse{
			StatusCode: 202, Body: &body, Headers: map[string]v1beta1.HeaderValue{"Retry-After": "2"},
		}}}
	})
	e.useObjects(t, nil, httpso.FromInterceptorRoute(ir))
	counts := e.counts.Lookup(ns + "/app")

	start := time.Now()
	resp, err := e.get(t.Context(), "shop.example.com", "/")
	if err != nil {
		t.Fatal(err)
	}
	got := readAll(resp)
	resp.Body.Close()
	if resp.StatusCode != 202 || got != body || resp.Header.Get("Retry-After") != "2" {
		t.Errorf("at zero: %d %q Retry-After=%q, want 202 %q Retry-After=2", resp.StatusCode, got, resp.Header.Get("Retry-After"), body)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("the placeholder came after %s: the request was held", d)
	}
	c := counts.Counts(time.Now())
	if c.Requests != 1 || c.Held != 0 || c.InFlight != 0 {
		t.Errorf("counts after the placeholder = %+v, want 1 request, nothing held or in flight", c)
	}
	if e.activations.Load() != 1 {
		t.Errorf("activations = %d, want 1: the placeholder request must wake the app", e.activations.Load())
	}
	if hits.Load() != 0 {
		t.Errorf("app got %d requests at zero", hits.Load())
	}

	e.ready("app", "10.0.3.1")
	resp, err = e.get(t.Context(), "shop.example.com", "/")
	if err != nil {
		t.Fatal(err)
	}
	got = readAll(resp)
	resp.Body.Close()
	if resp.StatusCode != 200 || got != "hello from app" || hits.Load() != 1 {
		t.Errorf("once ready: %d %q (app hits %d), want the app's answer", resp.StatusCode, got, hits.Load())
	}
}

func TestConflictsBetweenKindsFollowOldestWins(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	hso := func(name string, created time.Time) *httpso.Object {
		o := object(name, []string{"shop.example.com"}, nil)
		o.CreationTimestamp = metav1.NewTime(created)
		return httpso.FromHTTPScaledObject(o)
	}
	ir := func(name string, created time.Time) *httpso.Object {
		return httpso.FromInterceptorRoute(interceptorRoute(name, created, []string{"shop.example.com"}, nil))
	}
	tests := []struct {
		name       string
		objs       []*httpso.Object
		wantAnswer string
		wantLoser  httpso.Ref
	}{
		{"an older HTTPScaledObject keeps the host from a newer InterceptorRoute",
			[]*httpso.Object{ir("newroute", t0.Add(time.Hour)), hso("oldhso", t0)},
			"hello from oldhso", httpso.Ref{Kind: httpso.KindInterceptorRoute, Key: ns + "/newroute"}},
		{"an older InterceptorRoute keeps the host from a newer HTTPScaledObject",
			[]*httpso.Object{hso("newhso", t0.Add(time.Hour)), ir("oldroute", t0)},
			"hello from oldroute", httpso.Ref{Kind: httpso.KindHTTPScaledObject, Key: ns + "/newhso"}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newTestEnv(t)
			for j, o := range tt.objs {
				ip := "10.0.4." + string(rune('1'+2*i+j))
				e.backend(ip, hello(o.Name))
				e.target(o.Name, endpoints.HTTP1)
				e.ready(o.Name, ip)
			}
			conflicts := e.useObjects(t, nil, tt.objs...)
			if _, ok := conflicts[tt.wantLoser]; !ok || len(conflicts) != 1 {
				t.Errorf("conflicts = %v, want only %s", conflicts, tt.wantLoser)
			}
			r := e.fetchPath(t.Context(), "shop.example.com", "/")
			if r.err != nil || r.body != tt.wantAnswer {
				t.Errorf("answer = %+v, want %q", r, tt.wantAnswer)
			}
		})
	}
}

func TestResponseBodiesFromConfigMaps(t *testing.T) {
	e := newTestEnv(t)
	e.target("app", endpoints.HTTP1)
	e.ready("app")
	cms := fakeConfigMaps{ns + "/pages": {"health.json": `{"ok":true}`, "index.html": "<p>home</p>", "a.css": "p{}",
		"big.txt": strings.Repeat("x", routing.MaxBodyBytes+1)}}
	ref := func(name, key string) *v1beta1.ConfigMapKeyRef { return &v1beta1.ConfigMapKeyRef{Name: name, Key: key} }
	ir := interceptorRoute("app", time.Unix(1_700_000_000, 0), []string{"shop.example.com"}, func(s *v1beta1.InterceptorRouteSpec) {
		s.StaticRoutes = []v1beta1.StaticRoute{
			{Rules: []v1beta1.RoutingRule{{Paths: []v1beta1.PathMatch{{Value: "/healthz"}}}},
				Response: v1beta1.StaticResponse{BodyFromConfigMap: ref("pages", "health.json")}, ResponseMode: v1beta1.StaticRouteAlways},
			{Rules: []v1beta1.RoutingRule{{Paths: []v1beta1.PathMatch{{Value: "/gone"}}}},
				Response: v1beta1.StaticResponse{BodyFromConfigMap: ref("missing", "x")}, ResponseMode: v1beta1.StaticRouteAlways},
			{Rules: []v1beta1.RoutingRule{{Paths: []v1beta1.PathMatch{{Value: "/nokey"}}}},
				Response: v1beta1.StaticResponse{BodyFromConfigMap: ref("pages", "absent.txt")}, ResponseMode: v1beta1.StaticRouteAlways},
			{Rules: []v1beta1.RoutingRule{{Paths: []v1beta1.PathMatch{{Value: "/big"}}}},
				Response: v1beta1.StaticResponse{BodyFromConfigMap: ref("pages", "big.txt")}, ResponseMode: v1beta1.StaticRouteAlways},
		}
		s.ColdStart = &v1beta1.ColdStartSpec{Placeholder: &v1beta1.ColdStartPlaceholder{Response: &v1beta1.StaticResponse{
			BodyFromConfigMap: ref("pages", ""),
		}}}
	})
	e.useObjects(t, cms, httpso.FromInterceptorRoute(ir))

	tests := []struct {
		name, path string
		wantCode   int
		wantType   string
		wantBody   string
	}{
		{"a key's value is the body, typed by its extension", "/healthz", 200, "application/json", `{"ok":true}`},
		{"a missing ConfigMap answers 500 saying so", "/gone", 500, "text/plain; charset=utf-8", "response body unavailable: read ConfigMap \"missing\": not found\n"},
		{"a missing key answers 500 saying so", "/nokey", 500, "text/plain; charset=utf-8", "response body unavailable: ConfigMap \"pages\" has no key \"absent.txt\"\n"},
		{"a body over the size cap answers 500 saying so", "/big", 500, "text/plain; charset=utf-8",
			fmt.Sprintf("response body unavailable: key \"big.txt\" of ConfigMap \"pages\" holds %d bytes, more than the %d a response body may\n", routing.MaxBodyBytes+1, routing.MaxBodyBytes)},
		{"without a key, / is index.html", "/", 503, "text/html; charset=utf-8", "<p>home</p>"},
		{"without a key, the path names the key", "/a.css", 503, "text/css; charset=utf-8", "p{}"},
		{"without a key, a path naming no key is not found", "/b.css", 404, "text/plain; charset=utf-8", "not found\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.fetchPath(t.Context(), "shop.example.com", tt.path)
			if r.err != nil || r.code != tt.wantCode || r.body != tt.wantBody || r.header.Get("Content-Type") != tt.wantType {
				t.Errorf("got %d %q (%s) %v, want %d %q (%s)", r.code, r.body, r.header.Get("Content-Type"), r.err, tt.wantCode, tt.wantBody, tt.wantType)
			}
		})
	}
}

package proxy_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/lobby-http/lobby/interceptor/internal/endpoints"
	"github.com/lobby-http/lobby/interceptor/internal/proxy"
	"github.com/lobby-http/lobby/interceptor/internal/routing"
	"github.com/lobby-http/lobby/internal/httpso"
	"github.com/lobby-http/lobby/operator/api/v1alpha1"
)

// browserAccept is the Accept header a browser sends when it loads a page.
const browserAccept = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8"

// client requests of every kind the cold-start modes tell apart.
var clientKinds = []struct {
	name string
	req  func(ctx context.Context, url string) *http.Request
}{
	{"a browser GET", func(ctx context.Context, url string) *http.Request {
		r, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		r.Header.Set("Accept", browserAccept)
		return r
	}},
	{"an API POST", func(ctx context.Context, url string) *http.Request {
		r, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(`{"a":1}`))
		r.Header.Set("Accept", "application/json")
		r.Header.Set("Content-Type", "application/json")
		return r
	}},
	{"a WebSocket upgrade", func(ctx context.Context, url string) *http.Request {
		r, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		r.Header.Set("Accept", browserAccept)
		r.Header.Set("Connection", "Upgrade")
		r.Header.Set("Upgrade", "websocket")
		r.Header.Set("Sec-WebSocket-Version", "13")
		r.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
		return r
	}},
	{"a browser HEAD", func(ctx context.Context, url string) *http.Request {
		r, _ := http.NewRequestWithContext(ctx, http.MethodHead, url, nil)
		r.Header.Set("Accept", browserAccept)
		return r
	}},
	{"a GET that accepts */*", func(ctx context.Context, url string) *http.Request {
		r, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		r.Header.Set("Accept", "*/*")
		return r
	}},
}

// answer is what a request at zero gets.
type answer uint8

const (
	held answer = iota
	waitingPage
	placeholder
)

func (a answer) String() string {
	return [...]string{"held", "the waiting page", "the placeholder"}[a]
}

func TestColdStartModesAnswerEachKindOfClient(t *testing.T) {
	page, hold, ph := waitingPage, held, placeholder
	tests := []struct {
		name           string
		mode           routing.ColdStartMode
		hasPlaceholder bool
		// want is the answer of each of clientKinds, in order.
		want [5]answer
	}{
		{"Hold holds every client", routing.ColdStartHold, true, [5]answer{hold, hold, hold, hold, hold}},
		{"Placeholder answers every client with the placeholder", routing.ColdStartPlaceholder, true, [5]answer{ph, ph, ph, ph, ph}},
		{"Placeholder without a placeholder answers every client with the waiting page", routing.ColdStartPlaceholder, false,
			[5]answer{page, page, page, page, page}},
		{"Auto shows browsers the waiting page and holds every other client", routing.ColdStartAuto, true,
			[5]answer{page, hold, hold, page, hold}},
	}
	for _, tt := range tests {
		for i, kind := range clientKinds {
			t.Run(tt.name+"/"+kind.name, func(t *testing.T) {
				e := newTestEnv(t)
				var hits atomic.Int64
				e.backend("10.0.4.1", countingBackend("app", &hits))
				route := e.route("shop.example.com", "app", func(r *routing.Route) {
					r.Mode = tt.mode
					if tt.mode != routing.ColdStartHold {
						r.WaitingPage = &routing.WaitingPage{App: "app"}
					}
					if tt.hasPlaceholder {
						r.Placeholder = &routing.Placeholder{StatusCode: 202, Body: []byte("placeholder body"),
							Header: http.Header{"Content-Length": {"16"}, "Content-Type": {"text/plain"}}}
					}
				})
				ctx, cancel := context.WithCancel(t.Context())
				defer cancel()
				req := kind.req(ctx, e.proxy.URL+"/cart")
				req.Host = "shop.example.com"
				done := make(chan result, 1)
				go func() {
					resp, err := e.client.Do(req)
					if err != nil {
						done <- result{err: err}
						return
					}
					defer resp.Body.Close()
					b, err := io.ReadAll(resp.Body)
					done <- result{code: resp.StatusCode, body: string(b), header: resp.Header, err: err}
				}()
				want := tt.want[i]
				if want == held {
					eventually(t, "the request is held", func() bool { h, _, _ := countsOf(route); return h == 1 })
					select {
					case r := <-done:
						t.Fatalf("a held request was answered: %+v", r)
					case <-time.After(100 * time.Millisecond):
					}
					// Held as in Hold: the app answers it once it is up.
					e.ready("app", "10.0.4.1")
					if r := <-done; r.err != nil || hits.Load() != 1 || r.code == http.StatusServiceUnavailable {
						t.Errorf("once the app was up the held request got %d %v (app hits %d), want the app's answer", r.code, r.err, hits.Load())
					}
				} else {
					var r result
					select {
					case r = <-done:
					case <-time.After(5 * time.Second):
						t.Fatalf("no answer at once: the request was held, want %s", want)
					}
					if r.err != nil {
						t.Fatal(r.err)
					}
					isHead := req.Method == http.MethodHead
					switch want {
					case placeholder:
						if r.code != 202 || (!isHead && r.body != "placeholder body") {
							t.Errorf("got %d %q, want the placeholder", r.code, r.body)
						}
					case waitingPage:
						if r.code != http.StatusServiceUnavailable || r.header.Get("Cache-Control") != "no-store" ||
							r.header.Get("Retry-After") == "" || r.header.Get("Refresh") == "" ||
							!strings.HasPrefix(r.header.Get("Content-Type"), "text/html") {
							t.Errorf("got %d %v, want the waiting page: 503, no-store, Retry-After, Refresh, HTML", r.code, r.header)
						}
						if !isHead && !strings.Contains(r.body, "app is starting") {
							t.Errorf("the waiting page does not name the app:\n%s", r.body)
						}
					}
					label := map[answer]string{placeholder: "placeholder", waitingPage: "waiting_page"}[want]
					golden := `
# HELP lobby_interceptor_answered_at_once_total Requests that found no ready endpoint and were answered at once, as their route's cold-start mode says, instead of held, by answer: placeholder or waiting_page. Each one woke the app as a held request would.
# TYPE lobby_interceptor_answered_at_once_total counter
lobby_interceptor_answered_at_once_total{answer="` + label + `",route="ns/app"} 1
`
					if err := testutil.GatherAndCompare(e.prom, strings.NewReader(golden), "lobby_interceptor_answered_at_once_total"); err != nil {
						t.Error(err)
					}
					// Answered at once, the request still counts as demand: it wakes the app.
					if e.activations.Load() != 1 {
						t.Errorf("activations = %d, want 1: a request answered at once must wake the app", e.activations.Load())
					}
				}
				if c := route.Counts.Counts(time.Now()); c.Requests != 1 {
					t.Errorf("requests counted = %d, want 1", c.Requests)
				}
				eventually(t, "the counters are back to zero", func() bool { return idle(route) })
			})
		}
	}
}

func TestWaitingPageWakesTheAppAndReloadsWhenItIsReady(t *testing.T) {
	e := newTestEnv(t)
	var hits atomic.Int64
	e.backend("10.0.5.1", countingBackend("app", &hits))
	route := e.route("shop.example.com", "app", func(r *routing.Route) {
		r.Mode = routing.ColdStartAuto
		r.WaitingPage = &routing.WaitingPage{App: "my-shop"}
	})
	browse := func() result {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, e.proxy.URL+"/cart", nil)
		req.Host = "shop.example.com"
		req.Header.Set("Accept", browserAccept)
		resp, err := e.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return result{code: resp.StatusCode, body: string(b), header: resp.Header}
	}
	r := browse()
	if r.code != http.StatusServiceUnavailable || !strings.Contains(r.body, "my-shop is starting") {
		t.Fatalf("at zero a browser got %d:\n%s", r.code, r.body)
	}
	for _, external := range []string{"http://", "https://", "src=", "<link", "@import"} {
		if strings.Contains(r.body, external) {
			t.Errorf("the built-in page loads something from elsewhere (%q):\n%s", external, r.body)
		}
	}
	if !strings.Contains(r.body, "location.reload()") || !strings.Contains(r.body, proxy.StatusPath) {
		t.Errorf("the built-in page does not poll %s and reload itself:\n%s", proxy.StatusPath, r.body)
	}
	if e.activations.Load() != 1 {
		t.Errorf("activations = %d, want 1: the page's request must wake the app", e.activations.Load())
	}

	status := func() (int, map[string]any) {
		resp, err := e.get(t.Context(), "shop.example.com", proxy.StatusPath+"?path=/cart")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.Header.Get("Cache-Control") != "no-store" {
			t.Errorf("the status endpoint may be cached: Cache-Control %q", resp.Header.Get("Cache-Control"))
		}
		var st map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&st)
		return resp.StatusCode, st
	}
	if code, st := status(); code != 200 || st["ready"] != false {
		t.Errorf("status at zero = %d %v, want 200 ready:false", code, st)
	}
	if c := route.Counts.Counts(time.Now()); c.Requests != 1 || e.activations.Load() != 1 {
		t.Errorf("after a status poll: %d requests counted, %d activations; want 1 and 1: polls are never demand",
			c.Requests, e.activations.Load())
	}

	e.ready("app", "10.0.5.1")
	if code, st := status(); code != 200 || st["ready"] != true {
		t.Errorf("status once ready = %d %v, want 200 ready:true", code, st)
	}
	if r := browse(); r.code != 200 || r.body != "hello from app" || hits.Load() != 1 {
		t.Errorf("once ready a browser got %d %q (app hits %d), want the app", r.code, r.body, hits.Load())
	}
}

func TestStatusEndpointAnswersOnlyRoutesWithAWaitingPage(t *testing.T) {
	e := newTestEnv(t)
	hold := e.route("hold.example.com", "held", nil)
	e.route("auto.example.com", "auto", func(r *routing.Route) {
		r.Mode, r.WaitingPage = routing.ColdStartAuto, &routing.WaitingPage{App: "auto"}
	})
	tests := []struct {
		name, method, host, path string
		want                     int
	}{
		{"a route in mode Auto answers", http.MethodGet, "auto.example.com", proxy.StatusPath + "?path=/", 200},
		{"without a path parameter the root is asked about", http.MethodGet, "auto.example.com", proxy.StatusPath, 200},
		{"a route in mode Hold is not told about", http.MethodGet, "hold.example.com", proxy.StatusPath + "?path=/", 404},
		{"an unknown host is not told about", http.MethodGet, "nobody.example.com", proxy.StatusPath + "?path=/", 404},
		{"a relative path is refused", http.MethodGet, "auto.example.com", proxy.StatusPath + "?path=cart", 400},
		{"a POST is refused", http.MethodPost, "auto.example.com", proxy.StatusPath, 405},
		{"another reserved path is not found", http.MethodGet, "auto.example.com", "/.lobby/other", 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(t.Context(), tt.method, e.proxy.URL+tt.path, nil)
			req.Host = tt.host
			resp, err := e.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Errorf("got %d, want %d", resp.StatusCode, tt.want)
			}
		})
	}
	if e.activations.Load() != 0 || hold.Counts.Counts(time.Now()).Requests != 0 {
		t.Errorf("the status endpoint counted demand: %d activations", e.activations.Load())
	}
}

func TestReservedPathCannotBeShadowedByARoute(t *testing.T) {
	e := newTestEnv(t)
	var sneaky, app atomic.Int64
	e.backend("10.0.6.1", countingBackend("sneaky", &sneaky))
	e.backend("10.0.6.2", countingBackend("app", &app))
	e.target("sneaky", endpoints.HTTP1)
	e.target("app", endpoints.HTTP1)
	e.ready("sneaky", "10.0.6.1")
	e.ready("app", "10.0.6.2")
	claims := object("sneaky", []string{"shop.example.com"}, []string{"/.lobby"})
	claims.CreationTimestamp.Time = claims.CreationTimestamp.Add(-time.Hour) // older than app: conflicts do not decide it
	root := object("app", []string{"shop.example.com"}, nil)
	root.Spec.ColdStart = &v1alpha1.ColdStartSpec{Mode: v1alpha1.ColdStartModeAuto}
	conflicts := e.useObjects(t, nil, httpso.FromHTTPScaledObject(claims), httpso.FromHTTPScaledObject(root))

	c, ok := conflicts[httpso.Ref{Kind: httpso.KindHTTPScaledObject, Key: ns + "/sneaky"}]
	if !ok || !c.Reserved || !strings.Contains(c.Message(), "/.lobby/") {
		t.Errorf("the object claiming /.lobby is not reported: %+v", conflicts)
	}
	for _, path := range []string{proxy.StatusPath + "?path=/", "/.lobby/other", "/.lobby/"} {
		r := e.fetchPath(t.Context(), "shop.example.com", path)
		if r.err != nil || strings.Contains(r.body, "hello from") {
			t.Errorf("GET %s reached an app: %d %q %v", path, r.code, r.body, r.err)
		}
	}
	if r := e.fetchPath(t.Context(), "shop.example.com", proxy.StatusPath+"?path=/"); r.code != 200 || !strings.Contains(r.body, `"ready":true`) {
		t.Errorf("the status endpoint got %d %q, want the app's readiness", r.code, r.body)
	}
	if r := e.fetchPath(t.Context(), "shop.example.com", "/.lobbyist"); r.body != "hello from app" {
		t.Errorf("/.lobbyist, outside the reserved prefix, got %d %q, want the app", r.code, r.body)
	}
	if sneaky.Load() != 0 {
		t.Errorf("the route claiming the reserved path got %d requests", sneaky.Load())
	}
}

func TestWaitingPageFromAConfigMap(t *testing.T) {
	e := newTestEnv(t)
	e.target("app", endpoints.HTTP1)
	withPage := func(key string) *httpso.Object {
		o := object("app", []string{"shop.example.com"}, nil)
		o.Spec.ColdStart = &v1alpha1.ColdStartSpec{Mode: v1alpha1.ColdStartModeAuto,
			WaitingPage: &v1alpha1.WaitingPageSpec{BodyFromConfigMap: &v1alpha1.ConfigMapKeyRef{Name: "pages", Key: key}}}
		return httpso.FromHTTPScaledObject(o)
	}
	browse := func() result {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, e.proxy.URL+"/", nil)
		req.Host = "shop.example.com"
		req.Header.Set("Accept", "text/html")
		resp, err := e.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return result{code: resp.StatusCode, body: string(b), header: resp.Header}
	}

	// Missing: the built-in page meanwhile, and the route says why.
	e.useObjects(t, fakeConfigMaps{}, withPage(""))
	if r := browse(); r.code != 503 || !strings.Contains(r.body, "app is starting") {
		t.Errorf("with the ConfigMap missing: %d %q, want the built-in page", r.code, r.body)
	}
	table, _ := routing.BuildObjects([]*httpso.Object{withPage("")}, e.targets, e.counts, fakeConfigMaps{}, routing.Defaults{})
	if p := table.Routes()[0].WaitingPage; p == nil || p.Err == nil {
		t.Errorf("a missing ConfigMap leaves no error on the route's page: %+v", p)
	}

	// Present: its page, as it is, with the waiting page's headers.
	cms := fakeConfigMaps{ns + "/pages": {"index.html": "<p>custom v1</p>", "wait.html": "<p>other</p>"}}
	e.useObjects(t, cms, withPage(""))
	if r := browse(); r.code != 503 || r.body != "<p>custom v1</p>" || r.header.Get("Cache-Control") != "no-store" ||
		!strings.HasPrefix(r.header.Get("Content-Type"), "text/html") {
		t.Errorf("with the ConfigMap: %d %q %v, want the custom page", r.code, r.body, r.header)
	}

	// Changed: the table the watcher rebuilds on the ConfigMap's event serves the new page.
	cms[ns+"/pages"]["index.html"] = "<p>custom v2</p>"
	e.useObjects(t, cms, withPage(""))
	if r := browse(); r.body != "<p>custom v2</p>" {
		t.Errorf("after the ConfigMap changed: %q, want the new page", r.body)
	}
	e.useObjects(t, cms, withPage("wait.html"))
	if r := browse(); r.body != "<p>other</p>" {
		t.Errorf("with key wait.html: %q", r.body)
	}
}

func TestModeOfEachKindFollowsItsSpecAndTheGlobalDefault(t *testing.T) {
	e := newTestEnv(t)
	hso := func(mode v1alpha1.ColdStartMode) *httpso.Object {
		o := object("app", []string{"shop.example.com"}, nil)
		if mode != "" {
			o.Spec.ColdStart = &v1alpha1.ColdStartSpec{Mode: mode}
		}
		return httpso.FromHTTPScaledObject(o)
	}
	tests := []struct {
		name   string
		obj    *httpso.Object
		global routing.ColdStartMode
		want   routing.ColdStartMode
	}{
		{"an HTTPScaledObject without a mode takes the global default", hso(""), routing.ColdStartAuto, routing.ColdStartAuto},
		{"an HTTPScaledObject's mode beats the global default", hso(v1alpha1.ColdStartModeHold), routing.ColdStartAuto, routing.ColdStartHold},
		{"an InterceptorRoute without a placeholder takes the global default",
			httpso.FromInterceptorRoute(interceptorRoute("app", time.Unix(1, 0), nil, nil)), routing.ColdStartAuto, routing.ColdStartAuto},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			table, _ := routing.BuildObjects([]*httpso.Object{tt.obj}, e.targets, e.counts, nil, routing.Defaults{ColdStartMode: tt.global})
			r := table.Routes()[0]
			if r.Mode != tt.want || (r.Mode != routing.ColdStartHold) != (r.WaitingPage != nil) {
				t.Errorf("mode %s, page %+v; want mode %s", r.Mode, r.WaitingPage, tt.want)
			}
		})
	}
}

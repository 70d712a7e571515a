package proxy

import (
	"bytes"
	"encoding/json"
	"html/template"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lobby-http/lobby/interceptor/internal/endpoints"
	"github.com/lobby-http/lobby/interceptor/internal/routing"
	"github.com/lobby-http/lobby/internal/httpso"
)

// ReservedPrefix starts the paths the interceptor answers itself, on every host, before any
// route is looked up: no route can be given their requests (an object whose path prefix lies
// under it is not routed; see httpso.ReservedPrefix).
const ReservedPrefix = httpso.ReservedPrefix

// StatusPath is the status endpoint of the waiting page: GET StatusPath?path=/some/page answers,
// for the route that the request's host and headers with that path would be routed to, whether
// its target has a ready endpoint. It answers only routes that serve a waiting page, never
// counts as demand and never wakes a target.
const StatusPath = ReservedPrefix + "status"

// pageRetrySeconds is the Retry-After and Refresh of the waiting page: without scripts, the
// browser reloads the page that often; with them, the page polls StatusPath every second and
// reloads as soon as the app is ready.
const pageRetrySeconds = 5

// answerAtOnce answers, without holding, a request that finds no ready endpoint when its route's
// cold-start mode says so: in mode Placeholder every request gets the placeholder (or the waiting
// page without one), in mode Auto a browser's request gets the waiting page. The request is
// counted in flight meanwhile, so that it wakes the target as a held one would. It reports
// whether it answered; a request it leaves is held.
//
// It is kept out of line so that Wait's frame, under which requests are held, does not grow
// (BenchmarkHeldMemory).
//
//go:noinline
func answerAtOnce(w http.ResponseWriter, r *http.Request, x *Exchange, now func() time.Time) bool {
	switch x.route.Mode {
	case routing.ColdStartPlaceholder:
		x.admit()
		if p := x.route.Placeholder; p != nil {
			x.metrics.answeredAtOnce("placeholder")
			x.respond(w, p.For(r.URL.Path))
			return true
		}
	case routing.ColdStartAuto:
		if x.upgrade || len(r.Header["Upgrade"]) > 0 || !wantsPage(r) {
			return false
		}
		x.admit()
	default:
		return false
	}
	x.metrics.answeredAtOnce("waiting_page")
	serveWaitingPage(w, x, now())
	return true
}

// wantsPage reports whether r is a browser loading a page: a GET or HEAD whose Accept header
// prefers HTML, that is, ranks text/html (or application/xhtml+xml), named explicitly, at least
// as high as every other media range it lists. "*/*" alone, as fetch and most API clients
// send, does not.
func wantsPage(r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	var html, other float64
	for _, v := range r.Header["Accept"] {
		for v != "" {
			var item string
			item, v, _ = strings.Cut(v, ",")
			mediaRange, params, _ := strings.Cut(item, ";")
			q, ok := qValue(params)
			if !ok {
				continue // a range with a malformed weight is ignored, as RFC 9110 allows
			}
			switch strings.ToLower(strings.TrimSpace(mediaRange)) {
			case "":
			case "text/html", "application/xhtml+xml":
				html = max(html, q)
			default:
				other = max(other, q)
			}
		}
	}
	return html > 0 && html >= other
}

// qValue returns the weight among the parameters of one Accept media range (1 when none is
// given), and false when the weight is malformed (RFC 9110 section 12.4.2: 0 to 1, at most
// three decimals).
func qValue(params string) (float64, bool) {
	for params != "" {
		var p string
		p, params, _ = strings.Cut(params, ";")
		name, value, _ := strings.Cut(strings.TrimSpace(p), "=")
		if !strings.EqualFold(strings.TrimSpace(name), "q") {
			continue
		}
		value = strings.TrimSpace(value)
		if len(value) == 0 || len(value) > 5 || (value[0] != '0' && value[0] != '1') {
			return 0, false
		}
		q, err := strconv.ParseFloat(value, 64)
		if err != nil || q < 0 || q > 1 {
			return 0, false
		}
		return q, true
	}
	return 1, true
}

// serveWaitingPage answers with the route's waiting page: 503, never cached, with Retry-After
// and a Refresh that reloads it without scripts. The built-in page shows the app's name and how
// long it has been waking, and reloads itself as soon as the status endpoint says the app is
// ready; a page from a ConfigMap is served as it is.
func serveWaitingPage(w http.ResponseWriter, x *Exchange, now time.Time) {
	page := x.route.WaitingPage
	var body []byte
	contentType := "text/html; charset=utf-8"
	if page != nil && page.Body != nil {
		body, contentType = page.Body, page.ContentType
	} else {
		app := x.route.Name
		if page != nil {
			app = page.App
		}
		var b bytes.Buffer
		waking := wakes.waking(x.route.Target, now)
		// The template is fixed and its data plain strings and numbers: it cannot fail.
		_ = builtinPage.Execute(&b, pageData{App: app, Waking: int64(waking / time.Second), StatusPath: StatusPath, Retry: pageRetrySeconds})
		body = b.Bytes()
	}
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("Cache-Control", "no-store")
	h.Set("Retry-After", strconv.Itoa(pageRetrySeconds))
	h.Set("Refresh", strconv.Itoa(pageRetrySeconds))
	h.Set("X-Content-Type-Options", "nosniff")
	x.code = http.StatusServiceUnavailable
	w.WriteHeader(http.StatusServiceUnavailable)
	_, _ = w.Write(body)
}

// pageStatus is the status endpoint's answer.
type pageStatus struct {
	// Ready is true once the app has a ready endpoint: the page reloads.
	Ready bool `json:"ready"`
	// WakingSeconds is how long the app has been waking, while it is not ready.
	WakingSeconds int64 `json:"wakingSeconds"`
}

// serveReserved answers a request under ReservedPrefix: the status endpoint, or 404. It never
// counts a request and never wakes a target.
//
//go:noinline
func (s *routeStage) serveReserved(w http.ResponseWriter, r *http.Request, x *Exchange) {
	x.metrics = s.metrics.unrouted()
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	if r.URL.Path != StatusPath {
		x.fail(w, ErrNoRoute, false)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.Set("Allow", "GET, HEAD")
		h.Set("Content-Type", "text/plain; charset=utf-8")
		x.code = http.StatusMethodNotAllowed
		w.WriteHeader(http.StatusMethodNotAllowed)
		_, _ = w.Write([]byte("method not allowed\n"))
		return
	}
	p := r.URL.Query().Get("path")
	if p == "" {
		p = "/"
	}
	if p[0] != '/' {
		h.Set("Content-Type", "text/plain; charset=utf-8")
		x.code = http.StatusBadRequest
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte("the path parameter must be an absolute path, such as /\n"))
		return
	}
	// Look the route up as the page's own request was: same host, same headers, its path.
	page := *r
	u := *r.URL
	u.Path, u.RawPath, u.RawQuery = p, "", ""
	page.URL = &u
	route := s.router.Route(&page)
	if route == nil || route.Static != nil || route.WaitingPage == nil {
		// Only routes that serve a waiting page answer: the endpoint tells nothing about others.
		x.fail(w, ErrNoRoute, false)
		return
	}
	st := pageStatus{Ready: len(route.Target.Snapshot().Endpoints) > 0}
	if st.Ready {
		wakes.woke(route.Target)
	} else {
		st.WakingSeconds = int64(wakes.waking(route.Target, s.now()) / time.Second)
	}
	body, _ := json.Marshal(st)
	body = append(body, '\n')
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	x.code = http.StatusOK
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

// reserved reports whether path lies under ReservedPrefix; it costs a byte comparison for
// nearly every request.
func reserved(path string) bool {
	return len(path) >= len(ReservedPrefix) && path[1] == '.' && strings.HasPrefix(path, ReservedPrefix)
}

// wakeClock remembers since when each target has been shown waking, for the page's "waking for"
// (a route is rebuilt on every change to any object; its target stays).
type wakeClock struct {
	mu    sync.Mutex
	since map[*endpoints.Target]time.Time
}

// wakes is the one wakeClock of the process: targets are shared by every chain of the process.
var wakes = wakeClock{since: map[*endpoints.Target]time.Time{}}

// maxWaking bounds the targets a wakeClock remembers: past it, those that have become ready are
// forgotten.
const maxWaking = 4096

// waking returns how long t has been shown waking, starting its clock at now when it is not
// running.
func (c *wakeClock) waking(t *endpoints.Target, now time.Time) time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	since, ok := c.since[t]
	if !ok {
		if len(c.since) >= maxWaking {
			for other := range c.since {
				if len(other.Snapshot().Endpoints) > 0 {
					delete(c.since, other)
				}
			}
		}
		if len(c.since) >= maxWaking {
			return 0
		}
		c.since[t], since = now, now
	}
	return max(now.Sub(since), 0)
}

// woke stops t's clock: it is ready.
func (c *wakeClock) woke(t *endpoints.Target) {
	c.mu.Lock()
	delete(c.since, t)
	c.mu.Unlock()
}

// pageData is what the built-in page shows.
type pageData struct {
	App        string
	Waking     int64
	StatusPath string
	Retry      int
}

// builtinPage is lobby's waiting page: no external assets, readable without scripts and with a
// screen reader, and a script that polls the status endpoint and reloads the page once the app is
// ready.
var builtinPage = template.Must(template.New("waiting").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<meta name="robots" content="noindex">
<title>{{.App}} is starting</title>
<style>
body{margin:0;min-height:100vh;display:grid;place-items:center;font:1.05rem/1.5 system-ui,sans-serif;background:Canvas;color:CanvasText}
main{max-width:32rem;padding:2rem;text-align:center}
h1{font-size:1.4rem;margin:0 0 .5rem}
.spin{width:2.5rem;height:2.5rem;margin:0 auto 1.5rem;border:.3rem solid color-mix(in srgb,CanvasText 20%,transparent);border-top-color:CanvasText;border-radius:50%;animation:s 1s linear infinite}
@keyframes s{to{transform:rotate(1turn)}}
@media (prefers-reduced-motion:reduce){.spin{animation:none}}
p{margin:.25rem 0}
</style>
</head>
<body>
<main>
<div class="spin" aria-hidden="true"></div>
<h1>{{.App}} is starting</h1>
<p role="status" aria-live="polite" id="state">Waking for <span id="waking">{{.Waking}}</span> s. This page opens the app as soon as it is ready.</p>
<noscript><p>This page reloads every {{.Retry}} seconds.</p></noscript>
</main>
<script>
(function(){
var waking={{.Waking}},t0=Date.now(),done=false;
var el=document.getElementById("waking");
setInterval(function(){el.textContent=String(waking+Math.floor((Date.now()-t0)/1000));},1000);
function poll(){
if(done)return;
fetch({{.StatusPath}}+"?path="+encodeURIComponent(location.pathname),{cache:"no-store",credentials:"same-origin"})
.then(function(r){return r.ok?r.json():null;})
.then(function(s){if(s&&s.ready){done=true;document.getElementById("state").textContent="Ready: opening the app.";location.reload();}})
.catch(function(){})
.finally(function(){if(!done)setTimeout(poll,1000);});
}
setTimeout(poll,1000);
})();
</script>
</body>
</html>
`))

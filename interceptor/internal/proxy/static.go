package proxy

import (
	"fmt"
	"net/http"

	"github.com/lobby-http/lobby/interceptor/internal/routing"
)

// serveStatic serves a request of a static route of an InterceptorRoute, from the table: with
// responseMode Always, the route's fixed response; with WhenUnavailable, the fixed response while
// the target has no ready endpoint, else the request goes straight to forward. Either way the
// request is never counted, held, or allowed to wake the target.
func serveStatic(w http.ResponseWriter, r *http.Request, x *Exchange, forward ForwardHandler) {
	s := x.route.Static
	if !s.Always {
		if snap := x.route.Target.Snapshot(); len(snap.Endpoints) > 0 {
			// Without Wait in front, a request is never held: when every endpoint is suspect, or
			// the connection to every one tried fails, it is answered 502. Upgrades are vetted as
			// Count vets them.
			ep := pick(snap.Endpoints)
			if ep == nil {
				x.fail(w, fmt.Errorf("%w: every endpoint refused connections lately", ErrUpstreamUnavailable), false)
				return
			}
			x.upgrade = admitUpgrade(r)
			x.target, x.snap, x.ep = x.route.Target, snap, ep
			if outcome, err := forward.Forward(w, r, x); outcome == Lost {
				x.fail(w, err, false)
			}
			return
		}
	}
	x.respond(w, s.Response.For(r.URL.Path))
}

// respond writes a prepared response.
func (x *Exchange) respond(w http.ResponseWriter, p *routing.Placeholder) {
	h := w.Header()
	for k, v := range p.Header {
		h[k] = v
	}
	x.code = p.StatusCode
	w.WriteHeader(p.StatusCode)
	_, _ = w.Write(p.Body)
}

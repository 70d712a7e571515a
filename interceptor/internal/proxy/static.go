package proxy

import (
	"net/http"

	"github.com/lobby-http/lobby/interceptor/internal/routing"
)

// serveStatic serves a request of a static route of an InterceptorRoute, from the table: with
// responseMode Always, the route's fixed response; with WhenUnavailable, the fixed response while
// the target has no ready endpoint, else the request goes straight to forward. Either way the
// request is never counted, held, or allowed to wake the target.
func serveStatic(w http.ResponseWriter, r *http.Request, x *Exchange, forward Handler) {
	s := x.route.Static
	if !s.Always {
		if snap := x.route.Target.Snapshot(); len(snap.Endpoints) > 0 {
			// The forwarder picks the endpoint; without Wait in front, a failed connection is
			// answered 502, never held. Upgrades are vetted as Count vets them.
			x.upgrade = admitUpgrade(r)
			x.target, x.snap, x.ep = x.route.Target, snap, nil
			forward.ServeExchange(w, r, x)
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

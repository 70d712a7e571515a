package proxy

import (
	"net/http"

	"github.com/lobby-http/lobby/interceptor/internal/routing"
)

// Static returns the stage that serves the static routes of InterceptorRoutes from the table:
// with responseMode Always, the route's fixed response; with WhenUnavailable, the fixed response
// while the target has no ready endpoint, else the request goes straight to forward. Either way
// the request is never counted, held, or allowed to wake the target. Requests of other routes go
// on to next.
func Static(forward, next Handler) Handler {
	return HandlerFunc(func(w http.ResponseWriter, r *http.Request, x *Exchange) {
		s := x.route.Static
		if s == nil {
			next.ServeExchange(w, r, x)
			return
		}
		if !s.Always {
			if snap := x.route.Target.Snapshot(); len(snap.Endpoints) > 0 {
				// The forwarder picks the endpoint; without Wait in front, a failed connection
				// is answered 502, never held. Upgrades are vetted as Count vets them.
				x.upgrade = admitUpgrade(r)
				x.target, x.snap, x.ep = x.route.Target, snap, nil
				forward.ServeExchange(w, r, x)
				return
			}
		}
		x.respond(w, s.Response.For(r.URL.Path))
	})
}

// Immediate returns the stage that answers a request of a route with an immediate placeholder
// (an InterceptorRoute's coldStart.placeholder) at once while the target has no ready endpoint,
// instead of holding it. The request is counted in flight while it is answered, so that it wakes
// the target as a held request would. Other requests go on to next. It runs inside Count.
func Immediate(next Handler) Handler {
	return HandlerFunc(func(w http.ResponseWriter, r *http.Request, x *Exchange) {
		if x.route.Immediate && x.route.Placeholder != nil && len(x.route.Target.Snapshot().Endpoints) == 0 {
			x.admit()
			x.respond(w, x.route.Placeholder.For(r.URL.Path))
			return
		}
		next.ServeExchange(w, r, x)
	})
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

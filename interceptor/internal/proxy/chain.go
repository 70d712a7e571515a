// Package proxy is the interceptor's hot path: a chain of small handlers that route a request to
// its HTTPScaledObject, count it, hold it while the app has no ready endpoint, and forward it to a
// ready endpoint. It reads only immutable snapshots and atomics; it never talks to Kubernetes.
//
// The stages pass one *Exchange down the chain instead of values in the request context, so that
// composing them costs no allocation:
//
//	Route(router, metrics, log, now, Count(Wait(now, forwarder)))
package proxy

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/net/http/httpguts"

	"github.com/lobby-http/lobby/interceptor/internal/endpoints"
	"github.com/lobby-http/lobby/interceptor/internal/routing"
)

// Router finds the route of a request; *routing.Router implements it.
type Router interface {
	// Route returns the request's route, or nil when none matches.
	Route(r *http.Request) *routing.Route
}

var _ Router = (*routing.Router)(nil)

// Handler is a stage of the chain after routing: it serves a request whose route is known.
type Handler interface {
	// ServeExchange serves r, whose route and state are in x, answering on w.
	ServeExchange(w http.ResponseWriter, r *http.Request, x *Exchange)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(w http.ResponseWriter, r *http.Request, x *Exchange)

// ServeExchange calls f(w, r, x).
func (f HandlerFunc) ServeExchange(w http.ResponseWriter, r *http.Request, x *Exchange) { f(w, r, x) }

// countState is where a request stands in its route's counters.
type countState uint8

const (
	uncounted countState = iota
	held
	inFlight
	open
)

// ColdStartHeader is the response header that tells how long a request was held waiting for a
// cold start, as a Go duration ("1.532s"), whatever the answer (the app's, the failover's, the
// placeholder or 504). Requests that did not wait do not get it.
const ColdStartHeader = "X-Lobby-Cold-Start"

// Exchange is the state of one request as it goes down the chain. Exchanges are pooled: a stage
// must not keep one after it returns.
type Exchange struct {
	route   *routing.Route
	metrics *routeMetrics
	log     logr.Logger

	// code is the status the client got (statusClientGone when it went away), 0 until known.
	code int
	// upgrade is set for requests that ask to switch protocols (WebSockets).
	upgrade bool
	state   countState
	// waited is how long the request was held; zero when it was not.
	waited time.Duration
	// snap holds the ready endpoints the request is forwarded to; target is their Target.
	snap   *endpoints.Snapshot
	target *endpoints.Target
}

var exchanges = sync.Pool{New: func() any { return new(Exchange) }}

// Route returns the request's route.
func (x *Exchange) Route() *routing.Route { return x.route }

// Waited returns how long the request was held for a cold start; zero when it was not held.
func (x *Exchange) Waited() time.Duration { return x.waited }

// Upgrade reports whether the request asks to switch protocols (a WebSocket).
func (x *Exchange) Upgrade() bool { return x.upgrade }

// hold counts the request as held, unless the route's queue is full.
func (x *Exchange) hold() bool {
	if !x.route.Counts.BeginHeld(x.route.MaxPending) {
		return false
	}
	x.state = held
	return true
}

// admit counts the request as in flight, or as an open connection when it upgrades, handing
// over from held in one step when it was held.
func (x *Exchange) admit() {
	fresh := x.state != held
	if x.upgrade {
		x.route.Counts.BeginOpen(fresh)
		x.state = open
		return
	}
	x.route.Counts.BeginInFlight(fresh)
	x.state = inFlight
}

// fail answers the request with the status of err (nothing when the client went away), or with
// the route's placeholder when usePlaceholder is set and the route has one.
func (x *Exchange) fail(w http.ResponseWriter, err error, usePlaceholder bool) {
	code := status(err)
	x.code = code
	switch {
	case code == statusClientGone:
		x.metrics.clientGone.Inc()
		x.log.V(1).Info("client went away", "route", x.metrics.key, "held", x.state == held)
		return
	case usePlaceholder && x.route != nil && x.route.Placeholder != nil:
		x.log.V(1).Info("answering with the placeholder", "route", x.metrics.key, "error", err.Error())
		p := x.route.Placeholder
		h := w.Header()
		for k, v := range p.Header {
			h[k] = v
		}
		x.code = p.StatusCode
		w.WriteHeader(p.StatusCode)
		_, _ = w.Write(p.Body)
		return
	}
	if reason := upstreamReason(err); reason != "" {
		x.metrics.upstreamError(reason)
		x.log.V(1).Info("forwarding failed", "route", x.metrics.key, "error", err.Error())
	} else if code != http.StatusNotFound {
		x.log.V(1).Info("request not forwarded", "route", x.metrics.key, "error", err.Error())
	}
	h := w.Header()
	h.Del("Content-Length")
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	if code == http.StatusServiceUnavailable {
		h.Set("Retry-After", "1")
	}
	w.WriteHeader(code)
	_, _ = w.Write([]byte(message(code)))
}

// routeStage looks the request's route up, and records the outcome in the metrics.
type routeStage struct {
	router  Router
	metrics *Metrics
	log     logr.Logger
	now     func() time.Time
	next    Handler
}

// Route returns the head of the chain: it finds the request's route (404 when none matches),
// passes it on to next, and records the request's status and duration. now is the clock of the
// durations; nil means time.Now.
func Route(router Router, metrics *Metrics, log logr.Logger, now func() time.Time, next Handler) http.Handler {
	if now == nil {
		now = time.Now
	}
	return &routeStage{router: router, metrics: metrics, log: log, now: now, next: next}
}

func (s *routeStage) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := s.now()
	x := exchanges.Get().(*Exchange)
	*x = Exchange{log: s.log}
	defer func() {
		if x.code == 0 {
			// A handler that writes nothing answers 200, as net/http does.
			x.code = http.StatusOK
		}
		x.metrics.request(x.code)
		x.metrics.duration.Observe(s.now().Sub(start).Seconds())
		*x = Exchange{}
		exchanges.Put(x)
	}()
	x.route = s.router.Route(r)
	if x.route == nil {
		x.metrics = s.metrics.unrouted()
		x.fail(w, ErrNoRoute, false)
		return
	}
	x.metrics = s.metrics.route(x.route.Key)
	s.next.ServeExchange(w, r, x)
}

// Count returns the stage that keeps the route's counters: it marks upgrade requests, lets the
// later stages move the request from held to in flight or open, and ends whichever state the
// request is in when next returns, so that the counters return to zero on every path.
func Count(next Handler) Handler {
	return HandlerFunc(func(w http.ResponseWriter, r *http.Request, x *Exchange) {
		x.upgrade = isUpgrade(r)
		defer func() {
			c := x.route.Counts
			switch x.state {
			case held:
				c.EndHeld()
			case inFlight:
				c.EndInFlight()
			case open:
				c.EndOpen()
			}
			x.state = uncounted
		}()
		next.ServeExchange(w, r, x)
	})
}

// isUpgrade reports whether r asks to switch protocols on its connection (HTTP/1.1 Upgrade).
func isUpgrade(r *http.Request) bool {
	return r.Header.Get("Upgrade") != "" && httpguts.HeaderValuesContainsToken(r.Header["Connection"], "upgrade")
}

// Wait returns the stage that holds a request while its route's target has no ready endpoint:
// up to the route's cap of held requests (503 with Retry-After, or the placeholder, beyond it),
// and up to its cold-start timeout, after which the request goes to the failover target, or gets
// the placeholder, or 504. now is the clock of the wait; nil means time.Now.
func Wait(now func() time.Time, next Handler) Handler {
	if now == nil {
		now = time.Now
	}
	return HandlerFunc(func(w http.ResponseWriter, r *http.Request, x *Exchange) {
		route := x.route
		if snap := route.Target.Snapshot(); len(snap.Endpoints) > 0 {
			x.snap, x.target = snap, route.Target
			x.admit()
			next.ServeExchange(w, r, x)
			return
		}
		if !x.hold() {
			x.metrics.rejections.Inc()
			x.fail(w, ErrQueueFull, route.Overflow == routing.OverflowPlaceholder)
			return
		}
		start := now()
		snap, target, err := wait(r, route)
		x.waited = now().Sub(start)
		x.metrics.coldStart.Observe(x.waited.Seconds())
		if !errors.Is(err, ErrClientGone) {
			w.Header().Set(ColdStartHeader, x.waited.Round(time.Microsecond).String())
		}
		if err != nil {
			x.fail(w, err, true)
			return
		}
		x.snap, x.target = snap, target
		x.admit()
		next.ServeExchange(w, r, x)
	})
}

// wait blocks until the route's target has a ready endpoint, the cold-start timeout passes (then
// the failover target is used when it has endpoints), or the client goes away.
func wait(r *http.Request, route *routing.Route) (*endpoints.Snapshot, *endpoints.Target, error) {
	ctx := r.Context()
	if route.ColdStartTimeout > 0 {
		var cancel func()
		ctx, cancel = context.WithTimeout(ctx, route.ColdStartTimeout)
		defer cancel()
	}
	snap, err := route.Target.Wait(ctx)
	if err == nil {
		return snap, route.Target, nil
	}
	if r.Context().Err() != nil {
		return nil, nil, ErrClientGone
	}
	if f := route.Failover; f != nil {
		if snap := f.Snapshot(); len(snap.Endpoints) > 0 {
			return snap, f, nil
		}
	}
	return nil, nil, ErrColdStartTimeout
}

// scheme returns the URL scheme for a target protocol.
func scheme(p endpoints.Protocol) string {
	if p == endpoints.HTTPS {
		return "https"
	}
	return "http"
}

// clientIP returns the host part of a RemoteAddr without allocating.
func clientIP(remoteAddr string) string {
	if i := strings.LastIndexByte(remoteAddr, ':'); i >= 0 {
		remoteAddr = remoteAddr[:i]
	}
	return strings.TrimSuffix(strings.TrimPrefix(remoteAddr, "["), "]")
}

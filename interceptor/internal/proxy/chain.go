// Package proxy is the interceptor's hot path: a chain of small handlers that route a request to
// its HTTPScaledObject, count it, hold it while the app has no ready endpoint, and forward it to a
// ready endpoint. It reads only immutable snapshots and atomics; it never talks to Kubernetes.
//
// The stages pass one *Exchange down the chain instead of values in the request context, so that
// composing them costs no allocation:
//
//	Route(router, metrics, log, now, tracer, Count(Wait(now, forwarder)))
package proxy

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptrace"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"go.opentelemetry.io/otel/trace"

	"github.com/lobby-http/lobby/interceptor/internal/counts"
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

// Outcome is how the forwarding stage ended a request.
type Outcome uint8

const (
	// Forwarded means the request went to the upstream and the client got what it answered (or
	// what was left of the exchange when it failed after the request went out).
	Forwarded Outcome = iota
	// Failed means the forwarding stage answered the request with an error of its own.
	Failed
	// Lost means the connection to every endpoint tried failed before any byte of the request was
	// sent, and no other endpoint was left: nothing was answered, so the caller holds the request
	// again or answers it.
	Lost
)

// ForwardHandler is the stage after Wait: it forwards a request to the endpoint Wait picked
// (x's), and reports how that ended, with the error when it did not end Forwarded.
type ForwardHandler interface {
	// Forward forwards r to x's endpoint, answering on w unless the outcome is Lost.
	Forward(w http.ResponseWriter, r *http.Request, x *Exchange) (Outcome, error)
}

// ForwardFunc adapts a function to ForwardHandler.
type ForwardFunc func(w http.ResponseWriter, r *http.Request, x *Exchange) (Outcome, error)

// Forward calls f(w, r, x).
func (f ForwardFunc) Forward(w http.ResponseWriter, r *http.Request, x *Exchange) (Outcome, error) {
	return f(w, r, x)
}

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
	// waited is how long the request was held in all; zero when it was not.
	waited time.Duration
	// holdEnd is when the request's cold-start timeout ends, counted from the start of its first
	// hold; zero until it is held.
	holdEnd time.Time
	// snap holds the ready endpoints the request is forwarded to; target is their Target, and ep
	// the endpoint picked for the first attempt.
	snap   *endpoints.Snapshot
	target *endpoints.Target
	ep     *endpoints.Endpoint
	// sent is set once the request has been written whole to an upstream connection: from then
	// on the upstream may have acted on it, and it is never held to be sent again. trace sets it;
	// it is the pooled Exchange's own, kept across uses, so that tracing allocates nothing.
	sent  atomic.Bool
	trace *httptrace.ClientTrace

	// What the request's span reports (see tracing.go); kept whether tracing is on or not,
	// since plain stores cost less than checking. endpoint is the endpoint last tried, retries
	// the other endpoints tried after refused connections, requeues the holds after every
	// endpoint was lost, upstreamCode the app's status.
	endpoint     *endpoints.Endpoint
	retries      int
	requeues     int
	upstreamCode int
	span         span
}

var exchanges = sync.Pool{New: func() any {
	x := new(Exchange)
	x.trace = &httptrace.ClientTrace{WroteRequest: func(info httptrace.WroteRequestInfo) {
		if info.Err == nil {
			x.sent.Store(true)
		}
	}}
	return x
}}

// Route returns the request's route.
func (x *Exchange) Route() *routing.Route { return x.route }

// Waited returns how long the request was held for a cold start; zero when it was not held.
func (x *Exchange) Waited() time.Duration { return x.waited }

// Upgrade reports whether the request asks to switch protocols (a WebSocket).
func (x *Exchange) Upgrade() bool { return x.upgrade }

// hold counts the request as held, unless the route's queue or the interceptor's cap over all
// routes is full: then it says which.
func (x *Exchange) hold() counts.Hold {
	h := x.route.Counts.BeginHeld(x.route.MaxPending)
	if h == counts.Held {
		x.state = held
	}
	return h
}

// requeue counts a request that was forwarded as held again, as hold does.
func (x *Exchange) requeue() counts.Hold {
	h := x.route.Counts.Requeue(x.route.MaxPending, x.state == open)
	if h == counts.Held {
		x.state = held
	}
	return h
}

// reject answers a request that finds the route's hold queue, or the interceptor's cap over all
// routes (h), full. Both get the same answer, counted apart.
func (x *Exchange) reject(w http.ResponseWriter, h counts.Hold) {
	err := ErrQueueFull
	if h == counts.InterceptorFull {
		x.metrics.heldLimit.Inc()
		err = ErrHeldLimit
	} else {
		x.metrics.rejections.Inc()
	}
	x.fail(w, err, x.route.Overflow == routing.OverflowPlaceholder)
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
	if x.span.on() {
		x.span.failed(err)
	}
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
	} else if code == http.StatusServiceUnavailable {
		// A full queue under a flood rejects thousands of requests a second; the rejections are
		// counted, and a line each at debug level would drown everything else.
		x.log.V(2).Info("request not forwarded", "route", x.metrics.key, "error", err.Error())
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
	tracer  trace.Tracer
	forward ForwardHandler
	next    Handler
}

// Route returns the head of the chain: it answers the paths under ReservedPrefix itself, before
// any route is looked up (see serveReserved), finds the request's route (404 when none matches),
// answers the static routes of InterceptorRoutes itself (see serveStatic; forward is where those
// in WhenUnavailable mode send requests while the target has a ready endpoint), passes every
// other request on to next, and records the request's status and duration. now is the clock of
// the durations; nil means time.Now. With a tracer, each request gets a server span (a child of
// the client's W3C traceparent, when it sends one) that the request to the app carries on; nil
// traces nothing and costs nothing.
func Route(router Router, metrics *Metrics, log logr.Logger, now func() time.Time, tracer trace.Tracer, forward ForwardHandler, next Handler) http.Handler {
	if now == nil {
		now = time.Now
	}
	return &routeStage{router: router, metrics: metrics, log: log, now: now, tracer: tracer, forward: forward, next: next}
}

func (s *routeStage) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := s.now()
	x := exchanges.Get().(*Exchange)
	*x = Exchange{log: s.log, trace: x.trace}
	if s.tracer != nil {
		x.span.start(s.tracer, r, start)
	}
	defer func() {
		if x.code == 0 {
			// A handler that writes nothing answers 200, as net/http does.
			x.code = http.StatusOK
		}
		end := s.now()
		x.metrics.request(x.code)
		x.metrics.duration.Observe(end.Sub(start).Seconds())
		if x.span.on() {
			x.span.end(x, end)
		}
		*x = Exchange{trace: x.trace}
		exchanges.Put(x)
	}()
	if reserved(r.URL.Path) {
		s.serveReserved(w, r, x)
		return
	}
	x.route = s.router.Route(r)
	if x.route == nil {
		x.metrics = s.metrics.unrouted()
		x.fail(w, ErrNoRoute, false)
		return
	}
	x.metrics = s.metrics.route(x.route)
	if x.span.on() {
		x.span.routed(r, x.route.Key)
	}
	// Static routes are served here rather than by a stage of their own: a held request's
	// goroutine stack must stay within its first 8 KiB, and one more frame under the hold grows
	// it to 16 (BenchmarkHeldMemory: 20 KiB instead of 16.5 per held request).
	if x.route.Static != nil {
		serveStatic(w, r, x, s.forward)
		return
	}
	s.next.ServeExchange(w, r, x)
}

// Count returns the stage that keeps the route's counters: it marks upgrade requests, lets the
// later stages move the request from held to in flight or open, and ends whichever state the
// request is in when next returns, so that the counters return to zero on every path.
func Count(next Handler) Handler {
	return HandlerFunc(func(w http.ResponseWriter, r *http.Request, x *Exchange) {
		x.upgrade = admitUpgrade(r)
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

// Wait returns the stage that holds a request while its route's target has no ready endpoint that
// may be picked: up to the route's cap of held requests (503 with Retry-After, or the placeholder,
// beyond it), and up to its cold-start timeout, after which the request goes to the failover
// target, or gets the placeholder, or 504. A request that next reports Lost, because the
// connection to every endpoint it tried failed before any byte was sent and no other was left, is
// held again the same way, within what is left of its cold-start timeout (or answered 502 when
// it was sent to the failover, used once that timeout is over). A route whose cold-start mode
// says so answers a request that would be held at once instead, while its target has no ready
// endpoint (see answerAtOnce). now is the clock of the wait; nil means time.Now.
func Wait(now func() time.Time, next ForwardHandler) Handler {
	if now == nil {
		now = time.Now
	}
	return HandlerFunc(func(w http.ResponseWriter, r *http.Request, x *Exchange) {
		target := x.route.Target
		snap := target.Snapshot()
		ep := pick(snap.Endpoints)
		if ep == nil {
			// The route's cold-start mode is read only here, by a request that would be held.
			if x.route.Mode != routing.ColdStartHold && len(snap.Endpoints) == 0 && answerAtOnce(w, r, x, now) {
				return
			}
			if h := x.hold(); h != counts.Held {
				x.reject(w, h)
				return
			}
			if target, snap, ep = x.wait(w, r, now); ep == nil {
				return
			}
		}
		for {
			x.target, x.snap, x.ep = target, snap, ep
			x.admit()
			outcome, err := next.Forward(w, r, x)
			if outcome != Lost {
				return
			}
			if x.target != x.route.Target {
				// The failover, used once the cold-start timeout is over: there is no wait left.
				x.fail(w, err, false)
				return
			}
			x.metrics.upstreamError("connect")
			x.metrics.requeues.Inc()
			x.requeues++
			x.log.V(1).Info("holding the request again", "route", x.metrics.key, "error", err.Error())
			if h := x.requeue(); h != counts.Held {
				x.reject(w, h)
				return
			}
			if target, snap, ep = x.wait(w, r, now); ep == nil {
				return
			}
		}
	})
}

// wait waits, for a request counted as held, until an endpoint may be picked, and returns it with
// its snapshot and target. The route's cold-start timeout runs from the start of the request's
// first hold: a request held again waits only what is left of it, so that however often its
// endpoints fail, it is answered within the timeout. When the wait fails, wait answers the
// request and returns a nil endpoint.
func (x *Exchange) wait(w http.ResponseWriter, r *http.Request, now func() time.Time) (*endpoints.Target, *endpoints.Snapshot, *endpoints.Endpoint) {
	start := now()
	if x.holdEnd.IsZero() {
		x.holdEnd = start.Add(x.route.ColdStartTimeout)
	}
	var hold trace.Span
	if x.span.on() {
		hold = x.span.hold(start)
	}
	target, snap, ep, err := waitFor(r, x.route, x.holdEnd.Sub(start))
	end := now()
	if hold != nil {
		endHold(hold, holdOutcome(err, target, x.route), end)
	}
	waited := end.Sub(start)
	x.waited += waited
	x.metrics.coldStart.Observe(waited.Seconds())
	if !errors.Is(err, ErrClientGone) {
		w.Header().Set(ColdStartHeader, x.waited.Round(time.Microsecond).String())
	}
	if err != nil {
		x.fail(w, err, true)
		return nil, nil, nil
	}
	return target, snap, ep
}

// waitFor blocks until an endpoint of the route's target may be picked, for at most left when
// the route has a cold-start timeout (then the failover target is used when it has an endpoint
// to pick), or until the client goes away.
func waitFor(r *http.Request, route *routing.Route, left time.Duration) (*endpoints.Target, *endpoints.Snapshot, *endpoints.Endpoint, error) {
	ctx := r.Context()
	if route.ColdStartTimeout > 0 {
		var cancel func()
		ctx, cancel = context.WithTimeout(ctx, left)
		defer cancel()
	}
	for ctx.Err() == nil {
		snap, err := route.Target.Wait(ctx)
		if err != nil {
			break
		}
		if ep := pick(snap.Endpoints); ep != nil {
			return route.Target, snap, ep, nil
		}
		// Another request claimed the endpoint whose suspect mark ran out, to try it: Wait again
		// returns when it answers, when the slices change, or when the renewed mark runs out.
	}
	if r.Context().Err() != nil {
		return nil, nil, nil, ErrClientGone
	}
	if f := route.Failover; f != nil {
		snap := f.Snapshot()
		if ep := pick(snap.Endpoints); ep != nil {
			return f, snap, ep, nil
		}
	}
	return nil, nil, nil, ErrColdStartTimeout
}

// holdOutcome names how a hold ended for its span.
func holdOutcome(err error, target *endpoints.Target, route *routing.Route) string {
	switch {
	case errors.Is(err, ErrClientGone):
		return "client_gone"
	case err != nil:
		return "timeout"
	case target != route.Target:
		return "failover"
	}
	return "ready"
}

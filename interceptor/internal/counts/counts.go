// Package counts keeps the per-route request counters of one interceptor: in flight, held, open
// upgraded connections, a request total and a per-second rate over the route's window. Counters
// are atomics so the request path takes no lock; the idle→busy edge of a route is reported to an
// activation hook at once.
package counts

import (
	"cmp"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lobby-http/lobby/internal/stream"
)

// Default rate window and granularity, the same as the KEDA HTTP Add-on's, used when a route
// gives none.
const (
	DefaultWindow      = time.Minute
	DefaultGranularity = time.Second
)

// Route holds the counters of one route (one HTTPScaledObject). It is stable across rebuilds of
// the routing table: the Registry hands out the same *Route for the same key.
//
// A request is held (BeginHeld), then in flight (BeginInFlight) or open (BeginOpen), and ends in
// the state it is in (EndHeld, EndInFlight, EndOpen). A request whose endpoint refused the
// connection goes back from in flight or open to held (Requeue). Every move between states is one
// step, so the route never looks idle in between.
type Route struct {
	key string
	reg *Registry

	// busy is held + inFlight + open, kept apart so that the idle→busy edge is one atomic add
	// whose result is exactly 1, seen by exactly one goroutine.
	busy     atomic.Int64
	held     atomic.Int64
	inFlight atomic.Int64
	open     atomic.Int64
	requests atomic.Uint64
	rate     atomic.Pointer[ring]
}

// Key returns the route's "namespace/name".
func (r *Route) Key() string { return r.key }

// Hold is the outcome of BeginHeld and Requeue.
type Hold uint8

const (
	// Held means the request is counted as held.
	Held Hold = iota
	// RouteFull means the route holds its cap of requests already; nothing changed.
	RouteFull
	// InterceptorFull means the interceptor holds its cap of requests over all routes already
	// (Registry.LimitHeld); nothing changed.
	InterceptorFull
)

// BeginHeld counts a request as held (waiting for a ready endpoint) and as received, unless max
// requests are held on the route already, or the interceptor's cap over all routes is reached,
// in which case it changes nothing and says which. A max of zero or less means no cap on the
// route. It fires the activation hook on the idle→busy edge.
func (r *Route) BeginHeld(max int64) Hold {
	for {
		n := r.held.Load()
		if max > 0 && n >= max {
			return RouteFull
		}
		if r.held.CompareAndSwap(n, n+1) {
			break
		}
	}
	if !r.reg.enterHeld() {
		r.held.Add(-1)
		return InterceptorFull
	}
	r.received()
	r.enter()
	return Held
}

// EndHeld ends a held period started by BeginHeld when the request leaves without being
// forwarded (it was answered by the lobby, or the client went away).
func (r *Route) EndHeld() {
	r.held.Add(-1)
	r.reg.held.Add(-1)
	r.busy.Add(-1)
}

// BeginInFlight counts a request as in flight. fresh is true when the request was not counted as
// received by BeginHeld already (it did not have to wait). When fresh is false the request
// leaves the held state in the same step: do not call EndHeld for it. Fires the activation hook
// on the idle→busy edge.
func (r *Route) BeginInFlight(fresh bool) {
	r.inFlight.Add(1)
	r.begin(fresh)
}

// EndInFlight ends an in-flight period.
func (r *Route) EndInFlight() {
	r.inFlight.Add(-1)
	r.busy.Add(-1)
}

// BeginOpen counts an upgraded connection (a WebSocket) as open. Open connections keep the route
// busy but are not in-flight requests. fresh has the meaning it has for BeginInFlight.
func (r *Route) BeginOpen(fresh bool) {
	r.open.Add(1)
	r.begin(fresh)
}

// EndOpen ends an open period.
func (r *Route) EndOpen() {
	r.open.Add(-1)
	r.busy.Add(-1)
}

// Requeue moves a request that was counted in flight (or open, when open is set) back to held,
// because it must wait for a ready endpoint again before it reaches the app: the endpoint it was
// sent to refused the connection and no other was left. Unless a cap is reached, as for
// BeginHeld, in which case it changes nothing and says which. The request is not counted as
// received again, and the route stays busy throughout.
func (r *Route) Requeue(max int64, open bool) Hold {
	for {
		n := r.held.Load()
		if max > 0 && n >= max {
			return RouteFull
		}
		if r.held.CompareAndSwap(n, n+1) {
			break
		}
	}
	if !r.reg.enterHeld() {
		r.held.Add(-1)
		return InterceptorFull
	}
	if open {
		r.open.Add(-1)
	} else {
		r.inFlight.Add(-1)
	}
	return Held
}

// begin finishes BeginInFlight and BeginOpen: a fresh request is received and may make the route
// busy; a held one hands its place over. The new state was counted first, so a reader may see the
// request twice for an instant but never not at all.
func (r *Route) begin(fresh bool) {
	if fresh {
		r.received()
		r.enter()
		return
	}
	r.held.Add(-1)
	r.reg.held.Add(-1)
}

// enter counts one more busy request and fires the activation hook on the idle→busy edge.
func (r *Route) enter() {
	if r.busy.Add(1) == 1 && r.reg.onActivate != nil {
		r.reg.onActivate(r)
	}
}

// received counts a request in the total and in the rate window.
func (r *Route) received() {
	r.requests.Add(1)
	r.rate.Load().add(r.reg.clock())
}

// Counts returns the route's current counts for the push stream and /queue.
func (r *Route) Counts(now time.Time) stream.RouteCounts {
	return stream.RouteCounts{
		Key:      r.key,
		InFlight: max(r.inFlight.Load(), 0),
		Held:     max(r.held.Load(), 0),
		Open:     max(r.open.Load(), 0),
		Requests: r.requests.Load(),
		Rate:     r.rate.Load().perSecond(now),
	}
}

// Busy reports whether anything is held, in flight or open on the route right now.
func (r *Route) Busy() bool { return r.busy.Load() > 0 }

// Registry owns the Routes of one interceptor, keyed "namespace/name". Its methods are safe for
// concurrent use; they take a lock, so they belong to table rebuilds and readers of counts, not to
// the request path, which only uses the *Route it was handed.
type Registry struct {
	onActivate func(*Route)
	clock      func() time.Time

	// held is how many requests are held over all routes; maxHeld caps it, 0 for no cap. Only
	// requests that wait touch held: one atomic add as they start holding, one as they stop.
	held    atomic.Int64
	maxHeld int64

	mu     sync.Mutex
	routes map[string]*Route
}

// NewRegistry returns a Registry that calls onActivate (from the request goroutine, so it must not
// block) when a route goes from idle to busy. onActivate may be nil. clock is the time source of
// the rate windows; nil means time.Now.
func NewRegistry(onActivate func(*Route), clock func() time.Time) *Registry {
	if clock == nil {
		clock = time.Now
	}
	return &Registry{onActivate: onActivate, clock: clock, routes: make(map[string]*Route)}
}

// LimitHeld caps the requests held at once over all routes at n; 0 or less means no cap. A
// request over it is refused as one over its route's cap is (BeginHeld says which). It must be
// called before the Registry's routes are used.
func (g *Registry) LimitHeld(n int64) { g.maxHeld = max(n, 0) }

// MaxHeld returns the cap LimitHeld set; 0 means none.
func (g *Registry) MaxHeld() int64 { return g.maxHeld }

// Held returns how many requests are held over all routes.
func (g *Registry) Held() int64 { return max(g.held.Load(), 0) }

// enterHeld counts one more request held over all routes, unless the cap is reached.
func (g *Registry) enterHeld() bool {
	if n := g.held.Add(1); g.maxHeld > 0 && n > g.maxHeld {
		g.held.Add(-1)
		return false
	}
	return true
}

// Route returns the Route for key, creating it with the given rate window and granularity, or
// updating them when they changed (which starts the rate window afresh). A window or granularity
// of zero or less takes the default.
func (g *Registry) Route(key string, window, granularity time.Duration) *Route {
	if window <= 0 {
		window = DefaultWindow
	}
	if granularity <= 0 {
		granularity = DefaultGranularity
	}
	granularity = min(granularity, window)
	g.mu.Lock()
	defer g.mu.Unlock()
	r, ok := g.routes[key]
	if !ok {
		r = &Route{key: key, reg: g}
		r.rate.Store(newRing(window, granularity))
		g.routes[key] = r
		return r
	}
	if cur := r.rate.Load(); cur.window != window || cur.granularity != granularity {
		r.rate.Store(newRing(window, granularity))
	}
	return r
}

// Lookup returns the Route for key, or nil when there is none.
func (g *Registry) Lookup(key string) *Route {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.routes[key]
}

// Retain drops the Routes whose keys are not in keep (called after a routing-table rebuild).
// Requests still using a dropped Route finish on it; a later Route call for the same key starts a
// new one.
func (g *Registry) Retain(keep map[string]struct{}) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for key := range g.routes {
		if _, ok := keep[key]; !ok {
			delete(g.routes, key)
		}
	}
}

// Snapshot returns the counts of every route, sorted by key.
func (g *Registry) Snapshot(now time.Time) []stream.RouteCounts {
	g.mu.Lock()
	routes := make([]*Route, 0, len(g.routes))
	for _, r := range g.routes {
		routes = append(routes, r)
	}
	g.mu.Unlock()
	out := make([]stream.RouteCounts, len(routes))
	for i, r := range routes {
		out[i] = r.Counts(now)
	}
	slices.SortFunc(out, func(a, b stream.RouteCounts) int { return cmp.Compare(a.Key, b.Key) })
	return out
}

// Now returns the registry's clock reading, for callers that take a snapshot.
func (g *Registry) Now() time.Time { return g.clock() }

// Package counts keeps the per-route request counters of one interceptor: in flight, held, open
// upgraded connections, a request total and a per-second rate over the route's window. Counters
// are atomics so the request path takes no lock; the idle→busy edge of a route is reported to an
// activation hook at once.
package counts

import (
	"time"

	"github.com/lobby-http/lobby/internal/stream"
)

// Route holds the counters of one route (one HTTPScaledObject). It is stable across rebuilds of
// the routing table: the Registry hands out the same *Route for the same key.
type Route struct {
	// TODO(dataplane): atomics for inFlight, held, open, requests; rate buckets.
}

// Key returns the route's "namespace/name".
func (r *Route) Key() string { panic("unimplemented") }

// BeginHeld counts a request as held (waiting for a ready endpoint) and as received, unless max
// requests are held already, in which case it changes nothing and returns false (the queue is
// full). It fires the activation hook on the idle→busy edge.
func (r *Route) BeginHeld(max int64) bool { panic("unimplemented") }

// EndHeld ends a held period started by BeginHeld.
func (r *Route) EndHeld() { panic("unimplemented") }

// BeginInFlight counts a request as in flight. fresh is true when the request was not counted as
// received by BeginHeld already (it did not have to wait). Fires the activation hook on the
// idle→busy edge.
func (r *Route) BeginInFlight(fresh bool) { panic("unimplemented") }

// EndInFlight ends an in-flight period.
func (r *Route) EndInFlight() { panic("unimplemented") }

// BeginOpen counts an upgraded connection as open; EndOpen undoes it.
func (r *Route) BeginOpen() { panic("unimplemented") }

// EndOpen ends an open period.
func (r *Route) EndOpen() { panic("unimplemented") }

// Counts returns the route's current counts for the push stream and /queue.
func (r *Route) Counts(now time.Time) stream.RouteCounts { panic("unimplemented") }

// Registry owns the Routes of one interceptor, keyed "namespace/name".
type Registry struct{}

// NewRegistry returns a Registry that calls onActivate (from the request goroutine, so it must not
// block) when a route goes from idle to busy.
func NewRegistry(onActivate func(*Route), clock func() time.Time) *Registry {
	panic("unimplemented")
}

// Route returns the Route for key, creating it with the given rate window and granularity, or
// updating them when they changed.
func (g *Registry) Route(key string, window, granularity time.Duration) *Route {
	panic("unimplemented")
}

// Retain drops the Routes whose keys are not in keep (called after a routing-table rebuild).
func (g *Registry) Retain(keep map[string]struct{}) { panic("unimplemented") }

// Snapshot returns the counts of every route, sorted by key.
func (g *Registry) Snapshot(now time.Time) []stream.RouteCounts { panic("unimplemented") }

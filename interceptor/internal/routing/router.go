package routing

import (
	"net/http"
	"sync/atomic"
)

// Router serves lookups from the current Table, which the Watcher swaps atomically. Its zero value
// routes nothing.
type Router struct {
	table atomic.Pointer[Table]
}

// NewRouter returns a Router with an empty table.
func NewRouter() *Router { return &Router{} }

// Route returns the route for r (by r.Host, r.URL.Path and r.Header), or nil when none matches.
func (rt *Router) Route(r *http.Request) *Route {
	return rt.table.Load().Lookup(r.Host, r.URL.Path, r.Header)
}

// Table returns the current table; nil before the first one is set.
func (rt *Router) Table() *Table { return rt.table.Load() }

// SetTable makes t the table for every later lookup.
func (rt *Router) SetTable(t *Table) { rt.table.Store(t) }

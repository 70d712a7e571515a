package admin

import (
	"sync"
	"time"

	"github.com/lobby-http/lobby/internal/stream"
)

// fakeSource is a Source whose counts the test sets.
type fakeSource struct {
	mu     sync.Mutex
	routes []stream.RouteCounts
}

func (f *fakeSource) set(routes ...stream.RouteCounts) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.routes = routes
}

func (f *fakeSource) Snapshot(time.Time) []stream.RouteCounts {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]stream.RouteCounts(nil), f.routes...)
}

// fakeRoute is a Route with fixed counts.
type fakeRoute struct{ counts stream.RouteCounts }

func (r fakeRoute) Key() string                         { return r.counts.Key }
func (r fakeRoute) Counts(time.Time) stream.RouteCounts { return r.counts }

var (
	_ Source = (*fakeSource)(nil)
	_ Route  = fakeRoute{}
)

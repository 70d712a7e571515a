package counts_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lobby-http/lobby/interceptor/internal/counts"
	"github.com/lobby-http/lobby/internal/stream"
)

// fakeClock is a settable time source, safe for concurrent use.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock(t time.Time) *fakeClock {
	c := &fakeClock{}
	c.ns.Store(t.UnixNano())
	return c
}

func (c *fakeClock) Now() time.Time       { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Set(t time.Time)      { c.ns.Store(t.UnixNano()) }
func (c *fakeClock) Step(d time.Duration) { c.ns.Add(int64(d)) }

// epoch is a whole second, so that granularity periods start at known offsets from it.
var epoch = time.Unix(1_700_000_000, 0)

func TestRate(t *testing.T) {
	// step is one action in a rate test: advance the clock by advance, then count requests
	// (fresh in-flight requests that end at once), then, when check is set, compare the rate.
	type step struct {
		advance  time.Duration
		requests int
		check    bool
		want     float64
	}
	tests := []struct {
		name        string
		window      time.Duration
		granularity time.Duration
		steps       []step
	}{
		{
			name: "requests in the current second count over the whole window", window: 10 * time.Second, granularity: time.Second,
			steps: []step{{requests: 20, check: true, want: 2}},
		},
		{
			name: "a bucket expires once its period leaves the window", window: 3 * time.Second, granularity: time.Second,
			steps: []step{
				{requests: 3},
				{advance: time.Second, requests: 6, check: true, want: 3},
				{advance: time.Second, check: true, want: 3},
				{advance: time.Second, check: true, want: 2},
				{advance: time.Second, check: true, want: 0},
				{advance: time.Second, check: true, want: 0},
			},
		},
		{
			name: "a bucket is reset when the ring comes round to it again", window: 2 * time.Second, granularity: time.Second,
			steps: []step{
				{requests: 10},
				{advance: 2 * time.Second, requests: 2, check: true, want: 1},
				{advance: 10 * time.Second, requests: 4, check: true, want: 2},
			},
		},
		{
			name: "coarse granularity keeps a request for whole periods", window: 10 * time.Second, granularity: 5 * time.Second,
			steps: []step{
				{requests: 10},
				{advance: 4 * time.Second, check: true, want: 1},
				{advance: 5 * time.Second, check: true, want: 1},
				{advance: 1 * time.Second, check: true, want: 0},
			},
		},
		{
			name: "a window that is not a multiple of the granularity averages over whole periods", window: 5 * time.Second, granularity: 2 * time.Second,
			// Three buckets of two seconds: the rate is averaged over six seconds.
			steps: []step{
				{requests: 6, check: true, want: 1},
				{advance: 4 * time.Second, requests: 6, check: true, want: 2},
				{advance: 2 * time.Second, check: true, want: 1},
			},
		},
		{
			name: "a granularity longer than the window is cut to the window", window: time.Second, granularity: time.Minute,
			steps: []step{
				{requests: 4, check: true, want: 4},
				{advance: time.Second, check: true, want: 0},
			},
		},
		{
			name: "zero window and granularity take the defaults", window: 0, granularity: 0,
			steps: []step{
				{requests: 60, check: true, want: 1},
				{advance: 59 * time.Second, check: true, want: 1},
				{advance: time.Second, check: true, want: 0},
			},
		},
		{
			name: "after the clock goes back, requests from the skipped future are not counted", window: 10 * time.Second, granularity: time.Second,
			steps: []step{
				{requests: 10},
				{advance: 5 * time.Second, requests: 20, check: true, want: 3},
				{advance: -3 * time.Second, check: true, want: 1},
				{requests: 10, check: true, want: 2},
				{advance: 3 * time.Second, check: true, want: 4},
			},
		},
		{
			name: "after the clock goes back further than the window, counting starts again", window: 3 * time.Second, granularity: time.Second,
			steps: []step{
				{requests: 30},
				{advance: -time.Hour, check: true, want: 0},
				{requests: 3, check: true, want: 1},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk := newFakeClock(epoch)
			reg := counts.NewRegistry(nil, clk.Now)
			r := reg.Route("ns/app", tc.window, tc.granularity)
			for i, s := range tc.steps {
				clk.Step(s.advance)
				for range s.requests {
					r.BeginInFlight(true)
					r.EndInFlight()
				}
				if !s.check {
					continue
				}
				if got := r.Counts(clk.Now()).Rate; got != s.want {
					t.Errorf("step %d: rate = %v, want %v", i, got, s.want)
				}
			}
		})
	}
}

func TestRateSurvivesConcurrentWriters(t *testing.T) {
	clk := newFakeClock(epoch)
	r := counts.NewRegistry(nil, clk.Now).Route("ns/app", 10*time.Second, time.Second)
	const writers, each = 8, 1000
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			for range each {
				r.BeginInFlight(true)
				r.EndInFlight()
			}
		})
	}
	wg.Wait()
	c := r.Counts(clk.Now())
	if c.Requests != writers*each || c.Rate != writers*each/10 {
		t.Errorf("counts = %+v, want %d requests at %d/s", c, writers*each, writers*each/10)
	}
}

func TestBeginHeld(t *testing.T) {
	tests := []struct {
		name      string
		max       int64
		before    int
		want      bool
		wantHeld  int64
		wantTotal uint64
	}{
		{name: "a request is held while the queue has room", max: 3, before: 2, want: true, wantHeld: 3, wantTotal: 3},
		{name: "a full queue refuses the request and changes nothing", max: 2, before: 2, want: false, wantHeld: 2, wantTotal: 2},
		{name: "a cap of one refuses the second request", max: 1, before: 1, want: false, wantHeld: 1, wantTotal: 1},
		{name: "a cap of zero means no cap", max: 0, before: 5, want: true, wantHeld: 6, wantTotal: 6},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk := newFakeClock(epoch)
			activations := 0
			r := counts.NewRegistry(func(*counts.Route) { activations++ }, clk.Now).Route("ns/app", time.Second, time.Second)
			for i := range tc.before {
				if h := r.BeginHeld(0); h != counts.Held {
					t.Fatalf("BeginHeld #%d without a cap = %d, want Held", i, h)
				}
			}
			before := r.Counts(clk.Now())
			if got := r.BeginHeld(tc.max) == counts.Held; got != tc.want {
				t.Fatalf("BeginHeld(%d) = %v, want %v", tc.max, got, tc.want)
			}
			got := r.Counts(clk.Now())
			if got.Held != tc.wantHeld || got.Requests != tc.wantTotal || got.InFlight != 0 || got.Open != 0 {
				t.Errorf("counts = %+v, want held %d and %d requests", got, tc.wantHeld, tc.wantTotal)
			}
			if !tc.want && got != before {
				t.Errorf("a refused request changed the counts from %+v to %+v", before, got)
			}
			if activations != 1 {
				t.Errorf("activations = %d, want 1", activations)
			}
		})
	}
}

func TestBeginHeldCapUnderConcurrency(t *testing.T) {
	r := counts.NewRegistry(nil, nil).Route("ns/app", time.Second, time.Second)
	const goroutines, cap = 16, 5
	var admitted atomic.Int64
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			if r.BeginHeld(cap) == counts.Held {
				admitted.Add(1)
			}
		})
	}
	wg.Wait()
	if admitted.Load() != cap || r.Counts(time.Now()).Held != cap {
		t.Errorf("admitted %d, held %d, want %d of each", admitted.Load(), r.Counts(time.Now()).Held, cap)
	}
}

func TestLimitHeld(t *testing.T) {
	g := counts.NewRegistry(nil, nil)
	g.LimitHeld(3)
	a := g.Route("ns/a", time.Second, time.Second)
	b := g.Route("ns/b", time.Second, time.Second)
	steps := []struct {
		name string
		do   func() counts.Hold
		want counts.Hold
		// wantHeld is the count over all routes after the step.
		wantHeld int64
	}{
		{"a first request is held", func() counts.Hold { return a.BeginHeld(0) }, counts.Held, 1},
		{"a request for another route is held", func() counts.Hold { return b.BeginHeld(0) }, counts.Held, 2},
		{"a third request reaches the cap", func() counts.Hold { return b.BeginHeld(0) }, counts.Held, 3},
		{"a fourth request over all routes is refused", func() counts.Hold { return a.BeginHeld(0) }, counts.InterceptorFull, 3},
		{"the route's own cap is told apart", func() counts.Hold { return b.BeginHeld(2) }, counts.RouteFull, 3},
		{"a held request that leaves frees its place", func() counts.Hold { a.EndHeld(); return counts.Held }, counts.Held, 2},
		{"a held request forwarded frees its place", func() counts.Hold { b.BeginInFlight(false); return counts.Held }, counts.Held, 1},
		{"a requeued request takes a place again", func() counts.Hold { return b.Requeue(0, false) }, counts.Held, 2},
		{"a request held after them fits", func() counts.Hold { return a.BeginHeld(0) }, counts.Held, 3},
		{"a requeue over the cap is refused", func() counts.Hold { b.BeginInFlight(false); a.BeginHeld(0); return b.Requeue(0, false) }, counts.InterceptorFull, 3},
	}
	for _, s := range steps {
		if got := s.do(); got != s.want || g.Held() != s.wantHeld {
			t.Fatalf("%s: got %d with %d held over all routes, want %d with %d", s.name, got, g.Held(), s.want, s.wantHeld)
		}
	}
	if got := a.Counts(time.Now()).Held + b.Counts(time.Now()).Held; got != g.Held() {
		t.Errorf("the routes hold %d, the registry counts %d", got, g.Held())
	}
	if g.MaxHeld() != 3 {
		t.Errorf("MaxHeld = %d, want 3", g.MaxHeld())
	}
}

func TestLimitHeldUnderConcurrency(t *testing.T) {
	g := counts.NewRegistry(nil, nil)
	const goroutines, cap = 32, 7
	g.LimitHeld(cap)
	var admitted atomic.Int64
	var wg sync.WaitGroup
	for i := range goroutines {
		r := g.Route(fmt.Sprintf("ns/app-%d", i%4), time.Second, time.Second)
		wg.Go(func() {
			if r.BeginHeld(0) == counts.Held {
				admitted.Add(1)
			}
		})
	}
	wg.Wait()
	if admitted.Load() != cap || g.Held() != cap {
		t.Errorf("admitted %d, held %d over all routes, want %d of each", admitted.Load(), g.Held(), cap)
	}
}

func TestStates(t *testing.T) {
	// Each case runs a sequence of operations on a fresh route and checks the counts, whether the
	// route is busy, and how many activations fired.
	type op func(r *counts.Route)
	var (
		held        op = func(r *counts.Route) { r.BeginHeld(0) }
		endHeld     op = func(r *counts.Route) { r.EndHeld() }
		fresh       op = func(r *counts.Route) { r.BeginInFlight(true) }
		fromHeld    op = func(r *counts.Route) { r.BeginInFlight(false) }
		endInFlight op = func(r *counts.Route) { r.EndInFlight() }
		open        op = func(r *counts.Route) { r.BeginOpen(true) }
		openHeld    op = func(r *counts.Route) { r.BeginOpen(false) }
		endOpen     op = func(r *counts.Route) { r.EndOpen() }
	)
	tests := []struct {
		name        string
		ops         []op
		want        stream.RouteCounts
		busy        bool
		activations int
	}{
		{name: "a fresh request is in flight and received", ops: []op{fresh},
			want: stream.RouteCounts{InFlight: 1, Requests: 1}, busy: true, activations: 1},
		{name: "a held request handed over is in flight and received once", ops: []op{held, fromHeld},
			want: stream.RouteCounts{InFlight: 1, Requests: 1}, busy: true, activations: 1},
		{name: "a held request that ends leaves the route idle", ops: []op{held, endHeld},
			want: stream.RouteCounts{Requests: 1}, activations: 1},
		{name: "an open connection is busy but not in flight", ops: []op{open},
			want: stream.RouteCounts{Open: 1, Requests: 1}, busy: true, activations: 1},
		{name: "a held request that upgrades is open and not held", ops: []op{held, openHeld},
			want: stream.RouteCounts{Open: 1, Requests: 1}, busy: true, activations: 1},
		{name: "a closed connection leaves the route idle", ops: []op{open, endOpen},
			want: stream.RouteCounts{Requests: 1}, activations: 1},
		{name: "each idle to busy edge fires once", ops: []op{fresh, fresh, endInFlight, endInFlight, held, fromHeld, endInFlight, open},
			want: stream.RouteCounts{Open: 1, Requests: 4}, busy: true, activations: 3},
		{name: "overlapping requests of different kinds fire once", ops: []op{held, fresh, open, endInFlight, fromHeld, endOpen},
			want: stream.RouteCounts{InFlight: 1, Requests: 3}, busy: true, activations: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk := newFakeClock(epoch)
			activations := 0
			r := counts.NewRegistry(func(*counts.Route) { activations++ }, clk.Now).Route("ns/app", time.Minute, time.Second)
			for _, o := range tc.ops {
				o(r)
			}
			got := r.Counts(clk.Now())
			got.Rate = 0
			tc.want.Key = "ns/app"
			if got != tc.want {
				t.Errorf("counts = %+v, want %+v", got, tc.want)
			}
			if r.Busy() != tc.busy {
				t.Errorf("Busy() = %v, want %v", r.Busy(), tc.busy)
			}
			if activations != tc.activations {
				t.Errorf("activations = %d, want %d", activations, tc.activations)
			}
		})
	}
}

// TestHandoverNeverLooksIdle hands requests from held to in flight while a reader watches. One
// request is always held or in flight, so were the handover two steps (end held, then begin in
// flight), the route would look idle in between and fire an activation each round.
func TestHandoverNeverLooksIdle(t *testing.T) {
	var activations atomic.Int64
	r := counts.NewRegistry(func(*counts.Route) { activations.Add(1) }, nil).Route("ns/app", time.Minute, time.Second)
	stop := make(chan struct{})
	var idleSeen atomic.Bool
	var wg sync.WaitGroup
	r.BeginHeld(0)
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if !r.Busy() {
				idleSeen.Store(true)
			}
		}
	})
	// Each round starts with one request held: it is handed over, the next one is held, and
	// only then does the first one end.
	for range 20000 {
		r.BeginInFlight(false)
		r.BeginHeld(0)
		r.EndInFlight()
	}
	close(stop)
	wg.Wait()
	r.EndHeld()
	if idleSeen.Load() {
		t.Error("the route looked idle while a request was held or in flight")
	}
	if n := activations.Load(); n != 1 {
		t.Errorf("activations = %d, want 1", n)
	}
	if r.Busy() {
		t.Error("the route is busy after every request ended")
	}
}

// TestCountsReturnToZeroUnderConcurrency has goroutines run every kind of request at once; when
// they are done the route is idle, every request was counted, and the next request is one more
// idle→busy edge.
func TestCountsReturnToZeroUnderConcurrency(t *testing.T) {
	var activations atomic.Int64
	route := counts.NewRegistry(func(*counts.Route) { activations.Add(1) }, nil).Route("ns/app", time.Minute, time.Second)
	const goroutines, rounds = 8, 2000
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range rounds {
				switch (g + i) % 3 {
				case 0:
					route.BeginInFlight(true)
					route.EndInFlight()
				case 1:
					if route.BeginHeld(0) == counts.Held {
						route.BeginInFlight(false)
						route.EndInFlight()
					}
				default:
					route.BeginOpen(true)
					route.EndOpen()
				}
			}
		})
	}
	wg.Wait()
	c := route.Counts(time.Now())
	if c.InFlight != 0 || c.Held != 0 || c.Open != 0 || route.Busy() {
		t.Errorf("counts after all requests ended = %+v, busy %v; want zeros", c, route.Busy())
	}
	if c.Requests != goroutines*rounds {
		t.Errorf("requests = %d, want %d", c.Requests, goroutines*rounds)
	}
	if n := activations.Load(); n < 1 || n > goroutines*rounds {
		t.Errorf("activations = %d, want between 1 and %d", n, goroutines*rounds)
	}
	before := activations.Load()
	route.BeginInFlight(true)
	route.EndInFlight()
	if activations.Load() != before+1 {
		t.Errorf("a request on an idle route fired %d activations, want 1", activations.Load()-before)
	}
}

// TestActivationPerEdgeUnderConcurrency serialises idle→busy edges with a barrier: in each round
// all goroutines begin together on an idle route, so exactly one activation must fire per round.
func TestActivationPerEdgeUnderConcurrency(t *testing.T) {
	var activations atomic.Int64
	route := counts.NewRegistry(func(*counts.Route) { activations.Add(1) }, nil).Route("ns/app", time.Minute, time.Second)
	const goroutines, rounds = 8, 200
	for round := range rounds {
		var start, begun sync.WaitGroup
		start.Add(1)
		begun.Add(goroutines)
		var done sync.WaitGroup
		for g := range goroutines {
			done.Go(func() {
				start.Wait()
				if g%2 == 0 {
					route.BeginHeld(0)
					begun.Done()
					begun.Wait()
					route.BeginInFlight(false)
					route.EndInFlight()
				} else {
					route.BeginOpen(true)
					begun.Done()
					begun.Wait()
					route.EndOpen()
				}
			})
		}
		start.Done()
		done.Wait()
		if got := activations.Load(); got != int64(round+1) {
			t.Fatalf("after round %d, activations = %d, want %d", round, got, round+1)
		}
	}
}

func TestRegistry(t *testing.T) {
	clk := newFakeClock(epoch)
	reg := counts.NewRegistry(nil, clk.Now)
	a := reg.Route("ns/a", 10*time.Second, time.Second)
	b := reg.Route("ns/b", 10*time.Second, time.Second)
	if a.Key() != "ns/a" || b.Key() != "ns/b" {
		t.Fatalf("keys = %q, %q", a.Key(), b.Key())
	}

	t.Run("the same key gives the same route and keeps its counts", func(t *testing.T) {
		a.BeginInFlight(true)
		if again := reg.Route("ns/a", 10*time.Second, time.Second); again != a {
			t.Fatal("Route returned a new *Route for an existing key")
		}
		if c := a.Counts(clk.Now()); c.InFlight != 1 || c.Rate != 0.1 {
			t.Errorf("counts = %+v, want 1 in flight at 0.1/s", c)
		}
	})

	t.Run("a new window starts the rate afresh and keeps the other counts", func(t *testing.T) {
		if again := reg.Route("ns/a", 5*time.Second, time.Second); again != a {
			t.Fatal("Route returned a new *Route for a changed window")
		}
		if c := a.Counts(clk.Now()); c.InFlight != 1 || c.Requests != 1 || c.Rate != 0 {
			t.Errorf("counts = %+v, want 1 in flight, 1 request, rate 0", c)
		}
		a.EndInFlight()
	})

	t.Run("the snapshot lists every route sorted by key", func(t *testing.T) {
		reg.Route("ns/0", time.Second, time.Second)
		b.BeginHeld(0)
		snap := reg.Snapshot(clk.Now())
		if len(snap) != 3 || snap[0].Key != "ns/0" || snap[1].Key != "ns/a" || snap[2].Key != "ns/b" || snap[2].Held != 1 {
			t.Errorf("snapshot = %+v", snap)
		}
		if reg.Lookup("ns/b") != b || reg.Lookup("ns/none") != nil {
			t.Error("Lookup does not find the registered routes only")
		}
	})

	t.Run("retain drops the other routes, and a dropped key comes back fresh", func(t *testing.T) {
		reg.Retain(map[string]struct{}{"ns/b": {}})
		snap := reg.Snapshot(clk.Now())
		if len(snap) != 1 || snap[0].Key != "ns/b" {
			t.Fatalf("snapshot after Retain = %+v", snap)
		}
		if reg.Lookup("ns/a") != nil {
			t.Error("Lookup finds a dropped route")
		}
		// A request still on the dropped route ends on it without harm.
		a.BeginInFlight(true)
		a.EndInFlight()
		fresh := reg.Route("ns/a", 10*time.Second, time.Second)
		if fresh == a {
			t.Fatal("Route returned the dropped *Route")
		}
		if c := fresh.Counts(clk.Now()); c.Requests != 0 {
			t.Errorf("a re-added route starts at %+v, want zeros", c)
		}
		if b.Counts(clk.Now()).Held != 1 {
			t.Error("Retain changed a kept route's counts")
		}
	})

	t.Run("the registry reads its clock", func(t *testing.T) {
		clk.Set(epoch.Add(time.Hour))
		if !reg.Now().Equal(epoch.Add(time.Hour)) {
			t.Errorf("Now() = %v", reg.Now())
		}
	})
}

func TestRegistryIsSafeForConcurrentUse(t *testing.T) {
	reg := counts.NewRegistry(nil, nil)
	var wg sync.WaitGroup
	keys := []string{"ns/a", "ns/b", "ns/c"}
	for i := range 4 {
		wg.Go(func() {
			for j := range 500 {
				r := reg.Route(keys[(i+j)%len(keys)], time.Duration(1+j%2)*time.Second, time.Second)
				r.BeginInFlight(true)
				r.EndInFlight()
				reg.Snapshot(time.Now())
				if j%50 == 0 {
					reg.Retain(map[string]struct{}{keys[j%len(keys)]: {}})
				}
			}
		})
	}
	wg.Wait()
	for _, c := range reg.Snapshot(time.Now()) {
		if c.InFlight != 0 {
			t.Errorf("%s has %d in flight after every request ended", c.Key, c.InFlight)
		}
	}
}

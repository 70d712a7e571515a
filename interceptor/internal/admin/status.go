package admin

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/utils/clock"

	"github.com/lobby-http/lobby/internal/stream"
)

// Apps lists the routed objects the status page shows, with their targets; main adapts the
// routing table to it.
type Apps interface {
	// Apps returns every routed object (static routes excluded).
	Apps() []App
}

// App is one routed object as the status page sees it.
type App struct {
	// Key is the object's "namespace/name".
	Key string
	// Target is the Service port its requests go to.
	Target Target
	// Counts reads the object's counters; *counts.Route implements it.
	Counts Route
}

// Target is the part of a route's target the status page reads; main adapts *endpoints.Target.
type Target interface {
	// Ready returns the number of ready endpoints now, without blocking or locking.
	Ready() int
	// Wait blocks until the target has a ready endpoint, or returns ctx's error.
	Wait(ctx context.Context) error
}

// Route states shown on the status page.
const (
	// StateCold is a route whose target has no ready endpoint and no cold start under way.
	StateCold = "cold"
	// StateWaking is a route whose target has no ready endpoint while requests are held or a
	// cold start is under way.
	StateWaking = "waking"
	// StateWarm is a route whose target has a ready endpoint.
	StateWarm = "warm"
)

// rateSpan is the time the status page's request rate is averaged over.
const rateSpan = time.Minute

// StatusOptions configure a Status.
type StatusOptions struct {
	// Apps lists the routed objects and their targets.
	Apps Apps
	// Interceptor names this interceptor (its pod name) on the page.
	Interceptor string
	// MaxViewers caps the page's open event streams; zero means 20.
	MaxViewers int
	// WriteTimeout bounds the write of one event to one viewer; zero means 10 seconds.
	WriteTimeout time.Duration
	// Clock gives the time of views and steps.
	Clock clock.PassiveClock
	// Log receives viewer lifecycle messages at V(1).
	Log logr.Logger
}

// Status is the producer of the status page: it follows the frames the push stream's dispatcher
// builds (Observe), the readiness of each woken route's target, and builds one view that every
// viewer shares. It reads no Kubernetes object and adds nothing to the request path.
type Status struct {
	opts StatusOptions

	frames chan observed
	// overflow is set when a frame could not be queued; the next one rebuilds the view anyway.
	overflow atomic.Bool
	steps    chan stepSeen

	// view is the latest encoded view.
	mu      sync.Mutex
	view    []byte
	changed chan struct{} // closed and replaced at every new view
	viewers int
	closed  bool

	// Owned by the producer goroutine: the routes' state, and the routed objects by key as of the
	// last snapshot or counts frame.
	routes map[string]*routeState
	apps   map[string]App
	// known is apps, for the stream's dispatcher to read.
	known atomic.Pointer[map[string]App]
}

// observed is one frame of the push stream as the status page gets it.
type observed struct {
	kind   stream.Kind
	routes []stream.RouteCounts
	at     time.Time
	pushed time.Time
}

// routeState is what the producer remembers of one route.
type routeState struct {
	counts stream.RouteCounts
	// samples are the route's request totals, one per counts frame, oldest first, covering
	// rateSpan.
	samples []sample
	cold    *coldStart
}

type sample struct {
	at       time.Time
	requests uint64
}

// NewStatus returns a Status configured by o.
func NewStatus(o StatusOptions) *Status {
	if o.MaxViewers <= 0 {
		o.MaxViewers = 20
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 10 * time.Second
	}
	s := &Status{
		opts:    o,
		frames:  make(chan observed, 64),
		steps:   make(chan stepSeen, 64),
		changed: make(chan struct{}),
		routes:  map[string]*routeState{},
	}
	s.view, _ = json.Marshal(StatusView{Interceptor: o.Interceptor, UnixMilli: o.Clock.Now().UnixMilli(), Routes: []StatusRoute{}})
	return s
}

// Observe takes one frame from the push stream's dispatcher, after the frame was handed to the
// stream's subscribers. It never blocks: a frame that finds the queue full is dropped, and the
// next one brings the view up to date.
func (s *Status) Observe(kind stream.Kind, routes []stream.RouteCounts, at time.Time) {
	if kind == stream.KindActivate && s.warm(routes) {
		// No cold start begins: the producer is not woken. For a warm route under light load
		// this is nearly every request.
		return
	}
	select {
	case s.frames <- observed{kind: kind, routes: routes, at: at, pushed: s.opts.Clock.Now()}:
	default:
		s.overflow.Store(true)
	}
}

// Start runs the producer until ctx ends; then every viewer's stream ends.
func (s *Status) Start(ctx context.Context) error {
	defer s.close()
	var followers sync.WaitGroup
	defer followers.Wait()
	for {
		select {
		case <-ctx.Done():
			return nil
		case f := <-s.frames:
			// Activate frames come at every idle→busy edge, which for a warm route under light
			// load is every request: they cost a view only when a cold start begins.
			if !s.apply(ctx, f, &followers) && !s.overflow.Swap(false) {
				continue
			}
		case st := <-s.steps:
			s.step(st)
		}
		s.publish()
	}
}

// apply folds a frame into the routes' state, and starts following a cold start for every route
// an activate frame carries whose target has no ready endpoint. It reports whether the view
// changed.
func (s *Status) apply(ctx context.Context, f observed, followers *sync.WaitGroup) bool {
	changed := f.kind != stream.KindActivate
	if changed || s.apps == nil {
		s.refresh()
	}
	if f.kind != stream.KindActivate {
		// Snapshots and counts frames list every route: forget the ones that are gone.
		for key := range s.routes {
			if _, ok := s.apps[key]; !ok {
				delete(s.routes, key)
			}
		}
	}
	for _, c := range f.routes {
		app, ok := s.apps[c.Key]
		if !ok && f.kind == stream.KindActivate {
			// Routed since the last counts frame.
			s.refresh()
			app, ok = s.apps[c.Key]
		}
		if !ok {
			continue
		}
		rs := s.routes[c.Key]
		if rs == nil {
			rs = &routeState{}
			s.routes[c.Key] = rs
		}
		rs.counts = c
		if f.kind == stream.KindActivate {
			if (rs.cold == nil || !rs.cold.underWay) && app.Target.Ready() == 0 {
				cs := &coldStart{underWay: true}
				cs.add(StepArrived, f.at)
				cs.add(StepPushed, f.pushed)
				cs.completed.Store(completed(c))
				rs.cold = cs
				changed = true
				followers.Add(1)
				go func() {
					defer followers.Done()
					s.follow(ctx, c.Key, app, cs)
				}()
			}
			continue
		}
		if rs.cold != nil && rs.cold.underWay {
			// Requests that gave up while the target was not ready are not answers.
			rs.cold.completed.Store(completed(c))
		}
		rs.samples = append(rs.samples, sample{at: f.at, requests: c.Requests})
		cut := 0
		for cut < len(rs.samples)-1 && f.at.Sub(rs.samples[cut+1].at) >= rateSpan {
			cut++
		}
		rs.samples = rs.samples[cut:]
	}
	return changed
}

// refresh reads the routed objects again.
func (s *Status) refresh() {
	list := s.opts.Apps.Apps()
	apps := make(map[string]App, len(list))
	for _, a := range list {
		apps[a.Key] = a
	}
	s.apps = apps
	s.known.Store(&apps)
}

// warm reports whether every route is known and its target has a ready endpoint. It runs on the
// stream's dispatcher and reads the map the producer last published, which is never modified.
func (s *Status) warm(routes []stream.RouteCounts) bool {
	known := s.known.Load()
	if known == nil {
		return false
	}
	for _, r := range routes {
		a, ok := (*known)[r.Key]
		if !ok || a.Target.Ready() == 0 {
			return false
		}
	}
	return true
}

// publish builds the view from the routes' state and hands it to every viewer.
func (s *Status) publish() {
	now := s.opts.Clock.Now()
	if s.apps == nil {
		s.refresh()
	}
	v := StatusView{Interceptor: s.opts.Interceptor, UnixMilli: now.UnixMilli(), Routes: make([]StatusRoute, 0, len(s.apps))}
	for _, a := range s.apps {
		r := StatusRoute{Key: a.Key, Ready: a.Target.Ready(), State: StateCold}
		rs := s.routes[a.Key]
		c := stream.RouteCounts{}
		if rs != nil {
			c = rs.counts
		}
		if a.Counts != nil {
			// The counters as they are now, so that a view built at a step of a cold start
			// does not show the counts of the frame before it.
			c = a.Counts.Counts(now)
		}
		r.Held, r.InFlight, r.Open, r.Requests = c.Held, c.InFlight, c.Open, c.Requests
		if rs != nil {
			r.RatePerSecond = rs.rate()
			if rs.cold != nil {
				r.ColdStart = rs.cold.view()
			}
		}
		switch {
		case r.Ready > 0:
			r.State = StateWarm
		case r.Held > 0 || (rs != nil && rs.cold != nil && rs.cold.underWay):
			r.State = StateWaking
		}
		v.Routes = append(v.Routes, r)
	}
	slices.SortFunc(v.Routes, func(a, b StatusRoute) int { return cmp.Compare(a.Key, b.Key) })
	b, err := json.Marshal(v)
	if err != nil {
		s.opts.Log.Error(err, "encode status view")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.view = b
	close(s.changed)
	s.changed = make(chan struct{})
}

// rate returns the route's requests per second over the samples it keeps.
func (rs *routeState) rate() float64 {
	if len(rs.samples) < 2 {
		return 0
	}
	first, last := rs.samples[0], rs.samples[len(rs.samples)-1]
	d := last.at.Sub(first.at)
	if d <= 0 || last.requests < first.requests {
		return 0
	}
	return float64(last.requests-first.requests) / d.Seconds()
}

func (s *Status) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	close(s.changed)
}

// current returns the latest view, a channel closed when it is replaced, and whether the
// producer has stopped.
func (s *Status) current() ([]byte, <-chan struct{}, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.view, s.changed, s.closed
}

// join takes a viewer's place, or reports that the cap is reached.
func (s *Status) join() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.viewers >= s.opts.MaxViewers {
		return fmt.Errorf("%d viewers already", s.viewers)
	}
	s.viewers++
	return nil
}

func (s *Status) leave() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.viewers--
}

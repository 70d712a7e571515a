package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/utils/clock"

	"github.com/lobby-http/lobby/internal/stream"
)

// Source gives the counts of every route; *counts.Registry implements it.
type Source interface {
	// Snapshot returns the counts of every route, sorted by key.
	Snapshot(now time.Time) []stream.RouteCounts
}

// Route is a route that has just gone from idle to busy; *counts.Route implements it.
type Route interface {
	// Key returns the route's "namespace/name".
	Key() string
	// Counts returns the route's current counts.
	Counts(now time.Time) stream.RouteCounts
}

// activationQueue is how many activations may wait for the stream's dispatcher. Activations come
// one per idle→busy edge, so this many pending at once means the dispatcher is starved; the
// overflow is recovered from a snapshot rather than by blocking the request path.
const activationQueue = 4096

// Activations receives the idle→busy edges of routes from the request path and hands them to the
// Stream. Notify never blocks.
type Activations struct {
	ch chan Route
	// overflow is set when an activation could not be queued; the dispatcher then activates every
	// busy route from a snapshot, so the lost one is covered.
	overflow atomic.Bool
	total    prometheus.Counter
}

// NewActivations returns an empty Activations whose counter of activations is registered with
// reg.
func NewActivations(reg prometheus.Registerer) (*Activations, error) {
	a := &Activations{
		ch: make(chan Route, activationQueue),
		total: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lobby_interceptor_activations_total",
			Help: "Idle-to-busy transitions of routes, each pushed to stream subscribers as an activation.",
		}),
	}
	if err := reg.Register(a.total); err != nil {
		return nil, fmt.Errorf("register activation metrics: %w", err)
	}
	return a, nil
}

// Notify records that r went from idle to busy. It is the counts registry's activation hook and
// is called on the request path, so it only counts and queues, without blocking.
func (a *Activations) Notify(r Route) {
	a.total.Inc()
	select {
	case a.ch <- r:
	default:
		a.overflow.Store(true)
	}
}

// StreamOptions configure a Stream.
type StreamOptions struct {
	// Source gives the counts of snapshot and counts frames.
	Source Source
	// Activations are the idle→busy edges to push as activate frames.
	Activations *Activations
	// Interval is the period of counts frames, which double as heartbeats.
	Interval time.Duration
	// WriteTimeout bounds the write of one frame to one subscriber; a subscriber that does not take
	// a frame within it is disconnected. Zero means 10 seconds.
	WriteTimeout time.Duration
	// Buffer is how many frames may wait for one subscriber. A subscriber that falls further
	// behind loses the waiting frames and gets a fresh snapshot instead. Zero means 16.
	Buffer int
	// MaxSubscribers is the most streams served at once; one more is answered 503 with
	// Retry-After. Zero means 32.
	MaxSubscribers int
	// Interceptor names this interceptor (its pod name) in every frame.
	Interceptor string
	// Clock gives the time of frames and drives the interval.
	Clock clock.WithTicker
	// Registerer receives the stream's metrics.
	Registerer prometheus.Registerer
	// Log receives subscriber lifecycle messages at V(1).
	Log logr.Logger
	// Observe, when not nil, is handed every frame's kind, routes and time once the frame is
	// queued for the subscribers (the status page's producer). It runs on the dispatcher and must
	// not block; it must not modify routes.
	Observe func(kind stream.Kind, routes []stream.RouteCounts, at time.Time)
}

// Stream serves the push stream (see docs/stream.md) to at most MaxSubscribers subscribers. Its Start
// method runs the dispatcher that turns activations and ticks into frames; ServeHTTP serves one
// subscriber.
type Stream struct {
	opts StreamOptions

	mu     sync.Mutex
	subs   map[*subscriber]struct{}
	closed bool
	// done is closed when Start returns, ending every subscription.
	done chan struct{}

	subscribers prometheus.Gauge
	refused     prometheus.Counter
}

var _ http.Handler = (*Stream)(nil)

// NewStream returns a Stream configured by o, with its metrics registered.
func NewStream(o StreamOptions) (*Stream, error) {
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 10 * time.Second
	}
	if o.Buffer <= 0 {
		o.Buffer = 16
	}
	if o.MaxSubscribers <= 0 {
		o.MaxSubscribers = 32
	}
	if o.Interval <= 0 {
		return nil, errors.New("create stream: interval must be positive")
	}
	s := &Stream{
		opts: o,
		subs: map[*subscriber]struct{}{},
		done: make(chan struct{}),
		subscribers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lobby_interceptor_stream_subscribers",
			Help: "Clients currently subscribed to the push stream.",
		}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lobby_interceptor_stream_refused_total",
			Help: "Stream subscriptions refused because the stream had its maximum of subscribers.",
		}),
	}
	for _, c := range []prometheus.Collector{s.subscribers, s.refused} {
		if err := o.Registerer.Register(c); err != nil {
			return nil, fmt.Errorf("register stream metrics: %w", err)
		}
	}
	return s, nil
}

// event is one frame's content, shared read-only by every subscriber it is sent to.
type event struct {
	kind   stream.Kind
	routes []stream.RouteCounts
	at     time.Time
}

// subscriber is one open stream.
type subscriber struct {
	ch chan event
	// resync is signalled when a frame could not be queued: the subscriber drops what is queued
	// and writes a fresh snapshot.
	resync chan struct{}
}

// Start dispatches frames until ctx ends: an activate frame as soon as routes go from idle to
// busy, and a counts frame every interval. When it returns, every subscription ends.
func (s *Stream) Start(ctx context.Context) error {
	defer s.close()
	ticker := s.opts.Clock.NewTicker(s.opts.Interval)
	defer ticker.Stop()
	acts := s.opts.Activations
	for {
		select {
		case <-ctx.Done():
			return nil
		case r := <-acts.ch:
			s.publish(s.activation(r))
		case <-ticker.C():
			now := s.opts.Clock.Now()
			s.publish(event{kind: stream.KindCounts, routes: s.opts.Source.Snapshot(now), at: now})
		}
	}
}

// activation builds one activate frame from r and every other activation already queued, so
// routes activated together reach subscribers in one frame.
func (s *Stream) activation(first Route) event {
	acts := s.opts.Activations
	now := s.opts.Clock.Now()
	seen := map[string]struct{}{first.Key(): {}}
	routes := []stream.RouteCounts{first.Counts(now)}
	for more := true; more; {
		select {
		case r := <-acts.ch:
			if _, dup := seen[r.Key()]; !dup {
				seen[r.Key()] = struct{}{}
				routes = append(routes, r.Counts(now))
			}
		default:
			more = false
		}
	}
	if acts.overflow.Swap(false) {
		// Some activations were lost: every busy route is activated again, which is harmless for
		// the ones that were not.
		for _, c := range s.opts.Source.Snapshot(now) {
			if _, dup := seen[c.Key]; !dup && c.Active() {
				routes = append(routes, c)
			}
		}
	}
	return event{kind: stream.KindActivate, routes: routes, at: now}
}

// publish queues e for every subscriber without waiting for any of them, then hands it to the
// observer.
func (s *Stream) publish(e event) {
	if s.opts.Observe != nil {
		defer s.opts.Observe(e.kind, e.routes, e.at)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for sub := range s.subs {
		select {
		case sub.ch <- e:
		default:
			select {
			case sub.resync <- struct{}{}:
			default:
			}
		}
	}
}

// Sentinel errors of subscribe.
var (
	// errStopped refuses a subscriber once the stream has stopped.
	errStopped = errors.New("shutting down")
	// errFull refuses a subscriber when MaxSubscribers are already served.
	errFull = errors.New("too many subscribers")
)

// subscribe registers a subscriber, or returns errStopped once the stream has stopped or errFull
// when it has its maximum of subscribers.
func (s *Stream) subscribe() (*subscriber, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errStopped
	}
	if len(s.subs) >= s.opts.MaxSubscribers {
		s.refused.Inc()
		return nil, errFull
	}
	sub := &subscriber{ch: make(chan event, s.opts.Buffer), resync: make(chan struct{}, 1)}
	s.subs[sub] = struct{}{}
	s.subscribers.Inc()
	return sub, nil
}

// drain drops the queued frames, which are older than a snapshot taken after it.
func (sub *subscriber) drain() {
	for {
		select {
		case <-sub.ch:
		default:
			return
		}
	}
}

func (s *Stream) unsubscribe(sub *subscriber) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.subs, sub)
	s.subscribers.Dec()
}

func (s *Stream) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	close(s.done)
}

// ServeHTTP serves one subscriber: a snapshot frame, then activate and counts frames as they are
// dispatched, each flushed at once, until the client goes away, falls too far behind to take a
// frame within the write timeout, or the stream stops.
func (s *Stream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	// Subscribe before taking the snapshot, so that no activation falls between the two.
	sub, err := s.subscribe()
	switch {
	case errors.Is(err, errFull):
		s.opts.Log.V(1).Info("stream subscriber refused, stream full", "remote", r.RemoteAddr, "max", s.opts.MaxSubscribers)
		w.Header().Set("Retry-After", "5")
		writeText(w, http.StatusServiceUnavailable, fmt.Sprintf(
			"stream full: %d subscribers already, the most this interceptor serves (LOBBY_STREAM_MAX_SUBSCRIBERS); retry later or raise the limit\n",
			s.opts.MaxSubscribers))
		return
	case err != nil:
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	defer s.unsubscribe(sub)
	log := s.opts.Log.WithValues("remote", r.RemoteAddr)
	log.V(1).Info("stream subscriber connected")

	h := w.Header()
	h.Set("Content-Type", stream.ContentType)
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)

	rc := http.NewResponseController(w)
	enc := stream.NewEncoder(w)
	var seq uint64
	write := func(e event) error {
		seq++
		f := stream.Frame{
			Kind:        e.kind,
			Seq:         seq,
			Interceptor: s.opts.Interceptor,
			UnixMilli:   e.at.UnixMilli(),
			Routes:      e.routes,
		}
		if f.Routes == nil {
			f.Routes = []stream.RouteCounts{}
		}
		// The deadline is what disconnects a subscriber that stopped reading: without it a full
		// socket buffer would block this goroutine forever. Writers without deadlines (tests)
		// are served without one.
		if err := rc.SetWriteDeadline(time.Now().Add(s.opts.WriteTimeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
			return err
		}
		if err := enc.Encode(&f); err != nil {
			return err
		}
		return rc.Flush()
	}
	snapshot := func() event {
		now := s.opts.Clock.Now()
		return event{kind: stream.KindSnapshot, routes: s.opts.Source.Snapshot(now), at: now}
	}

	err = write(snapshot())
	for err == nil {
		// A pending resync goes first: the frames queued behind it are stale.
		select {
		case <-sub.resync:
			sub.drain()
			log.V(1).Info("stream subscriber fell behind, resending snapshot")
			err = write(snapshot())
			continue
		default:
		}
		select {
		case <-r.Context().Done():
			log.V(1).Info("stream subscriber disconnected")
			return
		case <-s.done:
			return
		case <-sub.resync:
			sub.drain()
			log.V(1).Info("stream subscriber fell behind, resending snapshot")
			err = write(snapshot())
		case e := <-sub.ch:
			err = write(e)
		}
	}
	log.V(1).Info("stream subscriber dropped", "error", err.Error())
}

// Package fleet is the scaler's view of the interceptor fleet: one push-stream subscription per
// interceptor pod (see docs/stream.md), the per-pod counts each subscription keeps, and their sums
// per HTTPScaledObject with the idle→busy and busy→idle edges that KEDA's StreamIsActive needs.
//
// Readers never take a lock that network I/O can hold: every pod's counts sit behind an atomic
// pointer that only the pod's own reader goroutine replaces, and the list of pods is an atomic
// pointer that only the Fleet's Start loop replaces.
package fleet

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/utils/clock"

	"github.com/lobby-http/lobby/internal/stream"
)

// Target is one interceptor pod to subscribe to.
type Target struct {
	// Addr is the pod's admin address, host:port.
	Addr string
	// Pod names the pod, for logs; may be empty.
	Pod string
	// Ready is the endpoint's readiness. A pod that is not ready gets no new subscription, but one
	// already open is kept while the pod is listed: a draining interceptor still holds requests,
	// and ends its stream itself once it has drained.
	Ready bool
}

// Options configure a Fleet. Zero durations take the defaults named on each field.
type Options struct {
	// Grace is how long the last counts of a pod whose stream broke still count (10s).
	Grace time.Duration
	// IdleTimeout is how long a stream may go without a frame before it is considered dead and
	// reconnected; it also bounds connecting and the wait for the first frame (5s, five of the
	// interceptor's default stream intervals).
	IdleTimeout time.Duration
	// DialTimeout bounds the TCP connect to an interceptor (2s).
	DialTimeout time.Duration
	// MinBackoff and MaxBackoff bound the jittered exponential wait between reconnects
	// (100ms and 3s).
	MinBackoff, MaxBackoff time.Duration
	// TokenFile holds the bearer token the interceptors' admin API asks for: a projected
	// ServiceAccount token with the interceptors' audience, which the kubelet rotates in place. It
	// is read again for every connection. Empty sends no token.
	TokenFile string
	// Clock drives the grace period, the idle watchdog and backoff; nil means the real clock.
	Clock Clock
	// Registerer receives the fleet's metrics.
	Registerer prometheus.Registerer
	// Log receives subscription lifecycle messages.
	Log logr.Logger
}

// Clock is the time source a Fleet needs: clock.RealClock, or a fake one in tests.
type Clock interface {
	clock.Clock
	clock.WithDelayedExecution
}

// Fleet keeps one subscription per interceptor pod and answers sums over them.
type Fleet struct {
	opts   Options
	clock  Clock
	client *http.Client

	// pods is the current subscriptions, sorted by address so that every scaler replica sums
	// floating-point rates in the same order and returns identical answers.
	pods    atomic.Pointer[[]*pod]
	targets chan []Target
	// snapshotted is set once any stream has delivered a snapshot.
	snapshotted atomic.Bool

	mu      sync.Mutex
	objects map[string]*object

	metrics *metrics
}

// pod is one interceptor pod and the state its reader goroutine publishes.
type pod struct {
	addr string
	name string
	// routes is the pod's counts by key; nil until the first snapshot. Only the reader goroutine
	// stores it.
	routes atomic.Pointer[map[string]entry]
	// lostAt is when the stream broke, in Unix nanoseconds by the fleet's clock; 0 while it is
	// streaming.
	lostAt    atomic.Int64
	connected atomic.Bool
	cancel    context.CancelFunc
	done      chan struct{}
}

// entry is one route's counts on one pod.
type entry struct {
	stream.RouteCounts
	// activated is set by an activate frame: the route counts as active until the next snapshot
	// or counts frame, whatever its counts say.
	activated bool
}

func (e entry) active() bool { return e.activated || e.Active() }

// object tracks the aggregate activity of one key for edge detection.
type object struct {
	mu       sync.Mutex
	active   bool
	rises    uint64
	changed  chan struct{}
	watchers int
}

// New returns a Fleet with no subscriptions; SetTargets gives it some and Start runs them.
func New(o Options) (*Fleet, error) {
	if o.Grace <= 0 {
		o.Grace = 10 * time.Second
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 5 * time.Second
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = 2 * time.Second
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 100 * time.Millisecond
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = max(3*time.Second, o.MinBackoff)
	}
	clk := o.Clock
	if clk == nil {
		clk = clock.RealClock{}
	}
	m, err := newMetrics(o.Registerer)
	if err != nil {
		return nil, err
	}
	f := &Fleet{
		opts:  o,
		clock: clk,
		client: &http.Client{Transport: &http.Transport{
			DialContext:        (&net.Dialer{Timeout: o.DialTimeout, KeepAlive: 30 * time.Second}).DialContext,
			DisableCompression: true,
			// Each pod has one long-lived stream; nothing is gained by pooling.
			DisableKeepAlives:     true,
			ResponseHeaderTimeout: o.IdleTimeout,
		}},
		targets: make(chan []Target, 1),
		objects: map[string]*object{},
		metrics: m,
	}
	f.pods.Store(&[]*pod{})
	return f, nil
}

// SetTargets replaces the set of interceptor pods. It never blocks: the Start loop applies the
// latest set.
func (f *Fleet) SetTargets(ts []Target) {
	ts = slices.Clone(ts)
	for {
		select {
		case f.targets <- ts:
			return
		default:
		}
		select {
		case <-f.targets: // Drop the older set that Start has not taken yet.
		default:
		}
	}
}

// Start runs the subscriptions until ctx ends, following SetTargets.
func (f *Fleet) Start(ctx context.Context) error {
	defer func() {
		for _, p := range *f.pods.Load() {
			p.cancel()
			<-p.done
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ts := <-f.targets:
			f.apply(ctx, ts)
		}
	}
}

// apply starts and stops subscriptions so that they follow ts.
func (f *Fleet) apply(ctx context.Context, ts []Target) {
	old := *f.pods.Load()
	byAddr := make(map[string]*pod, len(old))
	for _, p := range old {
		byAddr[p.addr] = p
	}
	next := make([]*pod, 0, len(ts))
	seen := map[string]bool{}
	for _, t := range ts {
		if seen[t.Addr] {
			continue
		}
		if p, ok := byAddr[t.Addr]; ok {
			seen[t.Addr] = true
			next = append(next, p)
			continue
		}
		if !t.Ready {
			continue
		}
		seen[t.Addr] = true
		pctx, cancel := context.WithCancel(ctx)
		p := &pod{addr: t.Addr, name: t.Pod, cancel: cancel, done: make(chan struct{})}
		next = append(next, p)
		go f.run(pctx, p)
		f.opts.Log.V(1).Info("subscribing to interceptor", "addr", p.addr, "pod", p.name)
	}
	slices.SortFunc(next, func(a, b *pod) int { return cmp.Compare(a.addr, b.addr) })
	f.pods.Store(&next)
	f.metrics.interceptors.Set(float64(len(next)))

	for _, p := range old {
		if !seen[p.addr] {
			f.opts.Log.V(1).Info("unsubscribing from interceptor", "addr", p.addr, "pod", p.name)
			p.cancel()
			f.recompute(p.keys())
		}
	}
}

func (p *pod) keys() []string {
	r := p.routes.Load()
	if r == nil {
		return nil
	}
	keys := make([]string, 0, len(*r))
	for k := range *r {
		keys = append(keys, k)
	}
	return keys
}

// counted reports whether the pod's counts are part of the sums at now: it has delivered a
// snapshot, and its stream is up or broke less than the grace period ago.
func (f *Fleet) counted(p *pod, now time.Time) (map[string]entry, bool) {
	r := p.routes.Load()
	if r == nil {
		return nil, false
	}
	if lost := p.lostAt.Load(); lost != 0 && now.Sub(time.Unix(0, lost)) >= f.opts.Grace {
		return nil, false
	}
	return *r, true
}

// Sum is the counts of one HTTPScaledObject summed over the interceptors.
type Sum struct {
	// InFlight, Held and Open are summed over the interceptors.
	InFlight, Held, Open int64
	// Rate is the sum of the interceptors' per-second rates.
	Rate float64
	// Active is true when any interceptor has the route held, in flight, open, at a non-zero
	// rate, or has just reported it activated.
	Active bool
	// Interceptors is how many interceptors' counts are included.
	Interceptors int
	// Listed is how many interceptor pods are subscribed to, counted or not.
	Listed int
}

// Concurrency is what the HPA scales on for the concurrency metric: in flight plus held.
func (s Sum) Concurrency() int64 { return s.InFlight + s.Held }

// Sum returns the counts of key over every interceptor whose counts count now. It takes no lock.
func (f *Fleet) Sum(key string) Sum {
	now := f.clock.Now()
	pods := *f.pods.Load()
	s := Sum{Listed: len(pods)}
	for _, p := range pods {
		routes, ok := f.counted(p, now)
		if !ok {
			continue
		}
		s.Interceptors++
		e, ok := routes[key]
		if !ok {
			continue
		}
		s.InFlight += e.InFlight
		s.Held += e.Held
		s.Open += e.Open
		s.Rate += e.Rate
		s.Active = s.Active || e.active()
	}
	return s
}

// HasSnapshot reports whether any interceptor stream has delivered a snapshot yet.
func (f *Fleet) HasSnapshot() bool { return f.snapshotted.Load() }

// Watch is a view of one key's activity for a StreamIsActive sender.
type Watch struct {
	f   *Fleet
	key string
	o   *object
}

// Watch starts watching key's activity. Call Close when done.
func (f *Fleet) Watch(key string) *Watch {
	f.mu.Lock()
	o := f.object(key)
	o.mu.Lock()
	o.watchers++
	o.mu.Unlock()
	f.mu.Unlock()
	return &Watch{f: f, key: key, o: o}
}

// State returns whether the key is active, how many idle→busy edges it has had, and a channel
// closed at its next change.
func (w *Watch) State() (active bool, rises uint64, changed <-chan struct{}) {
	w.o.mu.Lock()
	defer w.o.mu.Unlock()
	return w.o.active, w.o.rises, w.o.changed
}

// Close ends the watch.
func (w *Watch) Close() {
	w.f.mu.Lock()
	defer w.f.mu.Unlock()
	w.o.mu.Lock()
	w.o.watchers--
	idle := w.o.watchers == 0 && !w.o.active
	w.o.mu.Unlock()
	if idle {
		delete(w.f.objects, w.key)
	}
}

// object returns key's edge state, creating it with the current activity. f.mu must be held.
func (f *Fleet) object(key string) *object {
	o, ok := f.objects[key]
	if !ok {
		o = &object{changed: make(chan struct{}), active: f.Sum(key).Active}
		f.objects[key] = o
	}
	return o
}

// recompute updates the activity of keys and wakes their watchers on a change. It is called
// after a pod's counts changed; it reads the counts without holding a lock across any I/O.
func (f *Fleet) recompute(keys []string) {
	for _, key := range keys {
		active := f.Sum(key).Active
		f.mu.Lock()
		o, ok := f.objects[key]
		if !ok {
			if !active {
				f.mu.Unlock()
				continue // Idle and unwatched: nothing to remember.
			}
			o = &object{changed: make(chan struct{})}
			f.objects[key] = o
		}
		o.mu.Lock()
		// Sum again under the object's lock so that concurrent recomputes of one key by several
		// pods' readers settle on the latest counts.
		active = f.Sum(key).Active
		if active != o.active {
			o.active = active
			if active {
				o.rises++
				f.metrics.activations.Inc()
			}
			close(o.changed)
			o.changed = make(chan struct{})
		}
		if !o.active && o.watchers == 0 {
			delete(f.objects, key)
		}
		o.mu.Unlock()
		f.mu.Unlock()
	}
}

// errIdle is returned when a stream delivered no frame within the idle timeout.
var errIdle = errors.New("no frame within the idle timeout")

// run keeps one pod's subscription up until ctx ends, reconnecting with jittered exponential
// backoff.
func (f *Fleet) run(ctx context.Context, p *pod) {
	defer close(p.done)
	defer f.lose(p) // Unsubscribed: the pod is no longer in the list, so this changes no sum.
	backoff := f.opts.MinBackoff
	log := f.opts.Log.WithValues("addr", p.addr, "pod", p.name)
	for {
		delivered, err := f.subscribe(ctx, p)
		if ctx.Err() != nil {
			return
		}
		f.lose(p)
		f.metrics.reconnects.Inc()
		if delivered {
			backoff = f.opts.MinBackoff
		}
		log.V(1).Info("interceptor stream ended, reconnecting", "error", err.Error(), "backoff", backoff)
		// Full jitter on the upper half, so replicas and pods do not reconnect in lockstep.
		wait := backoff/2 + time.Duration(randInt63n(int64(backoff/2)+1))
		select {
		case <-ctx.Done():
			return
		case <-f.clock.After(wait):
		}
		backoff = min(backoff*2, f.opts.MaxBackoff)
	}
}

// lose marks p's stream as broken: its counts still count for the grace period, after which its
// keys are recomputed so that their watchers see the busy→idle edge.
func (f *Fleet) lose(p *pod) {
	if !p.connected.Swap(false) {
		return
	}
	f.metrics.connected.Dec()
	p.lostAt.Store(f.clock.Now().UnixNano())
	keys := p.keys()
	// The callback starts a goroutine: a fake clock runs callbacks under its own lock, which
	// recompute would take again through Now.
	f.clock.AfterFunc(f.opts.Grace, func() { go f.recompute(keys) })
}

// subscribe reads one stream until it breaks. delivered reports whether a snapshot arrived.
func (f *Fleet) subscribe(ctx context.Context, p *pod) (delivered bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var idle atomic.Bool
	// The watchdog covers the connect, the response headers and every frame: a black-holed
	// interceptor is noticed within the idle timeout whatever it stops doing.
	watchdog := f.clock.AfterFunc(f.opts.IdleTimeout, func() { idle.Store(true); cancel() })
	defer watchdog.Stop()
	fail := func(err error) (bool, error) {
		if idle.Load() {
			err = fmt.Errorf("%w (%s): %w", errIdle, f.opts.IdleTimeout, err)
		}
		return delivered, err
	}

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.addr+stream.Path, nil)
	if err != nil {
		return false, fmt.Errorf("build stream request: %w", err)
	}
	if f.opts.TokenFile != "" {
		token, err := readToken(f.opts.TokenFile)
		if err != nil {
			return false, err
		}
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := f.client.Do(req)
	if err != nil {
		return fail(fmt.Errorf("connect to interceptor stream: %w", err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		// The interceptor says why in a short plain-text body (a refused token, a full stream).
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return false, fmt.Errorf("connect to interceptor stream: status %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}

	dec := stream.NewDecoder(resp.Body, 0)
	var fr stream.Frame
	var seq uint64
	for {
		if err := dec.Decode(&fr); err != nil {
			return fail(fmt.Errorf("read interceptor stream: %w", err))
		}
		watchdog.Reset(f.opts.IdleTimeout)
		if fr.Seq != seq+1 {
			return delivered, fmt.Errorf("read interceptor stream: frame %d follows frame %d", fr.Seq, seq)
		}
		seq = fr.Seq
		if !delivered && fr.Kind != stream.KindSnapshot {
			return false, fmt.Errorf("read interceptor stream: first frame is %q, want a snapshot", fr.Kind)
		}
		f.applyFrame(p, &fr, !delivered)
		if !delivered {
			delivered = true
			f.snapshotted.Store(true)
		}
	}
}

// readToken reads a bearer token file. The kubelet replaces a projected token atomically, so a
// read never sees half of one.
func readToken(file string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("read the interceptor token: %w", err)
	}
	token := strings.TrimSpace(string(b))
	if token == "" {
		return "", fmt.Errorf("read the interceptor token: %s is empty", file)
	}
	return token, nil
}

// applyFrame publishes the counts of fr as p's and recomputes the keys whose activity on p may
// have changed. first is set for the first frame of a stream.
func (f *Fleet) applyFrame(p *pod, fr *stream.Frame, first bool) {
	old := p.routes.Load()
	var next map[string]entry
	var changed []string
	switch fr.Kind {
	case stream.KindActivate:
		next = make(map[string]entry, len(fr.Routes))
		if old != nil {
			for k, e := range *old {
				next[k] = e
			}
		}
		for _, c := range fr.Routes {
			next[c.Key] = entry{RouteCounts: c, activated: true}
			changed = append(changed, c.Key)
		}
	default: // Snapshot and counts replace everything.
		next = make(map[string]entry, len(fr.Routes))
		for _, c := range fr.Routes {
			next[c.Key] = entry{RouteCounts: c}
		}
		if old == nil || first {
			// After a (re)connect the old counts may have stopped counting: recompute every key.
			changed = unionKeys(old, next)
		} else {
			for k, e := range next {
				if oe, ok := (*old)[k]; !ok || oe.active() != e.active() {
					changed = append(changed, k)
				}
			}
			for k, oe := range *old {
				if _, ok := next[k]; !ok && oe.active() {
					changed = append(changed, k)
				}
			}
		}
	}
	p.routes.Store(&next)
	if first {
		p.lostAt.Store(0)
		if !p.connected.Swap(true) {
			f.metrics.connected.Inc()
		}
	}
	f.recompute(changed)
}

func unionKeys(a *map[string]entry, b map[string]entry) []string {
	keys := make([]string, 0, len(b))
	for k := range b {
		keys = append(keys, k)
	}
	if a != nil {
		for k := range *a {
			if _, ok := b[k]; !ok {
				keys = append(keys, k)
			}
		}
	}
	return keys
}

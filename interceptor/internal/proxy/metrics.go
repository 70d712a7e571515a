package proxy

import (
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lobby-http/lobby/interceptor/internal/routing"
)

// Metrics are the proxy's Prometheus metrics. The per-route children are looked up once per route
// key and cached, and kept in the slot of each Route (Route.Metrics), so the request path does
// no label lookup and no lookup by key. Gauges of held and in-flight requests
// are not here: the admin collector exports them from the counters.
type Metrics struct {
	requests    *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	coldStart   *prometheus.HistogramVec
	rejections  *prometheus.CounterVec
	heldLimit   *prometheus.CounterVec
	upstream    *prometheus.CounterVec
	clientGone  *prometheus.CounterVec
	requeues    *prometheus.CounterVec
	atOnce      *prometheus.CounterVec
	byRoute     sync.Map // route key → *routeMetrics
	noRouteOnce sync.Once
	noRoute     *routeMetrics
}

// NewMetrics builds the proxy's metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lobby_interceptor_requests_total",
			Help: "Requests answered by the proxy, by route and status code (499: the client went away). Requests that match no route have an empty route.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "lobby_interceptor_request_duration_seconds",
			Help:    "Time from the request's arrival to the end of its response, including any wait for a cold start.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"route"}),
		coldStart: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "lobby_interceptor_cold_start_wait_seconds",
			Help:    "Time requests were held waiting for a ready endpoint, whatever the outcome.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 20, 30, 60, 120},
		}, []string{"route"}),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lobby_interceptor_queue_rejections_total",
			Help: "Requests refused because the route's hold queue was full.",
		}, []string{"route"}),
		heldLimit: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lobby_interceptor_held_limit_rejections_total",
			Help: "Requests refused because the interceptor held its cap of requests over all routes (LOBBY_MAX_HELD_REQUESTS), by the route they were for.",
		}, []string{"route"}),
		upstream: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lobby_interceptor_upstream_errors_total",
			Help: "Failed exchanges with app endpoints, by reason: connect (refused, reset or unreachable; counted per attempt), response_header_timeout, request_timeout, certificate (an HTTPS app's certificate failed verification), other.",
		}, []string{"route", "reason"}),
		clientGone: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lobby_interceptor_client_gone_total",
			Help: "Requests whose client went away before the response headers were sent, held ones included.",
		}, []string{"route"}),
		requeues: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lobby_interceptor_requeues_total",
			Help: "Times requests were held again because the connection to every endpoint they were sent to failed before any byte was sent and no other endpoint was left (the app lost its last pod).",
		}, []string{"route"}),
		atOnce: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lobby_interceptor_answered_at_once_total",
			Help: "Requests that found no ready endpoint and were answered at once, as their route's cold-start mode says, instead of held, by answer: placeholder or waiting_page. Each one woke the app as a held request would.",
		}, []string{"route", "answer"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.coldStart, m.rejections, m.heldLimit, m.upstream, m.clientGone, m.requeues, m.atOnce} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register proxy metrics: %w", err)
		}
	}
	return m, nil
}

// routeMetrics are one route's children of the metric vectors.
type routeMetrics struct {
	m          *Metrics
	key        string
	duration   prometheus.Observer
	coldStart  prometheus.Observer
	rejections prometheus.Counter
	heldLimit  prometheus.Counter
	clientGone prometheus.Counter
	requeues   prometheus.Counter
	// codes holds the request counters of the status codes seen so far, copied on write: a
	// route sees few distinct codes, and a short scan beats a map keyed by an interface.
	codes atomic.Pointer[[]codeCounter]
	mu    sync.Mutex
}

type codeCounter struct {
	code    int
	counter prometheus.Counter
}

// route returns the metrics of r: from its slot (Route.Metrics), filled from the metrics cached
// by key on the route's first request, so that the request path does no lookup.
func (m *Metrics) route(r *routing.Route) *routeMetrics {
	if rm, ok := r.Metrics.Load().(*routeMetrics); ok && rm.m == m {
		return rm
	}
	rm := m.byKey(r.Key)
	r.Metrics.Store(rm)
	return rm
}

// byKey returns the cached metrics of the route keyed key.
func (m *Metrics) byKey(key string) *routeMetrics {
	if v, ok := m.byRoute.Load(key); ok {
		return v.(*routeMetrics)
	}
	v, _ := m.byRoute.LoadOrStore(key, m.newRoute(key))
	return v.(*routeMetrics)
}

// Retain deletes the series of routes whose keys are not in keep, so that the metrics of deleted
// HTTPScaledObjects do not stay until the interceptor restarts. It is called after a rebuild of
// the routing table. A request still finishing on a dropped route records into series that are
// no longer exported; a later request on a route of the same key starts new series.
func (m *Metrics) Retain(keep map[string]struct{}) {
	m.byRoute.Range(func(k, _ any) bool {
		key := k.(string)
		if _, ok := keep[key]; ok {
			return true
		}
		m.byRoute.Delete(key)
		labels := prometheus.Labels{"route": key}
		m.requests.DeletePartialMatch(labels)
		m.duration.DeletePartialMatch(labels)
		m.coldStart.DeletePartialMatch(labels)
		m.rejections.DeletePartialMatch(labels)
		m.heldLimit.DeletePartialMatch(labels)
		m.upstream.DeletePartialMatch(labels)
		m.clientGone.DeletePartialMatch(labels)
		m.requeues.DeletePartialMatch(labels)
		m.atOnce.DeletePartialMatch(labels)
		return true
	})
}

// unrouted returns the metrics of requests that match no route.
func (m *Metrics) unrouted() *routeMetrics {
	m.noRouteOnce.Do(func() {
		// Only the request count and duration apply to requests without a route.
		m.noRoute = &routeMetrics{m: m, duration: m.duration.WithLabelValues("")}
		m.noRoute.codes.Store(&[]codeCounter{})
	})
	return m.noRoute
}

func (m *Metrics) newRoute(key string) *routeMetrics {
	rm := &routeMetrics{
		m:          m,
		key:        key,
		duration:   m.duration.WithLabelValues(key),
		coldStart:  m.coldStart.WithLabelValues(key),
		rejections: m.rejections.WithLabelValues(key),
		heldLimit:  m.heldLimit.WithLabelValues(key),
		clientGone: m.clientGone.WithLabelValues(key),
		requeues:   m.requeues.WithLabelValues(key),
	}
	rm.codes.Store(&[]codeCounter{})
	return rm
}

// request counts one answered request with its status code.
func (rm *routeMetrics) request(code int) {
	for _, c := range *rm.codes.Load() {
		if c.code == code {
			c.counter.Inc()
			return
		}
	}
	rm.mu.Lock()
	cur := *rm.codes.Load()
	var counter prometheus.Counter
	for _, c := range cur {
		if c.code == code {
			counter = c.counter
		}
	}
	if counter == nil {
		counter = rm.m.requests.WithLabelValues(rm.key, strconv.Itoa(code))
		next := append(cur[:len(cur):len(cur)], codeCounter{code: code, counter: counter})
		rm.codes.Store(&next)
	}
	rm.mu.Unlock()
	counter.Inc()
}

// upstreamError counts one failed exchange with an upstream.
func (rm *routeMetrics) upstreamError(reason string) {
	rm.m.upstream.WithLabelValues(rm.key, reason).Inc()
}

// answeredAtOnce counts one request answered at once by its route's cold-start mode. It is only
// reached by requests that would otherwise be held, so the label lookup stays off the warm path.
func (rm *routeMetrics) answeredAtOnce(answer string) {
	rm.m.atOnce.WithLabelValues(rm.key, answer).Inc()
}

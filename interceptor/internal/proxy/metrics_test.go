package proxy

import (
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/lobby-http/lobby/interceptor/internal/routing"
)

func TestMetricsRetainDropsTheSeriesOfRoutesThatAreGone(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"shop/cart", "shop/gone"} {
		rm := m.route(&routing.Route{Key: key})
		rm.request(200)
		rm.request(503)
		rm.duration.Observe(0.1)
		rm.coldStart.Observe(0.2)
		rm.rejections.Inc()
		rm.heldLimit.Inc()
		rm.clientGone.Inc()
		rm.requeues.Inc()
		rm.upstreamError("connect")
		rm.answeredAtOnce("waiting_page")
	}
	m.unrouted().request(404)

	m.Retain(map[string]struct{}{"shop/cart": {}})

	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, f := range families {
		for _, metric := range f.GetMetric() {
			for _, l := range metric.GetLabel() {
				if l.GetName() == "route" {
					seen[l.GetValue()]++
				}
			}
		}
	}
	if seen["shop/gone"] != 0 {
		t.Errorf("%d series of the dropped route shop/gone remain", seen["shop/gone"])
	}
	// requests_total ×2 codes, duration, cold start, rejections, held-limit rejections, client
	// gone, requeues, upstream errors, answers at once.
	if seen["shop/cart"] != 10 {
		t.Errorf("the kept route shop/cart has %d series, want 10", seen["shop/cart"])
	}
	if seen[""] != 2 {
		t.Errorf("requests without a route have %d series, want 2 (count and duration)", seen[""])
	}

	// A route of the same key that comes back starts from zero.
	m.route(&routing.Route{Key: "shop/gone"}).request(200)
	if got := testutil.ToFloat64(m.requests.WithLabelValues("shop/gone", "200")); got != 1 {
		t.Errorf("requests of the returning route = %v, want 1", got)
	}
}

func TestRouteMetricsAreKeptInTheRoutesSlot(t *testing.T) {
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	r := &routing.Route{Key: "shop/cart"}
	rm := m.route(r)
	if got, _ := r.Metrics.Load().(*routeMetrics); got != rm {
		t.Fatalf("the route's slot holds %p, want its metrics %p", got, rm)
	}
	if got := m.route(r); got != rm {
		t.Errorf("a second request got metrics %p, want the slot's %p", got, rm)
	}
	if got := m.route(&routing.Route{Key: "shop/cart"}); got != rm {
		t.Errorf("a rebuilt route of the same key got metrics %p, want the same children %p", got, rm)
	}
	other, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	if got := other.route(r); got == rm || got.m != other {
		t.Errorf("the metrics of another registry took the route's slot's children")
	}
}

// BenchmarkRouteMetrics compares finding a route's metric children in its slot (what a request
// does) with the lookup by key that the slot saves, among 1,000 routes.
func BenchmarkRouteMetrics(b *testing.B) {
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	routes := make([]*routing.Route, 1000)
	for i := range routes {
		routes[i] = &routing.Route{Key: fmt.Sprintf("namespace-%d/app-%d", i, i)}
		m.route(routes[i])
	}
	b.Run("slot", func(b *testing.B) {
		i := 0
		for b.Loop() {
			_ = m.route(routes[i%len(routes)])
			i++
		}
	})
	b.Run("by-key", func(b *testing.B) {
		i := 0
		for b.Loop() {
			_ = m.byKey(routes[i%len(routes)].Key)
			i++
		}
	})
}

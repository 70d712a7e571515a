package proxy

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestMetricsRetainDropsTheSeriesOfRoutesThatAreGone(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"shop/cart", "shop/gone"} {
		rm := m.route(key)
		rm.request(200)
		rm.request(503)
		rm.duration.Observe(0.1)
		rm.coldStart.Observe(0.2)
		rm.rejections.Inc()
		rm.heldLimit.Inc()
		rm.clientGone.Inc()
		rm.requeues.Inc()
		rm.upstreamError("connect")
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
	// gone, requeues, upstream errors.
	if seen["shop/cart"] != 9 {
		t.Errorf("the kept route shop/cart has %d series, want 9", seen["shop/cart"])
	}
	if seen[""] != 2 {
		t.Errorf("requests without a route have %d series, want 2 (count and duration)", seen[""])
	}

	// A route of the same key that comes back starts from zero.
	m.route("shop/gone").request(200)
	if got := testutil.ToFloat64(m.requests.WithLabelValues("shop/gone", "200")); got != 1 {
		t.Errorf("requests of the returning route = %v, want 1", got)
	}
}

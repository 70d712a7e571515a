package admin

import (
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/utils/clock"
)

// Collector exposes the per-route gauges of a counts Source at scrape time, so the request path
// updates no metric of its own for them.
type Collector struct {
	source                Source
	clock                 clock.PassiveClock
	inFlight, held, conns *prometheus.Desc
}

var _ prometheus.Collector = (*Collector)(nil)

// NewCollector returns a Collector over source.
func NewCollector(source Source, clk clock.PassiveClock) *Collector {
	labels := []string{"route"}
	return &Collector{
		source: source,
		clock:  clk,
		inFlight: prometheus.NewDesc("lobby_interceptor_in_flight_requests",
			"Requests forwarded to the route's target and not yet answered.", labels, nil),
		held: prometheus.NewDesc("lobby_interceptor_held_requests",
			"Requests waiting for the route's target to have a ready endpoint.", labels, nil),
		conns: prometheus.NewDesc("lobby_interceptor_open_connections",
			"Upgraded connections (such as WebSockets) open to the route's target.", labels, nil),
	}
}

// Describe sends the descriptors of the gauges.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.inFlight
	ch <- c.held
	ch <- c.conns
}

// Collect sends the gauges of every route, labelled with its "namespace/name".
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	for _, r := range c.source.Snapshot(c.clock.Now()) {
		ch <- prometheus.MustNewConstMetric(c.inFlight, prometheus.GaugeValue, float64(r.InFlight), r.Key)
		ch <- prometheus.MustNewConstMetric(c.held, prometheus.GaugeValue, float64(r.Held), r.Key)
		ch <- prometheus.MustNewConstMetric(c.conns, prometheus.GaugeValue, float64(r.Open), r.Key)
	}
}

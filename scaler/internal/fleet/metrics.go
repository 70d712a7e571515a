package fleet

import (
	"fmt"
	"math/rand/v2"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the fleet's Prometheus metrics.
type metrics struct {
	interceptors prometheus.Gauge
	connected    prometheus.Gauge
	reconnects   prometheus.Counter
	activations  prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		interceptors: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lobby_scaler_interceptors",
			Help: "Interceptor pods the scaler subscribes to (listed in the interceptor admin Service's EndpointSlices).",
		}),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lobby_scaler_interceptors_connected",
			Help: "Interceptor pods whose push stream is up and has delivered a snapshot.",
		}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lobby_scaler_stream_reconnects_total",
			Help: "Interceptor push streams that broke or could not be opened, each followed by a reconnect.",
		}),
		activations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lobby_scaler_activations_total",
			Help: "Idle-to-busy edges of HTTPScaledObjects, summed over the interceptors.",
		}),
	}
	for _, c := range []prometheus.Collector{m.interceptors, m.connected, m.reconnects, m.activations} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register fleet metrics: %w", err)
		}
	}
	return m, nil
}

// randInt63n returns a pseudo-random number in [0, n); jitter needs no cryptographic randomness.
func randInt63n(n int64) int64 {
	if n <= 0 {
		return 0
	}
	return rand.Int64N(n)
}

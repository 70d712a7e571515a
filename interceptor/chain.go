package main

import (
	"net/http"

	"github.com/go-logr/logr"
	"go.opentelemetry.io/otel/trace"
	"k8s.io/utils/clock"

	"github.com/lobby-http/lobby/interceptor/internal/counts"
	"github.com/lobby-http/lobby/interceptor/internal/proxy"
	"github.com/lobby-http/lobby/interceptor/internal/routing"
)

// newProxyHandler returns the proxy's handler chain: route, count, wait for a ready endpoint,
// forward (see docs/proxy.md). Connections to app pods are opened with dial; apps served over
// HTTPS are verified as upstreamTLS says. A nil tracer traces nothing. With addOnHeader the KEDA
// HTTP Add-on's cold-start header is set before forwarding; without it the chain has no stage for
// it, so it costs nothing.
func newProxyHandler(router *routing.Router, metrics *proxy.Metrics, log logr.Logger, dial dialFunc, upstreamTLS proxy.UpstreamTLS, tracer trace.Tracer, addOnHeader bool) (http.Handler, error) {
	clk := clock.RealClock{}
	forwarder, err := proxy.NewForwarder(proxy.ForwarderOptions{Dial: dial, UpstreamTLS: upstreamTLS, Log: log})
	if err != nil {
		return nil, err
	}
	var last proxy.ForwardHandler = forwarder
	if addOnHeader {
		last = proxy.AddOnColdStart(forwarder)
	}
	return proxy.Route(router, metrics, log, clk.Now, tracer, forwarder,
		proxy.Count(
			proxy.Wait(clk.Now,
				last))), nil
}

// routeCounters is what the routing watcher keeps per route: the counters, and the proxy's
// per-route metric series, which are dropped with the counters when a route is gone.
type routeCounters struct {
	*counts.Registry
	metrics *proxy.Metrics
}

var _ routing.CounterRegistry = routeCounters{}

// Retain drops the counters and the metric series of the routes whose keys are not in keep.
func (c routeCounters) Retain(keep map[string]struct{}) {
	c.Registry.Retain(keep)
	c.metrics.Retain(keep)
}

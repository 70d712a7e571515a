package main

import (
	"net/http"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/utils/clock"

	"github.com/lobby-http/lobby/interceptor/internal/proxy"
	"github.com/lobby-http/lobby/interceptor/internal/routing"
)

// newProxyHandler returns the proxy's handler chain: route, count, wait for a ready endpoint,
// forward (see docs/proxy.md). Connections to app pods are opened with dial; metrics are
// registered with reg.
func newProxyHandler(router *routing.Router, reg prometheus.Registerer, log logr.Logger, dial dialFunc) (http.Handler, error) {
	clk := clock.RealClock{}
	metrics, err := proxy.NewMetrics(reg)
	if err != nil {
		return nil, err
	}
	forwarder, err := proxy.NewForwarder(proxy.ForwarderOptions{Dial: dial, Log: log})
	if err != nil {
		return nil, err
	}
	return proxy.Route(router, metrics, log, clk.Now,
		proxy.Count(
			proxy.Wait(clk.Now,
				forwarder))), nil
}

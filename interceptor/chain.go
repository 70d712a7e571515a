package main

import (
	"context"
	"errors"
	"net/http"
	"net/http/httputil"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/lobby-http/lobby/interceptor/internal/routing"
)

// newProxyHandler returns the proxy's handler chain: route, count, wait for a ready endpoint,
// forward. Connections to app pods are opened with dial.
//
// This is a minimal chain (first endpoint, no retries, no placeholder or failover) that the
// proxy package replaces.
func newProxyHandler(router *routing.Router, _ prometheus.Registerer, log logr.Logger, dial dialFunc) (http.Handler, error) {
	transport := &http.Transport{
		DialContext:         dial,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     60 * time.Second,
	}
	type targetKey struct{}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = pr.In.Context().Value(targetKey{}).(string)
			pr.Out.Host = pr.In.Host
			pr.SetXForwarded()
		},
		Transport: transport,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			log.V(1).Info("forwarding failed", "error", err.Error())
			http.Error(w, "bad gateway", http.StatusBadGateway)
		},
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		route := router.Route(r)
		if route == nil {
			http.Error(w, "not found", http.StatusNotFound)
			return
		}
		fresh := true
		snap := route.Target.Snapshot()
		if len(snap.Endpoints) == 0 {
			if !route.Counts.BeginHeld(route.MaxPending) {
				w.Header().Set("Retry-After", "1")
				http.Error(w, "too many pending requests", http.StatusServiceUnavailable)
				return
			}
			ctx, cancel := context.WithTimeout(r.Context(), route.ColdStartTimeout)
			var err error
			snap, err = route.Target.Wait(ctx)
			cancel()
			if err != nil {
				route.Counts.EndHeld()
				if errors.Is(err, context.DeadlineExceeded) {
					http.Error(w, "gateway timeout", http.StatusGatewayTimeout)
				}
				return
			}
			fresh = false
		}
		route.Counts.BeginInFlight(fresh)
		defer route.Counts.EndInFlight()
		ep := snap.Endpoints[0]
		rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), targetKey{}, ep.Host)))
	}), nil
}

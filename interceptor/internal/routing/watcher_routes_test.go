package routing

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/tools/cache"
	fcache "k8s.io/client-go/tools/cache/testing"

	"github.com/lobby-http/lobby/interceptor/internal/endpointslices"
	"github.com/lobby-http/lobby/operator/api/v1alpha1"
	"github.com/lobby-http/lobby/operator/api/v1beta1"
)

func TestWatcherRoutesBothKindsOrHTTPScaledObjectsAlone(t *testing.T) {
	tests := []struct {
		name string
		// served answers RoutesServed: first an error when flaky, then served.
		served bool
		flaky  bool
		// wantRoute is whether the InterceptorRoute's host is routed.
		wantRoute bool
	}{
		{name: "with InterceptorRoutes served, both kinds feed one table", served: true, wantRoute: true},
		{name: "a failed discovery is asked again rather than taken as no", served: true, flaky: true, wantRoute: true},
		{name: "without InterceptorRoutes served, HTTPScaledObjects are still routed", served: false, wantRoute: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hsos := fcache.NewFakeControllerSource()
			hsos.Add(object("hso", 0, []string{"hso.test"}, nil))
			routes := fcache.NewFakeControllerSource()
			routes.Add(asInterceptorRoute(object("route", 1, []string{"route.test"}, nil), true))
			var asked atomic.Int32
			router := NewRouter()
			w, err := NewWatcher(Sources{
				HTTPScaledObjects: cache.NewSharedIndexInformer(hsos, &v1alpha1.HTTPScaledObject{}, 0, cache.Indexers{}),
				InterceptorRoutes: cache.NewSharedIndexInformer(routes, &v1beta1.InterceptorRoute{}, 0, cache.Indexers{}),
				RoutesServed: func() (bool, error) {
					if asked.Add(1) == 1 && tt.flaky {
						return false, errors.New("discovery failed")
					}
					return tt.served, nil
				},
			}, router, endpointslices.NewStore(logr.Discard()), newFakeCounters(), Defaults{}, prometheus.NewPedanticRegistry(), logr.Discard())
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() { done <- w.Start(ctx) }()
			defer func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("Start: %v", err)
				}
			}()
			eventually(t, "the first table", w.HasSynced)
			if got := routeName(router.Route(request("hso.test", "/"))); got != "hso" {
				t.Errorf("hso.test routes to %q, want hso", got)
			}
			r := router.Route(request("route.test", "/healthz"))
			if got := r != nil; got != tt.wantRoute {
				t.Fatalf("route.test routed = %v, want %v", got, tt.wantRoute)
			}
			if r != nil && (r.Static == nil || string(r.Static.Response.Body) != "ok") {
				t.Errorf("route.test/healthz is not answered by its static route: %+v", r)
			}
		})
	}
}

func request(host, path string) *http.Request {
	r, _ := http.NewRequest(http.MethodGet, "http://"+host+path, nil)
	return r
}

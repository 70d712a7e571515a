package routing

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/client-go/tools/cache"
	fcache "k8s.io/client-go/tools/cache/testing"

	"github.com/lobby-http/lobby/interceptor/internal/endpointslices"
	"github.com/lobby-http/lobby/internal/httpso"
	"github.com/lobby-http/lobby/operator/api/v1alpha1"
)

// eventually polls cond until it holds or a few seconds have passed.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func routeName(r *Route) string {
	if r == nil {
		return ""
	}
	return r.Name
}

func TestWatcher(t *testing.T) {
	source := fcache.NewFakeControllerSource()
	older := object("older", 0, []string{"a.test"}, nil)
	newer := object("newer", 1, []string{"a.test", "b.test"}, nil)
	source.Add(older)
	source.Add(newer)
	informer := cache.NewSharedIndexInformer(source, &v1alpha1.HTTPScaledObject{}, 0, cache.Indexers{})

	router := NewRouter()
	store := endpointslices.NewStore(logr.Discard())
	counters := newFakeCounters()
	reg := prometheus.NewPedanticRegistry()
	w, err := NewWatcher(Sources{HTTPScaledObjects: informer}, router, store, counters, Defaults{MaxPending: 10}, reg, logr.Discard())
	if err != nil {
		t.Fatalf("NewWatcher: %v", err)
	}

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- w.Start(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Start = %v, want nil", err)
		}
	}()

	eventually(t, "the watcher has synced", w.HasSynced)
	if got := routeName(router.Table().Lookup("a.test", "/", nil)); got != "older" {
		t.Errorf("a.test is routed to %q, want older", got)
	}
	if c, ok := w.Conflicts()[httpso.Ref{Kind: httpso.KindHTTPScaledObject, Key: "ns/newer"}]; !ok || c.Winner != "ns/older" {
		t.Errorf("conflicts = %v, want ns/newer lost to ns/older", w.Conflicts())
	}
	want := `
# HELP lobby_interceptor_routes HTTPScaledObjects and InterceptorRoutes routed by the current routing table.
# TYPE lobby_interceptor_routes gauge
lobby_interceptor_routes 1
# HELP lobby_interceptor_routing_conflicts HTTPScaledObjects and InterceptorRoutes not routed because an older object claims some of their hosts, paths and headers.
# TYPE lobby_interceptor_routing_conflicts gauge
lobby_interceptor_routing_conflicts 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"lobby_interceptor_routes", "lobby_interceptor_routing_conflicts"); err != nil {
		t.Error(err)
	}

	// Once the older object is gone, the newer one is routed and the older one's target and
	// counters are released.
	source.Delete(older)
	eventually(t, "the newer object is routed", func() bool {
		return routeName(router.Table().Lookup("a.test", "/", nil)) == "newer"
	})
	eventually(t, "the conflict is gone", func() bool { return len(w.Conflicts()) == 0 })
	eventually(t, "the counters are retained", func() bool {
		return slices.Equal(counters.keptKeys(), []string{"ns/newer"})
	})
	if got := store.Len(); got != 1 {
		t.Errorf("store keeps %d services, want 1", got)
	}
	if n := testutil.ToFloat64(w.rebuilds); n < 2 {
		t.Errorf("rebuilds = %v, want at least 2", n)
	}

	// A status-only update does not rebuild the table.
	before := testutil.ToFloat64(w.rebuilds)
	updated := newer.DeepCopy()
	updated.Generation = newer.Generation
	updated.Status.TargetService = "newer:80"
	source.Modify(updated)
	time.Sleep(50 * time.Millisecond)
	if after := testutil.ToFloat64(w.rebuilds); after != before {
		t.Errorf("a status update rebuilt the table (%v → %v rebuilds)", before, after)
	}

	// An update of the annotation that opts out of upstream verification changes no generation
	// but does change the route.
	optOut := updated.DeepCopy()
	optOut.Annotations = map[string]string{v1alpha1.UpstreamTLSInsecureSkipVerifyAnnotation: "true"}
	source.Modify(optOut)
	eventually(t, "the annotation reaches the route", func() bool {
		r := router.Table().Lookup("a.test", "/", nil)
		return r != nil && r.InsecureSkipVerify
	})
}

func TestNewWatcherReportsDuplicateMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	informer := cache.NewSharedIndexInformer(fcache.NewFakeControllerSource(), &v1alpha1.HTTPScaledObject{}, 0, cache.Indexers{})
	if _, err := NewWatcher(Sources{HTTPScaledObjects: informer}, NewRouter(), endpointslices.NewStore(logr.Discard()), newFakeCounters(), Defaults{}, reg, logr.Discard()); err != nil {
		t.Fatalf("first NewWatcher: %v", err)
	}
	if _, err := NewWatcher(Sources{HTTPScaledObjects: informer}, NewRouter(), endpointslices.NewStore(logr.Discard()), newFakeCounters(), Defaults{}, reg, logr.Discard()); err == nil {
		t.Errorf("second NewWatcher on the same registry succeeded, want an error")
	}
}

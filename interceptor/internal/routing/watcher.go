package routing

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/tools/cache"

	"github.com/lobby-http/lobby/interceptor/internal/counts"
	"github.com/lobby-http/lobby/interceptor/internal/endpoints"
	"github.com/lobby-http/lobby/internal/httpso"
	"github.com/lobby-http/lobby/operator/api/v1alpha1"
)

// rebuildInterval is the shortest time between two table rebuilds: events arriving meanwhile are
// coalesced into one rebuild.
const rebuildInterval = 5 * time.Millisecond

// Informer is what the Watcher needs of an HTTPScaledObject informer (see httpso.NewInformer).
type Informer interface {
	AddEventHandler(handler cache.ResourceEventHandler) (cache.ResourceEventHandlerRegistration, error)
	RunWithContext(ctx context.Context)
	HasSynced() bool
	GetStore() cache.Store
}

// TargetStore hands out endpoint handles and releases those no table refers to any more;
// *endpoints.Store implements it.
type TargetStore interface {
	Targets
	Retain(keep []*endpoints.Target)
}

// CounterRegistry hands out route counters and drops those of routes that are gone;
// *counts.Registry implements it.
type CounterRegistry interface {
	Counters
	Retain(keep map[string]struct{})
}

var (
	_ Informer        = (cache.SharedIndexInformer)(nil)
	_ TargetStore     = (*endpoints.Store)(nil)
	_ CounterRegistry = (*counts.Registry)(nil)
)

// Watcher runs the HTTPScaledObject informer and rebuilds the Router's table whenever the objects
// change, then releases the targets and counters the new table no longer refers to.
type Watcher struct {
	informer Informer
	router   *Router
	targets  TargetStore
	counters CounterRegistry
	defaults Defaults
	log      logr.Logger

	kick  chan struct{}
	built atomic.Bool

	mu        sync.Mutex
	conflicts map[string]httpso.Conflict

	conflictsGauge prometheus.Gauge
	routesGauge    prometheus.Gauge
	rebuilds       prometheus.Counter
}

// NewWatcher returns a Watcher that feeds router from informer, resolving targets in targets and
// counters in counters, with d for what objects leave unset. It registers its metrics with reg.
func NewWatcher(informer Informer, router *Router, targets TargetStore, counters CounterRegistry, d Defaults,
	reg prometheus.Registerer, log logr.Logger) (*Watcher, error) {
	w := &Watcher{
		informer:  informer,
		router:    router,
		targets:   targets,
		counters:  counters,
		defaults:  d,
		log:       log,
		kick:      make(chan struct{}, 1),
		conflicts: map[string]httpso.Conflict{},
		conflictsGauge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lobby_interceptor_routing_conflicts",
			Help: "HTTPScaledObjects not routed because an older object claims some of their hosts, paths and headers.",
		}),
		routesGauge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lobby_interceptor_routes",
			Help: "HTTPScaledObjects routed by the current routing table.",
		}),
		rebuilds: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lobby_interceptor_routing_table_rebuilds_total",
			Help: "Routing tables built from HTTPScaledObjects.",
		}),
	}
	for _, c := range []prometheus.Collector{w.conflictsGauge, w.routesGauge, w.rebuilds} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register routing metrics: %w", err)
		}
	}
	return w, nil
}

// HasSynced reports whether a table built from the informer's first full list is in place.
func (w *Watcher) HasSynced() bool { return w.built.Load() }

// Conflicts returns the objects the current table does not route because of a conflict, keyed by
// their "namespace/name".
func (w *Watcher) Conflicts() map[string]httpso.Conflict {
	w.mu.Lock()
	defer w.mu.Unlock()
	return maps.Clone(w.conflicts)
}

// Start runs the informer and rebuilds the table until ctx ends. It returns an error only when it
// cannot watch at all.
func (w *Watcher) Start(ctx context.Context) error {
	_, err := w.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { w.changed() },
		UpdateFunc: func(oldObj, newObj any) {
			o, ok1 := oldObj.(*v1alpha1.HTTPScaledObject)
			n, ok2 := newObj.(*v1alpha1.HTTPScaledObject)
			// Status updates (the operator writes them often) do not change routing; the
			// annotations left after httpso.Trim do, without changing the generation.
			if ok1 && ok2 && o.Generation != 0 && o.Generation == n.Generation && maps.Equal(o.Annotations, n.Annotations) {
				return
			}
			w.changed()
		},
		DeleteFunc: func(any) { w.changed() },
	})
	if err != nil {
		return fmt.Errorf("watch HTTPScaledObjects: %w", err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { w.informer.RunWithContext(ctx) })

	if !cache.WaitForCacheSync(ctx.Done(), w.informer.HasSynced) {
		return nil
	}
	w.rebuild()
	w.built.Store(true)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(rebuildInterval):
		}
		select {
		case <-ctx.Done():
			return nil
		case <-w.kick:
			w.rebuild()
		}
	}
}

func (w *Watcher) changed() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// rebuild builds a table from the informer's objects, swaps it in, and releases what the previous
// table alone referred to.
func (w *Watcher) rebuild() {
	list := w.informer.GetStore().List()
	objs := make([]*v1alpha1.HTTPScaledObject, 0, len(list))
	for _, o := range list {
		if h, ok := o.(*v1alpha1.HTTPScaledObject); ok {
			objs = append(objs, h)
		}
	}
	table, conflicts := Build(objs, w.targets, w.counters, w.defaults)
	w.router.SetTable(table)

	keepTargets := make([]*endpoints.Target, 0, 2*table.Len())
	keepKeys := make(map[string]struct{}, table.Len())
	for _, r := range table.Routes() {
		keepTargets = append(keepTargets, r.Target)
		if r.Failover != nil {
			keepTargets = append(keepTargets, r.Failover)
		}
		keepKeys[r.Key] = struct{}{}
	}
	w.targets.Retain(keepTargets)
	w.counters.Retain(keepKeys)

	w.mu.Lock()
	prev := w.conflicts
	w.conflicts = conflicts
	w.mu.Unlock()
	for key, c := range conflicts {
		if prev[key] != c {
			w.log.Info("object not routed: an older object claims the same route",
				"httpScaledObject", key, "winner", c.Winner, "claim", c.Claim.String())
		}
	}
	for key := range prev {
		if _, ok := conflicts[key]; !ok {
			w.log.V(1).Info("routing conflict resolved", "httpScaledObject", key)
		}
	}
	w.conflictsGauge.Set(float64(len(conflicts)))
	w.routesGauge.Set(float64(table.Len()))
	w.rebuilds.Inc()
	w.log.V(1).Info("routing table rebuilt", "routes", table.Len(), "conflicts", len(conflicts))
}

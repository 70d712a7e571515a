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
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/lobby-http/lobby/interceptor/internal/counts"
	"github.com/lobby-http/lobby/interceptor/internal/endpoints"
	"github.com/lobby-http/lobby/interceptor/internal/endpointslices"
	"github.com/lobby-http/lobby/internal/httpso"
	"github.com/lobby-http/lobby/operator/api/v1alpha1"
	"github.com/lobby-http/lobby/operator/api/v1beta1"
)

// rebuildInterval is the shortest time between two table rebuilds: events arriving meanwhile are
// coalesced into one rebuild.
const rebuildInterval = 5 * time.Millisecond

// Informer is what the Watcher needs of an HTTPScaledObject or InterceptorRoute informer (see
// httpso.NewInformer and httpso.NewRouteInformer).
type Informer interface {
	AddEventHandler(handler cache.ResourceEventHandler) (cache.ResourceEventHandlerRegistration, error)
	RunWithContext(ctx context.Context)
	HasSynced() bool
	GetStore() cache.Store
}

// TargetStore hands out endpoint handles and releases those no table refers to any more;
// *endpointslices.Store implements it.
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
	_ TargetStore     = (*endpointslices.Store)(nil)
	_ CounterRegistry = (*counts.Registry)(nil)
)

// Sources are what a Watcher builds tables from.
type Sources struct {
	// HTTPScaledObjects is an informer of HTTPScaledObjects.
	HTTPScaledObjects Informer
	// InterceptorRoutes, when not nil, is an informer of InterceptorRoutes.
	InterceptorRoutes Informer
	// ConfigMaps, when not nil, watches the ConfigMaps that responses read bodies from; without
	// it, such responses answer 500.
	ConfigMaps *ConfigMapWatcher
	// RoutesServed, when not nil, tells whether the API server serves InterceptorRoutes. Start
	// asks it first (until it answers) and leaves InterceptorRoutes and ConfigMaps out when it
	// says no: a cluster upgraded with `helm upgrade`, which installs no new CRDs, keeps its
	// HTTPScaledObjects routed instead of waiting forever for a watch that cannot start.
	RoutesServed func() (bool, error)
}

// Watcher runs the HTTPScaledObject and InterceptorRoute informers and rebuilds the Router's one
// table from both kinds whenever they (or a ConfigMap a response reads) change, then releases
// the targets and counters the new table no longer refers to.
type Watcher struct {
	informers    []Informer
	configMaps   *ConfigMapWatcher
	routesServed func() (bool, error)
	router       *Router
	targets      TargetStore
	counters     CounterRegistry
	defaults     Defaults
	log          logr.Logger

	kick  chan struct{}
	built atomic.Bool

	mu        sync.Mutex
	conflicts map[httpso.Ref]httpso.Conflict

	conflictsGauge prometheus.Gauge
	routesGauge    prometheus.Gauge
	rebuilds       prometheus.Counter
}

// NewWatcher returns a Watcher that feeds router from sources, resolving targets in targets and
// counters in counters, with d for what objects leave unset. It registers its metrics with reg.
func NewWatcher(sources Sources, router *Router, targets TargetStore, counters CounterRegistry, d Defaults,
	reg prometheus.Registerer, log logr.Logger) (*Watcher, error) {
	informers := []Informer{sources.HTTPScaledObjects}
	if sources.InterceptorRoutes != nil {
		informers = append(informers, sources.InterceptorRoutes)
	}
	w := &Watcher{
		informers:    informers,
		configMaps:   sources.ConfigMaps,
		routesServed: sources.RoutesServed,
		router:       router,
		targets:      targets,
		counters:     counters,
		defaults:     d,
		log:          log,
		kick:         make(chan struct{}, 1),
		conflicts:    map[httpso.Ref]httpso.Conflict{},
		conflictsGauge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lobby_interceptor_routing_conflicts",
			Help: "HTTPScaledObjects and InterceptorRoutes not routed because an older object claims some of their hosts, paths and headers.",
		}),
		routesGauge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lobby_interceptor_routes",
			Help: "HTTPScaledObjects and InterceptorRoutes routed by the current routing table.",
		}),
		rebuilds: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lobby_interceptor_routing_table_rebuilds_total",
			Help: "Routing tables built from HTTPScaledObjects and InterceptorRoutes.",
		}),
	}
	for _, c := range []prometheus.Collector{w.conflictsGauge, w.routesGauge, w.rebuilds} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register routing metrics: %w", err)
		}
	}
	return w, nil
}

// HasSynced reports whether a table built from the informers' first full lists is in place.
func (w *Watcher) HasSynced() bool { return w.built.Load() }

// Conflicts returns the objects the current table does not route because of a conflict.
func (w *Watcher) Conflicts() map[httpso.Ref]httpso.Conflict {
	w.mu.Lock()
	defer w.mu.Unlock()
	return maps.Clone(w.conflicts)
}

// Start runs the informers and rebuilds the table until ctx ends. It returns an error only when it
// cannot watch at all.
func (w *Watcher) Start(ctx context.Context) error {
	if w.routesServed != nil && len(w.informers) > 1 {
		served, err := w.askRoutesServed(ctx)
		if err != nil {
			return nil // ctx ended
		}
		if !served {
			w.log.Info("InterceptorRoutes are not served: apply the chart's CRDs to route them; routing HTTPScaledObjects only")
			w.informers, w.configMaps = w.informers[:1], nil
		}
	}
	handler := cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { w.changed() },
		UpdateFunc: func(oldObj, newObj any) {
			o, ok1 := oldObj.(metav1.Object)
			n, ok2 := newObj.(metav1.Object)
			// Status updates (the operator writes them often) do not change routing; the
			// annotations left after httpso.Trim do, without changing the generation.
			if ok1 && ok2 && o.GetGeneration() != 0 && o.GetGeneration() == n.GetGeneration() && maps.Equal(o.GetAnnotations(), n.GetAnnotations()) {
				return
			}
			w.changed()
		},
		DeleteFunc: func(any) { w.changed() },
	}
	for _, inf := range w.informers {
		if _, err := inf.AddEventHandler(handler); err != nil {
			return fmt.Errorf("watch routed objects: %w", err)
		}
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	synced := make([]cache.InformerSynced, 0, len(w.informers))
	for _, inf := range w.informers {
		wg.Go(func() { inf.RunWithContext(ctx) })
		synced = append(synced, inf.HasSynced)
	}
	if w.configMaps != nil {
		defer w.configMaps.wait()
	}

	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return nil
	}
	w.rebuild(ctx)
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
			w.rebuild(ctx)
		}
	}
}

func (w *Watcher) changed() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// rebuild builds a table from the informers' objects, swaps it in, and releases what the previous
// table alone referred to. It first makes the ConfigMap watcher watch exactly the ConfigMaps the
// objects read bodies from; one not read yet is answered as unavailable until its first event
// rebuilds the table again.
func (w *Watcher) rebuild(ctx context.Context) {
	var objs []*httpso.Object
	for _, inf := range w.informers {
		for _, o := range inf.GetStore().List() {
			switch o := o.(type) {
			case *v1alpha1.HTTPScaledObject:
				objs = append(objs, httpso.FromHTTPScaledObject(o))
			case *v1beta1.InterceptorRoute:
				objs = append(objs, httpso.FromInterceptorRoute(o))
			}
		}
	}
	var configMaps ConfigMaps
	if w.configMaps != nil {
		w.configMaps.watch(ctx, configMapsRead(objs), w.changed)
		configMaps = w.configMaps
	}
	table, conflicts := BuildObjects(objs, w.targets, w.counters, configMaps, w.defaults)
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
		// Compared by message: each rebuild computes owners afresh.
		if p, ok := prev[key]; ok && p.Message() == c.Message() {
			continue
		}
		winner := httpso.Ref{Kind: c.WinnerKind, Key: c.Winner}.String()
		if c.Owner != nil {
			w.log.Info("object not routed: another namespace owns its host",
				"object", key.String(), "owner", c.Owner.Namespace, "firstClaim", winner, "claim", c.Claim.String())
			continue
		}
		w.log.Info("object not routed: an older object claims the same route",
			"object", key.String(), "winner", winner, "claim", c.Claim.String())
	}
	for key := range prev {
		if _, ok := conflicts[key]; !ok {
			w.log.V(1).Info("routing conflict resolved", "object", key.String())
		}
	}
	w.conflictsGauge.Set(float64(len(conflicts)))
	w.routesGauge.Set(float64(table.Len()))
	w.rebuilds.Inc()
	w.log.V(1).Info("routing table rebuilt", "routes", table.Len(), "conflicts", len(conflicts))
}

// configMapsRead returns the "namespace/name" of every ConfigMap the InterceptorRoutes among objs
// read a response body from.
func configMapsRead(objs []*httpso.Object) map[string]struct{} {
	want := map[string]struct{}{}
	add := func(ns string, r *v1beta1.StaticResponse) {
		if r != nil && r.BodyFromConfigMap != nil {
			want[ns+"/"+r.BodyFromConfigMap.Name] = struct{}{}
		}
	}
	for _, o := range objs {
		ir := o.InterceptorRoute
		if ir == nil {
			continue
		}
		if cs := ir.Spec.ColdStart; cs != nil && cs.Placeholder != nil {
			add(ir.Namespace, cs.Placeholder.Response)
		}
		for i := range ir.Spec.StaticRoutes {
			add(ir.Namespace, &ir.Spec.StaticRoutes[i].Response)
		}
	}
	return want
}

// askRoutesServed asks routesServed once a second until it answers or ctx ends.
func (w *Watcher) askRoutesServed(ctx context.Context) (bool, error) {
	for {
		served, err := w.routesServed()
		if err == nil {
			return served, nil
		}
		w.log.Info("cannot tell whether InterceptorRoutes are served; asking again", "error", err.Error())
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

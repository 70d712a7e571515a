package service

import (
	"context"
	"maps"
	"sync"
	"sync/atomic"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/lobby-http/lobby/internal/httpso"
	"github.com/lobby-http/lobby/operator/api/v1alpha1"
	"github.com/lobby-http/lobby/operator/api/v1beta1"
)

// InformerObjects serves HTTPScaledObjects and InterceptorRoutes from informers' caches (see
// httpso.NewInformer and httpso.NewRouteInformer).
type InformerObjects struct {
	objects, routes cache.SharedIndexInformer
	// changes counts the informers' events; conflicts are decided again when it has moved.
	changes atomic.Uint64

	mu sync.Mutex
	// decidedAt is the value of changes the conflicts were decided at; conflicts is nil before
	// the first decision.
	decidedAt uint64
	conflicts map[httpso.Ref]httpso.Conflict
}

var _ Objects = (*InformerObjects)(nil)

// NewInformerObjects returns Objects backed by objects, whose objects are
// *v1alpha1.HTTPScaledObject, and routes, whose objects are *v1beta1.InterceptorRoute; routes is
// nil when the API server does not serve InterceptorRoutes.
func NewInformerObjects(objects, routes cache.SharedIndexInformer) *InformerObjects {
	o := &InformerObjects{objects: objects, routes: routes}
	changed := cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { o.changes.Add(1) },
		UpdateFunc: func(oldObj, newObj any) {
			// Status writes change neither the spec nor the annotations: nothing to decide again.
			a, ok1 := oldObj.(metav1.Object)
			b, ok2 := newObj.(metav1.Object)
			if ok1 && ok2 && a.GetGeneration() != 0 && a.GetGeneration() == b.GetGeneration() && maps.Equal(a.GetAnnotations(), b.GetAnnotations()) {
				return
			}
			o.changes.Add(1)
		},
		DeleteFunc: func(any) { o.changes.Add(1) },
	}
	// AddEventHandler fails only once an informer has stopped; these have not started.
	_, _ = objects.AddEventHandler(changed)
	if routes != nil {
		_, _ = routes.AddEventHandler(changed)
	}
	return o
}

// Conflict returns why the object ref names is not routed by the interceptors, as httpso.Decide
// decides it over every cached object, or false when it is routed or unknown. The decision is
// made again only after the informers have seen a change.
func (o *InformerObjects) Conflict(ref httpso.Ref) (httpso.Conflict, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if at := o.changes.Load(); o.conflicts == nil || at != o.decidedAt {
		var objs []*httpso.Object
		for _, x := range o.objects.GetIndexer().List() {
			if h, ok := x.(*v1alpha1.HTTPScaledObject); ok {
				objs = append(objs, httpso.FromHTTPScaledObject(h))
			}
		}
		if o.routes != nil {
			for _, x := range o.routes.GetIndexer().List() {
				if r, ok := x.(*v1beta1.InterceptorRoute); ok {
					objs = append(objs, httpso.FromInterceptorRoute(r))
				}
			}
		}
		_, o.conflicts = httpso.ResolveObjects(objs)
		o.decidedAt = at
	}
	c, ok := o.conflicts[ref]
	return c, ok
}

// Get returns the cached HTTPScaledObject namespace/name.
func (o *InformerObjects) Get(namespace, name string) (*v1alpha1.HTTPScaledObject, bool) {
	obj, ok, err := o.objects.GetIndexer().GetByKey(namespace + "/" + name)
	if err != nil || !ok {
		return nil, false
	}
	h, ok := obj.(*v1alpha1.HTTPScaledObject)
	return h, ok
}

// Route returns the cached InterceptorRoute namespace/name.
func (o *InformerObjects) Route(namespace, name string) (*v1beta1.InterceptorRoute, bool) {
	if o.routes == nil {
		return nil, false
	}
	obj, ok, err := o.routes.GetIndexer().GetByKey(namespace + "/" + name)
	if err != nil || !ok {
		return nil, false
	}
	r, ok := obj.(*v1beta1.InterceptorRoute)
	return r, ok
}

// Len returns the number of cached objects of both kinds.
func (o *InformerObjects) Len() int {
	n := len(o.objects.GetIndexer().ListKeys())
	if o.routes != nil {
		n += len(o.routes.GetIndexer().ListKeys())
	}
	return n
}

// HasSynced reports whether both informers have listed their objects once.
func (o *InformerObjects) HasSynced() bool {
	return o.objects.HasSynced() && (o.routes == nil || o.routes.HasSynced())
}

// Start runs the informers until ctx ends.
func (o *InformerObjects) Start(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Go(func() { o.objects.Run(ctx.Done()) })
	if o.routes != nil {
		wg.Go(func() { o.routes.Run(ctx.Done()) })
	}
	wg.Wait()
	return nil
}

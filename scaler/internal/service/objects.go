package service

import (
	"context"
	"sync"

	"k8s.io/client-go/tools/cache"

	"github.com/lobby-http/lobby/operator/api/v1alpha1"
	"github.com/lobby-http/lobby/operator/api/v1beta1"
)

// InformerObjects serves HTTPScaledObjects and InterceptorRoutes from informers' caches (see
// httpso.NewInformer and httpso.NewRouteInformer).
type InformerObjects struct {
	objects, routes cache.SharedIndexInformer
}

var _ Objects = (*InformerObjects)(nil)

// NewInformerObjects returns Objects backed by objects, whose objects are
// *v1alpha1.HTTPScaledObject, and routes, whose objects are *v1beta1.InterceptorRoute; routes is
// nil when the API server does not serve InterceptorRoutes.
func NewInformerObjects(objects, routes cache.SharedIndexInformer) *InformerObjects {
	return &InformerObjects{objects: objects, routes: routes}
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

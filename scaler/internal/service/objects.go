package service

import (
	"context"

	"k8s.io/client-go/tools/cache"

	"github.com/lobby-http/lobby/operator/api/v1alpha1"
)

// InformerObjects serves HTTPScaledObjects from an informer's cache (see httpso.NewInformer).
type InformerObjects struct {
	informer cache.SharedIndexInformer
}

var _ Objects = (*InformerObjects)(nil)

// NewInformerObjects returns Objects backed by informer, whose objects are
// *v1alpha1.HTTPScaledObject.
func NewInformerObjects(informer cache.SharedIndexInformer) *InformerObjects {
	return &InformerObjects{informer: informer}
}

// Get returns the cached object namespace/name.
func (o *InformerObjects) Get(namespace, name string) (*v1alpha1.HTTPScaledObject, bool) {
	obj, ok, err := o.informer.GetIndexer().GetByKey(namespace + "/" + name)
	if err != nil || !ok {
		return nil, false
	}
	h, ok := obj.(*v1alpha1.HTTPScaledObject)
	return h, ok
}

// Len returns the number of cached objects.
func (o *InformerObjects) Len() int { return len(o.informer.GetIndexer().ListKeys()) }

// HasSynced reports whether the informer has listed the objects once.
func (o *InformerObjects) HasSynced() bool { return o.informer.HasSynced() }

// Start runs the informer until ctx ends.
func (o *InformerObjects) Start(ctx context.Context) error {
	o.informer.Run(ctx.Done())
	return nil
}

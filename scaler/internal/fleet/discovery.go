package fleet

import (
	"context"
	"fmt"
	"net"
	"strconv"

	"github.com/go-logr/logr"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	listers "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"
)

// TargetSetter receives the interceptor pods to subscribe to; *Fleet implements it.
type TargetSetter interface {
	// SetTargets replaces the set of interceptor pods.
	SetTargets([]Target)
}

var _ TargetSetter = (*Fleet)(nil)

// Discovery finds the interceptor pods in the EndpointSlices of the interceptor admin Service and
// hands them to a TargetSetter whenever they change.
type Discovery struct {
	factory  informers.SharedInformerFactory
	informer cache.SharedIndexInformer
	lister   listers.EndpointSliceLister
	portName string
	to       TargetSetter
	log      logr.Logger
}

// NewDiscovery returns a Discovery of the endpoints of Service service in namespace, on the port
// named portName. It watches only that namespace and only that Service's EndpointSlices.
func NewDiscovery(client kubernetes.Interface, namespace, service, portName string, to TargetSetter, log logr.Logger) (*Discovery, error) {
	selector := labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: service}).String()
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithNamespace(namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = selector }))
	slices := factory.Discovery().V1().EndpointSlices()
	d := &Discovery{
		factory:  factory,
		informer: slices.Informer(),
		lister:   slices.Lister(),
		portName: portName,
		to:       to,
		log:      log,
	}
	// Every event recomputes the whole set from the cache: the Service has few slices, and the
	// informer calls handlers one at a time, so the last call always sees the latest state.
	update := func() { d.to.SetTargets(d.Targets()) }
	if _, err := d.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { update() },
		UpdateFunc: func(any, any) { update() },
		DeleteFunc: func(any) { update() },
	}); err != nil {
		return nil, fmt.Errorf("watch interceptor EndpointSlices: %w", err)
	}
	return d, nil
}

// Start runs the informer until ctx ends.
func (d *Discovery) Start(ctx context.Context) error {
	d.factory.Start(ctx.Done())
	<-ctx.Done()
	d.factory.Shutdown()
	return nil
}

// HasSynced reports whether the informer has listed the EndpointSlices once.
func (d *Discovery) HasSynced() bool { return d.informer.HasSynced() }

// Targets returns the interceptor pods in the cache: every endpoint address of every slice, on
// the slice's port named portName. Slices without that port contribute nothing.
func (d *Discovery) Targets() []Target {
	slices, err := d.lister.List(labels.Everything())
	if err != nil {
		d.log.Error(err, "list interceptor EndpointSlices")
		return nil
	}
	var ts []Target
	for _, s := range slices {
		port := int32(0)
		for _, p := range s.Ports {
			if p.Name != nil && *p.Name == d.portName && p.Port != nil {
				port = *p.Port
			}
		}
		if port == 0 {
			continue
		}
		for _, ep := range s.Endpoints {
			// A nil Ready means ready, as the EndpointSlice API defines it.
			ready := ep.Conditions.Ready == nil || *ep.Conditions.Ready
			name := ""
			if ep.TargetRef != nil {
				name = ep.TargetRef.Name
			}
			for _, a := range ep.Addresses {
				ts = append(ts, Target{Addr: net.JoinHostPort(a, strconv.Itoa(int(port))), Pod: name, Ready: ready})
			}
		}
	}
	return ts
}

package endpointslices

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// bulkFetch is the number of newly wanted Services above which the Informer lists all Services
// and EndpointSlices once instead of listing each Service's own.
const bulkFetch = 32

// fetchRetry is how long the Informer waits before fetching again after a failure.
const fetchRetry = time.Second

// watchBackoff is how the Informer's reflectors wait between attempts to list and watch.
// client-go's default grows to 30 s, doubled by jitter, and shrinks back only after two quiet
// minutes: after an API server outage a reflector's next attempt can come a minute after the API
// is back, and a second wait follows when the restarted API server answers its first watch with
// "too old". Until then new pods stay unknown to the interceptor and cold starts time out. A cap
// of 4 s (8 s with jitter) costs an idle API server one list or watch per reflector that often.
var watchBackoff = wait.Backoff{Duration: 250 * time.Millisecond, Factor: 2, Jitter: 1, Steps: 5, Cap: 4 * time.Second}

// Informer feeds a Store from the API server. It watches EndpointSlices and Services (in one
// namespace, or all), hands them to the Store, which drops those of Services no Target refers to,
// and fetches the objects of a Service when a Target first refers to it (they were dropped until
// then). It keeps no cache of its own.
type Informer struct {
	store     *Store
	client    kubernetes.Interface
	namespace string
	log       logr.Logger

	slicesSynced, servicesSynced atomic.Bool
	synced                       chan struct{}
	syncOnce                     sync.Once
}

// NewInformer returns an Informer that feeds store from client, watching namespace (all namespaces
// when empty).
func NewInformer(store *Store, client kubernetes.Interface, namespace string, log logr.Logger) *Informer {
	store.mu.Lock()
	store.fetches = true
	store.mu.Unlock()
	return &Informer{store: store, client: client, namespace: namespace, log: log, synced: make(chan struct{})}
}

// HasSynced reports whether the first full list of Services and EndpointSlices has been stored.
func (i *Informer) HasSynced() bool {
	return i.slicesSynced.Load() && i.servicesSynced.Load()
}

// Start watches until ctx ends. It always returns nil: the watches retry on their own.
func (i *Informer) Start(ctx context.Context) error {
	log := i.log
	ns := i.namespace
	slices := cache.NewReflectorWithOptions(cache.ToListWatcherWithWatchListSemantics(&cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.LabelSelector = discoveryv1.LabelServiceName
			return i.listSlices(ctx, o, nil)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.LabelSelector = discoveryv1.LabelServiceName
			return i.client.DiscoveryV1().EndpointSlices(ns).Watch(ctx, o)
		},
	}, i.client), &discoveryv1.EndpointSlice{}, sliceSink{i}, i.reflectorOptions("endpointslices", &log))
	services := cache.NewReflectorWithOptions(cache.ToListWatcherWithWatchListSemantics(&cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return i.listServices(ctx, o, nil)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return i.client.CoreV1().Services(ns).Watch(ctx, o)
		},
	}, i.client), &corev1.Service{}, serviceSink{i}, i.reflectorOptions("services", &log))

	var wg sync.WaitGroup
	wg.Go(func() { slices.RunWithContext(ctx) })
	wg.Go(func() { services.RunWithContext(ctx) })
	wg.Go(func() { i.fetchLoop(ctx) })
	wg.Wait()
	return nil
}

// reflectorOptions are the options of the Informer's reflector of name.
func (i *Informer) reflectorOptions(name string, log *logr.Logger) cache.ReflectorOptions {
	b := watchBackoff
	return cache.ReflectorOptions{Name: name, Logger: log, Backoff: &b}
}

func (i *Informer) markSynced() {
	if i.HasSynced() {
		i.syncOnce.Do(func() { close(i.synced) })
	}
}

// fetchLoop fetches the objects of newly wanted Services. It starts after the first full lists,
// which cover every Service wanted until then.
func (i *Informer) fetchLoop(ctx context.Context) {
	select {
	case <-ctx.Done():
		return
	case <-i.synced:
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-i.store.kick:
		}
		keys := i.store.takePending()
		if len(keys) == 0 {
			continue
		}
		if err := i.fetch(ctx, keys); err != nil {
			if ctx.Err() != nil {
				return
			}
			i.log.Error(err, "fetching services failed, retrying", "services", len(keys))
			i.store.requeue(keys)
			select {
			case <-ctx.Done():
				return
			case <-time.After(fetchRetry):
			}
		}
	}
}

// fetch lists the Services and EndpointSlices of keys and applies them to the Store.
func (i *Informer) fetch(ctx context.Context, keys []serviceKey) error {
	if len(keys) > bulkFetch {
		want := make(map[serviceKey]struct{}, len(keys))
		for _, k := range keys {
			want[k] = struct{}{}
		}
		wanted := func(ns, name string) bool { _, ok := want[serviceKey{ns, name}]; return ok }
		svcs, err := i.listServices(ctx, metav1.ListOptions{}, wanted)
		if err != nil {
			return fmt.Errorf("list services: %w", err)
		}
		sls, err := i.listSlices(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName}, wanted)
		if err != nil {
			return fmt.Errorf("list endpoint slices: %w", err)
		}
		i.store.applyFetch(keys, svcs, sls)
		return nil
	}
	for n, k := range keys {
		if i.namespace != "" && k.namespace != i.namespace {
			// Outside the watched namespace nothing will ever arrive; the targets stay empty.
			i.store.applyFetch(keys[n:n+1], &corev1.ServiceList{}, &discoveryv1.EndpointSliceList{})
			continue
		}
		svcs, err := i.client.CoreV1().Services(k.namespace).List(ctx,
			metav1.ListOptions{FieldSelector: "metadata.name=" + k.name})
		if err != nil {
			i.store.requeue(keys[n+1:])
			return fmt.Errorf("list service %s/%s: %w", k.namespace, k.name, err)
		}
		sls, err := i.client.DiscoveryV1().EndpointSlices(k.namespace).List(ctx,
			metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + k.name})
		if err != nil {
			i.store.requeue(keys[n+1:])
			return fmt.Errorf("list endpoint slices of %s/%s: %w", k.namespace, k.name, err)
		}
		i.store.applyFetch(keys[n:n+1], svcs, sls)
	}
	return nil
}

// listServices lists the Services of the watched namespace in pages of listPage (unless o sets
// its own limit), keeping of each only what the Store reads (see trimService), and only those
// for which wanted is true (all when wanted is nil). The list has the first page's resource
// version: the pages of one list are one snapshot.
func (i *Informer) listServices(ctx context.Context, o metav1.ListOptions, wanted func(ns, name string) bool) (*corev1.ServiceList, error) {
	out := &corev1.ServiceList{}
	err := pages(ctx, o, func(ctx context.Context, o metav1.ListOptions) (string, error) {
		l, err := i.client.CoreV1().Services(i.namespace).List(ctx, o)
		if err != nil {
			return "", err
		}
		if out.ResourceVersion == "" {
			out.ResourceVersion = l.ResourceVersion
		}
		for n := range l.Items {
			if s := &l.Items[n]; wanted == nil || wanted(s.Namespace, s.Name) {
				out.Items = append(out.Items, trimService(s))
			}
		}
		return l.Continue, nil
	})
	return out, err
}

// listSlices is listServices for EndpointSlices (see trimSlice); wanted is given the name of the
// slice's Service.
func (i *Informer) listSlices(ctx context.Context, o metav1.ListOptions, wanted func(ns, name string) bool) (*discoveryv1.EndpointSliceList, error) {
	out := &discoveryv1.EndpointSliceList{}
	err := pages(ctx, o, func(ctx context.Context, o metav1.ListOptions) (string, error) {
		l, err := i.client.DiscoveryV1().EndpointSlices(i.namespace).List(ctx, o)
		if err != nil {
			return "", err
		}
		if out.ResourceVersion == "" {
			out.ResourceVersion = l.ResourceVersion
		}
		for n := range l.Items {
			if s := &l.Items[n]; wanted == nil || wanted(s.Namespace, s.Labels[discoveryv1.LabelServiceName]) {
				out.Items = append(out.Items, trimSlice(s))
			}
		}
		return l.Continue, nil
	})
	return out, err
}

// listPage is the page size of the Informer's lists: each page is reduced to what the Store
// reads before the next one is fetched, so listing the whole cluster holds one page of whole
// objects at a time, not all of them.
const listPage = 500

// pages calls page with o, then with each continue token page returns, until it returns none.
// It always lists the latest version, which is what the reflectors' lists ask for or newer:
// their first list asks for any version ("0"), a relist after a watch ended for one not older
// than the last they saw. Continued requests carry no resource version of their own, as the API
// requires.
//
// Neither may go to the API server as asked. "Any version" is answered from the API server's
// cache in one piece, ignoring the limit. And a resource version with a limit means that exact
// version, read from etcd: after the API server restarts, its new watch cache starts later than
// that version, so the watch from the listed version is refused as too old, the reflector lists
// the same version again, and the two repeat until etcd compacts it away, minutes later, with
// every change missed meanwhile. The latest version is answered in pages, and a watch from it
// is always accepted.
func pages(ctx context.Context, o metav1.ListOptions, page func(context.Context, metav1.ListOptions) (string, error)) error {
	if o.Limit == 0 {
		o.Limit = listPage
	}
	o.ResourceVersion, o.ResourceVersionMatch = "", ""
	for {
		next, err := page(ctx, o)
		if err != nil || next == "" {
			return err
		}
		o.Continue, o.ResourceVersion, o.ResourceVersionMatch = next, "", ""
	}
}

// trimService copies what the Store reads of a Service: its identity, resource version and
// ports.
func trimService(s *corev1.Service) corev1.Service {
	return corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: s.Name, ResourceVersion: s.ResourceVersion},
		Spec:       corev1.ServiceSpec{Ports: s.Spec.Ports},
	}
}

// trimSlice copies what the Store reads of an EndpointSlice: its identity, resource version,
// Service label, address type, ports, and each endpoint's addresses and conditions.
func trimSlice(s *discoveryv1.EndpointSlice) discoveryv1.EndpointSlice {
	eps := make([]discoveryv1.Endpoint, len(s.Endpoints))
	for n, e := range s.Endpoints {
		eps[n] = discoveryv1.Endpoint{Addresses: e.Addresses, Conditions: e.Conditions}
	}
	return discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: s.Name, ResourceVersion: s.ResourceVersion,
			Labels: map[string]string{discoveryv1.LabelServiceName: s.Labels[discoveryv1.LabelServiceName]}},
		AddressType: s.AddressType,
		Endpoints:   eps,
		Ports:       s.Ports,
	}
}

// takePending returns the Services waiting to be fetched and clears the set.
func (s *Store) takePending() []serviceKey {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := make([]serviceKey, 0, len(s.pending))
	for k := range s.pending {
		if svc := s.services[k]; svc != nil && svc.fetching {
			keys = append(keys, k)
		}
	}
	clear(s.pending)
	return keys
}

// requeue puts keys back to be fetched again, unless they were settled or released meanwhile.
func (s *Store) requeue(keys []serviceKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range keys {
		if svc := s.services[k]; svc != nil && svc.fetching {
			s.pending[k] = struct{}{}
		}
	}
}

// applyFetch applies complete lists of Services and EndpointSlices to the Services of keys.
func (s *Store) applyFetch(keys []serviceKey, svcs *corev1.ServiceList, sls *discoveryv1.EndpointSliceList) {
	s.mu.Lock()
	defer s.mu.Unlock()
	want := make(map[serviceKey]*service, len(keys))
	for _, k := range keys {
		if svc := s.services[k]; svc != nil && svc.fetching {
			want[k] = svc
		}
	}
	found := make(map[serviceKey]*corev1.Service, len(want))
	for n := range svcs.Items {
		o := &svcs.Items[n]
		k := serviceKey{o.Namespace, o.Name}
		if _, ok := want[k]; ok {
			found[k] = o
		}
	}
	items := make(map[serviceKey]map[string]*slice, len(want))
	for n := range sls.Items {
		o := &sls.Items[n]
		k := serviceKey{o.Namespace, o.Labels[discoveryv1.LabelServiceName]}
		if _, ok := want[k]; !ok {
			continue
		}
		if items[k] == nil {
			items[k] = map[string]*slice{}
		}
		items[k][o.Name] = compact(o)
	}
	for k, svc := range want {
		svc.applyService(found[k], svcs.ResourceVersion)
		svc.applySlices(items[k], sls.ResourceVersion)
		s.settle(svc)
	}
}

// replaceServices applies a full relist of Services.
func (s *Store) replaceServices(list []any, rv string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	found := make(map[serviceKey]*corev1.Service, len(s.services))
	for _, obj := range list {
		o, ok := obj.(*corev1.Service)
		if !ok {
			continue
		}
		k := serviceKey{o.Namespace, o.Name}
		if _, ok := s.services[k]; ok {
			found[k] = o
		}
	}
	for k, svc := range s.services {
		svc.applyService(found[k], rv)
		svc.listedServices = true
		if svc.listedSlices {
			s.settle(svc)
		}
	}
}

// replaceSlices applies a full relist of EndpointSlices.
func (s *Store) replaceSlices(list []any, rv string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	items := make(map[serviceKey]map[string]*slice, len(s.services))
	for _, obj := range list {
		o, ok := obj.(*discoveryv1.EndpointSlice)
		if !ok {
			continue
		}
		k := serviceKey{o.Namespace, o.Labels[discoveryv1.LabelServiceName]}
		if _, ok := s.services[k]; !ok {
			continue
		}
		if items[k] == nil {
			items[k] = map[string]*slice{}
		}
		items[k][o.Name] = compact(o)
	}
	for k, svc := range s.services {
		svc.applySlices(items[k], rv)
		svc.listedSlices = true
		if svc.listedServices {
			s.settle(svc)
		}
	}
}

// sliceSink receives the EndpointSlice reflector's events.
type sliceSink struct{ i *Informer }

func (k sliceSink) Add(obj any) error { return k.Update(obj) }

func (k sliceSink) Update(obj any) error {
	if o, ok := obj.(*discoveryv1.EndpointSlice); ok {
		k.i.store.UpdateSlice(o)
	}
	return nil
}

func (k sliceSink) Delete(obj any) error {
	if o, ok := obj.(*discoveryv1.EndpointSlice); ok {
		k.i.store.DeleteSlice(o)
	}
	return nil
}

func (k sliceSink) Replace(list []any, rv string) error {
	k.i.store.replaceSlices(list, rv)
	k.i.slicesSynced.Store(true)
	k.i.markSynced()
	return nil
}

func (sliceSink) Resync() error { return nil }

// serviceSink receives the Service reflector's events.
type serviceSink struct{ i *Informer }

func (k serviceSink) Add(obj any) error { return k.Update(obj) }

func (k serviceSink) Update(obj any) error {
	if o, ok := obj.(*corev1.Service); ok {
		k.i.store.UpdateService(o)
	}
	return nil
}

func (k serviceSink) Delete(obj any) error {
	if o, ok := obj.(*corev1.Service); ok {
		k.i.store.deleteService(o.Namespace, o.Name, o.ResourceVersion)
	}
	return nil
}

func (k serviceSink) Replace(list []any, rv string) error {
	k.i.store.replaceServices(list, rv)
	k.i.servicesSynced.Store(true)
	k.i.markSynced()
	return nil
}

func (serviceSink) Resync() error { return nil }

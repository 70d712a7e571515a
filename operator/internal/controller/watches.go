package controller

import (
	"context"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/lobby-http/lobby/internal/httpso"
	"github.com/lobby-http/lobby/operator/api/v1alpha1"
	"github.com/lobby-http/lobby/operator/api/v1beta1"
	"github.com/lobby-http/lobby/operator/internal/resources"
)

// Cache indexes of HTTPScaledObjects and InterceptorRoutes.
const (
	// indexHosts holds the host keys each object claims (see hostKey), to find the objects that
	// contest a host, its requests, or its ownership.
	indexHosts = "lobby.hosts"
	// indexServices holds the Services an object names, to find the objects a Service matters to.
	indexServices = "lobby.services"
)

// hostKey renders a claimed host key as an index value; the catch-all is "" as a host key.
func hostKey(host string) string {
	return "host:" + host
}

func addIndexes(ctx context.Context, idx client.FieldIndexer, routes bool) error {
	hostKeys := func(o *httpso.Object) []string {
		hosts := o.Hosts()
		keys := make([]string, len(hosts))
		for i, h := range hosts {
			keys[i] = hostKey(h)
		}
		return keys
	}
	if err := idx.IndexField(ctx, &v1alpha1.HTTPScaledObject{}, indexHosts, func(o client.Object) []string {
		return hostKeys(httpso.FromHTTPScaledObject(normalized(o.(*v1alpha1.HTTPScaledObject))))
	}); err != nil {
		return fmt.Errorf("index HTTPScaledObjects by host: %w", err)
	}
	if err := idx.IndexField(ctx, &v1alpha1.HTTPScaledObject{}, indexServices, func(o client.Object) []string {
		spec := &o.(*v1alpha1.HTTPScaledObject).Spec
		names := []string{spec.ScaleTargetRef.Service}
		if f := spec.ColdStartTimeoutFailoverRef; f != nil && f.Service != spec.ScaleTargetRef.Service {
			names = append(names, f.Service)
		}
		return names
	}); err != nil {
		return fmt.Errorf("index HTTPScaledObjects by Service: %w", err)
	}
	if !routes {
		return nil
	}
	if err := idx.IndexField(ctx, &v1beta1.InterceptorRoute{}, indexHosts, func(o client.Object) []string {
		return hostKeys(httpso.FromInterceptorRoute(normalizedRoute(o.(*v1beta1.InterceptorRoute))))
	}); err != nil {
		return fmt.Errorf("index InterceptorRoutes by host: %w", err)
	}
	if err := idx.IndexField(ctx, &v1beta1.InterceptorRoute{}, indexServices, func(o client.Object) []string {
		spec := &o.(*v1beta1.InterceptorRoute).Spec
		names := []string{spec.Target.Service}
		if cs := spec.ColdStart; cs != nil && cs.Fallback != nil && cs.Fallback.Service != nil {
			names = append(names, cs.Fallback.Service.Name)
		}
		return names
	}); err != nil {
		return fmt.Errorf("index InterceptorRoutes by Service: %w", err)
	}
	return nil
}

// normalized returns a copy of o read as the interceptors read it (see httpso.Normalize).
func normalized(o *v1alpha1.HTTPScaledObject) *v1alpha1.HTTPScaledObject {
	o = o.DeepCopy()
	httpso.Normalize(&o.Spec)
	return o
}

// normalizedRoute returns a copy of o read as the interceptors read it (see httpso.Normalize).
func normalizedRoute(o *v1beta1.InterceptorRoute) *v1beta1.InterceptorRoute {
	o = o.DeepCopy()
	httpso.Normalize(&o.Spec)
	return o
}

// objectOf reads an HTTPScaledObject or InterceptorRoute into the shared route model; nil for
// other objects.
func objectOf(o client.Object) *httpso.Object {
	switch o := o.(type) {
	case *v1alpha1.HTTPScaledObject:
		return httpso.FromHTTPScaledObject(normalized(o))
	case *v1beta1.InterceptorRoute:
		return httpso.FromInterceptorRoute(normalizedRoute(o))
	}
	return nil
}

// claimants lists the objects that claim host (a host key, "" for the catch-all): HTTPScaledObjects,
// and InterceptorRoutes when routes is set.
func claimants(ctx context.Context, c client.Reader, host string, routes bool) ([]*httpso.Object, error) {
	return list(ctx, c, routes, client.MatchingFields{indexHosts: hostKey(host)})
}

// list lists the objects of both kinds (InterceptorRoutes only when routes is set) matching opts.
func list(ctx context.Context, c client.Reader, routes bool, opts ...client.ListOption) ([]*httpso.Object, error) {
	var hsos v1alpha1.HTTPScaledObjectList
	if err := c.List(ctx, &hsos, opts...); err != nil {
		return nil, fmt.Errorf("list HTTPScaledObjects: %w", err)
	}
	var irs v1beta1.InterceptorRouteList
	if routes {
		if err := c.List(ctx, &irs, opts...); err != nil {
			return nil, fmt.Errorf("list InterceptorRoutes: %w", err)
		}
	}
	out := make([]*httpso.Object, 0, len(hsos.Items)+len(irs.Items))
	for i := range hsos.Items {
		out = append(out, objectOf(&hsos.Items[i]))
	}
	for i := range irs.Items {
		out = append(out, objectOf(&irs.Items[i]))
	}
	return out, nil
}

// hasPattern reports whether o claims a wildcard host or the catch-all.
func hasPattern(o *httpso.Object) bool {
	return slices.ContainsFunc(o.Hosts(), func(h string) bool { return h == "" || strings.HasPrefix(h, "*.") })
}

// claimGroup returns o and every object, of either kind, that decides whether o is routed and
// what it serves (see httpso.Decide): the objects claiming its hosts and the wildcards covering
// them, and so on through theirs, and the object of the other kind with o's name, if any. An
// object claiming a wildcard or the catch-all needs every object, since any covered host may be
// owned by another namespace. InterceptorRoutes are left out unless routes is set.
func claimGroup(ctx context.Context, c client.Reader, o *httpso.Object, routes bool) ([]*httpso.Object, error) {
	seen := map[httpso.Ref]bool{o.Ref(): true}
	group := []*httpso.Object{o}
	add := func(objs ...*httpso.Object) {
		for _, x := range objs {
			if !seen[x.Ref()] {
				seen[x.Ref()] = true
				group = append(group, x)
			}
		}
	}
	if hasPattern(o) {
		all, err := list(ctx, c, routes)
		if err != nil {
			return nil, err
		}
		add(all...)
	}
	hosts := map[string]bool{}
	for i := 0; i < len(group); i++ {
		for _, h := range group[i].Hosts() {
			for _, k := range append([]string{h}, httpso.Covering(h)...) {
				if hosts[k] {
					continue
				}
				hosts[k] = true
				objs, err := claimants(ctx, c, k, routes)
				if err != nil {
					return nil, err
				}
				add(objs...)
			}
		}
	}
	if !routes {
		return group, nil
	}
	// Objects of both kinds share one key space in counts: the same name is a conflict too.
	key := client.ObjectKey{Namespace: o.Namespace, Name: o.Name}
	var other client.Object = &v1beta1.InterceptorRoute{}
	if o.Kind == httpso.KindInterceptorRoute {
		other = &v1alpha1.HTTPScaledObject{}
	}
	if err := c.Get(ctx, key, other); err == nil {
		add(objectOf(other))
	} else if !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	return group, nil
}

// watch registers the controller: HTTPScaledObjects (themselves, and the objects whose routes
// they contest), ScaledObjects of the same name, and the Services objects name.
func (r *Reconciler) watch(mgr ctrl.Manager) error {
	scaledObject := &unstructured.Unstructured{}
	scaledObject.SetGroupVersionKind(resources.ScaledObjectGVK)
	specOrMetadata := predicate.Or(predicate.GenerationChangedPredicate{}, predicate.LabelChangedPredicate{},
		predicate.AnnotationChangedPredicate{}, addOnFinalizerPresent)
	b := ctrl.NewControllerManagedBy(mgr).
		Named("httpscaledobject").
		For(&v1alpha1.HTTPScaledObject{}, builder.WithPredicates(specOrMetadata)).
		Watches(&v1alpha1.HTTPScaledObject{}, &contenders{client: r.Client, kind: httpso.KindHTTPScaledObject, routes: r.Routes},
			builder.WithPredicates(specOrMetadata))
	if r.Routes {
		b = b.Watches(&v1beta1.InterceptorRoute{}, &contenders{client: r.Client, kind: httpso.KindHTTPScaledObject, routes: true},
			builder.WithPredicates(specOrAnnotations))
	}
	return b.
		// Every ScaledObject maps to the HTTPScaledObject of the same name: an owned one when a
		// user edits it or KEDA reports on it, a foreign one when it goes away and lobby may take
		// the name.
		Watches(scaledObject, &handler.EnqueueRequestForObject{}).
		Watches(&corev1.Service{}, handler.EnqueueRequestsFromMapFunc(r.objectsNaming)).
		Complete(r)
}

// objectsNaming maps a Service to the HTTPScaledObjects in its namespace that name it.
func (r *Reconciler) objectsNaming(ctx context.Context, svc client.Object) []reconcile.Request {
	var list v1alpha1.HTTPScaledObjectList
	if err := r.Client.List(ctx, &list, client.InNamespace(svc.GetNamespace()),
		client.MatchingFields{indexServices: svc.GetName()}); err != nil {
		r.Log.Error(err, "list HTTPScaledObjects naming a Service", "service", svc.GetNamespace()+"/"+svc.GetName())
		return nil
	}
	reqs := make([]reconcile.Request, len(list.Items))
	for i := range list.Items {
		reqs[i] = reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])}
	}
	return reqs
}

// contenders enqueues, for a changed HTTPScaledObject or InterceptorRoute, the objects of kind
// that claim any of its routes before or after the change, or have its name: a winner that
// changes or goes away can free a loser, and a newcomer can make one.
type contenders struct {
	client client.Client
	kind   httpso.Kind
	// routes is set when InterceptorRoutes are served.
	routes bool
}

var _ handler.TypedEventHandler[client.Object, reconcile.Request] = (*contenders)(nil)

// Create enqueues the contenders of a new object.
func (h *contenders) Create(ctx context.Context, e event.TypedCreateEvent[client.Object], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	h.enqueue(ctx, q, e.Object)
}

// Update enqueues the contenders of an object before and after its change.
func (h *contenders) Update(ctx context.Context, e event.TypedUpdateEvent[client.Object], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	h.enqueue(ctx, q, e.ObjectOld, e.ObjectNew)
}

// Delete enqueues the contenders of a deleted object.
func (h *contenders) Delete(ctx context.Context, e event.TypedDeleteEvent[client.Object], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	h.enqueue(ctx, q, e.Object)
}

// Generic enqueues the contenders of an object.
func (h *contenders) Generic(ctx context.Context, e event.TypedGenericEvent[client.Object], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	h.enqueue(ctx, q, e.Object)
}

func (h *contenders) enqueue(ctx context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request], objs ...client.Object) {
	seen := map[types.NamespacedName]bool{}
	for _, o := range objs {
		obj := objectOf(o)
		if obj == nil {
			continue
		}
		if obj.Kind == h.kind {
			seen[client.ObjectKeyFromObject(o)] = true // For() enqueues the object itself.
		} else if h.routes && !seen[client.ObjectKeyFromObject(o)] {
			// The object of this kind with the same name, if any.
			seen[client.ObjectKeyFromObject(o)] = true
			q.Add(reconcile.Request{NamespacedName: client.ObjectKeyFromObject(o)})
		}
		for _, x := range h.affected(ctx, obj) {
			key := types.NamespacedName{Namespace: x.Namespace, Name: x.Name}
			if x.Kind == h.kind && !seen[key] {
				seen[key] = true
				q.Add(reconcile.Request{NamespacedName: key})
			}
		}
	}
}

// affected lists the objects whose routing or status obj can change: those claiming its hosts,
// the wildcards covering them or the catch-all, and, for a wildcard or catch-all of obj, those
// claiming a host it covers.
func (h *contenders) affected(ctx context.Context, obj *httpso.Object) []*httpso.Object {
	var out []*httpso.Object
	// The cache is a local index: listing fails only when it is not started.
	if hasPattern(obj) {
		all, _ := list(ctx, h.client, h.routes)
		return all
	}
	keys := map[string]bool{"": true}
	for _, host := range obj.Hosts() {
		keys[host] = true
		for _, c := range httpso.Covering(host) {
			keys[c] = true
		}
	}
	for k := range keys {
		others, _ := claimants(ctx, h.client, k, h.routes)
		out = append(out, others...)
	}
	return out
}

// addOnFinalizerPresent passes the events of objects carrying the KEDA HTTP Add-on's finalizer,
// such as the add-on putting it back or a delete that waits on it, so that lobby removes it.
var addOnFinalizerPresent = predicate.NewPredicateFuncs(func(o client.Object) bool {
	return slices.Contains(o.GetFinalizers(), v1alpha1.AddOnFinalizer)
})

// losers renders, for the Ready message of winner, the newer objects not routed because winner
// claims their requests first, or claimed first the host their namespace may not claim, so that
// a conflict shows on the status of both objects; "" when there are none.
func losers(winner httpso.Ref, conflicts map[httpso.Ref]httpso.Conflict) string {
	var same, owned []string
	for ref, c := range conflicts {
		if c.Winner == winner.Key && c.WinnerKind == winner.Kind {
			if c.Owner != nil {
				owned = append(owned, ref.String())
			} else {
				same = append(same, ref.String())
			}
		}
	}
	var msg string
	if len(same) > 0 {
		slices.Sort(same)
		msg += fmt.Sprintf("; not routed because this object claims the same requests first: %s", strings.Join(same, ", "))
	}
	if len(owned) > 0 {
		slices.Sort(owned)
		msg += fmt.Sprintf("; not routed because this namespace owns their hosts and does not allow theirs (annotation %s): %s",
			httpso.AllowNamespacesAnnotation, strings.Join(owned, ", "))
	}
	return msg
}

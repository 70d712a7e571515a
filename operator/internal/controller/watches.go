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
	// indexClaims holds each object's claims (see claimKey), to find the objects that contest one.
	indexClaims = "lobby.claims"
	// indexServices holds the Services an object names, to find the objects a Service matters to.
	indexServices = "lobby.services"
)

// claimKey renders a claim as an index value.
func claimKey(c httpso.Claim) string {
	return c.Host + "|" + c.PathPrefix + "|" + c.Headers
}

func addIndexes(ctx context.Context, idx client.FieldIndexer, routes bool) error {
	claimKeys := func(o *httpso.Object) []string {
		claims := o.Claims()
		keys := make([]string, len(claims))
		for i, c := range claims {
			keys[i] = claimKey(c)
		}
		return keys
	}
	if err := idx.IndexField(ctx, &v1alpha1.HTTPScaledObject{}, indexClaims, func(o client.Object) []string {
		return claimKeys(httpso.FromHTTPScaledObject(normalized(o.(*v1alpha1.HTTPScaledObject))))
	}); err != nil {
		return fmt.Errorf("index HTTPScaledObjects by claim: %w", err)
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
	if err := idx.IndexField(ctx, &v1beta1.InterceptorRoute{}, indexClaims, func(o client.Object) []string {
		return claimKeys(httpso.FromInterceptorRoute(normalizedRoute(o.(*v1beta1.InterceptorRoute))))
	}); err != nil {
		return fmt.Errorf("index InterceptorRoutes by claim: %w", err)
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

// claimants lists the objects that claim c: HTTPScaledObjects, and InterceptorRoutes when routes
// is set.
func claimants(ctx context.Context, c client.Reader, claim httpso.Claim, routes bool) ([]*httpso.Object, error) {
	var hsos v1alpha1.HTTPScaledObjectList
	if err := c.List(ctx, &hsos, client.MatchingFields{indexClaims: claimKey(claim)}); err != nil {
		return nil, fmt.Errorf("list HTTPScaledObjects claiming %s: %w", claim, err)
	}
	var irs v1beta1.InterceptorRouteList
	if routes {
		if err := c.List(ctx, &irs, client.MatchingFields{indexClaims: claimKey(claim)}); err != nil {
			return nil, fmt.Errorf("list InterceptorRoutes claiming %s: %w", claim, err)
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

// claimGroup returns o and every object, of either kind, connected to it through shared claims,
// directly or through other objects, and the object of the other kind with o's name, if any.
// Whether o is routed depends on these objects only. InterceptorRoutes are left out unless routes
// is set.
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
	for i := 0; i < len(group); i++ {
		for _, claim := range group[i].Claims() {
			objs, err := claimants(ctx, c, claim, routes)
			if err != nil {
				return nil, err
			}
			add(objs...)
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
			builder.WithPredicates(predicate.GenerationChangedPredicate{}))
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
		for _, c := range obj.Claims() {
			others, err := claimants(ctx, h.client, c, h.routes)
			if err != nil {
				continue // The cache is a local index; it fails only when it is not started.
			}
			for _, x := range others {
				key := types.NamespacedName{Namespace: x.Namespace, Name: x.Name}
				if x.Kind == h.kind && !seen[key] {
					seen[key] = true
					q.Add(reconcile.Request{NamespacedName: key})
				}
			}
		}
	}
}

// addOnFinalizerPresent passes the events of objects carrying the KEDA HTTP Add-on's finalizer,
// such as the add-on putting it back or a delete that waits on it, so that lobby removes it.
var addOnFinalizerPresent = predicate.NewPredicateFuncs(func(o client.Object) bool {
	return slices.Contains(o.GetFinalizers(), v1alpha1.AddOnFinalizer)
})

// losers renders, for the Ready message of winner, the newer objects not routed because winner
// claims their requests first, so that a conflict shows on the status of both objects; "" when
// there are none.
func losers(winner httpso.Ref, conflicts map[httpso.Ref]httpso.Conflict) string {
	var names []string
	for ref, c := range conflicts {
		if c.Winner == winner.Key && c.WinnerKind == winner.Kind {
			names = append(names, ref.String())
		}
	}
	if len(names) == 0 {
		return ""
	}
	slices.Sort(names)
	return fmt.Sprintf("; not routed because this object claims the same requests first: %s", strings.Join(names, ", "))
}

package controller

import (
	"context"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
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
	"github.com/lobby-http/lobby/operator/internal/resources"
)

// Cache indexes of HTTPScaledObjects.
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

func addIndexes(ctx context.Context, idx client.FieldIndexer) error {
	if err := idx.IndexField(ctx, &v1alpha1.HTTPScaledObject{}, indexClaims, func(o client.Object) []string {
		claims := httpso.Claims(&o.(*v1alpha1.HTTPScaledObject).Spec)
		keys := make([]string, len(claims))
		for i, c := range claims {
			keys[i] = claimKey(c)
		}
		return keys
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
	return nil
}

// claimGroup returns hso and every object connected to it through shared claims, directly or
// through other objects. Whether hso is routed depends on these objects only.
func (r *Reconciler) claimGroup(ctx context.Context, hso *v1alpha1.HTTPScaledObject) ([]*v1alpha1.HTTPScaledObject, error) {
	seen := map[string]bool{httpso.Key(hso): true}
	group := []*v1alpha1.HTTPScaledObject{hso}
	for i := 0; i < len(group); i++ {
		for _, c := range httpso.Claims(&group[i].Spec) {
			var list v1alpha1.HTTPScaledObjectList
			if err := r.Client.List(ctx, &list, client.MatchingFields{indexClaims: claimKey(c)}); err != nil {
				return nil, fmt.Errorf("list HTTPScaledObjects claiming %s: %w", c, err)
			}
			for j := range list.Items {
				o := &list.Items[j]
				if k := httpso.Key(o); !seen[k] {
					seen[k] = true
					group = append(group, o)
				}
			}
		}
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
	return ctrl.NewControllerManagedBy(mgr).
		Named("httpscaledobject").
		For(&v1alpha1.HTTPScaledObject{}, builder.WithPredicates(specOrMetadata)).
		Watches(&v1alpha1.HTTPScaledObject{}, &contenders{client: r.Client}, builder.WithPredicates(specOrMetadata)).
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

// contenders enqueues, for a changed HTTPScaledObject, the other objects that claim any of its
// routes before or after the change: a winner that changes or goes away can free a loser, and a
// newcomer can make one.
type contenders struct {
	client client.Client
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
		hso, ok := o.(*v1alpha1.HTTPScaledObject)
		if !ok {
			continue
		}
		seen[client.ObjectKeyFromObject(hso)] = true // For() enqueues the object itself.
		for _, c := range httpso.Claims(&hso.Spec) {
			var list v1alpha1.HTTPScaledObjectList
			if err := h.client.List(ctx, &list, client.MatchingFields{indexClaims: claimKey(c)}); err != nil {
				continue // The cache is a local index; it fails only when it is not started.
			}
			for i := range list.Items {
				key := client.ObjectKeyFromObject(&list.Items[i])
				if !seen[key] {
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

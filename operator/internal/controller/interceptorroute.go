package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/lobby-http/lobby/internal/httpso"
	"github.com/lobby-http/lobby/operator/api/v1alpha1"
	"github.com/lobby-http/lobby/operator/api/v1beta1"
	"github.com/lobby-http/lobby/operator/internal/resources"
)

// bodyLabel is the label a ConfigMap needs for the interceptors to read response bodies from it.
const bodyLabel = "http.keda.sh/response-body"

// configMapRecheck is how soon a route whose ConfigMap is missing is checked again: the operator
// does not watch ConfigMaps (that would cache every one of the cluster), so it polls the few that
// routes name while they are missing.
var configMapRecheck = 15 * time.Second

// RouteReconciler keeps the status of InterceptorRoutes true: whether each is routed (no older
// object of either kind claims its requests, its Services exist, the ConfigMaps it reads bodies
// from are there), and whether a ScaledObject refers to it. It creates nothing: users write the
// ScaledObject.
type RouteReconciler struct {
	// Client reads from the manager's cache (routes, HTTPScaledObjects, Services, ScaledObjects)
	// and writes status to the API server.
	Client client.Client
	// Reader reads ConfigMaps from the API server directly, one at a time by name, so that the
	// operator never lists or caches every ConfigMap of the cluster.
	Reader client.Reader
	// Log is the reconciler's logger.
	Log logr.Logger
}

// +kubebuilder:rbac:groups=http.keda.sh,resources=interceptorroutes,verbs=get;list;watch
// +kubebuilder:rbac:groups=http.keda.sh,resources=interceptorroutes/status,verbs=get;update;patch
// +kubebuilder:rbac:groups="",resources=configmaps,verbs=get

// Reconcile brings one InterceptorRoute's status up to date.
func (r *RouteReconciler) Reconcile(ctx context.Context, req reconcile.Request) (result reconcile.Result, err error) {
	ir := &v1beta1.InterceptorRoute{}
	if err := r.Client.Get(ctx, req.NamespacedName, ir); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if !ir.DeletionTimestamp.IsZero() {
		return reconcile.Result{}, nil
	}
	before := ir.DeepCopy()
	defer func() {
		if perr := r.patchStatus(ctx, before, ir); perr != nil {
			err = errors.Join(err, perr)
		}
	}()

	s := &state{}
	ir.Status.Normalized = httpso.Normalize(ir.Spec.DeepCopy())
	self := httpso.FromInterceptorRoute(normalizedRoute(ir))
	group, err := claimGroup(ctx, r.Client, self, true)
	if err != nil {
		return reconcile.Result{}, err
	}
	_, conflicts, owners := httpso.Decide(group)
	if c, ok := conflicts[self.Ref()]; ok {
		s.fail(conflictReason(c, v1beta1.ReasonConflict), "%s", c.Message())
		meta.RemoveStatusCondition(&ir.Status.Conditions, ConditionHostsShadowed)
	} else {
		setShadowed(&ir.Status.Conditions, ir.Generation, self, owners)
	}
	if err := r.checkServices(ctx, ir, s); err != nil {
		return reconcile.Result{}, err
	}
	if err := r.checkConfigMaps(ctx, ir, s); err != nil {
		return reconcile.Result{}, err
	}
	ready := metav1.Condition{Type: v1beta1.ConditionReady, ObservedGeneration: ir.Generation,
		Status: metav1.ConditionTrue, Reason: v1beta1.ReasonReconciled, Message: "routed to Service " + ir.Spec.Target.Service + losers(self.Ref(), conflicts) + httpso.AllowNote(ir.Annotations)}
	if s.failReason != "" {
		ready.Status, ready.Reason, ready.Message = metav1.ConditionFalse, s.failReason, s.failMessage
	}
	meta.SetStatusCondition(&ir.Status.Conditions, ready)
	found, err := r.scaledObjectFound(ctx, ir)
	if err != nil {
		return reconcile.Result{}, err
	}
	meta.SetStatusCondition(&ir.Status.Conditions, found)
	if s.failReason == v1beta1.ReasonConfigMapNotFound {
		return reconcile.Result{RequeueAfter: configMapRecheck}, nil
	}
	return reconcile.Result{}, nil
}

// checkServices checks the target Service and the fallback Service, and their ports.
func (r *RouteReconciler) checkServices(ctx context.Context, ir *v1beta1.InterceptorRoute, s *state) error {
	hr := &Reconciler{Client: r.Client}
	t := ir.Spec.Target
	reason, msg, err := hr.checkService(ctx, ir.Namespace, t.Service, t.Port, t.PortName, "spec.target",
		v1beta1.ReasonServiceNotFound, v1beta1.ReasonServiceNotFound)
	if err != nil {
		return err
	}
	if reason != "" {
		s.fail(reason, "%s", msg)
	}
	if cs := ir.Spec.ColdStart; cs != nil && cs.Fallback != nil && cs.Fallback.Service != nil {
		f := cs.Fallback.Service
		reason, msg, err := hr.checkService(ctx, ir.Namespace, f.Name, f.Port, f.PortName, "spec.coldStart.fallback",
			v1beta1.ReasonServiceNotFound, v1beta1.ReasonServiceNotFound)
		if err != nil {
			return err
		}
		if reason != "" {
			s.fail(reason, "%s", msg)
		}
	}
	return nil
}

// checkConfigMaps checks that every ConfigMap a response reads its body from exists, carries the
// label the interceptors need, and has the key named.
func (r *RouteReconciler) checkConfigMaps(ctx context.Context, ir *v1beta1.InterceptorRoute, s *state) error {
	check := func(field string, resp *v1beta1.StaticResponse) error {
		if resp == nil || resp.BodyFromConfigMap == nil {
			return nil
		}
		ref := resp.BodyFromConfigMap
		cm := &corev1.ConfigMap{}
		err := r.Reader.Get(ctx, types.NamespacedName{Namespace: ir.Namespace, Name: ref.Name}, cm)
		switch {
		case apierrors.IsNotFound(err):
			s.fail(v1beta1.ReasonConfigMapNotFound, "ConfigMap %s/%s named in %s.bodyFromConfigMap does not exist: "+
				"the interceptors answer its requests with 500 until it does", ir.Namespace, ref.Name, field)
		case err != nil:
			return fmt.Errorf("get ConfigMap %s/%s: %w", ir.Namespace, ref.Name, err)
		case cm.Labels[bodyLabel] != "true":
			s.fail(v1beta1.ReasonConfigMapNotFound, "ConfigMap %s/%s named in %s.bodyFromConfigMap lacks the label %s=true, "+
				"without which the interceptors do not read it", ir.Namespace, ref.Name, field, bodyLabel)
		case ref.Key != "":
			if _, ok := cm.Data[ref.Key]; !ok {
				s.fail(v1beta1.ReasonConfigMapNotFound, "ConfigMap %s/%s named in %s.bodyFromConfigMap has no key %q",
					ir.Namespace, ref.Name, field, ref.Key)
			}
		}
		return nil
	}
	if cs := ir.Spec.ColdStart; cs != nil && cs.Placeholder != nil {
		if err := check("spec.coldStart.placeholder.response", cs.Placeholder.Response); err != nil {
			return err
		}
	}
	for i := range ir.Spec.StaticRoutes {
		if err := check(fmt.Sprintf("spec.staticRoutes[%d].response", i), &ir.Spec.StaticRoutes[i].Response); err != nil {
			return err
		}
	}
	return nil
}

// scaledObjectFound reports whether a ScaledObject in the route's namespace has an external-push
// trigger naming the route.
func (r *RouteReconciler) scaledObjectFound(ctx context.Context, ir *v1beta1.InterceptorRoute) (metav1.Condition, error) {
	c := metav1.Condition{Type: v1beta1.ConditionScaledObjectFound, ObservedGeneration: ir.Generation}
	names, err := scaledObjectsNaming(ctx, r.Client, ir.Namespace, ir.Name)
	if err != nil {
		return c, err
	}
	if len(names) == 0 {
		c.Status, c.Reason = metav1.ConditionFalse, "NoScaledObject"
		c.Message = "no ScaledObject in namespace " + ir.Namespace + " has an external-push trigger with metadata interceptorRoute: " +
			ir.Name + "; without one the route is served but never scaled"
		return c, nil
	}
	c.Status, c.Reason = metav1.ConditionTrue, "ScaledObjectFound"
	c.Message = fmt.Sprintf("scaled by ScaledObject %v", names)
	return c, nil
}

// scaledObjectsNaming returns the names of the ScaledObjects in namespace with an external-push
// trigger whose metadata names the InterceptorRoute route.
func scaledObjectsNaming(ctx context.Context, c client.Reader, namespace, route string) ([]string, error) {
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(resources.ScaledObjectGVK.GroupVersion().WithKind("ScaledObjectList"))
	if err := c.List(ctx, list, client.InNamespace(namespace)); err != nil {
		return nil, fmt.Errorf("list ScaledObjects in %s: %w", namespace, err)
	}
	var names []string
	for _, so := range list.Items {
		triggers, _, _ := unstructured.NestedSlice(so.Object, "spec", "triggers")
		for _, t := range triggers {
			m, _ := t.(map[string]any)
			md, _ := m["metadata"].(map[string]any)
			if m["type"] == "external-push" && md["interceptorRoute"] == route {
				names = append(names, so.GetName())
				break
			}
		}
	}
	slices.Sort(names)
	return names, nil
}

// patchStatus writes ir's status when it differs from before's.
func (r *RouteReconciler) patchStatus(ctx context.Context, before, ir *v1beta1.InterceptorRoute) error {
	if equality.Semantic.DeepEqual(before.Status, ir.Status) {
		return nil
	}
	if err := r.Client.Status().Patch(ctx, ir, client.MergeFrom(before)); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("patch status of InterceptorRoute %s/%s: %w", ir.Namespace, ir.Name, err)
	}
	return nil
}

// SetupWithManager registers the reconciler and its watches. The cache indexes it uses are added
// by the HTTPScaledObject Reconciler's SetupWithManager, which must run first.
func (r *RouteReconciler) SetupWithManager(mgr ctrl.Manager) error {
	scaledObject := &unstructured.Unstructured{}
	scaledObject.SetGroupVersionKind(resources.ScaledObjectGVK)
	return ctrl.NewControllerManagedBy(mgr).
		Named("interceptorroute").
		For(&v1beta1.InterceptorRoute{}, builder.WithPredicates(specOrAnnotations)).
		Watches(&v1beta1.InterceptorRoute{}, &contenders{client: r.Client, kind: httpso.KindInterceptorRoute, routes: true},
			builder.WithPredicates(specOrAnnotations)).
		Watches(&v1alpha1.HTTPScaledObject{}, &contenders{client: r.Client, kind: httpso.KindInterceptorRoute, routes: true},
			builder.WithPredicates(specOrAnnotations)).
		Watches(scaledObject, handler.EnqueueRequestsFromMapFunc(routesNamedBy)).
		Watches(&corev1.Service{}, handler.EnqueueRequestsFromMapFunc(r.routesNaming)).
		Complete(r)
}

// specOrAnnotations passes changes of an object's spec and of its annotations, which hold the
// namespaces an owner allows on its hosts (httpso.AllowNamespacesAnnotation).
var specOrAnnotations = predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{})

// routesNamedBy maps a ScaledObject to the InterceptorRoutes its external-push triggers name.
func routesNamedBy(_ context.Context, o client.Object) []reconcile.Request {
	u, ok := o.(*unstructured.Unstructured)
	if !ok {
		return nil
	}
	triggers, _, _ := unstructured.NestedSlice(u.Object, "spec", "triggers")
	var reqs []reconcile.Request
	for _, t := range triggers {
		m, _ := t.(map[string]any)
		md, _ := m["metadata"].(map[string]any)
		if name, _ := md["interceptorRoute"].(string); name != "" {
			reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: u.GetNamespace(), Name: name}})
		}
	}
	return reqs
}

// routesNaming maps a Service to the InterceptorRoutes in its namespace that name it.
func (r *RouteReconciler) routesNaming(ctx context.Context, svc client.Object) []reconcile.Request {
	var list v1beta1.InterceptorRouteList
	if err := r.Client.List(ctx, &list, client.InNamespace(svc.GetNamespace()),
		client.MatchingFields{indexServices: svc.GetName()}); err != nil {
		r.Log.Error(err, "list InterceptorRoutes naming a Service", "service", svc.GetNamespace()+"/"+svc.GetName())
		return nil
	}
	reqs := make([]reconcile.Request, len(list.Items))
	for i := range list.Items {
		reqs[i] = reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])}
	}
	return reqs
}

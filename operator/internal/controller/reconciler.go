// Package controller reconciles HTTPScaledObjects: it keeps a KEDA ScaledObject for each, and keeps
// each one's status conditions true about its spec, its target Service, its routes and its
// ScaledObject.
package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/lobby-http/lobby/internal/httpso"
	"github.com/lobby-http/lobby/operator/api/v1alpha1"
	"github.com/lobby-http/lobby/operator/internal/resources"
)

// FieldManager is the server-side apply field manager the operator writes ScaledObjects as.
const FieldManager = "lobby-operator"

// Reasons of the Ready condition.
const (
	// ReasonReconciled: the object is routed and its ScaledObject is in place.
	ReasonReconciled = "Reconciled"
	// ReasonScaledObjectSkipped: the object is routed; the skip annotation says a user manages the
	// ScaledObject.
	ReasonScaledObjectSkipped = "ScaledObjectSkipped"
	// ReasonInvalidSpec: the spec is invalid; the message says which field to fix.
	ReasonInvalidSpec = "InvalidSpec"
	// ReasonScaledObjectRejected: the API server refused the ScaledObject.
	ReasonScaledObjectRejected = "ScaledObjectRejected"
	// ReasonScaledObjectNotOwned: a ScaledObject of the same name exists that this object does not
	// control, so lobby leaves it alone.
	ReasonScaledObjectNotOwned = "ScaledObjectNotOwned"
	// ReasonRouteConflict: an older object routes the same host, path and headers.
	ReasonRouteConflict = "RouteConflict"
	// ReasonHostOwned: the object claims a host that another namespace owns and does not allow
	// the object's namespace to route (Ready=False), or a wildcard or catch-all of the object
	// covers such hosts (ConditionHostsShadowed). Written on both kinds.
	ReasonHostOwned = "HostOwned"
	// ReasonServiceNotFound: the target Service does not exist.
	ReasonServiceNotFound = "ServiceNotFound"
	// ReasonPortNotFound: the target Service has no such port.
	ReasonPortNotFound = "PortNotFound"
	// ReasonFailoverServiceNotFound: the cold-start failover Service or its port does not exist.
	ReasonFailoverServiceNotFound = "FailoverServiceNotFound"
	// ReasonKEDAPending: KEDA has not reported on the ScaledObject yet.
	ReasonKEDAPending = "AwaitingKEDA"
)

// Event reasons besides the condition reasons above, which are also emitted as warnings when the
// Ready condition turns False for them.
const (
	// EventScaledObjectCreated: the ScaledObject was created.
	EventScaledObjectCreated = "ScaledObjectCreated"
	// EventScaledObjectUpdated: the ScaledObject was changed back to the desired state.
	EventScaledObjectUpdated = "ScaledObjectUpdated"
	// EventScaledObjectDeleted: the ScaledObject was deleted because of the skip annotation.
	EventScaledObjectDeleted = "ScaledObjectDeleted"
	// EventScaledObjectOrphaned: the ScaledObject's owner reference was removed because of the
	// orphan annotation.
	EventScaledObjectOrphaned = "ScaledObjectOrphaned"
)

// Reconciler keeps a KEDA ScaledObject for each HTTPScaledObject and keeps its status true.
type Reconciler struct {
	// Client reads from the manager's cache (ScaledObjects included) and writes to the API server.
	Client client.Client
	// Events records events on HTTPScaledObjects.
	Events events.EventRecorder
	// Trigger says how each ScaledObject's trigger reaches lobby's scaler: its address, and
	// whether KEDA dials it with TLS and which authentication gives KEDA the certificates.
	Trigger resources.Trigger
	// Log is the reconciler's logger; each reconcile adds the object's key.
	Log logr.Logger
	// Routes is set when the API server serves InterceptorRoutes: they then take part in
	// conflicts, and are watched.
	Routes bool

	// written maps each object's key to the resourceVersion of the ScaledObject its last apply
	// returned. An apply that changes nothing returns the same version, which tells a no-op apply
	// after a stale cache read from a real change, so events are only emitted for the latter.
	written sync.Map
}

// +kubebuilder:rbac:groups=http.keda.sh,resources=httpscaledobjects,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=http.keda.sh,resources=httpscaledobjects/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=keda.sh,resources=scaledobjects,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// errNamespaceTerminating means the object's namespace is being deleted, so the API server refuses
// new objects (the ScaledObject, events) in it; the reconcile stops without an error, a status
// write or an event.
var errNamespaceTerminating = errors.New("namespace is being deleted")

// Reconcile brings one HTTPScaledObject's ScaledObject and status up to date. It returns errors
// only for what a retry can fix; an invalid spec becomes a Ready=False condition instead.
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (result reconcile.Result, err error) {
	log := r.Log.WithValues("httpScaledObject", req.String())
	hso := &v1alpha1.HTTPScaledObject{}
	if err := r.Client.Get(ctx, req.NamespacedName, hso); err != nil {
		if apierrors.IsNotFound(err) {
			// Deleted: the garbage collector removes the ScaledObject through its owner reference.
			r.written.Delete(req.NamespacedName)
		}
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if err := r.releaseAddOnFinalizer(ctx, hso); err != nil {
		return reconcile.Result{}, err
	}
	if !hso.DeletionTimestamp.IsZero() {
		// Lobby holds no finalizer: what the object owns goes with it through owner references.
		return reconcile.Result{}, nil
	}
	before := hso.DeepCopy()
	defer func() {
		if errors.Is(err, errNamespaceTerminating) {
			// The namespace and everything in it are going away: nothing left to report on.
			log.V(1).Info("namespace is being deleted; not reconciling")
			err = nil
			return
		}
		if perr := r.patchStatus(ctx, before, hso); perr != nil {
			err = errors.Join(err, perr)
		}
	}()

	s := &state{hso: hso}
	hso.Status.TargetWorkload, hso.Status.TargetService = targets(&hso.Spec)
	hso.Status.Normalized = httpso.Normalize(hso.Spec.DeepCopy())
	dropForeignConditions(&hso.Status)
	steps := []func(context.Context, *state) error{
		r.reconcileScaledObject,
		r.checkRoutes,
		r.checkServices,
	}
	for _, step := range steps {
		if err := step(ctx, s); err != nil {
			if errors.Is(err, errNamespaceTerminating) {
				return reconcile.Result{}, err
			}
			if s.failReason != "" {
				// The step knows what went wrong; say so while the retry is pending.
				r.setReady(s)
			}
			return reconcile.Result{}, err
		}
	}
	r.setReady(s)
	log.V(1).Info("reconciled", "ready", s.failReason == "", "reason", s.failReason)
	return reconcile.Result{}, nil
}

// state is what the steps of one reconcile learn. The first failure found decides the Ready
// condition; later steps still run, so each reconcile does all it can.
type state struct {
	hso     *v1alpha1.HTTPScaledObject
	skipped bool
	// losers names, for the Ready message, the newer objects this one keeps from being routed.
	losers      string
	failReason  string
	failMessage string
}

func (s *state) fail(reason, format string, args ...any) {
	if s.failReason == "" {
		s.failReason, s.failMessage = reason, fmt.Sprintf(format, args...)
	}
}

// targets renders the status columns: the workload as apiVersion/kind/name and the Service as
// name:port (or name:portName).
func targets(spec *v1alpha1.HTTPScaledObjectSpec) (workload, service string) {
	apiVersion, kind, name := resources.Target(spec.ScaleTargetRef)
	workload = apiVersion + "/" + kind + "/" + name
	port := spec.ScaleTargetRef.PortName
	if port == "" {
		port = strconv.Itoa(int(spec.ScaleTargetRef.Port))
	}
	return workload, spec.ScaleTargetRef.Service + ":" + port
}

// reconcileScaledObject applies the desired ScaledObject, or deletes the one lobby owns when the
// skip annotation is set, and mirrors KEDA's conditions from it.
func (r *Reconciler) reconcileScaledObject(ctx context.Context, s *state) error {
	hso := s.hso
	live, err := r.liveScaledObject(ctx, hso)
	if err != nil {
		return err
	}
	if hso.Annotations[v1alpha1.SkipScaledObjectCreationAnnotation] == "true" {
		s.skipped = true
		meta.RemoveStatusCondition(&hso.Status.Conditions, v1alpha1.ConditionScaledObjectReady)
		meta.RemoveStatusCondition(&hso.Status.Conditions, v1alpha1.ConditionActive)
		if live == nil || !resources.IsControlledBy(live, hso) {
			return nil
		}
		err := r.Client.Delete(ctx, live, client.Preconditions{UID: ptr.To(live.GetUID())})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete ScaledObject %s: %w", httpso.Key(hso), err)
		}
		r.written.Delete(client.ObjectKeyFromObject(hso))
		r.Events.Eventf(hso, nil, corev1.EventTypeNormal, EventScaledObjectDeleted, "Delete",
			"Deleted ScaledObject %s: the %s annotation is set", hso.Name, v1alpha1.SkipScaledObjectCreationAnnotation)
		return nil
	}

	desired, err := resources.ScaledObject(hso, r.Trigger)
	if err != nil {
		s.fail(ReasonInvalidSpec, "%v", err)
		return nil
	}
	wasControlled := live != nil && resources.IsControlledBy(live, hso)
	if live != nil && !wasControlled && !resources.Adoptable(live, hso) {
		s.fail(ReasonScaledObjectNotOwned, "ScaledObject %s exists and is not controlled by this HTTPScaledObject: "+
			"delete it so lobby can create its own, or set the annotation %s: \"true\" to keep managing it yourself",
			hso.Name, v1alpha1.SkipScaledObjectCreationAnnotation)
		r.mirrorKEDAConditions(hso, nil)
		return nil
	}
	if resources.NeedsApply(desired, live, FieldManager) {
		err := r.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(desired),
			client.FieldOwner(FieldManager), client.ForceOwnership)
		switch {
		case apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause):
			return errNamespaceTerminating
		case apierrors.IsInvalid(err) || apierrors.IsBadRequest(err):
			// A retry would be refused the same way; the spec has to change first.
			s.fail(ReasonScaledObjectRejected, "the API server rejected ScaledObject %s: %v", hso.Name, err)
			return nil
		case err != nil:
			s.fail(ReasonScaledObjectRejected, "apply ScaledObject %s: %v", hso.Name, err)
			return fmt.Errorf("apply ScaledObject %s: %w", httpso.Key(hso), err)
		}
		// desired now holds the server's answer, status included.
		version := desired.GetResourceVersion()
		previous, _ := r.written.Swap(client.ObjectKeyFromObject(hso), version)
		switch {
		case previous == version:
			// The cache had not caught up with the last apply; nothing changed.
		case live == nil:
			r.Events.Eventf(hso, nil, corev1.EventTypeNormal, EventScaledObjectCreated, "Create",
				"Created ScaledObject %s scaling %s", hso.Name, hso.Status.TargetWorkload)
		case live.GetResourceVersion() != version:
			r.Events.Eventf(hso, nil, corev1.EventTypeNormal, EventScaledObjectUpdated, "Update",
				"Updated ScaledObject %s to match the HTTPScaledObject", hso.Name)
		}
		live = desired
	}
	if resources.Orphaned(hso) && resources.IsControlledBy(live, hso) {
		// The KEDA HTTP Add-on wrote the reference under its own field manager, which an apply
		// without it does not remove.
		if err := r.dropOwnerReference(ctx, live, hso); err != nil {
			return err
		}
	}
	if resources.Orphaned(hso) && wasControlled {
		r.Events.Eventf(hso, nil, corev1.EventTypeNormal, EventScaledObjectOrphaned, "Update",
			"Removed the owner reference of ScaledObject %s: the %s annotation is set, so deleting this object keeps it",
			hso.Name, v1alpha1.OrphanScaledObjectAnnotation)
	}
	r.mirrorKEDAConditions(hso, live)
	return nil
}

// dropOwnerReference removes hso's reference from so, so that deleting hso keeps so (the orphan
// annotation). The patch fails on a concurrent change of so, and the reconcile is retried.
func (r *Reconciler) dropOwnerReference(ctx context.Context, so *unstructured.Unstructured, hso *v1alpha1.HTTPScaledObject) error {
	before := so.DeepCopy()
	refs := slices.DeleteFunc(slices.Clone(so.GetOwnerReferences()), func(ref metav1.OwnerReference) bool {
		return ref.UID == hso.UID
	})
	so.SetOwnerReferences(refs)
	err := r.Client.Patch(ctx, so, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{}))
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("remove the owner reference of ScaledObject %s: %w", httpso.Key(hso), err)
	}
	return nil
}

// releaseAddOnFinalizer removes the KEDA HTTP Add-on's finalizer from hso, whether hso is live
// (lobby adopts it) or being deleted (the add-on, gone, would never remove it, and the delete
// would hang). The patch carries hso's resourceVersion, so it never drops a finalizer another
// controller added meanwhile; a conflict is retried.
func (r *Reconciler) releaseAddOnFinalizer(ctx context.Context, hso *v1alpha1.HTTPScaledObject) error {
	if !slices.Contains(hso.Finalizers, v1alpha1.AddOnFinalizer) {
		return nil
	}
	before := hso.DeepCopy()
	hso.Finalizers = slices.DeleteFunc(slices.Clone(hso.Finalizers), func(f string) bool { return f == v1alpha1.AddOnFinalizer })
	err := r.Client.Patch(ctx, hso, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{}))
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove finalizer %s from HTTPScaledObject %s: %w", v1alpha1.AddOnFinalizer, httpso.Key(hso), err)
	}
	r.Log.V(1).Info("removed the KEDA HTTP Add-on's finalizer", "httpScaledObject", httpso.Key(hso),
		"deleting", !hso.DeletionTimestamp.IsZero())
	return nil
}

// dropForeignConditions removes conditions lobby does not write, such as those the KEDA HTTP
// Add-on left on objects it reconciled, and lobby's own conditions without a transition time
// (older add-on versions wrote "Ready" without one). Left in place, they would make every
// status write fail validation, or keep telling a story nobody updates.
func dropForeignConditions(st *v1alpha1.HTTPScaledObjectStatus) {
	st.Conditions = slices.DeleteFunc(st.Conditions, func(c metav1.Condition) bool {
		switch c.Type {
		case v1alpha1.ConditionReady, v1alpha1.ConditionScaledObjectReady, v1alpha1.ConditionActive, ConditionHostsShadowed:
			return c.LastTransitionTime.IsZero()
		}
		return true
	})
}

// liveScaledObject returns the ScaledObject named like hso from the cache, or nil.
func (r *Reconciler) liveScaledObject(ctx context.Context, hso *v1alpha1.HTTPScaledObject) (*unstructured.Unstructured, error) {
	live := &unstructured.Unstructured{}
	live.SetGroupVersionKind(resources.ScaledObjectGVK)
	err := r.Client.Get(ctx, client.ObjectKeyFromObject(hso), live)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get ScaledObject %s: %w", httpso.Key(hso), err)
	}
	return live, nil
}

// mirrorKEDAConditions copies KEDA's Ready and Active conditions of so onto hso, as
// ScaledObjectReady and Active, so that one `kubectl describe` shows the whole picture.
func (r *Reconciler) mirrorKEDAConditions(hso *v1alpha1.HTTPScaledObject, so *unstructured.Unstructured) {
	if so == nil {
		meta.RemoveStatusCondition(&hso.Status.Conditions, v1alpha1.ConditionScaledObjectReady)
		meta.RemoveStatusCondition(&hso.Status.Conditions, v1alpha1.ConditionActive)
		return
	}
	conds, _, _ := unstructured.NestedSlice(so.Object, "status", "conditions")
	for _, m := range []struct{ from, to string }{
		{"Ready", v1alpha1.ConditionScaledObjectReady},
		{"Active", v1alpha1.ConditionActive},
	} {
		c := metav1.Condition{
			Type:               m.to,
			Status:             metav1.ConditionUnknown,
			ObservedGeneration: hso.Generation,
			Reason:             ReasonKEDAPending,
			Message:            "KEDA has not reported on ScaledObject " + so.GetName() + " yet",
		}
		for _, raw := range conds {
			kc, ok := raw.(map[string]any)
			if !ok || kc["type"] != m.from {
				continue
			}
			if st, _ := kc["status"].(string); st == string(metav1.ConditionTrue) || st == string(metav1.ConditionFalse) {
				c.Status = metav1.ConditionStatus(st)
			}
			if reason, _ := kc["reason"].(string); reason != "" {
				c.Reason = reason
			} else {
				c.Reason = "KEDA" + m.from + string(c.Status)
			}
			msg, _ := kc["message"].(string)
			c.Message = msg
		}
		meta.SetStatusCondition(&hso.Status.Conditions, c)
	}
}

// checkRoutes marks the object as not routed when an older object claims one of its routes, or
// another namespace owns one of its hosts, and says which covered hosts its wildcards and
// catch-all do not serve. Only the objects of its claim group can decide that, so it resolves
// those alone.
func (r *Reconciler) checkRoutes(ctx context.Context, s *state) error {
	self := httpso.FromHTTPScaledObject(normalized(s.hso))
	group, err := claimGroup(ctx, r.Client, self, r.Routes)
	if err != nil {
		return err
	}
	_, conflicts, owners := httpso.Decide(group)
	if c, ok := conflicts[self.Ref()]; ok {
		s.fail(conflictReason(c, ReasonRouteConflict), "%s", c.Message())
		meta.RemoveStatusCondition(&s.hso.Status.Conditions, ConditionHostsShadowed)
	} else {
		setShadowed(&s.hso.Status.Conditions, s.hso.Generation, self, owners)
	}
	s.losers = losers(self.Ref(), conflicts) + httpso.AllowNote(s.hso.Annotations)
	return nil
}

// conflictReason returns the Ready reason of a conflict: ReasonHostOwned when another namespace
// owns the host, else sameRequests.
func conflictReason(c httpso.Conflict, sameRequests string) string {
	if c.Owner != nil {
		return ReasonHostOwned
	}
	return sameRequests
}

// ConditionHostsShadowed is True on a routed object when hosts its wildcard or catch-all covers
// are owned by other namespaces that do not allow its own: their requests are never routed to it.
// It is absent otherwise. Written on both kinds.
const ConditionHostsShadowed = "HostsShadowed"

// setShadowed writes or removes ConditionHostsShadowed on the conditions of a routed object.
func setShadowed(conds *[]metav1.Condition, generation int64, self *httpso.Object, owners *httpso.Ownership) {
	msg := httpso.ShadowMessage(self, owners.Shadows(self))
	if msg == "" {
		meta.RemoveStatusCondition(conds, ConditionHostsShadowed)
		return
	}
	meta.SetStatusCondition(conds, metav1.Condition{Type: ConditionHostsShadowed, Status: metav1.ConditionTrue,
		ObservedGeneration: generation, Reason: ReasonHostOwned, Message: msg})
}

// checkServices checks that the target Service (and the failover Service, if any) exists and has
// the port the object names.
func (r *Reconciler) checkServices(ctx context.Context, s *state) error {
	ref := s.hso.Spec.ScaleTargetRef
	if reason, msg, err := r.checkService(ctx, s.hso.Namespace, ref.Service, ref.Port, ref.PortName, "spec.scaleTargetRef",
		ReasonServiceNotFound, ReasonPortNotFound); err != nil {
		return err
	} else if reason != "" {
		s.fail(reason, "%s", msg)
	}
	if f := s.hso.Spec.ColdStartTimeoutFailoverRef; f != nil {
		if reason, msg, err := r.checkService(ctx, s.hso.Namespace, f.Service, f.Port, f.PortName, "spec.coldStartTimeoutFailoverRef",
			ReasonFailoverServiceNotFound, ReasonFailoverServiceNotFound); err != nil {
			return err
		} else if reason != "" {
			s.fail(reason, "%s", msg)
		}
	}
	return nil
}

func (r *Reconciler) checkService(ctx context.Context, namespace, name string, port int32, portName, field, missing, noPort string) (reason, msg string, err error) {
	if name == "" {
		return "", "", nil // Validate reports it.
	}
	svc := &corev1.Service{}
	if err := r.Client.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, svc); apierrors.IsNotFound(err) {
		return missing, fmt.Sprintf("Service %s/%s named in %s.service does not exist: create it or correct the name", namespace, name, field), nil
	} else if err != nil {
		return "", "", fmt.Errorf("get Service %s/%s: %w", namespace, name, err)
	}
	var names []string
	for _, p := range svc.Spec.Ports {
		if (port != 0 && p.Port == port) || (portName != "" && p.Name == portName) {
			return "", "", nil
		}
		if p.Name != "" {
			names = append(names, fmt.Sprintf("%s=%d", p.Name, p.Port))
		} else {
			names = append(names, strconv.Itoa(int(p.Port)))
		}
	}
	want := fmt.Sprintf("port %d named in %s.port", port, field)
	if portName != "" {
		want = fmt.Sprintf("port name %q named in %s.portName", portName, field)
	}
	return noPort, fmt.Sprintf("Service %s/%s has no %s; its ports are %v", namespace, name, want, names), nil
}

// setReady writes the Ready condition from what the steps found, and emits a warning event when
// it turns False or its reason changes.
func (r *Reconciler) setReady(s *state) {
	hso := s.hso
	c := metav1.Condition{Type: v1alpha1.ConditionReady, ObservedGeneration: hso.Generation}
	switch {
	case s.failReason != "":
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, s.failReason, s.failMessage
	case s.skipped:
		c.Status, c.Reason = metav1.ConditionTrue, ReasonScaledObjectSkipped
		c.Message = "routed; no ScaledObject is managed because the " + v1alpha1.SkipScaledObjectCreationAnnotation + " annotation is set" + s.losers
	default:
		c.Status, c.Reason = metav1.ConditionTrue, ReasonReconciled
		c.Message = "routed to " + hso.Status.TargetService + "; ScaledObject " + hso.Name + " scales " + hso.Status.TargetWorkload + s.losers
	}
	old := meta.FindStatusCondition(hso.Status.Conditions, v1alpha1.ConditionReady)
	if c.Status == metav1.ConditionFalse && (old == nil || old.Reason != c.Reason || old.Message != c.Message || old.Status != c.Status) {
		r.Events.Eventf(hso, nil, corev1.EventTypeWarning, c.Reason, "Reconcile", "%s", c.Message)
	}
	meta.SetStatusCondition(&hso.Status.Conditions, c)
}

// patchStatus writes hso's status when it differs from before's.
func (r *Reconciler) patchStatus(ctx context.Context, before, hso *v1alpha1.HTTPScaledObject) error {
	if equality.Semantic.DeepEqual(before.Status, hso.Status) {
		return nil
	}
	if err := r.Client.Status().Patch(ctx, hso, client.MergeFrom(before)); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("patch status of HTTPScaledObject %s: %w", httpso.Key(hso), err)
	}
	return nil
}

// SetupWithManager registers the reconciler and its watches, and the cache indexes they use.
func (r *Reconciler) SetupWithManager(ctx context.Context, mgr ctrl.Manager) error {
	if err := addIndexes(ctx, mgr.GetFieldIndexer(), r.Routes); err != nil {
		return err
	}
	return r.watch(mgr)
}

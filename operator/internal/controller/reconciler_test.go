package controller

import (
	"fmt"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/lobby-http/lobby/operator/api/v1alpha1"
	"github.com/lobby-http/lobby/operator/internal/resources"
)

const within = 30 * time.Second

func newHTTPSO(namespace, name, host, service string, port int32) *v1alpha1.HTTPScaledObject {
	return &v1alpha1.HTTPScaledObject{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec: v1alpha1.HTTPScaledObjectSpec{
			Hosts:          []string{host},
			ScaleTargetRef: v1alpha1.ScaleTargetRef{Name: name, Service: service, Port: port},
		},
	}
}

// soIs returns a condition for eventually: the ScaledObject exists and its spec has the values
// (paths joined by ".").
func (c *cluster) soIs(t *testing.T, key types.NamespacedName, want map[string]any) func() string {
	return func() string {
		so := c.scaledObject(t, key)
		if so == nil {
			return fmt.Sprintf("ScaledObject %s does not exist", key)
		}
		for path, w := range want {
			got, _, _ := unstructured.NestedFieldNoCopy(so.Object, splitPath("spec."+path)...)
			if fmt.Sprint(got) != fmt.Sprint(w) {
				return fmt.Sprintf("ScaledObject %s spec.%s = %v, want %v", key, path, got, w)
			}
		}
		return ""
	}
}

func splitPath(p string) []string {
	var out []string
	start := 0
	for i := range len(p) {
		if p[i] == '.' {
			out = append(out, p[start:i])
			start = i + 1
		}
	}
	return append(out, p[start:])
}

func TestReconciler(t *testing.T) {
	c := startCluster(t)

	t.Run("an object's ScaledObject is created, updated, defended and left to the garbage collector", func(t *testing.T) {
		ns := c.namespace(t, "lifecycle")
		c.service(t, ns, "web", "http=8080")
		hso := newHTTPSO(ns, "web", "web.lifecycle.example.com", "web", 8080)
		hso.Labels = map[string]string{"team": "shop"}
		hso.Spec.Replicas = &v1alpha1.ReplicaStruct{Min: ptr.To[int32](1), Max: ptr.To[int32](4)}
		hso.Spec.CooldownPeriod = ptr.To[int32](60)
		c.create(t, hso)
		key := client.ObjectKeyFromObject(hso)

		eventually(t, within, c.soIs(t, key, map[string]any{
			"scaleTargetRef.name": "web", "scaleTargetRef.kind": "Deployment", "scaleTargetRef.apiVersion": "apps/v1",
			"minReplicaCount": 1, "maxReplicaCount": 4, "cooldownPeriod": 60, "initialCooldownPeriod": 0,
		}))
		eventually(t, within, c.readyIs(t, key, metav1.ConditionTrue, ReasonReconciled, "web:8080", "apps/v1/Deployment/web"))
		eventually(t, within, c.eventFor(t, key, EventScaledObjectCreated, "Created ScaledObject web"))

		created := c.httpso(t, key)
		so := c.scaledObject(t, key)
		if got := so.GetLabels()["team"]; got != "shop" {
			t.Errorf("ScaledObject label team = %q, want the HTTPScaledObject's %q", got, "shop")
		}
		triggers := soField(t, so, "triggers").([]any)
		wantTrigger := map[string]any{"type": "external-push", "metadata": map[string]any{
			"scalerAddress": testScalerAddress, "httpScaledObject": "web"}}
		if len(triggers) != 1 || fmt.Sprint(triggers[0]) != fmt.Sprint(wantTrigger) {
			t.Errorf("ScaledObject triggers = %v, want [%v]", triggers, wantTrigger)
		}
		ref := metav1.GetControllerOf(so)
		if ref == nil || ref.UID != created.UID || ref.Kind != "HTTPScaledObject" || ref.APIVersion != "http.keda.sh/v1alpha1" {
			t.Errorf("ScaledObject controller reference = %+v, want one to HTTPScaledObject %s (%s)", ref, key, created.UID)
		}
		if created.Status.TargetWorkload != "apps/v1/Deployment/web" || created.Status.TargetService != "web:8080" {
			t.Errorf("status targets = %q, %q; want apps/v1/Deployment/web, web:8080", created.Status.TargetWorkload, created.Status.TargetService)
		}
		if got := meta.FindStatusCondition(created.Status.Conditions, v1alpha1.ConditionScaledObjectReady); got == nil ||
			got.Status != metav1.ConditionUnknown || got.Reason != ReasonKEDAPending {
			t.Errorf("ScaledObjectReady = %+v, want Unknown/%s before KEDA reports", got, ReasonKEDAPending)
		}

		// A Service change that changes nothing, then a spec change: exactly one update follows.
		svc := &corev1.Service{}
		if err := c.kube.Get(t.Context(), types.NamespacedName{Namespace: ns, Name: "web"}, svc); err != nil {
			t.Fatal(err)
		}
		svc.Labels = map[string]string{"touched": "yes"}
		if err := c.kube.Update(t.Context(), svc); err != nil {
			t.Fatal(err)
		}
		c.update(t, key, func(h *v1alpha1.HTTPScaledObject) { h.Spec.Replicas.Max = ptr.To[int32](9) })
		eventually(t, within, c.soIs(t, key, map[string]any{"maxReplicaCount": 9, "minReplicaCount": 1}))
		eventually(t, within, c.readyIs(t, key, metav1.ConditionTrue, ReasonReconciled))
		eventually(t, within, c.eventFor(t, key, EventScaledObjectUpdated, "Updated ScaledObject web"))
		if n := c.countEvents(t, key, EventScaledObjectCreated); n != 1 {
			t.Errorf("%d %s events, want 1", n, EventScaledObjectCreated)
		}
		if n := c.countEvents(t, key, EventScaledObjectUpdated); n != 1 {
			t.Errorf("%d %s events after one spec change, want 1", n, EventScaledObjectUpdated)
		}

		// A user edits owned fields and adds one lobby does not own.
		edit := c.scaledObject(t, key)
		patch := []byte(`{"spec":{"maxReplicaCount":50,"pollingInterval":7,"advanced":{"restoreToOriginalReplicaCount":false,"horizontalPodAutoscalerConfig":{"name":"custom-hpa"}}}}`)
		if err := c.kube.Patch(t.Context(), edit, client.RawPatch(types.MergePatchType, patch), client.FieldOwner("kubectl-edit")); err != nil {
			t.Fatalf("edit ScaledObject: %v", err)
		}
		eventually(t, within, c.soIs(t, key, map[string]any{"maxReplicaCount": 9, "pollingInterval": 15,
			"advanced.restoreToOriginalReplicaCount": true, "advanced.horizontalPodAutoscalerConfig.name": "custom-hpa"}))

		// KEDA reports on the ScaledObject; its conditions are mirrored.
		status := []byte(`{"status":{"conditions":[` +
			`{"type":"Ready","status":"True","reason":"ScaledObjectReady","message":"ScaledObject is defined correctly and is ready for scaling"},` +
			`{"type":"Active","status":"False","reason":"ScalerNotActive","message":"Scaling is not performed because triggers are not active"}]}}`)
		if err := c.kube.Status().Patch(t.Context(), c.scaledObject(t, key), client.RawPatch(types.MergePatchType, status)); err != nil {
			t.Fatalf("report KEDA status: %v", err)
		}
		eventually(t, within, func() string {
			h := c.httpso(t, key)
			r := meta.FindStatusCondition(h.Status.Conditions, v1alpha1.ConditionScaledObjectReady)
			a := meta.FindStatusCondition(h.Status.Conditions, v1alpha1.ConditionActive)
			if r == nil || r.Status != metav1.ConditionTrue || r.Reason != "ScaledObjectReady" ||
				a == nil || a.Status != metav1.ConditionFalse || a.Reason != "ScalerNotActive" || a.Message == "" {
				return fmt.Sprintf("mirrored conditions = %+v, %+v", r, a)
			}
			return ""
		})

		// Deletion is the garbage collector's job (envtest runs none): the reference it follows
		// is in place, and it does not block the owner's deletion.
		if err := c.kube.Delete(t.Context(), c.httpso(t, key)); err != nil {
			t.Fatal(err)
		}
		eventually(t, within, func() string {
			if err := c.kube.Get(t.Context(), key, &v1alpha1.HTTPScaledObject{}); client.IgnoreNotFound(err) != nil || err == nil {
				return fmt.Sprintf("HTTPScaledObject still there (%v)", err)
			}
			return ""
		})
		so = c.scaledObject(t, key)
		if so == nil {
			t.Fatal("ScaledObject was deleted by the operator; the garbage collector should do it")
		}
		if ref := metav1.GetControllerOf(so); ref == nil || ref.UID != created.UID || ref.BlockOwnerDeletion != nil {
			t.Errorf("ScaledObject controller reference after deletion = %+v, want the deleted object's UID %s", ref, created.UID)
		}
	})

	t.Run("the skip annotation deletes an owned ScaledObject and never touches a foreign one", func(t *testing.T) {
		ns := c.namespace(t, "skip")
		c.service(t, ns, "app", "http=80")
		owned := newHTTPSO(ns, "owned", "owned.skip.example.com", "app", 80)
		c.create(t, owned)
		ownedKey := client.ObjectKeyFromObject(owned)
		eventually(t, within, c.soIs(t, ownedKey, map[string]any{"scaleTargetRef.name": "owned"}))

		c.update(t, ownedKey, func(h *v1alpha1.HTTPScaledObject) {
			h.Annotations = map[string]string{v1alpha1.SkipScaledObjectCreationAnnotation: "true"}
		})
		eventually(t, within, func() string {
			if c.scaledObject(t, ownedKey) != nil {
				return "owned ScaledObject still exists"
			}
			return ""
		})
		eventually(t, within, c.readyIs(t, ownedKey, metav1.ConditionTrue, ReasonScaledObjectSkipped, v1alpha1.SkipScaledObjectCreationAnnotation))
		eventually(t, within, c.eventFor(t, ownedKey, EventScaledObjectDeleted, "Deleted ScaledObject owned"))
		if got := meta.FindStatusCondition(c.httpso(t, ownedKey).Status.Conditions, v1alpha1.ConditionScaledObjectReady); got != nil {
			t.Errorf("ScaledObjectReady = %+v, want it removed once lobby manages no ScaledObject", got)
		}

		// A ScaledObject the user wrote, named like an HTTPScaledObject.
		foreign := &unstructured.Unstructured{Object: map[string]any{
			"metadata": map[string]any{"namespace": ns, "name": "foreign"},
			"spec": map[string]any{
				"scaleTargetRef": map[string]any{"name": "foreign"},
				"triggers": []any{map[string]any{"type": "external-push", "metadata": map[string]any{
					"scalerAddress": testScalerAddress, "httpScaledObject": "foreign"}},
					map[string]any{"type": "cron", "metadata": map[string]any{
						"timezone": "Etc/UTC", "start": "0 8 * * *", "end": "0 18 * * *", "desiredReplicas": "2"}}},
			},
		}}
		foreign.SetGroupVersionKind(resources.ScaledObjectGVK)
		c.create(t, foreign)
		foreignKey := client.ObjectKeyFromObject(foreign)
		version := c.scaledObject(t, foreignKey).GetResourceVersion()

		hso := newHTTPSO(ns, "foreign", "foreign.skip.example.com", "app", 80)
		hso.Annotations = map[string]string{v1alpha1.SkipScaledObjectCreationAnnotation: "true"}
		c.create(t, hso)
		eventually(t, within, c.readyIs(t, foreignKey, metav1.ConditionTrue, ReasonScaledObjectSkipped))

		// Without the annotation lobby would want the name, but the ScaledObject is not its own.
		c.update(t, foreignKey, func(h *v1alpha1.HTTPScaledObject) { h.Annotations = nil })
		eventually(t, within, c.readyIs(t, foreignKey, metav1.ConditionFalse, ReasonScaledObjectNotOwned,
			"not controlled by this HTTPScaledObject", v1alpha1.SkipScaledObjectCreationAnnotation))
		if got := c.scaledObject(t, foreignKey); got == nil || got.GetResourceVersion() != version {
			t.Fatalf("foreign ScaledObject = %v, want it untouched at resourceVersion %s", got, version)
		}

		// Once the user deletes theirs, lobby creates its own.
		if err := c.kube.Delete(t.Context(), c.scaledObject(t, foreignKey)); err != nil {
			t.Fatal(err)
		}
		eventually(t, within, c.readyIs(t, foreignKey, metav1.ConditionTrue, ReasonReconciled))
		eventually(t, within, func() string {
			so := c.scaledObject(t, foreignKey)
			if so == nil || !resources.IsControlledBy(so, c.httpso(t, foreignKey)) {
				return fmt.Sprintf("ScaledObject %s = %v, want lobby's own", foreignKey, so)
			}
			return ""
		})
	})

	t.Run("a missing target Service or port is reported until it exists", func(t *testing.T) {
		ns := c.namespace(t, "service")
		hso := newHTTPSO(ns, "late", "late.service.example.com", "late", 8080)
		c.create(t, hso)
		key := client.ObjectKeyFromObject(hso)
		eventually(t, within, c.readyIs(t, key, metav1.ConditionFalse, ReasonServiceNotFound,
			"Service service/late named in spec.scaleTargetRef.service does not exist"))
		eventually(t, within, c.eventFor(t, key, ReasonServiceNotFound, "service/late"))
		// The ScaledObject does not wait for the Service.
		eventually(t, within, c.soIs(t, key, map[string]any{"scaleTargetRef.name": "late"}))

		c.service(t, ns, "late", "admin=9090")
		eventually(t, within, c.readyIs(t, key, metav1.ConditionFalse, ReasonPortNotFound,
			"has no port 8080 named in spec.scaleTargetRef.port", "admin=9090"))

		svc := &corev1.Service{}
		if err := c.kube.Get(t.Context(), key, svc); err != nil {
			t.Fatal(err)
		}
		svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: "http", Port: 8080})
		if err := c.kube.Update(t.Context(), svc); err != nil {
			t.Fatal(err)
		}
		eventually(t, within, c.readyIs(t, key, metav1.ConditionTrue, ReasonReconciled))

		named := newHTTPSO(ns, "named", "named.service.example.com", "late", 0)
		named.Spec.ScaleTargetRef.PortName = "grpc"
		named.Spec.ColdStartTimeoutFailoverRef = &v1alpha1.ColdStartTimeoutFailoverRef{Service: "sorry", Port: 80}
		c.create(t, named)
		namedKey := client.ObjectKeyFromObject(named)
		eventually(t, within, c.readyIs(t, namedKey, metav1.ConditionFalse, ReasonPortNotFound,
			`has no port name "grpc" named in spec.scaleTargetRef.portName`))
		c.update(t, namedKey, func(h *v1alpha1.HTTPScaledObject) { h.Spec.ScaleTargetRef.PortName = "http" })
		eventually(t, within, c.readyIs(t, namedKey, metav1.ConditionFalse, ReasonFailoverServiceNotFound,
			"named in spec.coldStartTimeoutFailoverRef.service does not exist"))
		c.service(t, ns, "sorry", "web=80")
		eventually(t, within, c.readyIs(t, namedKey, metav1.ConditionTrue, ReasonReconciled))
	})

	t.Run("a spec the CRD lets through but no ScaledObject can follow is reported, not retried", func(t *testing.T) {
		ns := c.namespace(t, "invalid")
		c.service(t, ns, "app", "http=80")
		hso := newHTTPSO(ns, "nameless", "nameless.invalid.example.com", "app", 80)
		hso.Spec.ScaleTargetRef.Name = ""
		c.create(t, hso)
		key := client.ObjectKeyFromObject(hso)
		eventually(t, within, c.readyIs(t, key, metav1.ConditionFalse, ReasonInvalidSpec, "spec.scaleTargetRef.name is empty"))
		eventually(t, within, c.eventFor(t, key, ReasonInvalidSpec, "spec.scaleTargetRef.name"))
		if so := c.scaledObject(t, key); so != nil {
			t.Errorf("ScaledObject %s exists for an invalid spec", key)
		}

		c.update(t, key, func(h *v1alpha1.HTTPScaledObject) {
			h.Spec.ScaleTargetRef.Name = "app"
			h.Spec.Replicas = &v1alpha1.ReplicaStruct{Min: ptr.To[int32](150)}
		})
		eventually(t, within, c.readyIs(t, key, metav1.ConditionFalse, ReasonInvalidSpec, "set spec.replicas.max"))
		c.update(t, key, func(h *v1alpha1.HTTPScaledObject) { h.Spec.Replicas.Max = ptr.To[int32](200) })
		eventually(t, within, c.readyIs(t, key, metav1.ConditionTrue, ReasonReconciled))
		eventually(t, within, c.soIs(t, key, map[string]any{"minReplicaCount": 150, "maxReplicaCount": 200}))
	})

	t.Run("the newer of two objects routing the same requests is not Ready until the older yields", func(t *testing.T) {
		ns := c.namespace(t, "conflict")
		c.service(t, ns, "app", "http=80")
		first := newHTTPSO(ns, "a-first", "shared.conflict.example.com", "app", 80)
		c.create(t, first)
		firstKey := client.ObjectKeyFromObject(first)
		eventually(t, within, c.readyIs(t, firstKey, metav1.ConditionTrue, ReasonReconciled))

		second := newHTTPSO(ns, "b-second", "SHARED.conflict.example.com", "app", 80)
		second.Spec.PathPrefixes = []string{"/"}
		c.create(t, second)
		secondKey := client.ObjectKeyFromObject(second)
		eventually(t, within, c.readyIs(t, secondKey, metav1.ConditionFalse, ReasonRouteConflict,
			`host "shared.conflict.example.com", path "/"`, "older HTTPScaledObject conflict/a-first"))
		eventually(t, within, c.eventFor(t, secondKey, ReasonRouteConflict, "conflict/a-first"))
		eventually(t, within, c.readyIs(t, firstKey, metav1.ConditionTrue, ReasonReconciled))

		// The winner moves away: the loser is requeued and routed.
		c.update(t, firstKey, func(h *v1alpha1.HTTPScaledObject) { h.Spec.Hosts = []string{"moved.conflict.example.com"} })
		eventually(t, within, c.readyIs(t, secondKey, metav1.ConditionTrue, ReasonReconciled))

		// A third object loses to the second; deleting the second frees it.
		third := newHTTPSO(ns, "c-third", "shared.conflict.example.com", "app", 80)
		c.create(t, third)
		thirdKey := client.ObjectKeyFromObject(third)
		eventually(t, within, c.readyIs(t, thirdKey, metav1.ConditionFalse, ReasonRouteConflict, "conflict/b-second"))
		if err := c.kube.Delete(t.Context(), c.httpso(t, secondKey)); err != nil {
			t.Fatal(err)
		}
		eventually(t, within, c.readyIs(t, thirdKey, metav1.ConditionTrue, ReasonReconciled))
	})

	t.Run("a ScaledObject the API server refuses is reported with its answer", func(t *testing.T) {
		ns := c.namespace(t, "rejected")
		c.service(t, ns, "app", "http=80")
		c.create(t, &admissionregistrationv1.ValidatingAdmissionPolicy{
			ObjectMeta: metav1.ObjectMeta{Name: "refuse-labelled-scaledobjects"},
			Spec: admissionregistrationv1.ValidatingAdmissionPolicySpec{
				FailurePolicy: ptr.To(admissionregistrationv1.Fail),
				MatchConstraints: &admissionregistrationv1.MatchResources{ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{{
					RuleWithOperations: admissionregistrationv1.RuleWithOperations{
						Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update},
						Rule: admissionregistrationv1.Rule{APIGroups: []string{"keda.sh"}, APIVersions: []string{"v1alpha1"},
							Resources: []string{"scaledobjects"}},
					},
				}}},
				Validations: []admissionregistrationv1.Validation{{
					Expression: `!has(object.metadata.labels) || !('refuse' in object.metadata.labels)`,
					Message:    "ScaledObjects labelled refuse are not allowed here",
				}},
			},
		})
		c.create(t, &admissionregistrationv1.ValidatingAdmissionPolicyBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "refuse-labelled-scaledobjects"},
			Spec: admissionregistrationv1.ValidatingAdmissionPolicyBindingSpec{
				PolicyName:        "refuse-labelled-scaledobjects",
				ValidationActions: []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny},
			},
		})
		// The policy takes effect asynchronously; wait until it refuses a probe.
		eventually(t, within, func() string {
			probe := &unstructured.Unstructured{Object: map[string]any{
				"metadata": map[string]any{"namespace": ns, "name": "probe", "labels": map[string]any{"refuse": "yes"}},
				"spec": map[string]any{"scaleTargetRef": map[string]any{"name": "probe"},
					"triggers": []any{map[string]any{"type": "cpu", "metadata": map[string]any{"value": "50"}}}},
			}}
			probe.SetGroupVersionKind(resources.ScaledObjectGVK)
			if err := c.kube.Create(t.Context(), probe); err == nil {
				_ = c.kube.Delete(t.Context(), probe)
				return "the admission policy is not in force yet"
			}
			return ""
		})

		hso := newHTTPSO(ns, "refused", "refused.rejected.example.com", "app", 80)
		hso.Labels = map[string]string{"refuse": "yes"}
		c.create(t, hso)
		key := client.ObjectKeyFromObject(hso)
		eventually(t, within, c.readyIs(t, key, metav1.ConditionFalse, ReasonScaledObjectRejected,
			"the API server rejected ScaledObject refused", "ScaledObjects labelled refuse are not allowed here"))
		eventually(t, within, c.eventFor(t, key, ReasonScaledObjectRejected, "not allowed here"))
		if so := c.scaledObject(t, key); so != nil {
			t.Errorf("ScaledObject %s exists despite the policy", key)
		}

		c.update(t, key, func(h *v1alpha1.HTTPScaledObject) { h.Labels = nil })
		eventually(t, within, c.readyIs(t, key, metav1.ConditionTrue, ReasonReconciled))
		eventually(t, within, c.soIs(t, key, map[string]any{"scaleTargetRef.name": "refused"}))
	})
}

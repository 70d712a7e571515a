package controller

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/lobby-http/lobby/internal/httpso"
	"github.com/lobby-http/lobby/operator/api/v1alpha1"
	"github.com/lobby-http/lobby/operator/internal/resources"
)

// addOnObject parses an HTTPScaledObject manifest as a user of the KEDA HTTP Add-on writes it
// (metadata and spec), in namespace ns.
func addOnObject(t *testing.T, ns, manifest string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte("apiVersion: http.keda.sh/v1alpha1\nkind: HTTPScaledObject\n"+manifest), &u.Object); err != nil {
		t.Fatalf("parse manifest: %v", err)
	}
	u.SetNamespace(ns)
	return u
}

// lobbySO is the ScaledObject spec lobby writes for an object, the add-on's shape with lobby's
// scaler in the trigger: the fields and values given, the rest at the add-on's defaults.
func lobbySO(name string, fields map[string]any) map[string]any {
	so := map[string]any{
		"scaleTargetRef.apiVersion": "apps/v1", "scaleTargetRef.kind": "Deployment", "scaleTargetRef.name": name,
		"minReplicaCount": 0, "maxReplicaCount": 100, "cooldownPeriod": 300, "initialCooldownPeriod": 0,
		"pollingInterval": 15, "advanced.restoreToOriginalReplicaCount": true,
		"triggers": []any{map[string]any{"type": "external-push",
			"metadata": map[string]any{"scalerAddress": testScalerAddress, "httpScaledObject": name}}},
	}
	for k, v := range fields {
		so[k] = v
	}
	return so
}

// TestAddOnManifestsAreAcceptedUnchanged applies manifests in every form the KEDA HTTP Add-on
// accepts to a real API server with lobby's CRD, unchanged, and checks for each the routes it
// claims (what the interceptor's table is built from), the ScaledObject, the status notes on
// what was normalised, and that it is Ready.
func TestAddOnManifestsAreAcceptedUnchanged(t *testing.T) {
	c := startCluster(t)
	ns := c.namespace(t, "dropin")
	for _, svc := range []string{"shop", "api", "slow", "legacy", "canary", "wild", "sorry", "own", "any"} {
		c.service(t, ns, svc, "http=8080")
	}
	tests := []struct {
		name     string
		manifest string
		// claims are the routing keys, as the add-on routes the object.
		claims []httpso.Claim
		// so is the ScaledObject spec; nil when no ScaledObject is wanted (skip annotation).
		so map[string]any
		// normalized are fragments of the status notes, one per note; none for a tidy object.
		normalized []string
	}{
		{
			name: "a host with a port is routed on the host",
			manifest: `
metadata: {name: shop}
spec:
  hosts: [shop.example.org:8080]
  scaleTargetRef: {name: shop, service: shop, port: 8080}`,
			claims:     []httpso.Claim{{Host: "shop.example.org", PathPrefix: "/"}},
			so:         lobbySO("shop", nil),
			normalized: []string{`spec.hosts[0] "shop.example.org:8080" is routed as "shop.example.org"`},
		},
		{
			name: "a path prefix without a leading slash is routed with one",
			manifest: `
metadata: {name: api}
spec:
  hosts: [api.example.org]
  pathPrefixes: [api, v2/]
  scaleTargetRef: {name: api, service: api, portName: http}`,
			claims: []httpso.Claim{{Host: "api.example.org", PathPrefix: "/api"}, {Host: "api.example.org", PathPrefix: "/v2"}},
			so:     lobbySO("api", nil),
			normalized: []string{`spec.pathPrefixes[0] "api" is routed as "/api"`,
				`spec.pathPrefixes[1] "v2/" is routed as "/v2/"`},
		},
		{
			name: "zero timeouts mean the interceptor's global defaults",
			manifest: `
metadata: {name: slow}
spec:
  hosts: [slow.example.org]
  scaleTargetRef: {name: slow, service: slow, port: 8080}
  timeouts: {conditionWait: 0s, responseHeader: 0s}`,
			claims: []httpso.Claim{{Host: "slow.example.org", PathPrefix: "/"}},
			so:     lobbySO("slow", nil),
			normalized: []string{"spec.timeouts.conditionWait 0s means the interceptor's global default",
				"spec.timeouts.responseHeader 0s means the interceptor's global default"},
		},
		{
			name: "the legacy targetPendingRequests scales as before and is noted",
			manifest: `
metadata: {name: legacy}
spec:
  hosts: [legacy.example.org]
  targetPendingRequests: 50
  replicas: {min: 1, max: 4}
  scaledownPeriod: 60
  scaleTargetRef: {name: legacy, service: legacy, port: 8080}`,
			claims:     []httpso.Claim{{Host: "legacy.example.org", PathPrefix: "/"}},
			so:         lobbySO("legacy", map[string]any{"minReplicaCount": 1, "maxReplicaCount": 4, "cooldownPeriod": 60}),
			normalized: []string{"spec.targetPendingRequests is deprecated"},
		},
		{
			name: "headers with and without values and a failover Service are routed as written",
			manifest: `
metadata: {name: canary}
spec:
  hosts: [Shop.Example.org]
  pathPrefixes: [/checkout]
  headers:
  - {name: X-Canary}
  - {name: X-Version, value: blue}
  scaleTargetRef: {name: canary, kind: StatefulSet, apiVersion: apps/v1, service: canary, port: 8080}
  coldStartTimeoutFailoverRef: {service: sorry, portName: http, timeoutSeconds: 45}
  scalingMetric: {requestRate: {targetValue: 20, window: 1m, granularity: 1s}}
  initialCooldownPeriod: 30`,
			claims: []httpso.Claim{{Host: "shop.example.org", PathPrefix: "/checkout", Headers: "x-canary,x-version=blue"}},
			so: lobbySO("canary", map[string]any{"scaleTargetRef.kind": "StatefulSet",
				"initialCooldownPeriod": 30}),
		},
		{
			name: "wildcard hosts and the add-on's catch-all host are routed as the add-on routes them",
			manifest: `
metadata: {name: wild}
spec:
  hosts: ["*.apps.example.org", "*"]
  scaleTargetRef: {name: wild, service: wild, port: 8080}`,
			claims: []httpso.Claim{{Host: "", PathPrefix: "/"}, {Host: "*.apps.example.org", PathPrefix: "/"}},
			so:     lobbySO("wild", nil),
		},
		{
			name: "the skip annotation keeps the routes and writes no ScaledObject",
			manifest: `
metadata:
  name: own
  annotations: {httpscaledobject.keda.sh/skip-scaledobject-creation: "true"}
spec:
  hosts: [own.example.org]
  scaleTargetRef: {name: own, service: own, port: 8080}`,
			claims: []httpso.Claim{{Host: "own.example.org", PathPrefix: "/"}},
		},
		{
			name: "every leniency at once, on an object the add-on had finalised, is accepted",
			manifest: `
metadata:
  name: any
  finalizers: [httpscaledobject.http.keda.sh]
spec:
  hosts: ["ANY.example.org:443"]
  pathPrefixes: [v1]
  scaleTargetRef: {name: any, service: any, port: 8080}
  timeouts: {conditionWait: "0", responseHeader: 0s}`,
			claims: []httpso.Claim{{Host: "any.example.org", PathPrefix: "/v1"}},
			so:     lobbySO("any", nil),
			normalized: []string{`spec.hosts[0] "ANY.example.org:443" is routed as "ANY.example.org"`,
				`spec.pathPrefixes[0] "v1" is routed as "/v1"`,
				"spec.timeouts.conditionWait 0s", "spec.timeouts.responseHeader 0s"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obj := addOnObject(t, ns, tt.manifest)
			want := obj.DeepCopy()
			if err := c.kube.Create(t.Context(), obj); err != nil {
				t.Fatalf("the API server refused a manifest the add-on accepts: %v", err)
			}
			key := types.NamespacedName{Namespace: ns, Name: obj.GetName()}

			// Stored as written: nothing pruned, nothing rewritten.
			stored := &unstructured.Unstructured{}
			stored.SetGroupVersionKind(v1alpha1.GroupVersion.WithKind("HTTPScaledObject"))
			if err := c.kube.Get(t.Context(), key, stored); err != nil {
				t.Fatal(err)
			}
			if path, ok := subset(want.Object["spec"], stored.Object["spec"], "spec"); !ok {
				t.Errorf("stored object differs from the manifest at %s: %v", path, stored.Object["spec"])
			}

			if tt.so == nil {
				eventually(t, within, c.readyIs(t, key, metav1.ConditionTrue, ReasonScaledObjectSkipped))
				if so := c.scaledObject(t, key); so != nil {
					t.Errorf("ScaledObject %s exists despite the skip annotation", key)
				}
			} else {
				eventually(t, within, c.soIs(t, key, tt.so))
				eventually(t, within, c.readyIs(t, key, metav1.ConditionTrue, ReasonReconciled))
			}
			hso := c.httpso(t, key)
			if got := httpso.Claims(&hso.Spec); !reflect.DeepEqual(got, tt.claims) {
				t.Errorf("routes = %v, want %v", got, tt.claims)
			}
			if len(hso.Status.Normalized) != len(tt.normalized) {
				t.Errorf("status.normalized = %q, want %d notes like %q", hso.Status.Normalized, len(tt.normalized), tt.normalized)
			} else {
				for i, f := range tt.normalized {
					if !strings.Contains(hso.Status.Normalized[i], f) {
						t.Errorf("status.normalized[%d] = %q, want it to contain %q", i, hso.Status.Normalized[i], f)
					}
				}
			}
			if len(hso.Finalizers) != 0 {
				t.Errorf("finalizers = %q, want the add-on's removed", hso.Finalizers)
			}
		})
	}
}

// TestBrokenManifestsAreRefusedByField checks that what the add-on's users could write but that
// cannot work is still refused by the API server, with a message naming the field.
func TestBrokenManifestsAreRefusedByField(t *testing.T) {
	c := startCluster(t)
	ns := c.namespace(t, "broken")
	tests := []struct {
		name string
		spec string
		want []string
	}{
		{"both port and portName are refused",
			`scaleTargetRef: {name: a, service: a, port: 8080, portName: http}`,
			[]string{"spec.scaleTargetRef", "must define either the 'portName' or the 'port'"}},
		{"a minimum above the maximum is refused",
			`replicas: {min: 5, max: 2}`,
			[]string{"spec.replicas", "replicas.min must be less than or equal to replicas.max"}},
		{"a sub-second granularity is refused",
			`scalingMetric: {requestRate: {targetValue: 10, window: 1m, granularity: 100ms}}`,
			[]string{"spec.scalingMetric.requestRate", "requestRate.granularity must be at least 1s"}},
		{"a window shorter than the granularity is refused",
			`scalingMetric: {requestRate: {targetValue: 10, window: 2s, granularity: 5s}}`,
			[]string{"spec.scalingMetric.requestRate", "requestRate.granularity must not be longer than requestRate.window"}},
		{"both metrics at once are refused",
			`scalingMetric: {concurrency: {targetValue: 10}, requestRate: {targetValue: 10}}`,
			[]string{"spec.scalingMetric", "scalingMetric.concurrency and scalingMetric.requestRate are mutually exclusive"}},
		{"a negative timeout is refused",
			`timeouts: {conditionWait: -5s}`,
			[]string{"spec.timeouts.conditionWait"}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := "  scaleTargetRef: {name: a, service: a, port: 8080}\n"
			if strings.HasPrefix(tt.spec, "scaleTargetRef") {
				spec = ""
			}
			obj := addOnObject(t, ns, fmt.Sprintf("metadata: {name: broken-%d}\nspec:\n%s  %s\n", i, spec, tt.spec))
			err := c.kube.Create(t.Context(), obj)
			if !apierrors.IsInvalid(err) {
				t.Fatalf("Create() = %v, want the API server to refuse it as invalid", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Create() error = %q, want it to name %q", err, w)
				}
			}
		})
	}
}

// addOnStatus is the status the KEDA HTTP Add-on leaves on an object it reconciled: its own
// condition types, one of them without the transition time lobby's schema needs.
var addOnStatus = map[string]any{
	"targetWorkload": "apps/v1/Deployment/web",
	"targetService":  "web:8080",
	"conditions": []any{
		map[string]any{"type": "Ready", "status": "True", "reason": "HTTPScaledObjectIsReady",
			"message": "Finished object creation", "lastTransitionTime": "2026-01-01T00:00:00Z"},
		map[string]any{"type": "Created", "status": "True", "reason": "AppScaledObjectCreated",
			"message": "App ScaledObject created", "lastTransitionTime": "2026-01-01T00:00:00Z"},
	},
}

// addOnScaledObject is a ScaledObject as the KEDA HTTP Add-on writes it for the HTTPScaledObject
// owner (nil: no owner reference, as with its orphan annotation), pointing at its own scaler.
func addOnScaledObject(ns, name string, owner *unstructured.Unstructured) *unstructured.Unstructured {
	so := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
		"metadata": map[string]any{"namespace": ns, "name": name,
			"labels": map[string]any{"app.kubernetes.io/managed-by": "keda-add-ons-http"}},
		"spec": map[string]any{
			"scaleTargetRef":  map[string]any{"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
			"minReplicaCount": int64(0), "maxReplicaCount": int64(100), "cooldownPeriod": int64(300),
			"pollingInterval": int64(15),
			"advanced":        map[string]any{"restoreToOriginalReplicaCount": true},
			"triggers": []any{map[string]any{"type": "external-push", "metadata": map[string]any{
				"scalerAddress":    "keda-add-ons-http-external-scaler.keda:9090",
				"httpScaledObject": name,
			}}},
		},
	}}
	if owner != nil {
		so.SetOwnerReferences([]metav1.OwnerReference{{APIVersion: "http.keda.sh/v1alpha1", Kind: "HTTPScaledObject",
			Name: owner.GetName(), UID: owner.GetUID(), Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}})
	}
	return so
}

// TestAddOnLeftoversAreAdopted starts lobby's reconciler on what the KEDA HTTP Add-on leaves
// behind: objects with its finalizer and status, ScaledObjects of its shape pointing at its
// scaler, one with and one without an owner reference, and one object already being deleted.
func TestAddOnLeftoversAreAdopted(t *testing.T) {
	c := startControlPlane(t)
	ns := c.namespace(t, "leftovers")
	for _, svc := range []string{"web", "keep", "gone", "later"} {
		c.service(t, ns, svc, "http=8080")
	}
	// As the add-on left them, before lobby's operator runs.
	made := map[string]*unstructured.Unstructured{}
	for _, o := range []struct {
		name, annotations string
		orphanSO          bool
	}{
		{"web", "", false},
		{"keep", `{httpscaledobject.keda.sh/orphan-scaledobject: "true"}`, true},
		{"gone", "", false},
		{"later", "", false},
	} {
		meta := "metadata: {name: " + o.name + ", finalizers: [httpscaledobject.http.keda.sh]}"
		if o.annotations != "" {
			meta = "metadata: {name: " + o.name + ", finalizers: [httpscaledobject.http.keda.sh], annotations: " + o.annotations + "}"
		}
		hso := addOnObject(t, ns, meta+"\nspec: {hosts: ["+o.name+".example.org], scaleTargetRef: {name: "+o.name+", service: "+o.name+", port: 8080}}\n")
		c.create(t, hso)
		hso.Object["status"] = addOnStatus
		if err := c.kube.Status().Update(t.Context(), hso); err != nil {
			t.Fatalf("write the add-on's status on %s: %v", o.name, err)
		}
		owner := hso
		if o.orphanSO {
			owner = nil
		}
		if err := c.kube.Create(t.Context(), addOnScaledObject(ns, o.name, owner), client.FieldOwner("keda-add-ons-http")); err != nil {
			t.Fatalf("create the add-on's ScaledObject %s: %v", o.name, err)
		}
		made[o.name] = hso
	}
	// The user deletes one while no operator runs: it hangs on the add-on's finalizer.
	gone := types.NamespacedName{Namespace: ns, Name: "gone"}
	if err := c.kube.Delete(t.Context(), made["gone"]); err != nil {
		t.Fatal(err)
	}
	if hso := c.httpso(t, gone); hso.DeletionTimestamp.IsZero() {
		t.Fatal("the deleted object is not terminating: the test's premise fails")
	}

	c.runReconciler(t, resources.Trigger{ScalerAddress: testScalerAddress})

	t.Run("an object deleted before lobby ran is released at once", func(t *testing.T) {
		eventually(t, 10*time.Second, func() string {
			hso := &v1alpha1.HTTPScaledObject{}
			if err := c.kube.Get(t.Context(), gone, hso); apierrors.IsNotFound(err) {
				return ""
			}
			return fmt.Sprintf("%s still exists, finalizers %q", gone, hso.Finalizers)
		})
	})
	t.Run("an adopted object loses the add-on's finalizer and status, and its ScaledObject points at lobby", func(t *testing.T) {
		key := types.NamespacedName{Namespace: ns, Name: "web"}
		eventually(t, within, c.soIs(t, key, lobbySO("web", nil)))
		eventually(t, within, c.readyIs(t, key, metav1.ConditionTrue, ReasonReconciled))
		hso := c.httpso(t, key)
		if len(hso.Finalizers) != 0 {
			t.Errorf("finalizers = %q, want none", hso.Finalizers)
		}
		for _, cond := range hso.Status.Conditions {
			if cond.Type == "Created" {
				t.Errorf("the add-on's %s condition is still on the status", cond.Type)
			}
		}
		so := c.scaledObject(t, key)
		if !isControlledByUID(so, hso.UID) {
			t.Errorf("ScaledObject owner references = %v, want the HTTPScaledObject as controller", so.GetOwnerReferences())
		}
		// Deleting it completes: nothing waits on a finalizer lobby does not remove.
		if err := c.kube.Delete(t.Context(), hso); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, func() string {
			if err := c.kube.Get(t.Context(), key, &v1alpha1.HTTPScaledObject{}); apierrors.IsNotFound(err) {
				return ""
			}
			return key.String() + " still exists"
		})
	})
	t.Run("the orphan annotation keeps the add-on's unowned ScaledObject unowned and adopts it", func(t *testing.T) {
		key := types.NamespacedName{Namespace: ns, Name: "keep"}
		eventually(t, within, c.soIs(t, key, lobbySO("keep", nil)))
		eventually(t, within, c.readyIs(t, key, metav1.ConditionTrue, ReasonReconciled))
		if refs := c.scaledObject(t, key).GetOwnerReferences(); len(refs) != 0 {
			t.Errorf("ScaledObject owner references = %v, want none (orphan annotation)", refs)
		}
	})
	t.Run("setting the orphan annotation removes an owner reference the add-on wrote", func(t *testing.T) {
		key := types.NamespacedName{Namespace: ns, Name: "later"}
		eventually(t, within, c.soIs(t, key, lobbySO("later", nil)))
		if !isControlledByUID(c.scaledObject(t, key), made["later"].GetUID()) {
			t.Fatal("ScaledObject is not controlled by its HTTPScaledObject before the annotation")
		}
		c.update(t, key, func(h *v1alpha1.HTTPScaledObject) {
			h.Annotations = map[string]string{v1alpha1.OrphanScaledObjectAnnotation: "true"}
		})
		eventually(t, within, func() string {
			if refs := c.scaledObject(t, key).GetOwnerReferences(); len(refs) != 0 {
				return fmt.Sprintf("ScaledObject owner references = %v, want none", refs)
			}
			return ""
		})
		eventually(t, within, c.readyIs(t, key, metav1.ConditionTrue, ReasonReconciled))
		eventually(t, within, c.eventFor(t, key, EventScaledObjectOrphaned, "orphan-scaledobject"))
	})
}

// isControlledByUID reports whether obj's controller reference names the HTTPScaledObject uid.
func isControlledByUID(obj metav1.Object, uid types.UID) bool {
	ref := metav1.GetControllerOfNoCopy(obj)
	return ref != nil && ref.UID == uid && ref.Kind == "HTTPScaledObject"
}

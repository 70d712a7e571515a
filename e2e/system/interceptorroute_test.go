//go:build e2e

package system

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/lobby-http/lobby/e2e/apps"
	"github.com/lobby-http/lobby/e2e/framework/poll"
)

// probeWindow is how long health checks hit a static route while the app sits at zero.
const probeWindow = 2 * time.Minute

// fromYAML creates the object a user would write as doc in ns.
func fromYAML(t *testing.T, ns, doc string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
		t.Fatalf("parse manifest: %v", err)
	}
	u.SetNamespace(ns)
	if err := suite.cluster.Client.Create(t.Context(), u); err != nil {
		t.Fatalf("create %s %s: %v", u.GetKind(), u.GetName(), err)
	}
	return u
}

// TestInterceptorRouteWithUserScaledObject follows a user of the add-on's current API: an
// InterceptorRoute with a static health-check route and a ScaledObject they wrote. Probes of the
// health check are answered while the app sits at zero, for two minutes, without KEDA ever
// activating it; then one request scales it 0→1, and idleness takes it back to zero.
func TestInterceptorRouteWithUserScaledObject(t *testing.T) {
	ns := testNamespace(t)
	ctx := t.Context()
	c := suite.cluster
	dep, svc := apps.Echo{Namespace: ns, Name: "routed"}.Objects()
	pages := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "pages", Labels: map[string]string{"http.keda.sh/response-body": "true"}},
		Data:       map[string]string{"notice.txt": "down for maintenance"},
	}
	for _, o := range []client.Object{dep, svc, pages} {
		if err := c.Client.Create(ctx, o); err != nil {
			t.Fatalf("create %T: %v", o, err)
		}
	}
	fromYAML(t, ns, `
apiVersion: http.keda.sh/v1beta1
kind: InterceptorRoute
metadata: {name: routed}
spec:
  target: {service: routed, port: 80}
  rules:
  - hosts: [routed.example.com]
  scalingMetric:
    concurrency: {targetValue: 10}
    requestRate: {targetValue: 50, window: 10s, granularity: 1s}
  staticRoutes:
  - rules: [{paths: [{value: /healthz}]}]
    response: {statusCode: 200, body: ok}
    responseMode: Always
  - rules: [{paths: [{value: /notice}]}]
    response: {bodyFromConfigMap: {name: pages, key: notice.txt}}
    responseMode: Always
  - rules: [{paths: [{value: /gone}]}]
    response: {bodyFromConfigMap: {name: absent, key: x}}
    responseMode: Always
`)
	scalerAddr := suite.lobby.Release + "-scaler." + suite.lobby.Namespace + ".svc.cluster.local:9090"
	fromYAML(t, ns, `
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: routed}
spec:
  scaleTargetRef: {name: routed}
  minReplicaCount: 0
  maxReplicaCount: 2
  cooldownPeriod: 5
  triggers:
  - type: external-push
    metadata: {scalerAddress: "`+scalerAddr+`", interceptorRoute: routed}
`)
	a := &app{ns: ns, name: "routed"}
	waitRouting(t, a.key(), 30*time.Second)
	if err := poll.Until(t.Context(), 60*time.Second, "KEDA to create the HPA", func() error {
		var hpa unstructured.Unstructured
		hpa.SetGroupVersionKind(schema.GroupVersionKind{Group: "autoscaling", Version: "v2", Kind: "HorizontalPodAutoscaler"})
		return c.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "keda-hpa-routed"}, &hpa)
	}); err != nil {
		t.Fatal(err)
	}

	t.Run("bodies come from the labelled ConfigMap, live, and a missing one is a clear 500", func(t *testing.T) {
		if err := poll.Until(t.Context(), 20*time.Second, "the ConfigMap body", func() error {
			r := send(t.Context(), http.MethodGet, suite.ingress.URL+"/notice", "routed.example.com", nil)
			if r.code != http.StatusOK || r.body != "down for maintenance" {
				return fmt.Errorf("got %d %q %v", r.code, r.body, r.err)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		pages.Data["notice.txt"] = "back soon"
		if err := c.Client.Update(t.Context(), pages); err != nil {
			t.Fatal(err)
		}
		if err := poll.Until(t.Context(), 20*time.Second, "the updated ConfigMap body", func() error {
			r := send(t.Context(), http.MethodGet, suite.ingress.URL+"/notice", "routed.example.com", nil)
			if r.code != http.StatusOK || r.body != "back soon" {
				return fmt.Errorf("got %d %q %v", r.code, r.body, r.err)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		r := send(t.Context(), http.MethodGet, suite.ingress.URL+"/gone", "routed.example.com", nil)
		if r.code != http.StatusInternalServerError || r.body != "response body unavailable: read ConfigMap \"absent\": not found, or without the label http.keda.sh/response-body=true\n" {
			t.Errorf("missing ConfigMap: got %d %q %v", r.code, r.body, r.err)
		}
	})

	// Probes for two minutes: each answered by the static route, the app left at zero, and
	// KEDA's ScaledObject never Active.
	probes := 0
	for deadline := time.Now().Add(probeWindow); time.Now().Before(deadline); probes++ {
		r := send(ctx, http.MethodGet, suite.ingress.URL+"/healthz", "routed.example.com", nil)
		if r.err != nil || r.code != http.StatusOK || r.body != "ok" {
			t.Fatalf("probe %d: got %d %q %v, want 200 ok", probes, r.code, r.body, r.err)
		}
		if desired, _, err := a.replicas(ctx); err != nil || desired != 0 {
			t.Fatalf("after %d probes the app has %d replicas (%v): a probe woke it", probes, desired, err)
		}
		if active := scaledObjectActive(t, ns, "routed"); active == metav1.ConditionTrue {
			t.Fatalf("after %d probes KEDA reports the ScaledObject Active", probes)
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("%d probes over %v answered by the static route; the app stayed at zero and KEDA never activated", probes, probeWindow)

	// One request is held while KEDA scales the app 0→1.
	start := time.Now()
	r := send(ctx, http.MethodGet, suite.ingress.URL+"/", "routed.example.com", nil)
	if r.err != nil || r.code != http.StatusOK {
		t.Fatalf("the held request got %d %q %v, want 200 from the app", r.code, r.body, r.err)
	}
	if r.header.Get("X-Lobby-Cold-Start") == "" {
		t.Errorf("the request was not held for a cold start; headers %v", r.header)
	}
	t.Logf("held request answered by the app after %v", time.Since(start).Round(time.Millisecond))
	if desired, _, _ := a.replicas(ctx); desired != 1 {
		t.Errorf("replicas = %d after the cold start, want 1", desired)
	}

	if err := poll.Until(t.Context(), 4*time.Minute, "KEDA to scale the idle app back to zero", func() error {
		desired, _, err := a.replicas(ctx)
		if err == nil && desired != 0 {
			err = fmt.Errorf("replicas = %d", desired)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

// scaledObjectActive returns the status of the Active condition of KEDA's ScaledObject ns/name.
func scaledObjectActive(t *testing.T, ns, name string) metav1.ConditionStatus {
	t.Helper()
	so := &unstructured.Unstructured{}
	so.SetGroupVersionKind(scaledObjectGVK)
	if err := suite.cluster.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: name}, so); err != nil {
		t.Fatalf("get ScaledObject: %v", err)
	}
	raw, _, _ := unstructured.NestedSlice(so.Object, "status", "conditions")
	var conds []metav1.Condition
	for _, c := range raw {
		m, _ := c.(map[string]any)
		typ, _ := m["type"].(string)
		st, _ := m["status"].(string)
		conds = append(conds, metav1.Condition{Type: typ, Status: metav1.ConditionStatus(st)})
	}
	if c := meta.FindStatusCondition(conds, "Active"); c != nil {
		return c.Status
	}
	return metav1.ConditionUnknown
}

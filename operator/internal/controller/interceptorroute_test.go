package controller

import (
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"

	"github.com/lobby-http/lobby/operator/api/v1beta1"
	"github.com/lobby-http/lobby/operator/internal/resources"
)

func newRoute(namespace, name, host, service string) *v1beta1.InterceptorRoute {
	return &v1beta1.InterceptorRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec: v1beta1.InterceptorRouteSpec{
			Target:        v1beta1.TargetRef{Service: service, Port: 8080},
			Rules:         []v1beta1.RoutingRule{{Hosts: []string{host}}},
			ScalingMetric: v1beta1.ScalingMetricSpec{Concurrency: &v1beta1.ConcurrencyTargetSpec{TargetValue: 10}},
		},
	}
}

// routeCondition returns a condition for eventually: the route's condition typ has status and
// reason, and its message holds every fragment.
func (c *cluster) routeCondition(t *testing.T, key types.NamespacedName, typ string, status metav1.ConditionStatus, reason string, fragments ...string) func() string {
	return func() string {
		ir := &v1beta1.InterceptorRoute{}
		if err := c.kube.Get(t.Context(), key, ir); err != nil {
			return err.Error()
		}
		got := meta.FindStatusCondition(ir.Status.Conditions, typ)
		if got == nil {
			return fmt.Sprintf("%s has no %s condition", key, typ)
		}
		if got.Status != status || got.Reason != reason || got.ObservedGeneration != ir.Generation {
			return fmt.Sprintf("%s %s = %s/%s %q, want %s/%s", key, typ, got.Status, got.Reason, got.Message, status, reason)
		}
		for _, f := range fragments {
			if !strings.Contains(got.Message, f) {
				return fmt.Sprintf("%s %s message %q lacks %q", key, typ, got.Message, f)
			}
		}
		return ""
	}
}

func TestInterceptorRouteStatus(t *testing.T) {
	configMapRecheck = time.Second
	c := startCluster(t)

	t.Run("a route to an existing Service is Ready, and a ScaledObject naming it is found", func(t *testing.T) {
		ns := c.namespace(t, "ir-ready")
		c.service(t, ns, "app", "http=8080")
		c.create(t, newRoute(ns, "app", "app.example.com", "app"))
		key := types.NamespacedName{Namespace: ns, Name: "app"}
		eventually(t, within, c.routeCondition(t, key, v1beta1.ConditionReady, metav1.ConditionTrue, v1beta1.ReasonReconciled))
		eventually(t, within, c.routeCondition(t, key, v1beta1.ConditionScaledObjectFound, metav1.ConditionFalse, "NoScaledObject"))
		so := &unstructured.Unstructured{Object: map[string]any{"spec": map[string]any{
			"scaleTargetRef": map[string]any{"name": "app"},
			"triggers": []any{map[string]any{"type": "external-push",
				"metadata": map[string]any{"scalerAddress": testScalerAddress, "interceptorRoute": "app"}}},
		}}}
		so.SetGroupVersionKind(resources.ScaledObjectGVK)
		so.SetNamespace(ns)
		so.SetName("users-own")
		c.create(t, so)
		eventually(t, within, c.routeCondition(t, key, v1beta1.ConditionScaledObjectFound, metav1.ConditionTrue, "ScaledObjectFound", "users-own"))
	})

	t.Run("a missing target Service is named on the status", func(t *testing.T) {
		ns := c.namespace(t, "ir-nosvc")
		c.create(t, newRoute(ns, "app", "nosvc.example.com", "absent"))
		eventually(t, within, c.routeCondition(t, types.NamespacedName{Namespace: ns, Name: "app"}, v1beta1.ConditionReady,
			metav1.ConditionFalse, v1beta1.ReasonServiceNotFound, "absent", "spec.target"))
	})

	t.Run("a missing body ConfigMap is a condition until it appears with its label", func(t *testing.T) {
		ns := c.namespace(t, "ir-cm")
		c.service(t, ns, "app", "http=8080")
		ir := newRoute(ns, "app", "cm.example.com", "app")
		ir.Spec.StaticRoutes = []v1beta1.StaticRoute{{
			Rules:    []v1beta1.RoutingRule{{Paths: []v1beta1.PathMatch{{Value: "/healthz"}}}},
			Response: v1beta1.StaticResponse{BodyFromConfigMap: &v1beta1.ConfigMapKeyRef{Name: "pages", Key: "ok.txt"}},
		}}
		c.create(t, ir)
		key := types.NamespacedName{Namespace: ns, Name: "app"}
		eventually(t, within, c.routeCondition(t, key, v1beta1.ConditionReady, metav1.ConditionFalse, v1beta1.ReasonConfigMapNotFound,
			"ConfigMap "+ns+"/pages", "spec.staticRoutes[0].response", "does not exist"))
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "pages"}, Data: map[string]string{"ok.txt": "ok"}}
		c.create(t, cm)
		eventually(t, within, c.routeCondition(t, key, v1beta1.ConditionReady, metav1.ConditionFalse, v1beta1.ReasonConfigMapNotFound,
			"lacks the label http.keda.sh/response-body=true"))
		cm.Labels = map[string]string{bodyLabel: "true"}
		if err := c.kube.Update(t.Context(), cm); err != nil {
			t.Fatal(err)
		}
		eventually(t, within, c.routeCondition(t, key, v1beta1.ConditionReady, metav1.ConditionTrue, v1beta1.ReasonReconciled))
	})

	t.Run("an older HTTPScaledObject keeps its host; the newer route says so", func(t *testing.T) {
		ns := c.namespace(t, "ir-loses")
		c.service(t, ns, "app", "http=8080")
		c.create(t, newHTTPSO(ns, "old", "shared.example.com", "app", 8080))
		time.Sleep(1100 * time.Millisecond) // creation times have a resolution of one second
		c.create(t, newRoute(ns, "new", "shared.example.com", "app"))
		eventually(t, within, c.routeCondition(t, types.NamespacedName{Namespace: ns, Name: "new"}, v1beta1.ConditionReady,
			metav1.ConditionFalse, v1beta1.ReasonConflict, "older HTTPScaledObject "+ns+"/old", `host "shared.example.com"`))
		eventually(t, within, c.readyIs(t, types.NamespacedName{Namespace: ns, Name: "old"}, metav1.ConditionTrue, ReasonReconciled,
			"not routed because this object claims the same requests first: InterceptorRoute "+ns+"/new"))
	})

	t.Run("an older route keeps its host; the newer HTTPScaledObject says so, and is freed when the route goes", func(t *testing.T) {
		ns := c.namespace(t, "ir-wins")
		c.service(t, ns, "app", "http=8080")
		ir := newRoute(ns, "old", "taken.example.com", "app")
		c.create(t, ir)
		time.Sleep(1100 * time.Millisecond)
		c.create(t, newHTTPSO(ns, "new", "taken.example.com", "app", 8080))
		hso := types.NamespacedName{Namespace: ns, Name: "new"}
		eventually(t, within, c.readyIs(t, hso, metav1.ConditionFalse, ReasonRouteConflict, "older InterceptorRoute "+ns+"/old"))
		eventually(t, within, c.routeCondition(t, types.NamespacedName{Namespace: ns, Name: "old"}, v1beta1.ConditionReady,
			metav1.ConditionTrue, v1beta1.ReasonReconciled, "not routed because this object claims the same requests first: HTTPScaledObject "+ns+"/new"))
		if err := c.kube.Delete(t.Context(), ir); err != nil {
			t.Fatal(err)
		}
		eventually(t, within, c.readyIs(t, hso, metav1.ConditionTrue, ReasonReconciled))
	})

	t.Run("a route with the name of an HTTPScaledObject is a conflict, since both would share counts", func(t *testing.T) {
		ns := c.namespace(t, "ir-samename")
		c.service(t, ns, "app", "http=8080")
		c.create(t, newHTTPSO(ns, "app", "one.example.com", "app", 8080))
		time.Sleep(1100 * time.Millisecond)
		c.create(t, newRoute(ns, "app", "two.example.com", "app"))
		eventually(t, within, c.routeCondition(t, types.NamespacedName{Namespace: ns, Name: "app"}, v1beta1.ConditionReady,
			metav1.ConditionFalse, v1beta1.ReasonConflict, "same namespace and name"))
	})
}

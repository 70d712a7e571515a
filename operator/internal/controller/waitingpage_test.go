package controller

import (
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/lobby-http/lobby/operator/api/v1alpha1"
	"github.com/lobby-http/lobby/operator/api/v1beta1"
)

// pageConditionIs returns a condition for eventually: the HTTPScaledObject's WaitingPage
// condition has status and reason, and its message holds every fragment.
func (c *cluster) pageConditionIs(t *testing.T, key types.NamespacedName, status metav1.ConditionStatus, reason string, fragments ...string) func() string {
	return func() string {
		hso := c.httpso(t, key)
		got := meta.FindStatusCondition(hso.Status.Conditions, ConditionWaitingPage)
		if got == nil {
			return fmt.Sprintf("%s has no WaitingPage condition", key)
		}
		if got.Status != status || got.Reason != reason {
			return fmt.Sprintf("%s WaitingPage = %s/%s %q, want %s/%s", key, got.Status, got.Reason, got.Message, status, reason)
		}
		for _, f := range fragments {
			if !strings.Contains(got.Message, f) {
				return fmt.Sprintf("%s WaitingPage message %q lacks %q", key, got.Message, f)
			}
		}
		return ""
	}
}

func TestWaitingPageAndReservedPathStatus(t *testing.T) {
	configMapRecheck, pageRecheck = time.Second, time.Second
	c := startCluster(t)

	t.Run("an HTTPScaledObject claiming the reserved path is not routed, and says so", func(t *testing.T) {
		ns := c.namespace(t, "page-reserved")
		c.service(t, ns, "app", "http=8080")
		hso := newHTTPSO(ns, "app", "reserved.example.com", "app", 8080)
		hso.Spec.PathPrefixes = []string{"/api", "/.lobby/status"}
		c.create(t, hso)
		eventually(t, within, c.readyIs(t, types.NamespacedName{Namespace: ns, Name: "app"}, metav1.ConditionFalse, ReasonReservedPath,
			`"/.lobby/status"`, "/.lobby/", "remove that path prefix"))
	})

	t.Run("an InterceptorRoute claiming the reserved path is not routed, and says so", func(t *testing.T) {
		ns := c.namespace(t, "page-reserved-ir")
		c.service(t, ns, "app", "http=8080")
		ir := newRoute(ns, "app", "reserved-ir.example.com", "app")
		ir.Spec.Rules[0].Paths = []v1beta1.PathMatch{{Value: "/.lobby"}}
		c.create(t, ir)
		eventually(t, within, c.routeCondition(t, types.NamespacedName{Namespace: ns, Name: "app"}, v1beta1.ConditionReady,
			metav1.ConditionFalse, v1beta1.ReasonReservedPath, "/.lobby/"))
	})

	t.Run("a missing waiting page ConfigMap is a condition, the object stays routed, until it appears", func(t *testing.T) {
		ns := c.namespace(t, "page-cm")
		c.service(t, ns, "app", "http=8080")
		hso := newHTTPSO(ns, "app", "page.example.com", "app", 8080)
		hso.Spec.ColdStart = &v1alpha1.ColdStartSpec{Mode: v1alpha1.ColdStartModeAuto,
			WaitingPage: &v1alpha1.WaitingPageSpec{BodyFromConfigMap: &v1alpha1.ConfigMapKeyRef{Name: "pages"}}}
		c.create(t, hso)
		key := types.NamespacedName{Namespace: ns, Name: "app"}
		eventually(t, within, c.pageConditionIs(t, key, metav1.ConditionFalse, ReasonWaitingPageConfigMapNotFound,
			"ConfigMap "+ns+"/pages", "does not exist", "built-in waiting page"))
		eventually(t, within, c.readyIs(t, key, metav1.ConditionTrue, ReasonReconciled))
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "pages", Labels: map[string]string{bodyLabel: "true"}},
			Data: map[string]string{"other.html": "x"}}
		c.create(t, cm)
		eventually(t, within, c.pageConditionIs(t, key, metav1.ConditionFalse, ReasonWaitingPageConfigMapNotFound, `no key "index.html"`))
		cm.Data["index.html"] = "<p>wait</p>"
		if err := c.kube.Update(t.Context(), cm); err != nil {
			t.Fatal(err)
		}
		eventually(t, within, c.pageConditionIs(t, key, metav1.ConditionTrue, ReasonWaitingPageLoaded, "index.html"))
		// ConfigMaps are not watched: a page deleted after it was found is noticed at the next check.
		if err := c.kube.Delete(t.Context(), cm); err != nil {
			t.Fatal(err)
		}
		eventually(t, within, c.pageConditionIs(t, key, metav1.ConditionFalse, ReasonWaitingPageConfigMapNotFound, "does not exist"))
	})

	t.Run("an InterceptorRoute's waiting page ConfigMap is checked the same way", func(t *testing.T) {
		ns := c.namespace(t, "page-cm-ir")
		c.service(t, ns, "app", "http=8080")
		ir := newRoute(ns, "app", "page-ir.example.com", "app")
		ir.Spec.ColdStart = &v1beta1.ColdStartSpec{Mode: v1beta1.ColdStartModeAuto,
			WaitingPage: &v1beta1.WaitingPage{BodyFromConfigMap: &v1beta1.ConfigMapKeyRef{Name: "pages", Key: "wait.html"}}}
		c.create(t, ir)
		key := types.NamespacedName{Namespace: ns, Name: "app"}
		eventually(t, within, c.routeCondition(t, key, ConditionWaitingPage, metav1.ConditionFalse, ReasonWaitingPageConfigMapNotFound,
			"does not exist"))
		eventually(t, within, c.routeCondition(t, key, v1beta1.ConditionReady, metav1.ConditionTrue, v1beta1.ReasonReconciled))
		c.create(t, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "pages", Labels: map[string]string{bodyLabel: "true"}},
			Data: map[string]string{"wait.html": "<p>wait</p>"}})
		eventually(t, within, c.routeCondition(t, key, ConditionWaitingPage, metav1.ConditionTrue, ReasonWaitingPageLoaded, "wait.html"))
	})
}

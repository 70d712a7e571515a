package controller

import (
	"fmt"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/lobby-http/lobby/operator/api/v1alpha1"
	"github.com/lobby-http/lobby/operator/internal/resources"
)

// triggerIs returns a condition for eventually: the ScaledObject's one trigger is exactly want,
// no key more or less.
func (c *cluster) triggerIs(t *testing.T, key types.NamespacedName, want map[string]any) func() string {
	return func() string {
		so := c.scaledObject(t, key)
		if so == nil {
			return fmt.Sprintf("ScaledObject %s does not exist", key)
		}
		triggers, _, _ := unstructured.NestedSlice(so.Object, "spec", "triggers")
		if len(triggers) != 1 || fmt.Sprint(triggers[0]) != fmt.Sprint(want) {
			return fmt.Sprintf("ScaledObject %s triggers = %v, want [%v]", key, triggers, want)
		}
		return ""
	}
}

// TestReconcilerFollowsTheTriggerSetting restarts the operator with TLS turned on, then off, as a
// chart upgrade does: the ScaledObjects it wrote before are rewritten on the first reconcile, and
// ScaledObjects users manage themselves are left alone.
func TestReconcilerFollowsTheTriggerSetting(t *testing.T) {
	c := startControlPlane(t)
	plain := resources.Trigger{ScalerAddress: testScalerAddress}
	tls := resources.Trigger{ScalerAddress: testScalerAddress, TLS: true,
		Auth: resources.AuthenticationRef{Kind: resources.KindClusterTriggerAuthentication, Name: "lobby-scaler-tls"}}
	plainTrigger := func(name string) map[string]any {
		return map[string]any{"type": "external-push", "metadata": map[string]any{
			"scalerAddress": testScalerAddress, "httpScaledObject": name}}
	}
	tlsTrigger := func(name string) map[string]any {
		return map[string]any{"type": "external-push",
			"metadata":          map[string]any{"scalerAddress": testScalerAddress, "httpScaledObject": name, "enableTLS": "true"},
			"authenticationRef": map[string]any{"kind": "ClusterTriggerAuthentication", "name": "lobby-scaler-tls"}}
	}

	stop := c.runReconciler(t, plain)
	ns := c.namespace(t, "trigger")
	c.service(t, ns, "app", "http=80")
	web := newHTTPSO(ns, "web", "web.trigger.example.com", "app", 80)
	c.create(t, web)
	webKey := client.ObjectKeyFromObject(web)
	eventually(t, within, c.triggerIs(t, webKey, plainTrigger("web")))
	eventually(t, within, c.readyIs(t, webKey, metav1.ConditionTrue, ReasonReconciled))

	// A ScaledObject the user writes, with a TLS trigger of their own and a second trigger.
	mine := newHTTPSO(ns, "mine", "mine.trigger.example.com", "app", 80)
	mine.Annotations = map[string]string{v1alpha1.SkipScaledObjectCreationAnnotation: "true"}
	c.create(t, mine)
	mineKey := client.ObjectKeyFromObject(mine)
	users := &unstructured.Unstructured{Object: map[string]any{
		"metadata": map[string]any{"namespace": ns, "name": "mine"},
		"spec": map[string]any{
			"scaleTargetRef": map[string]any{"name": "mine"},
			"triggers": []any{
				map[string]any{"type": "external-push", "metadata": map[string]any{
					"scalerAddress": testScalerAddress, "httpScaledObject": "mine", "enableTLS": "true"},
					"authenticationRef": map[string]any{"name": "own-auth"}},
				map[string]any{"type": "cron", "metadata": map[string]any{
					"timezone": "Etc/UTC", "start": "0 8 * * *", "end": "0 18 * * *", "desiredReplicas": "2"}},
			},
		},
	}}
	users.SetGroupVersionKind(resources.ScaledObjectGVK)
	c.create(t, users)
	eventually(t, within, c.readyIs(t, mineKey, metav1.ConditionTrue, ReasonScaledObjectSkipped))
	version := c.scaledObject(t, mineKey).GetResourceVersion()

	// The operator restarts with TLS on: the existing ScaledObject is rewritten, a new one is
	// created with TLS, and one update event says so.
	stop()
	stop = c.runReconciler(t, tls)
	eventually(t, within, c.triggerIs(t, webKey, tlsTrigger("web")))
	api := newHTTPSO(ns, "api", "api.trigger.example.com", "app", 80)
	c.create(t, api)
	apiKey := client.ObjectKeyFromObject(api)
	eventually(t, within, c.triggerIs(t, apiKey, tlsTrigger("api")))
	eventually(t, within, c.readyIs(t, webKey, metav1.ConditionTrue, ReasonReconciled))
	eventually(t, within, c.eventFor(t, webKey, EventScaledObjectUpdated, "Updated ScaledObject web"))

	// A user's edit to the trigger is put back with the TLS settings.
	edit := c.scaledObject(t, webKey)
	patch := []byte(`{"spec":{"triggers":[{"type":"external-push","metadata":{"scalerAddress":"` + testScalerAddress +
		`","httpScaledObject":"web"}}]}}`)
	if err := c.kube.Patch(t.Context(), edit, client.RawPatch(types.MergePatchType, patch), client.FieldOwner("kubectl-edit")); err != nil {
		t.Fatalf("edit ScaledObject: %v", err)
	}
	eventually(t, within, c.triggerIs(t, webKey, tlsTrigger("web")))

	// And back off: enableTLS and authenticationRef leave every ScaledObject lobby owns.
	stop()
	c.runReconciler(t, plain)
	eventually(t, within, c.triggerIs(t, webKey, plainTrigger("web")))
	eventually(t, within, c.triggerIs(t, apiKey, plainTrigger("api")))
	eventually(t, within, c.readyIs(t, apiKey, metav1.ConditionTrue, ReasonReconciled))

	if got := c.scaledObject(t, mineKey); got == nil || got.GetResourceVersion() != version {
		t.Errorf("the user's ScaledObject = %v, want it untouched at resourceVersion %s through both restarts", got, version)
	}
}

package resources

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/lobby-http/lobby/operator/api/v1alpha1"
)

func TestOrphanedScaledObjectHasNoOwner(t *testing.T) {
	tests := []struct {
		name      string
		value     string
		wantOwner bool
	}{
		{"the orphan annotation set to true leaves out the owner reference", "true", false},
		{"any other value of the annotation keeps the owner reference", "yes", true},
		{"no annotation keeps the owner reference", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hso := object(func(h *v1alpha1.HTTPScaledObject) {
				if tt.value != "" {
					h.Annotations = map[string]string{v1alpha1.OrphanScaledObjectAnnotation: tt.value}
				}
			})
			so, err := ScaledObject(hso, plain)
			if err != nil {
				t.Fatal(err)
			}
			if got := IsControlledBy(so, hso); got != tt.wantOwner {
				t.Errorf("IsControlledBy(ScaledObject) = %v, want %v", got, tt.wantOwner)
			}
			if tt.wantOwner == false && !Adoptable(so, hso) {
				t.Error("an orphaned ScaledObject lobby wrote is not adoptable by its own HTTPScaledObject")
			}
		})
	}
}

func TestAdoptable(t *testing.T) {
	hso := object(nil)
	// addOn is a ScaledObject as the KEDA HTTP Add-on writes it, here without an owner reference
	// (the add-on's orphan annotation).
	const addOn = `
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {namespace: shop, name: web}
spec:
  scaleTargetRef: {name: web-deploy}
  pollingInterval: 15
  advanced: {restoreToOriginalReplicaCount: true}
  triggers:
  - type: external-push
    metadata:
      scalerAddress: keda-add-ons-http-external-scaler.keda:9090
      httpScaledObject: web
`
	tests := []struct {
		name   string
		mutate func(*unstructured.Unstructured)
		want   bool
	}{
		{"the add-on's ScaledObject without an owner is adopted", func(*unstructured.Unstructured) {}, true},
		{"a ScaledObject controlled by something else is not adopted", func(u *unstructured.Unstructured) {
			u.SetOwnerReferences([]metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: "x", UID: "u", Controller: ptr.To(true)}})
		}, false},
		{"a ScaledObject whose trigger names another HTTPScaledObject is not adopted", func(u *unstructured.Unstructured) {
			_ = unstructured.SetNestedSlice(u.Object, []any{map[string]any{"type": "external-push",
				"metadata": map[string]any{"httpScaledObject": "other"}}}, "spec", "triggers")
		}, false},
		{"a user's own ScaledObject with the HTTP trigger beside a cron trigger is not adopted", func(u *unstructured.Unstructured) {
			triggers, _, _ := unstructured.NestedSlice(u.Object, "spec", "triggers")
			_ = unstructured.SetNestedSlice(u.Object, append(triggers, map[string]any{"type": "cron",
				"metadata": map[string]any{"timezone": "Etc/UTC", "start": "0 8 * * *", "end": "0 18 * * *", "desiredReplicas": "2"}}), "spec", "triggers")
		}, false},
		{"a ScaledObject of a user's own with a cpu trigger is not adopted", func(u *unstructured.Unstructured) {
			_ = unstructured.SetNestedSlice(u.Object, []any{map[string]any{"type": "cpu",
				"metadata": map[string]any{"value": "50"}}}, "spec", "triggers")
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			so := &unstructured.Unstructured{}
			if err := yaml.Unmarshal([]byte(addOn), &so.Object); err != nil {
				t.Fatal(err)
			}
			tt.mutate(so)
			if got := Adoptable(so, hso); got != tt.want {
				t.Errorf("Adoptable() = %v, want %v", got, tt.want)
			}
		})
	}
}

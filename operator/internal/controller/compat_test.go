package controller

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"

	"github.com/lobby-http/lobby/operator/api/v1alpha1"
)

// addOnManifests holds HTTPScaledObjects written in the KEDA HTTP Add-on's documented v1alpha1
// format, which lobby accepts unchanged.
const addOnManifests = "../../../e2e/testdata/addon"

func TestAddOnManifests(t *testing.T) {
	// want is the ScaledObject spec each manifest must produce (nil: none, the skip annotation).
	want := map[string]map[string]any{
		"v0.8-request-rate.yaml": {
			"scaleTargetRef.name": "xkcd", "scaleTargetRef.kind": "Deployment", "scaleTargetRef.apiVersion": "apps/v1",
			"minReplicaCount": 5, "maxReplicaCount": 10, "cooldownPeriod": 300, "initialCooldownPeriod": 0,
		},
		"v0.8-target-pending-requests.yaml": {
			"scaleTargetRef.name": "legacy", "scaleTargetRef.kind": "Deployment", "scaleTargetRef.apiVersion": "apps/v1",
			"minReplicaCount": 0, "maxReplicaCount": 100, "cooldownPeriod": 300, "initialCooldownPeriod": 0,
		},
		"v0.9-concurrency-port-name.yaml": {
			"scaleTargetRef.name": "api-server", "scaleTargetRef.kind": "Deployment",
			"minReplicaCount": 0, "maxReplicaCount": 3, "cooldownPeriod": 60,
		},
		"v0.12-every-field.yaml": {
			"scaleTargetRef.name": "shop", "scaleTargetRef.kind": "StatefulSet", "scaleTargetRef.apiVersion": "apps/v1",
			"minReplicaCount": 1, "maxReplicaCount": 20, "cooldownPeriod": 900, "initialCooldownPeriod": 120,
		},
		"v0.10-skip-scaledobject.yaml": nil,
	}
	files, err := filepath.Glob(filepath.Join(addOnManifests, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("find the add-on manifests in %s: %v", addOnManifests, err)
	}
	var names []string
	for _, f := range files {
		names = append(names, filepath.Base(f))
	}
	for name := range want {
		if !slices.Contains(names, name) {
			t.Errorf("manifest %s is expected but missing from %s", name, addOnManifests)
		}
	}

	c := startCluster(t)
	ns := c.namespace(t, "addon")
	for _, svc := range [][]string{{"xkcd", "http=8080"}, {"legacy", "http=80"}, {"api", "http=80"},
		{"shop", "web=8080"}, {"shop-sorry", "http=80"}, {"custom", "web=8080"}} {
		c.service(t, ns, svc[0], svc[1:]...)
	}
	for _, name := range names {
		spec, known := want[name]
		t.Run(name+" is accepted unchanged and scaled as the add-on would", func(t *testing.T) {
			if !known {
				t.Fatalf("manifest %s has no expected ScaledObject in this test", name)
			}
			raw, err := os.ReadFile(filepath.Join(addOnManifests, name))
			if err != nil {
				t.Fatal(err)
			}
			manifest := &unstructured.Unstructured{}
			if err := yaml.Unmarshal(raw, &manifest.Object); err != nil {
				t.Fatalf("parse %s: %v", name, err)
			}
			obj := manifest.DeepCopy()
			obj.SetNamespace(ns) // As `kubectl apply -n addon -f` does.
			if err := c.kube.Create(t.Context(), obj); err != nil {
				t.Fatalf("the API server refused %s: %v", name, err)
			}
			key := types.NamespacedName{Namespace: ns, Name: obj.GetName()}

			// Nothing the user wrote was pruned or rewritten.
			stored := &unstructured.Unstructured{}
			stored.SetGroupVersionKind(v1alpha1.GroupVersion.WithKind("HTTPScaledObject"))
			if err := c.kube.Get(t.Context(), key, stored); err != nil {
				t.Fatal(err)
			}
			if path, ok := subset(manifest.Object["spec"], stored.Object["spec"], "spec"); !ok {
				t.Errorf("stored object differs from the manifest at %s: stored spec %v", path, stored.Object["spec"])
			}

			if spec == nil {
				eventually(t, within, c.readyIs(t, key, metav1.ConditionTrue, ReasonScaledObjectSkipped))
				if so := c.scaledObject(t, key); so != nil {
					t.Errorf("ScaledObject %s exists despite the skip annotation", key)
				}
				return
			}
			spec["triggers"] = []any{map[string]any{"type": "external-push",
				"metadata": map[string]any{"scalerAddress": testScalerAddress, "httpScaledObject": obj.GetName()}}}
			eventually(t, within, c.soIs(t, key, spec))
			eventually(t, within, c.readyIs(t, key, metav1.ConditionTrue, ReasonReconciled))
		})
	}
}

// subset reports whether every value in want appears in got, and otherwise the first path that
// differs.
func subset(want, got any, path string) (string, bool) {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return path, false
		}
		for k, v := range w {
			if p, ok := subset(v, g[k], path+"."+k); !ok {
				return p, false
			}
		}
		return "", true
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			return path, false
		}
		for i := range w {
			if p, ok := subset(w[i], g[i], fmt.Sprintf("%s[%d]", path, i)); !ok {
				return p, false
			}
		}
		return "", true
	default:
		return path, fmt.Sprint(want) == fmt.Sprint(got)
	}
}

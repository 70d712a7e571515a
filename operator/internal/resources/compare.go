package resources

import (
	"encoding/json"
	"reflect"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// NeedsApply reports whether applying desired (as built by ScaledObject) under fieldManager would
// change live. It is true when a field desired sets has another value in live (including a field a
// user edited), when live lacks the controller reference, and when live still carries a label or
// annotation that fieldManager applied before but desired no longer has. Fields nobody asked lobby
// to own, such as pollingInterval set by a user, do not count.
func NeedsApply(desired, live *unstructured.Unstructured, fieldManager string) bool {
	if live == nil {
		return true
	}
	if !contains(live.Object["spec"], desired.Object["spec"]) {
		return true
	}
	if !containsStrings(live.GetLabels(), desired.GetLabels()) ||
		!containsStrings(live.GetAnnotations(), desired.GetAnnotations()) {
		return true
	}
	for _, want := range desired.GetOwnerReferences() {
		if !hasOwnerReference(live.GetOwnerReferences(), want) {
			return true
		}
	}
	labels, annotations := appliedMetadataKeys(live.GetManagedFields(), fieldManager)
	for k := range labels {
		if _, ok := desired.GetLabels()[k]; !ok {
			return true
		}
	}
	for k := range annotations {
		if _, ok := desired.GetAnnotations()[k]; !ok {
			return true
		}
	}
	return false
}

// contains reports whether live has every map key of want with an equal value. Lists are
// compared whole: KEDA's CRD declares them atomic, so an apply replaces them whole.
func contains(live, want any) bool {
	switch w := want.(type) {
	case map[string]any:
		l, ok := live.(map[string]any)
		if !ok {
			return false
		}
		for k, wv := range w {
			lv, ok := l[k]
			if !ok || !contains(lv, wv) {
				return false
			}
		}
		return true
	default:
		return reflect.DeepEqual(normalize(live), normalize(want))
	}
}

// normalize maps the numeric types that appear in unstructured objects to one, so that a value
// decoded from JSON equals the same value built in Go.
func normalize(v any) any {
	switch n := v.(type) {
	case int:
		return int64(n)
	case int32:
		return int64(n)
	case float64:
		if n == float64(int64(n)) {
			return int64(n)
		}
		return n
	case []any:
		out := make([]any, len(n))
		for i := range n {
			out[i] = normalize(n[i])
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(n))
		for k, e := range n {
			out[k] = normalize(e)
		}
		return out
	default:
		return v
	}
}

func containsStrings(live, want map[string]string) bool {
	for k, v := range want {
		if lv, ok := live[k]; !ok || lv != v {
			return false
		}
	}
	return true
}

func hasOwnerReference(refs []metav1.OwnerReference, want metav1.OwnerReference) bool {
	for _, r := range refs {
		if r.UID == want.UID && r.APIVersion == want.APIVersion && r.Kind == want.Kind && r.Name == want.Name &&
			(r.Controller != nil && *r.Controller) == (want.Controller != nil && *want.Controller) {
			return true
		}
	}
	return false
}

// appliedMetadataKeys returns the label and annotation keys that fieldManager owns through an
// apply, read from the managed fields' FieldsV1 sets ({"f:metadata":{"f:labels":{"f:key":{}}}}).
func appliedMetadataKeys(entries []metav1.ManagedFieldsEntry, fieldManager string) (labels, annotations map[string]bool) {
	labels, annotations = map[string]bool{}, map[string]bool{}
	for _, e := range entries {
		if e.Manager != fieldManager || e.Operation != metav1.ManagedFieldsOperationApply || e.Subresource != "" || e.FieldsV1 == nil {
			continue
		}
		var fields struct {
			Metadata struct {
				Labels      map[string]json.RawMessage `json:"f:labels"`
				Annotations map[string]json.RawMessage `json:"f:annotations"`
			} `json:"f:metadata"`
		}
		if err := json.Unmarshal(e.FieldsV1.Raw, &fields); err != nil {
			// An unreadable set only means a stale key may survive until the next real change.
			continue
		}
		for k := range fields.Metadata.Labels {
			if len(k) > 2 && k[:2] == "f:" {
				labels[k[2:]] = true
			}
		}
		for k := range fields.Metadata.Annotations {
			if len(k) > 2 && k[:2] == "f:" {
				annotations[k[2:]] = true
			}
		}
	}
	return labels, annotations
}

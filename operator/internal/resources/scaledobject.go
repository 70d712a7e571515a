// Package resources builds the objects the operator owns from an HTTPScaledObject. It is pure: it
// reads nothing from the cluster, so every rule of the mapping is unit-tested without one.
package resources

import (
	"errors"
	"fmt"
	"maps"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/lobby-http/lobby/operator/api/v1alpha1"
)

// ScaledObjectGVK is the group, version and kind of KEDA's ScaledObject. The operator handles
// ScaledObjects as unstructured objects so that lobby does not depend on KEDA's Go module.
var ScaledObjectGVK = schema.GroupVersionKind{Group: "keda.sh", Version: "v1alpha1", Kind: "ScaledObject"}

// Defaults the KEDA HTTP Add-on documents for fields an HTTPScaledObject leaves out. The builder
// writes them explicitly, so that `kubectl get scaledobject` shows what is in force.
const (
	// DefaultMinReplicas is the replica count when idle: zero, the point of lobby.
	DefaultMinReplicas int32 = 0
	// DefaultMaxReplicas is the largest replica count.
	DefaultMaxReplicas int32 = 100
	// DefaultCooldownPeriod is how many seconds the target must be idle before it is scaled to zero.
	DefaultCooldownPeriod int32 = 300
	// DefaultInitialCooldownPeriod is how many seconds after creation the target is left alone.
	DefaultInitialCooldownPeriod int32 = 0
	// DefaultAPIVersion is the API version of the target workload when scaleTargetRef has none.
	DefaultAPIVersion = "apps/v1"
	// DefaultKind is the kind of the target workload when scaleTargetRef has none.
	DefaultKind = "Deployment"
	// PollingInterval is how often, in seconds, KEDA asks the scaler whether the target is
	// active, the KEDA HTTP Add-on's value. Activation is pushed, so this only bounds how late a
	// missed push is noticed, and how often the HPA's metric is refreshed outside it.
	PollingInterval = 15
)

// Trigger fields of the one trigger each ScaledObject has; the scaler reads them.
const (
	// TriggerType is KEDA's push-based external scaler.
	TriggerType = "external-push"
	// MetadataScalerAddress is the trigger metadata key with the scaler's host:port.
	MetadataScalerAddress = "scalerAddress"
	// MetadataHTTPScaledObject is the trigger metadata key with the HTTPScaledObject's name; the
	// scaler takes the namespace from the ScaledObject KEDA names in its requests.
	MetadataHTTPScaledObject = "httpScaledObject"
	// MetadataEnableTLS is the trigger metadata key that makes KEDA dial the scaler with TLS.
	MetadataEnableTLS = "enableTLS"
)

// Kinds of KEDA object a trigger's authenticationRef may name.
const (
	// KindTriggerAuthentication is looked up in the ScaledObject's own namespace.
	KindTriggerAuthentication = "TriggerAuthentication"
	// KindClusterTriggerAuthentication is cluster-scoped; KEDA reads the Secrets it names from
	// KEDA's own namespace.
	KindClusterTriggerAuthentication = "ClusterTriggerAuthentication"
)

// Trigger says how the trigger of every ScaledObject reaches lobby's scaler.
type Trigger struct {
	// ScalerAddress is the host:port KEDA dials for the scaler.
	ScalerAddress string
	// TLS makes KEDA dial with TLS (enableTLS: "true" in the metadata). KEDA would also turn TLS
	// on by itself when the authentication gives a CA or a client certificate; writing it out
	// means a TriggerAuthentication that lacks them fails the handshake instead of falling back
	// to plain text.
	TLS bool
	// Auth, when its Name is set, is written as the trigger's authenticationRef: the KEDA object
	// that gives caCert, tlsClientCert and tlsClientKey.
	Auth AuthenticationRef
}

// AuthenticationRef names a KEDA TriggerAuthentication or ClusterTriggerAuthentication.
type AuthenticationRef struct {
	// Kind is KindTriggerAuthentication or KindClusterTriggerAuthentication.
	Kind string
	// Name is the object's name; empty means no reference.
	Name string
}

// String renders the reference as Kind/name, the form ParseAuthenticationRef reads.
func (a AuthenticationRef) String() string {
	if a.Name == "" {
		return ""
	}
	return a.Kind + "/" + a.Name
}

// ParseAuthenticationRef reads "TriggerAuthentication/<name>" or
// "ClusterTriggerAuthentication/<name>". The kind is required, because the two are looked up in
// different places and a guess would fail silently in KEDA.
func ParseAuthenticationRef(s string) (AuthenticationRef, error) {
	kind, name, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok || name == "" {
		return AuthenticationRef{}, fmt.Errorf("parse authentication reference %q: want %s/<name> or %s/<name>",
			s, KindClusterTriggerAuthentication, KindTriggerAuthentication)
	}
	if kind != KindTriggerAuthentication && kind != KindClusterTriggerAuthentication {
		return AuthenticationRef{}, fmt.Errorf("parse authentication reference %q: kind %q is neither %s nor %s",
			s, kind, KindClusterTriggerAuthentication, KindTriggerAuthentication)
	}
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return AuthenticationRef{}, fmt.Errorf("parse authentication reference %q: invalid name %q: %s",
			s, name, strings.Join(errs, "; "))
	}
	return AuthenticationRef{Kind: kind, Name: name}, nil
}

// ErrInvalidSpec is returned, wrapped with what to fix, for an HTTPScaledObject no ScaledObject
// can be built from. The CRD rejects most such objects; this catches what it cannot express and
// objects stored before a stricter CRD was installed.
var ErrInvalidSpec = errors.New("invalid HTTPScaledObject spec")

// annotations not copied to the ScaledObject: kubectl's record of the HTTPScaledObject itself, and
// lobby's own switch, which means nothing on a ScaledObject.
var skippedAnnotations = map[string]bool{
	"kubectl.kubernetes.io/last-applied-configuration": true,
	v1alpha1.SkipScaledObjectCreationAnnotation:        true,
}

// Target returns the workload reference with defaults applied, as apiVersion, kind and name.
func Target(ref v1alpha1.ScaleTargetRef) (apiVersion, kind, name string) {
	apiVersion, kind = ref.APIVersion, ref.Kind
	if apiVersion == "" {
		apiVersion = DefaultAPIVersion
	}
	if kind == "" {
		kind = DefaultKind
	}
	return apiVersion, kind, ref.Name
}

// Replicas returns the effective minimum and maximum replica counts, defaults applied.
func Replicas(r *v1alpha1.ReplicaStruct) (lo, hi int32) {
	lo, hi = DefaultMinReplicas, DefaultMaxReplicas
	if r != nil && r.Min != nil {
		lo = *r.Min
	}
	if r != nil && r.Max != nil {
		hi = *r.Max
	}
	return lo, hi
}

// Validate reports, wrapping ErrInvalidSpec, the first problem that keeps a ScaledObject from
// being built, naming the field to fix.
func Validate(spec *v1alpha1.HTTPScaledObjectSpec) error {
	ref := spec.ScaleTargetRef
	var problems []string
	if ref.Name == "" {
		problems = append(problems, "spec.scaleTargetRef.name is empty: name the workload to scale")
	}
	if ref.Service == "" {
		problems = append(problems, "spec.scaleTargetRef.service is empty: name the Service to route to")
	}
	if (ref.Port == 0) == (ref.PortName == "") {
		problems = append(problems, "spec.scaleTargetRef: set exactly one of port and portName")
	}
	if f := spec.ColdStartTimeoutFailoverRef; f != nil && (f.Port == 0) == (f.PortName == "") {
		problems = append(problems, "spec.coldStartTimeoutFailoverRef: set exactly one of port and portName")
	}
	lo, hi := Replicas(spec.Replicas)
	switch {
	case lo < 0:
		problems = append(problems, fmt.Sprintf("spec.replicas.min is %d: it must not be negative", lo))
	case hi < 1:
		problems = append(problems, fmt.Sprintf("spec.replicas.max is %d: it must be at least 1", hi))
	case lo > hi && (spec.Replicas == nil || spec.Replicas.Max == nil):
		problems = append(problems, fmt.Sprintf("spec.replicas.min is %d, above the default maximum of %d: set spec.replicas.max", lo, hi))
	case lo > hi:
		problems = append(problems, fmt.Sprintf("spec.replicas.min (%d) is greater than spec.replicas.max (%d)", lo, hi))
	}
	if p := spec.CooldownPeriod; p != nil && *p < 0 {
		problems = append(problems, fmt.Sprintf("spec.scaledownPeriod is %d: it must not be negative", *p))
	}
	if p := spec.InitialCooldownPeriod; p != nil && *p < 0 {
		problems = append(problems, fmt.Sprintf("spec.initialCooldownPeriod is %d: it must not be negative", *p))
	}
	if m := spec.ScalingMetric; m != nil && m.Concurrency != nil && m.Rate != nil {
		problems = append(problems, "spec.scalingMetric: set only one of concurrency and requestRate")
	}
	if len(problems) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrInvalidSpec, strings.Join(problems, "; "))
}

// ScaledObject returns the KEDA ScaledObject lobby keeps for hso: same name and namespace,
// controlled by hso, scaling hso's workload through the scaler as trigger says. The result
// holds only the fields lobby owns, ready for a server-side apply. It fails, wrapping
// ErrInvalidSpec, when hso's spec is invalid.
func ScaledObject(hso *v1alpha1.HTTPScaledObject, trigger Trigger) (*unstructured.Unstructured, error) {
	if err := Validate(&hso.Spec); err != nil {
		return nil, err
	}
	apiVersion, kind, name := Target(hso.Spec.ScaleTargetRef)
	lo, hi := Replicas(hso.Spec.Replicas)
	cooldown, initial := DefaultCooldownPeriod, DefaultInitialCooldownPeriod
	if p := hso.Spec.CooldownPeriod; p != nil {
		cooldown = *p
	}
	if p := hso.Spec.InitialCooldownPeriod; p != nil {
		initial = *p
	}

	so := &unstructured.Unstructured{Object: map[string]any{
		"spec": map[string]any{
			"scaleTargetRef": map[string]any{
				"apiVersion": apiVersion,
				"kind":       kind,
				"name":       name,
			},
			"minReplicaCount":       int64(lo),
			"maxReplicaCount":       int64(hi),
			"cooldownPeriod":        int64(cooldown),
			"initialCooldownPeriod": int64(initial),
			"pollingInterval":       int64(PollingInterval),
			"advanced": map[string]any{
				"restoreToOriginalReplicaCount": true,
			},
			"triggers": []any{triggerSpec(hso.Name, trigger)},
		},
	}}
	so.SetGroupVersionKind(ScaledObjectGVK)
	so.SetNamespace(hso.Namespace)
	so.SetName(hso.Name)
	if len(hso.Labels) > 0 {
		so.SetLabels(maps.Clone(hso.Labels))
	}
	annotations := map[string]string{}
	for k, v := range hso.Annotations {
		if !skippedAnnotations[k] {
			annotations[k] = v
		}
	}
	if len(annotations) > 0 {
		so.SetAnnotations(annotations)
	}
	if !Orphaned(hso) {
		so.SetOwnerReferences([]metav1.OwnerReference{OwnerReference(hso)})
	}
	return so, nil
}

// Orphaned reports whether hso carries the orphan annotation: its ScaledObject has no owner
// reference, so it stays when hso is deleted.
func Orphaned(hso *v1alpha1.HTTPScaledObject) bool {
	return hso.Annotations[v1alpha1.OrphanScaledObjectAnnotation] == "true"
}

// Adoptable reports whether so, which has no controller, was made for hso in the shape lobby
// and the KEDA HTTP Add-on write: its only trigger is an external-push trigger naming hso. Such
// are the ScaledObjects lobby writes for an object with the orphan annotation, and those the
// add-on left for one; lobby takes them over rather than reporting a name clash. A ScaledObject
// with more triggers is a user's own (the skip annotation's use) and is never adopted.
func Adoptable(so *unstructured.Unstructured, hso *v1alpha1.HTTPScaledObject) bool {
	if metav1.GetControllerOfNoCopy(so) != nil {
		return false
	}
	triggers, _, _ := unstructured.NestedSlice(so.Object, "spec", "triggers")
	if len(triggers) != 1 {
		return false
	}
	t, _ := triggers[0].(map[string]any)
	name, _, _ := unstructured.NestedString(t, "metadata", MetadataHTTPScaledObject)
	return t["type"] == TriggerType && name == hso.Name
}

// triggerSpec returns the one trigger of the ScaledObject named name. KEDA's CRD declares the
// trigger list atomic, so an apply replaces the trigger whole: turning TLS off removes enableTLS
// and authenticationRef from existing ScaledObjects too.
func triggerSpec(name string, trigger Trigger) map[string]any {
	metadata := map[string]any{
		MetadataScalerAddress:    trigger.ScalerAddress,
		MetadataHTTPScaledObject: name,
	}
	if trigger.TLS {
		metadata[MetadataEnableTLS] = "true"
	}
	t := map[string]any{"type": TriggerType, "metadata": metadata}
	if a := trigger.Auth; a.Name != "" {
		// The kind is written even for TriggerAuthentication, KEDA's default, so that the live
		// object reads back exactly as applied.
		t["authenticationRef"] = map[string]any{"kind": a.Kind, "name": a.Name}
	}
	return t
}

// OwnerReference returns the controller reference from a ScaledObject to hso. It does not block
// the owner's deletion: that would need update rights on httpscaledobjects/finalizers where the
// OwnerReferencesPermissionEnforcement admission plugin is on, for no benefit to users.
func OwnerReference(hso *v1alpha1.HTTPScaledObject) metav1.OwnerReference {
	controller := true
	return metav1.OwnerReference{
		APIVersion: v1alpha1.GroupVersion.String(),
		Kind:       "HTTPScaledObject",
		Name:       hso.Name,
		UID:        hso.UID,
		Controller: &controller,
	}
}

// IsControlledBy reports whether obj's controller reference points at hso.
func IsControlledBy(obj metav1.Object, hso *v1alpha1.HTTPScaledObject) bool {
	ref := metav1.GetControllerOfNoCopy(obj)
	return ref != nil && ref.UID == hso.UID && ref.Kind == "HTTPScaledObject" &&
		strings.HasPrefix(ref.APIVersion, v1alpha1.GroupVersion.Group+"/")
}

package resources

import (
	"errors"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/lobby-http/lobby/operator/api/v1alpha1"
)

const scaler = "lobby-scaler.lobby.svc.cluster.local:9090"

// plain is the trigger setting of a scaler without TLS, the default.
var plain = Trigger{ScalerAddress: scaler}

func object(mutate func(*v1alpha1.HTTPScaledObject)) *v1alpha1.HTTPScaledObject {
	hso := &v1alpha1.HTTPScaledObject{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web", UID: types.UID("uid-1")},
		Spec: v1alpha1.HTTPScaledObjectSpec{
			Hosts:          []string{"shop.example.com"},
			ScaleTargetRef: v1alpha1.ScaleTargetRef{Name: "web-deploy", Service: "web", Port: 8080},
		},
	}
	if mutate != nil {
		mutate(hso)
	}
	return hso
}

func TestScaledObject(t *testing.T) {
	owner := `
  ownerReferences:
  - apiVersion: http.keda.sh/v1alpha1
    kind: HTTPScaledObject
    name: web
    uid: uid-1
    controller: true`
	trigger := `
  triggers:
  - type: external-push
    metadata:
      scalerAddress: ` + scaler + `
      httpScaledObject: web`
	tests := []struct {
		name    string
		mutate  func(*v1alpha1.HTTPScaledObject)
		trigger *Trigger // nil is plain
		want    string
	}{
		{
			name: "a minimal object gets the add-on's defaults written out",
			want: `
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  namespace: shop
  name: web` + owner + `
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web-deploy}
  minReplicaCount: 0
  maxReplicaCount: 100
  cooldownPeriod: 300
  initialCooldownPeriod: 0
  pollingInterval: 15
  advanced: {restoreToOriginalReplicaCount: true}` + trigger,
		},
		{
			name: "every scaling field is carried over",
			mutate: func(h *v1alpha1.HTTPScaledObject) {
				h.Spec.ScaleTargetRef.APIVersion = "argoproj.io/v1alpha1"
				h.Spec.ScaleTargetRef.Kind = "Rollout"
				h.Spec.Replicas = &v1alpha1.ReplicaStruct{Min: ptr.To[int32](2), Max: ptr.To[int32](7)}
				h.Spec.CooldownPeriod = ptr.To[int32](60)
				h.Spec.InitialCooldownPeriod = ptr.To[int32](120)
			},
			want: `
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  namespace: shop
  name: web` + owner + `
spec:
  scaleTargetRef: {apiVersion: argoproj.io/v1alpha1, kind: Rollout, name: web-deploy}
  minReplicaCount: 2
  maxReplicaCount: 7
  cooldownPeriod: 60
  initialCooldownPeriod: 120
  pollingInterval: 15
  advanced: {restoreToOriginalReplicaCount: true}` + trigger,
		},
		{
			name: "only a minimum keeps the default maximum",
			mutate: func(h *v1alpha1.HTTPScaledObject) {
				h.Spec.Replicas = &v1alpha1.ReplicaStruct{Min: ptr.To[int32](1)}
				h.Spec.CooldownPeriod = ptr.To[int32](0)
			},
			want: `
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  namespace: shop
  name: web` + owner + `
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web-deploy}
  minReplicaCount: 1
  maxReplicaCount: 100
  cooldownPeriod: 0
  initialCooldownPeriod: 0
  pollingInterval: 15
  advanced: {restoreToOriginalReplicaCount: true}` + trigger,
		},
		{
			name: "labels and annotations are copied except kubectl's record and the skip switch",
			mutate: func(h *v1alpha1.HTTPScaledObject) {
				h.Labels = map[string]string{"app": "web"}
				h.Annotations = map[string]string{
					"autoscaling.keda.sh/paused":                       "true",
					"kubectl.kubernetes.io/last-applied-configuration": "{}",
					v1alpha1.SkipScaledObjectCreationAnnotation:        "false",
				}
				h.Spec.ScaleTargetRef.Port = 0
				h.Spec.ScaleTargetRef.PortName = "http"
			},
			want: `
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  namespace: shop
  name: web
  labels: {app: web}
  annotations: {autoscaling.keda.sh/paused: "true"}` + owner + `
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web-deploy}
  minReplicaCount: 0
  maxReplicaCount: 100
  cooldownPeriod: 300
  initialCooldownPeriod: 0
  pollingInterval: 15
  advanced: {restoreToOriginalReplicaCount: true}` + trigger,
		},
		{
			name: "routing and hold settings do not reach the ScaledObject",
			mutate: func(h *v1alpha1.HTTPScaledObject) {
				h.Spec.PathPrefixes = []string{"/api"}
				h.Spec.Headers = []v1alpha1.Header{{Name: "X-Tenant"}}
				h.Spec.ScalingMetric = &v1alpha1.ScalingMetricSpec{Concurrency: &v1alpha1.ConcurrencyMetricSpec{TargetValue: 5}}
				h.Spec.ColdStart = &v1alpha1.ColdStartSpec{MaxPendingRequests: ptr.To[int32](10)}
			},
			want: `
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  namespace: shop
  name: web` + owner + `
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web-deploy}
  minReplicaCount: 0
  maxReplicaCount: 100
  cooldownPeriod: 300
  initialCooldownPeriod: 0
  pollingInterval: 15
  advanced: {restoreToOriginalReplicaCount: true}` + trigger,
		},
		{
			name:    "TLS without an authentication only turns TLS on",
			trigger: &Trigger{ScalerAddress: scaler, TLS: true},
			want: `
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  namespace: shop
  name: web` + owner + `
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web-deploy}
  minReplicaCount: 0
  maxReplicaCount: 100
  cooldownPeriod: 300
  initialCooldownPeriod: 0
  pollingInterval: 15
  advanced: {restoreToOriginalReplicaCount: true}
  triggers:
  - type: external-push
    metadata:
      scalerAddress: ` + scaler + `
      httpScaledObject: web
      enableTLS: "true"`,
		},
		{
			name: "TLS with a ClusterTriggerAuthentication names it with its kind",
			trigger: &Trigger{ScalerAddress: scaler, TLS: true,
				Auth: AuthenticationRef{Kind: KindClusterTriggerAuthentication, Name: "lobby-scaler-tls"}},
			want: `
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  namespace: shop
  name: web` + owner + `
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web-deploy}
  minReplicaCount: 0
  maxReplicaCount: 100
  cooldownPeriod: 300
  initialCooldownPeriod: 0
  pollingInterval: 15
  advanced: {restoreToOriginalReplicaCount: true}
  triggers:
  - type: external-push
    metadata:
      scalerAddress: ` + scaler + `
      httpScaledObject: web
      enableTLS: "true"
    authenticationRef: {kind: ClusterTriggerAuthentication, name: lobby-scaler-tls}`,
		},
		{
			name: "a TriggerAuthentication, KEDA's default kind, is named with its kind too",
			trigger: &Trigger{ScalerAddress: scaler, TLS: true,
				Auth: AuthenticationRef{Kind: KindTriggerAuthentication, Name: "scaler-client"}},
			want: `
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  namespace: shop
  name: web` + owner + `
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web-deploy}
  minReplicaCount: 0
  maxReplicaCount: 100
  cooldownPeriod: 300
  initialCooldownPeriod: 0
  pollingInterval: 15
  advanced: {restoreToOriginalReplicaCount: true}
  triggers:
  - type: external-push
    metadata:
      scalerAddress: ` + scaler + `
      httpScaledObject: web
      enableTLS: "true"
    authenticationRef: {kind: TriggerAuthentication, name: scaler-client}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			trigger := plain
			if tt.trigger != nil {
				trigger = *tt.trigger
			}
			got, err := ScaledObject(object(tt.mutate), trigger)
			if err != nil {
				t.Fatalf("ScaledObject() error = %v", err)
			}
			want := &unstructured.Unstructured{}
			if err := yaml.Unmarshal([]byte(tt.want), &want.Object); err != nil {
				t.Fatal(err)
			}
			gotYAML, _ := yaml.Marshal(got.Object)
			wantYAML, _ := yaml.Marshal(want.Object)
			if string(gotYAML) != string(wantYAML) {
				t.Errorf("ScaledObject() =\n%s\nwant\n%s", gotYAML, wantYAML)
			}
			// The desired object is exactly what an unchanged live copy holds, so no apply follows.
			if NeedsApply(got, want, "lobby-operator") {
				t.Error("NeedsApply(desired, identical live) = true, want false")
			}
		})
	}
}

func TestScaledObjectRefusesInvalidSpecs(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*v1alpha1.HTTPScaledObject)
		want   string
	}{
		{"a missing workload name is named", func(h *v1alpha1.HTTPScaledObject) { h.Spec.ScaleTargetRef.Name = "" }, "spec.scaleTargetRef.name"},
		{"a missing Service is named", func(h *v1alpha1.HTTPScaledObject) { h.Spec.ScaleTargetRef.Service = "" }, "spec.scaleTargetRef.service"},
		{"both port and portName are refused", func(h *v1alpha1.HTTPScaledObject) { h.Spec.ScaleTargetRef.PortName = "http" }, "exactly one of port and portName"},
		{"neither port nor portName is refused", func(h *v1alpha1.HTTPScaledObject) { h.Spec.ScaleTargetRef.Port = 0 }, "exactly one of port and portName"},
		{"a failover ref without a port is refused", func(h *v1alpha1.HTTPScaledObject) {
			h.Spec.ColdStartTimeoutFailoverRef = &v1alpha1.ColdStartTimeoutFailoverRef{Service: "sorry"}
		}, "spec.coldStartTimeoutFailoverRef"},
		{"a minimum above the maximum is refused", func(h *v1alpha1.HTTPScaledObject) {
			h.Spec.Replicas = &v1alpha1.ReplicaStruct{Min: ptr.To[int32](5), Max: ptr.To[int32](2)}
		}, "spec.replicas.min (5) is greater than spec.replicas.max (2)"},
		{"a minimum above the default maximum asks for a maximum", func(h *v1alpha1.HTTPScaledObject) {
			h.Spec.Replicas = &v1alpha1.ReplicaStruct{Min: ptr.To[int32](150)}
		}, "set spec.replicas.max"},
		{"a zero maximum is refused", func(h *v1alpha1.HTTPScaledObject) {
			h.Spec.Replicas = &v1alpha1.ReplicaStruct{Max: ptr.To[int32](0)}
		}, "spec.replicas.max is 0"},
		{"a negative scaledown period is refused", func(h *v1alpha1.HTTPScaledObject) { h.Spec.CooldownPeriod = ptr.To[int32](-1) }, "spec.scaledownPeriod"},
		{"both scaling metrics are refused", func(h *v1alpha1.HTTPScaledObject) {
			h.Spec.ScalingMetric = &v1alpha1.ScalingMetricSpec{Concurrency: &v1alpha1.ConcurrencyMetricSpec{TargetValue: 1}, Rate: &v1alpha1.RateMetricSpec{TargetValue: 1}}
		}, "spec.scalingMetric"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			so, err := ScaledObject(object(tt.mutate), plain)
			if !errors.Is(err, ErrInvalidSpec) {
				t.Fatalf("ScaledObject() = %v, %v; want an error wrapping ErrInvalidSpec", so, err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ScaledObject() error = %q, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestNeedsApply(t *testing.T) {
	desired, err := ScaledObject(object(func(h *v1alpha1.HTTPScaledObject) { h.Labels = map[string]string{"app": "web"} }), plain)
	if err != nil {
		t.Fatal(err)
	}
	applied := `[{"manager":"lobby-operator","operation":"Apply","apiVersion":"keda.sh/v1alpha1",` +
		`"fieldsType":"FieldsV1","fieldsV1":{"f:metadata":{"f:labels":{"f:app":{},"f:team":{}}}}}]`
	tests := []struct {
		name   string
		mutate func(live *unstructured.Unstructured)
		want   bool
	}{
		{"an identical live object needs nothing", func(*unstructured.Unstructured) {}, false},
		{"a field a user added and lobby does not own needs nothing", func(l *unstructured.Unstructured) {
			_ = unstructured.SetNestedField(l.Object, int64(5), "spec", "fallback", "replicas")
			_ = unstructured.SetNestedField(l.Object, "Direct", "spec", "advanced", "scalingModifiers", "formula")
			l.SetLabels(map[string]string{"app": "web", "extra": "x"})
		}, false},
		{"a user's edit to an owned field is put back", func(l *unstructured.Unstructured) {
			_ = unstructured.SetNestedField(l.Object, int64(9), "spec", "maxReplicaCount")
		}, true},
		{"a trigger a user added is taken out", func(l *unstructured.Unstructured) {
			triggers, _, _ := unstructured.NestedSlice(l.Object, "spec", "triggers")
			_ = unstructured.SetNestedSlice(l.Object, append(triggers, map[string]any{"type": "cpu"}), "spec", "triggers")
		}, true},
		{"a polling interval a user changed is put back", func(l *unstructured.Unstructured) {
			_ = unstructured.SetNestedField(l.Object, int64(30), "spec", "pollingInterval")
		}, true},
		{"a replica count a user stopped restoring is put back", func(l *unstructured.Unstructured) {
			_ = unstructured.SetNestedField(l.Object, false, "spec", "advanced", "restoreToOriginalReplicaCount")
		}, true},
		{"a missing controller reference is put back", func(l *unstructured.Unstructured) { l.SetOwnerReferences(nil) }, true},
		{"a label lobby applied before and no longer wants is removed", func(l *unstructured.Unstructured) {
			l.SetLabels(map[string]string{"app": "web", "team": "a"})
			var mf []metav1.ManagedFieldsEntry
			if err := yaml.Unmarshal([]byte(applied), &mf); err != nil {
				t.Fatal(err)
			}
			l.SetManagedFields(mf)
		}, true},
		{"a label another manager owns is left alone", func(l *unstructured.Unstructured) {
			l.SetLabels(map[string]string{"app": "web", "team": "a"})
			var mf []metav1.ManagedFieldsEntry
			if err := yaml.Unmarshal([]byte(strings.Replace(applied, "lobby-operator", "kubectl", 1)), &mf); err != nil {
				t.Fatal(err)
			}
			l.SetManagedFields(mf)
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Round-trip through JSON, as objects read from the API server are.
			b, _ := desired.MarshalJSON()
			live := &unstructured.Unstructured{}
			if err := live.UnmarshalJSON(b); err != nil {
				t.Fatal(err)
			}
			tt.mutate(live)
			if got := NeedsApply(desired, live, "lobby-operator"); got != tt.want {
				t.Errorf("NeedsApply() = %v, want %v", got, tt.want)
			}
		})
	}
	if !NeedsApply(desired, nil, "lobby-operator") {
		t.Error("NeedsApply(desired, nil) = false, want true: a missing ScaledObject is created")
	}
}

func TestNeedsApplyFollowsTheTriggerSetting(t *testing.T) {
	tls := Trigger{ScalerAddress: scaler, TLS: true}
	auth := Trigger{ScalerAddress: scaler, TLS: true, Auth: AuthenticationRef{Kind: KindClusterTriggerAuthentication, Name: "lobby"}}
	other := Trigger{ScalerAddress: scaler, TLS: true, Auth: AuthenticationRef{Kind: KindTriggerAuthentication, Name: "lobby"}}
	tests := []struct {
		name        string
		live, wants Trigger
		want        bool
	}{
		{"turning TLS on rewrites a plain trigger", plain, tls, true},
		{"naming an authentication rewrites a TLS trigger", tls, auth, true},
		{"changing the authentication's kind rewrites the trigger", auth, other, true},
		{"turning TLS off takes enableTLS and the authentication out", auth, plain, true},
		{"a trigger already as configured needs nothing", auth, auth, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			liveSO, err := ScaledObject(object(nil), tt.live)
			if err != nil {
				t.Fatal(err)
			}
			desired, err := ScaledObject(object(nil), tt.wants)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := liveSO.MarshalJSON()
			live := &unstructured.Unstructured{}
			if err := live.UnmarshalJSON(b); err != nil {
				t.Fatal(err)
			}
			if got := NeedsApply(desired, live, "lobby-operator"); got != tt.want {
				t.Errorf("NeedsApply() = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseAuthenticationRef(t *testing.T) {
	tests := []struct {
		name, in string
		want     AuthenticationRef
		err      string
	}{
		{name: "a ClusterTriggerAuthentication is read", in: "ClusterTriggerAuthentication/lobby-scaler-tls",
			want: AuthenticationRef{Kind: KindClusterTriggerAuthentication, Name: "lobby-scaler-tls"}},
		{name: "a TriggerAuthentication is read, surrounding spaces ignored", in: " TriggerAuthentication/scaler.client ",
			want: AuthenticationRef{Kind: KindTriggerAuthentication, Name: "scaler.client"}},
		{name: "a name without a kind is refused", in: "lobby-scaler-tls",
			err: "want ClusterTriggerAuthentication/<name> or TriggerAuthentication/<name>"},
		{name: "a kind without a name is refused", in: "TriggerAuthentication/", err: "want ClusterTriggerAuthentication/<name>"},
		{name: "a kind in the wrong case is refused", in: "triggerauthentication/lobby", err: `kind "triggerauthentication" is neither`},
		{name: "another kind is refused", in: "Secret/lobby", err: `kind "Secret" is neither`},
		{name: "a name Kubernetes would refuse is refused", in: "TriggerAuthentication/Lobby_TLS", err: `invalid name "Lobby_TLS"`},
		{name: "a namespace/name is refused", in: "TriggerAuthentication/a/b", err: `invalid name "a/b"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseAuthenticationRef(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Errorf("ParseAuthenticationRef(%q) = %v, %v; want an error containing %q", tt.in, got, err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("ParseAuthenticationRef(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
			if back, err := ParseAuthenticationRef(got.String()); err != nil || back != got {
				t.Errorf("ParseAuthenticationRef(%q) = %v, %v; want the reference to read back", got.String(), back, err)
			}
		})
	}
}

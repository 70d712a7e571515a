package httpso

import (
	"reflect"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/lobby-http/lobby/operator/api/v1alpha1"
)

func obj(ns, name string, created time.Time, spec v1alpha1.HTTPScaledObjectSpec) *v1alpha1.HTTPScaledObject {
	return &v1alpha1.HTTPScaledObject{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, CreationTimestamp: metav1.NewTime(created)},
		Spec:       spec,
	}
}

func TestClaims(t *testing.T) {
	v := "blue"
	tests := []struct {
		name string
		spec v1alpha1.HTTPScaledObjectSpec
		want []Claim
	}{
		{"an object without hosts or paths claims the catch-all root", v1alpha1.HTTPScaledObjectSpec{},
			[]Claim{{Host: "", PathPrefix: "/"}}},
		{"hosts are lower-cased and lose a trailing dot, paths lose a trailing slash",
			v1alpha1.HTTPScaledObjectSpec{Hosts: []string{"App.Example.COM.", "*.example.com"}, PathPrefixes: []string{"/api/"}},
			[]Claim{{Host: "*.example.com", PathPrefix: "/api"}, {Host: "app.example.com", PathPrefix: "/api"}}},
		{"the host * is the add-on's spelling of the catch-all",
			v1alpha1.HTTPScaledObjectSpec{Hosts: []string{"*"}},
			[]Claim{{Host: "", PathPrefix: "/"}}},
		{"duplicate spellings collapse into one claim",
			v1alpha1.HTTPScaledObjectSpec{Hosts: []string{"a.io", "A.io"}, PathPrefixes: []string{"/x", "/x/"}},
			[]Claim{{Host: "a.io", PathPrefix: "/x"}}},
		{"headers are part of the claim, sorted with lower-case names",
			v1alpha1.HTTPScaledObjectSpec{Hosts: []string{"a.io"}, Headers: []v1alpha1.Header{{Name: "X-Version", Value: &v}, {Name: "X-Canary"}}},
			[]Claim{{Host: "a.io", PathPrefix: "/", Headers: "x-canary,x-version=blue"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Claims(&tt.spec); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Claims() = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestResolve(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	host := func(h ...string) v1alpha1.HTTPScaledObjectSpec { return v1alpha1.HTTPScaledObjectSpec{Hosts: h} }
	tests := []struct {
		name         string
		objs         []*v1alpha1.HTTPScaledObject
		wantAccepted []string
		wantLosers   map[string]string // loser -> winner
	}{
		{"objects with different hosts are all routed",
			[]*v1alpha1.HTTPScaledObject{obj("a", "one", t0, host("a.io")), obj("a", "two", t0, host("b.io"))},
			[]string{"a/one", "a/two"}, map[string]string{}},
		{"the older of two objects claiming the same host wins, whatever the input order",
			[]*v1alpha1.HTTPScaledObject{obj("a", "new", t0.Add(time.Second), host("a.io")), obj("z", "old", t0, host("A.IO"))},
			[]string{"z/old"}, map[string]string{"a/new": "z/old"}},
		{"with equal creation times the namespace/name order decides",
			[]*v1alpha1.HTTPScaledObject{obj("b", "x", t0, host("a.io")), obj("a", "x", t0, host("a.io"))},
			[]string{"a/x"}, map[string]string{"b/x": "a/x"}},
		{"a loser claims nothing, so an object colliding only with the loser is routed",
			[]*v1alpha1.HTTPScaledObject{
				obj("n", "first", t0, host("a.io")),
				obj("n", "second", t0.Add(time.Second), host("a.io", "b.io")),
				obj("n", "third", t0.Add(2*time.Second), host("b.io")),
			},
			[]string{"n/first", "n/third"}, map[string]string{"n/second": "n/first"}},
		{"the same host with different paths does not conflict",
			[]*v1alpha1.HTTPScaledObject{
				obj("n", "api", t0, v1alpha1.HTTPScaledObjectSpec{Hosts: []string{"a.io"}, PathPrefixes: []string{"/api"}}),
				obj("n", "web", t0, v1alpha1.HTTPScaledObjectSpec{Hosts: []string{"a.io"}}),
			},
			[]string{"n/api", "n/web"}, map[string]string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			accepted, conflicts := Resolve(tt.objs)
			var got []string
			for _, o := range accepted {
				got = append(got, Key(o))
			}
			if !reflect.DeepEqual(got, tt.wantAccepted) {
				t.Errorf("accepted = %v, want %v", got, tt.wantAccepted)
			}
			losers := map[string]string{}
			for k, c := range conflicts {
				losers[k] = c.Winner
			}
			if !reflect.DeepEqual(losers, tt.wantLosers) {
				t.Errorf("conflicts = %v, want %v", losers, tt.wantLosers)
			}
		})
	}
}

func TestTrimKeepsWhatTheBinariesReadAndDropsTheRest(t *testing.T) {
	value := "v"
	o := &v1alpha1.HTTPScaledObject{
		ObjectMeta: metav1.ObjectMeta{
			Name: "app", Namespace: "ns", UID: "u-1", ResourceVersion: "7", Generation: 3,
			CreationTimestamp: metav1.Unix(100, 0),
			Annotations:       map[string]string{"kubectl.kubernetes.io/last-applied-configuration": "{…}"},
			Labels:            map[string]string{"team": "a"},
			ManagedFields:     []metav1.ManagedFieldsEntry{{Manager: "kubectl"}},
		},
		Spec: v1alpha1.HTTPScaledObjectSpec{
			Hosts:   []string{"a.example.com"},
			Headers: []v1alpha1.Header{{Name: "X-Env", Value: &value}},
		},
		Status: v1alpha1.HTTPScaledObjectStatus{TargetService: "app:80"},
	}
	spec := *o.Spec.DeepCopy()
	got, err := Trim(o)
	if err != nil {
		t.Fatal(err)
	}
	h := got.(*v1alpha1.HTTPScaledObject)
	if h.Name != "app" || h.Namespace != "ns" || h.UID != "u-1" || h.ResourceVersion != "7" || h.Generation != 3 ||
		!h.CreationTimestamp.Equal(&o.CreationTimestamp) {
		t.Errorf("identity, version, generation or creation time lost: %+v", h.ObjectMeta)
	}
	if !reflect.DeepEqual(h.Spec, spec) {
		t.Errorf("spec changed: got %+v, want %+v", h.Spec, spec)
	}
	if h.Annotations != nil || h.Labels != nil || h.ManagedFields != nil || h.Status.TargetService != "" {
		t.Errorf("unread fields kept: %+v, status %+v", h.ObjectMeta, h.Status)
	}
	other := "not an HTTPScaledObject"
	if got, err := Trim(other); err != nil || got != other {
		t.Errorf("Trim(%q) = %v, %v; want it unchanged", other, got, err)
	}
}

func TestTrimKeepsTheUpstreamTLSAnnotationAlone(t *testing.T) {
	o := &v1alpha1.HTTPScaledObject{ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: "ns", Annotations: map[string]string{
		"kubectl.kubernetes.io/last-applied-configuration": "{…}",
		v1alpha1.UpstreamTLSInsecureSkipVerifyAnnotation:   "true",
	}}}
	got, err := Trim(o)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{v1alpha1.UpstreamTLSInsecureSkipVerifyAnnotation: "true"}
	if a := got.(*v1alpha1.HTTPScaledObject).Annotations; !reflect.DeepEqual(a, want) {
		t.Errorf("annotations = %v, want %v", a, want)
	}
}

package httpso

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"k8s.io/utils/ptr"

	"github.com/lobby-http/lobby/operator/api/v1alpha1"
	"github.com/lobby-http/lobby/operator/api/v1beta1"
)

func TestDecideOwnership(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	t1 := t0.Add(time.Minute)
	hso := func(ns, name string, created time.Time, allow string, spec v1alpha1.HTTPScaledObjectSpec) *Object {
		h := obj(ns, name, created, spec)
		if allow != "" {
			h.Annotations = map[string]string{AllowNamespacesAnnotation: allow}
		}
		return FromHTTPScaledObject(h)
	}
	victim := hso("victim", "app", t0, "", v1alpha1.HTTPScaledObjectSpec{Hosts: []string{"victim.example.com"}, PathPrefixes: []string{"/api"}})
	tests := []struct {
		name string
		objs []*Object
		// refused maps each refused object's key to the host its message must name.
		refused map[string]string
		// shadowed maps each routed object's key to the hosts it does not serve.
		shadowed map[string][]string
	}{
		{"a longer path prefix on another namespace's host is refused",
			[]*Object{victim, hso("attacker", "longer", t1, "", v1alpha1.HTTPScaledObjectSpec{Hosts: []string{"victim.example.com"}, PathPrefixes: []string{"/api/v1"}})},
			map[string]string{"attacker/longer": "victim.example.com"}, nil},
		{"a header rule without a value on another namespace's host and path is refused",
			[]*Object{victim, hso("attacker", "header", t1, "", v1alpha1.HTTPScaledObjectSpec{Hosts: []string{"victim.example.com"}, PathPrefixes: []string{"/api"},
				Headers: []v1alpha1.Header{{Name: "User-Agent"}}})},
			map[string]string{"attacker/header": "victim.example.com"}, nil},
		{"an InterceptorRoute rule on another namespace's host is refused",
			[]*Object{victim, route("attacker", "ir", t1, v1beta1.InterceptorRouteSpec{Rules: []v1beta1.RoutingRule{rule([]string{"VICTIM.example.com"}, "/other")}})},
			map[string]string{"attacker/ir": "victim.example.com"}, nil},
		{"a wildcard over another namespace's exact host is routed but does not serve that host",
			[]*Object{victim, hso("attacker", "wild", t1, "", v1alpha1.HTTPScaledObjectSpec{Hosts: []string{"*.example.com"}})},
			nil, map[string][]string{"attacker/wild": {"victim.example.com"}}},
		{"a catch-all is routed but serves no host another namespace owns",
			[]*Object{victim, hso("attacker", "all", t1, "", v1alpha1.HTTPScaledObjectSpec{Hosts: []string{"*"}})},
			nil, map[string][]string{"attacker/all": {"victim.example.com"}}},
		{"an older wildcard owns the hosts it covers, so a newer exact host from another namespace is refused",
			[]*Object{hso("victim", "wild", t0, "", v1alpha1.HTTPScaledObjectSpec{Hosts: []string{"*.victim.io"}}),
				hso("attacker", "api", t1, "", v1alpha1.HTTPScaledObjectSpec{Hosts: []string{"api.victim.io"}})},
			map[string]string{"attacker/api": "api.victim.io"}, nil},
		{"a second namespace's catch-all is refused: the first to claim it owns it",
			[]*Object{hso("first", "all", t0, "", v1alpha1.HTTPScaledObjectSpec{}),
				hso("second", "all", t1, "", v1alpha1.HTTPScaledObjectSpec{PathPrefixes: []string{"/b"}})},
			map[string]string{"second/all": "*"}, nil},
		{"the owner allows a namespace by name: its claims and wildcards serve the host",
			[]*Object{hso("victim", "app", t0, "tools, attacker", victim.HTTPScaledObject.Spec),
				hso("attacker", "longer", t1, "", v1alpha1.HTTPScaledObjectSpec{Hosts: []string{"victim.example.com"}, PathPrefixes: []string{"/api/v1"}}),
				hso("attacker", "wild", t1, "", v1alpha1.HTTPScaledObjectSpec{Hosts: []string{"*.example.com"}})},
			nil, nil},
		{"the owner allows every namespace with *",
			[]*Object{hso("victim", "app", t0, "*", victim.HTTPScaledObject.Spec),
				hso("attacker", "header", t1, "", v1alpha1.HTTPScaledObjectSpec{Hosts: []string{"victim.example.com"}, Headers: []v1alpha1.Header{{Name: "X-A", Value: ptr.To("1")}}})},
			nil, nil},
		{"an allow annotation outside the owning namespace has no effect",
			[]*Object{victim,
				hso("attacker", "self-allowed", t1, "attacker", v1alpha1.HTTPScaledObjectSpec{Hosts: []string{"victim.example.com"}, PathPrefixes: []string{"/x"}})},
			map[string]string{"attacker/self-allowed": "victim.example.com"}, nil},
		{"the owner is the namespace of the oldest claim, whatever the input order",
			[]*Object{hso("attacker", "later", t1, "", v1alpha1.HTTPScaledObjectSpec{Hosts: []string{"victim.example.com"}, PathPrefixes: []string{"/x"}}), victim},
			map[string]string{"attacker/later": "victim.example.com"}, nil},
		{"objects of one namespace share its hosts without any annotation",
			[]*Object{victim, hso("victim", "more", t1, "", v1alpha1.HTTPScaledObjectSpec{Hosts: []string{"victim.example.com"}, PathPrefixes: []string{"/api/v2"}})},
			nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			accepted, conflicts, owners := Decide(tt.objs)
			refused := map[string]string{}
			for ref, c := range conflicts {
				if c.Owner == nil {
					t.Errorf("%s lost for another reason: %s", ref, c.Message())
					continue
				}
				refused[ref.Key] = c.Claim.Host
				if c.Claim.Host == "" {
					refused[ref.Key] = "*"
				}
				msg := c.Message()
				for _, want := range []string{`namespace "` + c.Owner.Namespace + `"`, AllowNamespacesAnnotation, `add namespace "` + strings.Split(ref.Key, "/")[0] + `"`} {
					if !strings.Contains(msg, want) {
						t.Errorf("message of %s = %q, want it to name %s", ref, msg, want)
					}
				}
			}
			if len(refused) == 0 {
				refused = nil
			}
			if !reflect.DeepEqual(refused, tt.refused) {
				t.Errorf("refused = %v, want %v", refused, tt.refused)
			}
			shadowed := map[string][]string{}
			for _, o := range accepted {
				for _, s := range owners.Shadows(o) {
					shadowed[o.Key()] = append(shadowed[o.Key()], s.Host)
				}
				if msg := ShadowMessage(o, owners.Shadows(o)); (msg != "") != (shadowed[o.Key()] != nil) {
					t.Errorf("shadow message of %s = %q with shadows %v", o.Key(), msg, shadowed[o.Key()])
				}
			}
			if len(shadowed) == 0 {
				shadowed = nil
			}
			if !reflect.DeepEqual(shadowed, tt.shadowed) {
				t.Errorf("shadowed = %v, want %v", shadowed, tt.shadowed)
			}
		})
	}
}

func TestCovering(t *testing.T) {
	tests := []struct {
		name, host string
		want       []string
	}{
		{"an exact host is covered by each wildcard of its parents, most specific first", "a.b.example.com", []string{"*.b.example.com", "*.example.com", "*.com"}},
		{"a wildcard is covered by the wildcards of its parents", "*.b.example.com", []string{"*.example.com", "*.com"}},
		{"the catch-all is covered by nothing", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Covering(tt.host); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Covering(%q) = %q, want %q", tt.host, got, tt.want)
			}
			for _, c := range tt.want {
				if !Covers(c, tt.host) {
					t.Errorf("Covers(%q, %q) = false", c, tt.host)
				}
			}
		})
	}
	if Covers("*.example.com", "example.com") || Covers("*.example.com", "badexample.com") || Covers("a.io", "a.io") {
		t.Error("a wildcard covers its own domain, a lookalike, or a host covers itself")
	}
}

func TestTrimKeepsAllowNamespaces(t *testing.T) {
	h := obj("victim", "app", time.Time{}, v1alpha1.HTTPScaledObjectSpec{})
	h.Annotations = map[string]string{AllowNamespacesAnnotation: "b,a", "kubectl.kubernetes.io/last-applied-configuration": "{}"}
	if _, err := Trim(h); err != nil {
		t.Fatal(err)
	}
	if got := FromHTTPScaledObject(h).AllowNamespaces; !reflect.DeepEqual(got, []string{"a", "b"}) {
		t.Errorf("AllowNamespaces after Trim = %q, want [a b]", got)
	}
}

func TestParseAllowNamespaces(t *testing.T) {
	tests := []struct {
		name, value string
		want, bad   []string
	}{
		{"names are split on commas, trimmed, sorted and deduplicated", " b, a,,b ", []string{"a", "b"}, nil},
		{"* allows every namespace", "*", []string{"*"}, nil},
		{"entries that cannot be namespace names are ignored and reported", "Team_A, ok, a.b", []string{"ok"}, []string{"Team_A", "a.b"}},
		{"an empty value allows nothing", "", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ParseAllowNamespaces(tt.value); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParseAllowNamespaces(%q) = %q, want %q", tt.value, got, tt.want)
			}
			if got := InvalidAllowNamespaces(tt.value); !reflect.DeepEqual(got, tt.bad) {
				t.Errorf("InvalidAllowNamespaces(%q) = %q, want %q", tt.value, got, tt.bad)
			}
			note := AllowNote(map[string]string{AllowNamespacesAnnotation: tt.value})
			if (note != "") != (tt.bad != nil) {
				t.Errorf("AllowNote = %q with invalid entries %q", note, tt.bad)
			}
		})
	}
}

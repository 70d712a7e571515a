package routing

import (
	"net/http"
	"testing"

	"github.com/go-logr/logr"

	"github.com/lobby-http/lobby/interceptor/internal/endpointslices"
	"github.com/lobby-http/lobby/internal/httpso"
	"github.com/lobby-http/lobby/operator/api/v1alpha1"
)

// in moves o to namespace ns, with the allow annotation when allow is set.
func in(ns string, o *v1alpha1.HTTPScaledObject, allow ...string) *v1alpha1.HTTPScaledObject {
	o.Namespace = ns
	if len(allow) > 0 {
		o.Annotations = map[string]string{httpso.AllowNamespacesAnnotation: allow[0]}
	}
	return o
}

// TestOwnedHostsAreServedByTheirOwnerOnly checks every shape another namespace could use to take a
// host's requests, and what the owner's allow annotation changes.
func TestOwnedHostsAreServedByTheirOwnerOnly(t *testing.T) {
	victim := func(allow ...string) *v1alpha1.HTTPScaledObject {
		return in("victim", object("app", 0, []string{"victim.example.com"}, []string{"/api"}), allow...)
	}
	attackers := func() []*v1alpha1.HTTPScaledObject {
		return []*v1alpha1.HTTPScaledObject{
			in("attacker", object("longer", 1, []string{"victim.example.com"}, []string{"/api/v1"})),
			in("attacker", object("header", 2, []string{"victim.example.com"}, []string{"/api"}, header("User-Agent"))),
			in("attacker", object("wild", 3, []string{"*.example.com"}, nil)),
			in("attacker", object("all", 4, nil, nil)),
		}
	}
	ua := http.Header{"User-Agent": {"curl/8"}}
	type req struct {
		host, path string
		header     http.Header
		want       string // the route's "namespace/name", or "" for none
	}
	tests := []struct {
		name    string
		objs    []*v1alpha1.HTTPScaledObject
		refused map[string]string // refused object -> the namespace owning the host
		reqs    []req
	}{
		{"no shape from another namespace takes the owner's requests",
			append([]*v1alpha1.HTTPScaledObject{victim()}, attackers()...),
			map[string]string{"attacker/header": "victim", "attacker/longer": "victim"},
			[]req{
				{"victim.example.com", "/api/v1/x", nil, "victim/app"},
				{"victim.example.com", "/api", ua, "victim/app"},
				{"VICTIM.example.com:8080", "/api", nil, "victim/app"},
				{"victim.example.com", "/", nil, ""},
				{"victim.example.com", "/other", ua, ""},
				{"other.example.com", "/", nil, "attacker/wild"},
				{"unclaimed.org", "/", nil, "attacker/all"},
			}},
		{"the owner allows the namespace: every shape serves what it claims",
			append([]*v1alpha1.HTTPScaledObject{victim("attacker")}, attackers()...),
			nil,
			[]req{
				{"victim.example.com", "/api/v1/x", nil, "attacker/longer"},
				{"victim.example.com", "/api", ua, "attacker/header"},
				{"victim.example.com", "/api", nil, "victim/app"},
				{"victim.example.com", "/", nil, "attacker/wild"},
			}},
		{"a host whose only claim is not routed still keeps other namespaces' wildcards out",
			[]*v1alpha1.HTTPScaledObject{
				in("third", object("taken", 0, []string{"taken.example.com"}, nil)),
				in("victim", object("both", 1, []string{"victim.example.com", "taken.example.com"}, nil)),
				in("attacker", object("wild", 2, []string{"*.example.com"}, nil)),
			},
			map[string]string{"victim/both": "third"},
			[]req{
				{"victim.example.com", "/x", nil, ""},
				{"taken.example.com", "/x", nil, "third/taken"},
				{"other.example.com", "/x", nil, "attacker/wild"},
			}},
		{"an older wildcard owns its subdomains: a newer exact host of another namespace is refused",
			[]*v1alpha1.HTTPScaledObject{
				in("victim", object("wild", 0, []string{"*.victim.io"}, []string{"/app"})),
				in("attacker", object("api", 1, []string{"api.victim.io"}, nil)),
				in("attacker", object("all", 2, nil, nil)),
			},
			map[string]string{"attacker/api": "victim"},
			[]req{
				{"api.victim.io", "/app", nil, "victim/wild"},
				{"api.victim.io", "/", nil, ""},
				{"victim.io", "/", nil, "attacker/all"},
			}},
		{"a namespace's own wildcard and catch-all still catch what its exact routes miss",
			[]*v1alpha1.HTTPScaledObject{
				victim(),
				in("victim", object("wild", 1, []string{"*.example.com"}, nil)),
				in("victim", object("all", 2, nil, nil)),
			},
			nil,
			[]req{
				{"victim.example.com", "/", nil, "victim/wild"},
				{"victim.org", "/", nil, "victim/all"},
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			table, conflicts := Build(tt.objs, endpointslices.NewStore(logr.Discard()), newFakeCounters(), Defaults{})
			for key, ns := range tt.refused {
				c, ok := conflicts[key]
				if !ok || c.Owner == nil || c.Owner.Namespace != ns {
					t.Errorf("%s: conflict %+v, want it refused because namespace %s owns the host", key, c, ns)
				}
			}
			for key, c := range conflicts {
				if _, ok := tt.refused[key]; !ok {
					t.Errorf("%s not routed: %s", key, c.Message())
				}
			}
			for _, r := range tt.reqs {
				got := ""
				if route := table.Lookup(r.host, r.path, r.header); route != nil {
					got = route.Key
				}
				if got != r.want {
					t.Errorf("Lookup(%q, %q, %v) = %q, want %q", r.host, r.path, r.header, got, r.want)
				}
			}
		})
	}
}

func TestLookupOfASealedHostAllocatesNothing(t *testing.T) {
	table := build(t,
		in("victim", object("app", 0, []string{"victim.example.com"}, []string{"/api"})),
		in("attacker", object("wild", 1, []string{"*.example.com"}, nil)),
		in("attacker", object("all", 2, nil, nil)),
	)
	header := http.Header{}
	if n := testing.AllocsPerRun(100, func() {
		if table.Lookup("victim.example.com", "/other", header) != nil {
			t.Fatal("another namespace's wildcard served an owned host")
		}
	}); n != 0 {
		t.Errorf("Lookup allocates %v times, want 0", n)
	}
}

package httpso

import (
	"reflect"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/lobby-http/lobby/operator/api/v1alpha1"
	"github.com/lobby-http/lobby/operator/api/v1beta1"
)

func route(ns, name string, created time.Time, spec v1beta1.InterceptorRouteSpec) *Object {
	return FromInterceptorRoute(&v1beta1.InterceptorRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, CreationTimestamp: metav1.NewTime(created)},
		Spec:       spec,
	})
}

func rule(hosts []string, paths ...string) v1beta1.RoutingRule {
	r := v1beta1.RoutingRule{Hosts: hosts}
	for _, p := range paths {
		r.Paths = append(r.Paths, v1beta1.PathMatch{Value: p})
	}
	return r
}

func TestObjectClaims(t *testing.T) {
	v := "1"
	tests := []struct {
		name string
		obj  *Object
		want []Claim
	}{
		{"a route without rules claims the catch-all root, as an HTTPScaledObject without hosts does",
			route("a", "r", time.Time{}, v1beta1.InterceptorRouteSpec{}),
			[]Claim{{Host: "", PathPrefix: "/"}}},
		{"each rule claims its own hosts, paths and headers",
			route("a", "r", time.Time{}, v1beta1.InterceptorRouteSpec{Rules: []v1beta1.RoutingRule{
				rule([]string{"a.io"}, "/api"),
				{Hosts: []string{"b.io"}, Headers: []v1beta1.HeaderMatch{{Name: "X-Canary", Value: &v}}},
			}}),
			[]Claim{{Host: "a.io", PathPrefix: "/api"}, {Host: "b.io", PathPrefix: "/", Headers: "x-canary=1"}}},
		{"static routes claim nothing beyond the route's own rules",
			route("a", "r", time.Time{}, v1beta1.InterceptorRouteSpec{
				Rules:        []v1beta1.RoutingRule{rule([]string{"a.io"})},
				StaticRoutes: []v1beta1.StaticRoute{{Rules: []v1beta1.RoutingRule{rule([]string{"a.io"}, "/healthz")}}},
			}),
			[]Claim{{Host: "a.io", PathPrefix: "/"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.obj.Claims(); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Claims() = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestResolveObjectsAcrossKinds(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	hso := func(ns, name string, created time.Time, hosts ...string) *Object {
		return FromHTTPScaledObject(obj(ns, name, created, v1alpha1.HTTPScaledObjectSpec{Hosts: hosts}))
	}
	ir := func(ns, name string, created time.Time, hosts ...string) *Object {
		return route(ns, name, created, v1beta1.InterceptorRouteSpec{Rules: []v1beta1.RoutingRule{rule(hosts)}})
	}
	tests := []struct {
		name         string
		objs         []*Object
		wantAccepted []Ref
		wantLosers   map[Ref]Conflict
	}{
		{"an older HTTPScaledObject keeps a host a newer InterceptorRoute claims",
			[]*Object{ir("a", "new", t0.Add(time.Minute), "shop.io"), hso("a", "old", t0, "shop.io")},
			[]Ref{{KindHTTPScaledObject, "a/old"}},
			map[Ref]Conflict{{KindInterceptorRoute, "a/new"}: {Winner: "a/old", WinnerKind: KindHTTPScaledObject, Claim: Claim{Host: "shop.io", PathPrefix: "/"}}}},
		{"an older InterceptorRoute keeps a host a newer HTTPScaledObject claims",
			[]*Object{hso("a", "new", t0.Add(time.Minute), "shop.io"), ir("a", "old", t0, "shop.io")},
			[]Ref{{KindInterceptorRoute, "a/old"}},
			map[Ref]Conflict{{KindHTTPScaledObject, "a/new"}: {Winner: "a/old", WinnerKind: KindInterceptorRoute, Claim: Claim{Host: "shop.io", PathPrefix: "/"}}}},
		{"objects of both kinds with distinct hosts are all routed",
			[]*Object{hso("a", "x", t0, "x.io"), ir("a", "y", t0, "y.io")},
			[]Ref{{KindHTTPScaledObject, "a/x"}, {KindInterceptorRoute, "a/y"}},
			map[Ref]Conflict{}},
		{"a namespace and name taken by the other kind is a conflict, since counts are keyed by it",
			[]*Object{ir("a", "app", t0.Add(time.Second), "new.io"), hso("a", "app", t0, "old.io")},
			[]Ref{{KindHTTPScaledObject, "a/app"}},
			map[Ref]Conflict{{KindInterceptorRoute, "a/app"}: {Winner: "a/app", WinnerKind: KindHTTPScaledObject, SameName: true}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			accepted, conflicts := ResolveObjects(tt.objs)
			var got []Ref
			for _, o := range accepted {
				got = append(got, o.Ref())
			}
			if !reflect.DeepEqual(got, tt.wantAccepted) {
				t.Errorf("accepted = %v, want %v", got, tt.wantAccepted)
			}
			if !reflect.DeepEqual(conflicts, tt.wantLosers) {
				t.Errorf("conflicts = %v, want %v", conflicts, tt.wantLosers)
			}
		})
	}
}

func TestNormalizeInterceptorRoute(t *testing.T) {
	spec := v1beta1.InterceptorRouteSpec{
		Rules:        []v1beta1.RoutingRule{rule([]string{"a.io:8080"}, "api", "/x//y")},
		StaticRoutes: []v1beta1.StaticRoute{{Rules: []v1beta1.RoutingRule{rule(nil, "healthz")}}},
		Timeouts:     v1beta1.InterceptorRouteTimeouts{Request: &metav1.Duration{}},
	}
	notes := Normalize(&spec)
	want := []string{
		`spec.rules[0].hosts[0] "a.io:8080" is routed as "a.io": the port of a host is ignored`,
		`spec.rules[0].paths[0] "api" is routed as "/api": a path prefix starts with /`,
		`spec.rules[0].paths[1] "/x//y" is routed as "/x/y": requests are matched on their cleaned path`,
		`spec.staticRoutes[0].rules[0].paths[0] "healthz" is routed as "/healthz": a path prefix starts with /`,
	}
	if !reflect.DeepEqual(notes, want) {
		t.Errorf("notes = %q, want %q", notes, want)
	}
	if got := spec.Rules[0].Paths[0].Value; got != "/api" {
		t.Errorf("path = %q, want /api", got)
	}
	if spec.Timeouts.Request == nil {
		t.Error("timeouts.request 0s was dropped; on an InterceptorRoute it means no bound")
	}
}

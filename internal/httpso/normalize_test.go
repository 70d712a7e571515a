package httpso

import (
	"reflect"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/lobby-http/lobby/operator/api/v1alpha1"
)

func TestNormalize(t *testing.T) {
	d := func(s time.Duration) *metav1.Duration { return &metav1.Duration{Duration: s} }
	tests := []struct {
		name      string
		spec      v1alpha1.HTTPScaledObjectSpec
		want      v1alpha1.HTTPScaledObjectSpec
		wantNotes []string
	}{
		{"a tidy spec is left alone and gets no notes",
			v1alpha1.HTTPScaledObjectSpec{Hosts: []string{"Shop.Example.org", "*.example.org", "*"}, PathPrefixes: []string{"/api/"},
				Timeouts: &v1alpha1.HTTPScaledObjectTimeoutsSpec{ConditionWait: d(time.Second)}},
			v1alpha1.HTTPScaledObjectSpec{Hosts: []string{"Shop.Example.org", "*.example.org", "*"}, PathPrefixes: []string{"/api/"},
				Timeouts: &v1alpha1.HTTPScaledObjectTimeoutsSpec{ConditionWait: d(time.Second)}},
			nil},
		{"a host with a port is routed on the host",
			v1alpha1.HTTPScaledObjectSpec{Hosts: []string{"shop.example.org:8080", "[::1]:80", "[::1]"}},
			v1alpha1.HTTPScaledObjectSpec{Hosts: []string{"shop.example.org", "[::1]", "[::1]"}},
			[]string{
				`spec.hosts[0] "shop.example.org:8080" is routed as "shop.example.org": the port of a host is ignored`,
				`spec.hosts[1] "[::1]:80" is routed as "[::1]": the port of a host is ignored`,
			}},
		{"a path prefix without a leading slash gets one",
			v1alpha1.HTTPScaledObjectSpec{PathPrefixes: []string{"/ok", "api", "v1/users/"}},
			v1alpha1.HTTPScaledObjectSpec{PathPrefixes: []string{"/ok", "/api", "/v1/users/"}},
			[]string{
				`spec.pathPrefixes[1] "api" is routed as "/api": a path prefix starts with /`,
				`spec.pathPrefixes[2] "v1/users/" is routed as "/v1/users/": a path prefix starts with /`,
			}},
		{"a path prefix with dot segments or doubled slashes is read cleaned, as requests are matched",
			v1alpha1.HTTPScaledObjectSpec{PathPrefixes: []string{"/a//b/", "/a/./b", "/x/../y", "/up/..", "//"}},
			v1alpha1.HTTPScaledObjectSpec{PathPrefixes: []string{"/a/b", "/a/b", "/y", "/", "//"}},
			[]string{
				`spec.pathPrefixes[0] "/a//b/" is routed as "/a/b": requests are matched on their cleaned path`,
				`spec.pathPrefixes[1] "/a/./b" is routed as "/a/b": requests are matched on their cleaned path`,
				`spec.pathPrefixes[2] "/x/../y" is routed as "/y": requests are matched on their cleaned path`,
				`spec.pathPrefixes[3] "/up/.." is routed as "/": requests are matched on their cleaned path`,
			}},
		{"zero timeouts mean the global defaults",
			v1alpha1.HTTPScaledObjectSpec{Timeouts: &v1alpha1.HTTPScaledObjectTimeoutsSpec{ConditionWait: d(0), ResponseHeader: d(0), Request: d(2 * time.Second)}},
			v1alpha1.HTTPScaledObjectSpec{Timeouts: &v1alpha1.HTTPScaledObjectTimeoutsSpec{Request: d(2 * time.Second)}},
			[]string{
				"spec.timeouts.conditionWait 0s means the interceptor's global default: remove it",
				"spec.timeouts.responseHeader 0s means the interceptor's global default: remove it",
			}},
		{"the deprecated targetPendingRequests is kept and noted",
			v1alpha1.HTTPScaledObjectSpec{TargetPendingRequests: ptr.To[int32](10)},
			v1alpha1.HTTPScaledObjectSpec{TargetPendingRequests: ptr.To[int32](10)},
			[]string{"spec.targetPendingRequests is deprecated: use spec.scalingMetric.concurrency.targetValue"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := *tt.spec.DeepCopy()
			notes := Normalize(&spec)
			if !reflect.DeepEqual(spec, tt.want) {
				t.Errorf("Normalize() spec = %+v, want %+v", spec, tt.want)
			}
			if !reflect.DeepEqual(notes, tt.wantNotes) {
				t.Errorf("Normalize() notes = %q, want %q", notes, tt.wantNotes)
			}
		})
	}
}

func TestClaimsOfLenientSpellings(t *testing.T) {
	tests := []struct {
		name string
		spec v1alpha1.HTTPScaledObjectSpec
		want []Claim
	}{
		{"a host with a port claims the host", v1alpha1.HTTPScaledObjectSpec{Hosts: []string{"Shop.Example.org:8080"}},
			[]Claim{{Host: "shop.example.org", PathPrefix: "/"}}},
		{"a bracketed IPv6 host claims the address", v1alpha1.HTTPScaledObjectSpec{Hosts: []string{"[2001:db8::1]:8080"}},
			[]Claim{{Host: "2001:db8::1", PathPrefix: "/"}}},
		{"a path prefix without a slash claims the prefix with one", v1alpha1.HTTPScaledObjectSpec{Hosts: []string{"a.io"}, PathPrefixes: []string{"api", "/api/"}},
			[]Claim{{Host: "a.io", PathPrefix: "/api"}}},
		{"the catch-all with a port is the catch-all", v1alpha1.HTTPScaledObjectSpec{Hosts: []string{"*:8080"}},
			[]Claim{{Host: "", PathPrefix: "/"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Claims(&tt.spec); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Claims() = %+v, want %+v", got, tt.want)
			}
			// Claims read the raw spec as Normalize leaves it.
			n := *tt.spec.DeepCopy()
			Normalize(&n)
			if got := Claims(&n); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Claims() of the normalised spec = %+v, want %+v", got, tt.want)
			}
		})
	}
}

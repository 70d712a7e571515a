package httpso

import (
	"reflect"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/lobby-http/lobby/operator/api/v1alpha1"
	"github.com/lobby-http/lobby/operator/api/v1beta1"
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

func TestNormalizeClampsValuesAboveTheirBounds(t *testing.T) {
	d := func(s time.Duration) *metav1.Duration { return &metav1.Duration{Duration: s} }
	t.Run("an HTTPScaledObject stored before the bounds is clamped, field by field", func(t *testing.T) {
		spec := v1alpha1.HTTPScaledObjectSpec{
			ColdStart:                   &v1alpha1.ColdStartSpec{MaxPendingRequests: ptr.To[int32](1 << 30)},
			Timeouts:                    &v1alpha1.HTTPScaledObjectTimeoutsSpec{ConditionWait: d(48 * time.Hour), ResponseHeader: d(time.Hour), Request: d(1000 * time.Hour)},
			ColdStartTimeoutFailoverRef: &v1alpha1.ColdStartTimeoutFailoverRef{Service: "sorry", Port: 80, TimeoutSeconds: 86400},
			TargetPendingRequests:       ptr.To[int32](2_000_000),
			ScalingMetric: &v1alpha1.ScalingMetricSpec{Rate: &v1alpha1.RateMetricSpec{TargetValue: 5,
				Window: metav1.Duration{Duration: 10 * time.Hour}, Granularity: metav1.Duration{Duration: 2 * time.Hour}}},
		}
		notes := Normalize(&spec)
		want := v1alpha1.HTTPScaledObjectSpec{
			ColdStart:                   &v1alpha1.ColdStartSpec{MaxPendingRequests: ptr.To[int32](MaxPendingRequests)},
			Timeouts:                    &v1alpha1.HTTPScaledObjectTimeoutsSpec{ConditionWait: d(time.Hour), ResponseHeader: d(time.Hour), Request: d(24 * time.Hour)},
			ColdStartTimeoutFailoverRef: &v1alpha1.ColdStartTimeoutFailoverRef{Service: "sorry", Port: 80, TimeoutSeconds: 3600},
			TargetPendingRequests:       ptr.To[int32](MaxTargetValue),
			ScalingMetric: &v1alpha1.ScalingMetricSpec{Rate: &v1alpha1.RateMetricSpec{TargetValue: 5,
				Window: metav1.Duration{Duration: time.Hour}, Granularity: metav1.Duration{Duration: time.Hour}}},
		}
		if !reflect.DeepEqual(spec, want) {
			t.Errorf("spec =\n%+v\nwant\n%+v", spec, want)
		}
		wantNotes := []string{
			"spec.targetPendingRequests is deprecated: use spec.scalingMetric.concurrency.targetValue",
			"spec.coldStart.maxPendingRequests 1073741824 is above the most allowed, 100000: clamped to it",
			"spec.timeouts.conditionWait 48h0m0s is above the most allowed, 1h0m0s: clamped to it",
			"spec.timeouts.request 1000h0m0s is above the most allowed, 24h0m0s: clamped to it",
			"spec.coldStartTimeoutFailoverRef.timeoutSeconds 86400 is above the most allowed, 3600: clamped to it",
			"spec.targetPendingRequests 2000000 is above the most allowed, 1000000: clamped to it",
			"spec.scalingMetric.requestRate.window 10h0m0s is above the most allowed, 1h0m0s: clamped to it",
			"spec.scalingMetric.requestRate.granularity 2h0m0s is longer than the clamped window: clamped to 1h0m0s",
		}
		if !reflect.DeepEqual(notes, wantNotes) {
			t.Errorf("notes =\n%q\nwant\n%q", notes, wantNotes)
		}
	})
	t.Run("an InterceptorRoute stored before the bounds is clamped, field by field", func(t *testing.T) {
		spec := v1beta1.InterceptorRouteSpec{
			ColdStart: &v1beta1.ColdStartSpec{MaxPendingRequests: ptr.To[int32](200_000)},
			Timeouts:  v1beta1.InterceptorRouteTimeouts{Readiness: d(2 * time.Hour), ResponseHeader: d(0), Request: d(25 * time.Hour)},
			ScalingMetric: v1beta1.ScalingMetricSpec{Concurrency: &v1beta1.ConcurrencyTargetSpec{TargetValue: 1 << 30},
				RequestRate: &v1beta1.RequestRateTargetSpec{TargetValue: 3, Window: metav1.Duration{Duration: time.Minute}, Granularity: metav1.Duration{Duration: time.Second}}},
		}
		notes := Normalize(&spec)
		if *spec.ColdStart.MaxPendingRequests != MaxPendingRequests || spec.Timeouts.Readiness.Duration != time.Hour ||
			spec.Timeouts.ResponseHeader.Duration != 0 || spec.Timeouts.Request.Duration != 24*time.Hour ||
			spec.ScalingMetric.Concurrency.TargetValue != MaxTargetValue || spec.ScalingMetric.RequestRate.Window.Duration != time.Minute {
			t.Errorf("spec = %+v, want every value above its bound clamped and the others (0s, a 1m window) kept", spec)
		}
		wantNotes := []string{
			"spec.coldStart.maxPendingRequests 200000 is above the most allowed, 100000: clamped to it",
			"spec.timeouts.readiness 2h0m0s is above the most allowed, 1h0m0s: clamped to it",
			"spec.timeouts.request 25h0m0s is above the most allowed, 24h0m0s: clamped to it",
			"spec.scalingMetric.concurrency.targetValue 1073741824 is above the most allowed, 1000000: clamped to it",
		}
		if !reflect.DeepEqual(notes, wantNotes) {
			t.Errorf("notes =\n%q\nwant\n%q", notes, wantNotes)
		}
	})
	t.Run("values at their bounds are left alone and get no notes", func(t *testing.T) {
		spec := v1alpha1.HTTPScaledObjectSpec{
			ColdStart: &v1alpha1.ColdStartSpec{MaxPendingRequests: ptr.To[int32](MaxPendingRequests)},
			Timeouts:  &v1alpha1.HTTPScaledObjectTimeoutsSpec{ConditionWait: d(time.Hour), Request: d(24 * time.Hour)},
		}
		if notes := Normalize(&spec); notes != nil {
			t.Errorf("notes = %q, want none", notes)
		}
	})
}

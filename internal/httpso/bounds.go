package httpso

import (
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/lobby-http/lobby/operator/api/v1alpha1"
	"github.com/lobby-http/lobby/operator/api/v1beta1"
)

// Upper bounds of the counts and durations a tenant sets on either kind. The CRDs refuse values
// above them (their kubebuilder markers carry the same numbers); Normalize clamps objects stored
// before the CRDs had the bounds, and says so on their status, so that an old object cannot hold
// an interceptor's resources longer or in larger numbers than a new one may.
const (
	// MaxPendingRequests bounds coldStart.maxPendingRequests: a route's hold queue, per
	// interceptor. The interceptor's cap over all routes still applies below it.
	MaxPendingRequests = 100_000
	// MaxHoldTimeout bounds how long a request may be held: timeouts.conditionWait,
	// coldStartTimeoutFailoverRef.timeoutSeconds and timeouts.readiness.
	MaxHoldTimeout = time.Hour
	// MaxResponseHeaderTimeout bounds timeouts.responseHeader.
	MaxResponseHeaderTimeout = time.Hour
	// MaxRequestTimeout bounds timeouts.request (whose zero, unbounded, stays allowed).
	MaxRequestTimeout = 24 * time.Hour
	// MaxRateWindow bounds scalingMetric.requestRate.window: each route keeps one counter per
	// granularity step of its window.
	MaxRateWindow = time.Hour
	// MaxTargetValue bounds the scaling targets: targetValue of either metric and
	// targetPendingRequests.
	MaxTargetValue = 1_000_000
)

// clampCount lowers *v to limit when it is above it, appending a note naming field to notes.
func clampCount[T int | int32](notes []string, field string, v *T, limit T) []string {
	if *v > limit {
		notes = append(notes, fmt.Sprintf("%s %d is above the most allowed, %d: clamped to it", field, *v, limit))
		*v = limit
	}
	return notes
}

// clampDuration lowers d to limit when it is above it, appending a note naming field to notes.
func clampDuration(notes []string, field string, d *metav1.Duration, limit time.Duration) []string {
	if d != nil && d.Duration > limit {
		notes = append(notes, fmt.Sprintf("%s %s is above the most allowed, %s: clamped to it", field, d.Duration, limit))
		d.Duration = limit
	}
	return notes
}

// clampWindow clamps a rate window, and its granularity with it when it was longer than the
// clamped window (the CRD keeps granularity within the window).
func clampWindow(notes []string, field string, window, granularity *metav1.Duration) []string {
	notes = clampDuration(notes, field+".window", window, MaxRateWindow)
	if granularity.Duration > window.Duration && window.Duration > 0 {
		notes = append(notes, fmt.Sprintf("%s.granularity %s is longer than the clamped window: clamped to %s", field, granularity.Duration, window.Duration))
		granularity.Duration = window.Duration
	}
	return notes
}

// boundScaledObject clamps the counts and durations of an HTTPScaledObject.
func boundScaledObject(notes []string, spec *v1alpha1.HTTPScaledObjectSpec) []string {
	if cs := spec.ColdStart; cs != nil && cs.MaxPendingRequests != nil {
		notes = clampCount(notes, "spec.coldStart.maxPendingRequests", cs.MaxPendingRequests, MaxPendingRequests)
	}
	if tm := spec.Timeouts; tm != nil {
		notes = clampDuration(notes, "spec.timeouts.conditionWait", tm.ConditionWait, MaxHoldTimeout)
		notes = clampDuration(notes, "spec.timeouts.responseHeader", tm.ResponseHeader, MaxResponseHeaderTimeout)
		notes = clampDuration(notes, "spec.timeouts.request", tm.Request, MaxRequestTimeout)
	}
	if f := spec.ColdStartTimeoutFailoverRef; f != nil {
		notes = clampCount(notes, "spec.coldStartTimeoutFailoverRef.timeoutSeconds", &f.TimeoutSeconds, int32(MaxHoldTimeout/time.Second))
	}
	if spec.TargetPendingRequests != nil {
		notes = clampCount(notes, "spec.targetPendingRequests", spec.TargetPendingRequests, MaxTargetValue)
	}
	if m := spec.ScalingMetric; m != nil {
		if c := m.Concurrency; c != nil {
			notes = clampCount(notes, "spec.scalingMetric.concurrency.targetValue", &c.TargetValue, MaxTargetValue)
		}
		if r := m.Rate; r != nil {
			notes = clampCount(notes, "spec.scalingMetric.requestRate.targetValue", &r.TargetValue, MaxTargetValue)
			notes = clampWindow(notes, "spec.scalingMetric.requestRate", &r.Window, &r.Granularity)
		}
	}
	return notes
}

// boundRoute clamps the counts and durations of an InterceptorRoute.
func boundRoute(notes []string, spec *v1beta1.InterceptorRouteSpec) []string {
	if cs := spec.ColdStart; cs != nil && cs.MaxPendingRequests != nil {
		notes = clampCount(notes, "spec.coldStart.maxPendingRequests", cs.MaxPendingRequests, MaxPendingRequests)
	}
	tm := &spec.Timeouts
	notes = clampDuration(notes, "spec.timeouts.readiness", tm.Readiness, MaxHoldTimeout)
	notes = clampDuration(notes, "spec.timeouts.responseHeader", tm.ResponseHeader, MaxResponseHeaderTimeout)
	notes = clampDuration(notes, "spec.timeouts.request", tm.Request, MaxRequestTimeout)
	if c := spec.ScalingMetric.Concurrency; c != nil {
		notes = clampCount(notes, "spec.scalingMetric.concurrency.targetValue", &c.TargetValue, MaxTargetValue)
	}
	if r := spec.ScalingMetric.RequestRate; r != nil {
		notes = clampCount(notes, "spec.scalingMetric.requestRate.targetValue", &r.TargetValue, MaxTargetValue)
		notes = clampWindow(notes, "spec.scalingMetric.requestRate", &r.Window, &r.Granularity)
	}
	return notes
}

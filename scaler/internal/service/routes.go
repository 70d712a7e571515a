package service

import "github.com/lobby-http/lobby/operator/api/v1beta1"

// RouteMetrics returns the metrics of an InterceptorRoute: concurrency, request rate, or both when
// it sets both (the HPA then follows whichever asks for more replicas). They are named
// "http_<name>_concurrency" and "http_<name>_rate", as the KEDA HTTP Add-on names them, so HPA
// metric names survive a migration.
func RouteMetrics(r *v1beta1.InterceptorRoute) []Metric {
	var out []Metric
	sm := r.Spec.ScalingMetric
	if c := sm.Concurrency; c != nil {
		out = append(out, Metric{Name: routeMetricName(r.Name, "concurrency"), Target: target(c.TargetValue)})
	}
	if rr := sm.RequestRate; rr != nil {
		out = append(out, Metric{Name: routeMetricName(r.Name, "rate"), Rate: true, Target: target(rr.TargetValue)})
	}
	if out == nil {
		// The API refuses a route without a metric; one written before that check scales on
		// concurrency with the default target.
		out = append(out, Metric{Name: routeMetricName(r.Name, "concurrency"), Target: DefaultTargetValue})
	}
	return out
}

func routeMetricName(name, metric string) string { return "http_" + name + "_" + metric }

// target is v, or DefaultTargetValue when v is not positive.
func target(v int32) float64 {
	if v <= 0 {
		return DefaultTargetValue
	}
	return float64(v)
}

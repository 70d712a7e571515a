package routing

import (
	"net/http"
	"time"

	"github.com/lobby-http/lobby/internal/httpso"
	"github.com/lobby-http/lobby/operator/api/v1alpha1"
	"github.com/lobby-http/lobby/operator/api/v1beta1"
)

// fallbackReadiness is the cold-start timeout of an InterceptorRoute with a fallback Service whose
// timeouts.readiness is 0s: without one, held requests would never reach the fallback.
const fallbackReadiness = 30 * time.Second

// newInterceptorRoute resolves everything the proxy needs for one InterceptorRoute: its route, and
// one route per static route, in list order.
func newInterceptorRoute(o *v1beta1.InterceptorRoute, targets Targets, counters Counters, configMaps ConfigMaps, d Defaults) (*Route, []*Route) {
	spec := &o.Spec
	key := o.Namespace + "/" + o.Name
	r := &Route{
		Key:                   key,
		Namespace:             o.Namespace,
		Name:                  o.Name,
		Kind:                  httpso.KindInterceptorRoute,
		Target:                targets.Target(o.Namespace, spec.Target.Service, spec.Target.Port, spec.Target.PortName),
		ColdStartTimeout:      d.ColdStartTimeout,
		ResponseHeaderTimeout: d.ResponseHeaderTimeout,
		RequestTimeout:        d.RequestTimeout,
		MaxPending:            d.MaxPending,
		InsecureSkipVerify:    o.Annotations[v1alpha1.UpstreamTLSInsecureSkipVerifyAnnotation] == "true",
	}
	// On an InterceptorRoute, unset means the global setting and 0s means no bound.
	tm := spec.Timeouts
	if tm.Readiness != nil {
		r.ColdStartTimeout = max(tm.Readiness.Duration, 0)
	}
	if tm.ResponseHeader != nil {
		r.ResponseHeaderTimeout = max(tm.ResponseHeader.Duration, 0)
	}
	if tm.Request != nil {
		r.RequestTimeout = max(tm.Request.Duration, 0)
	}
	if cs := spec.ColdStart; cs != nil {
		if f := cs.Fallback; f != nil && f.Service != nil {
			r.Failover = targets.Target(o.Namespace, f.Service.Name, f.Service.Port, f.Service.PortName)
			if r.ColdStartTimeout <= 0 {
				r.ColdStartTimeout = fallbackReadiness
			}
		}
		if p := cs.Placeholder; p != nil && p.Response != nil {
			r.Placeholder = newResponse(o.Namespace, p.Response, http.StatusServiceUnavailable, configMaps)
		}
		if cs.MaxPendingRequests != nil && *cs.MaxPendingRequests > 0 {
			r.MaxPending = int64(*cs.MaxPendingRequests)
		}
		if cs.Overflow == v1beta1.OverflowPlaceholder && r.Placeholder != nil {
			r.Overflow = OverflowPlaceholder
		}
	}
	r.Mode, r.WaitingPage = interceptorRouteMode(o, configMaps, d)
	window, granularity := DefaultRateWindow, DefaultRateGranularity
	if rr := spec.ScalingMetric.RequestRate; rr != nil {
		if rr.Window.Duration > 0 {
			window = rr.Window.Duration
		}
		if rr.Granularity.Duration > 0 {
			granularity = rr.Granularity.Duration
		}
	}
	r.Counts = counters.Route(key, window, granularity)

	statics := make([]*Route, len(spec.StaticRoutes))
	for i := range spec.StaticRoutes {
		s := &spec.StaticRoutes[i]
		statics[i] = &Route{
			Key:                   key,
			Namespace:             o.Namespace,
			Name:                  o.Name,
			Kind:                  httpso.KindInterceptorRoute,
			Target:                r.Target,
			ResponseHeaderTimeout: r.ResponseHeaderTimeout,
			RequestTimeout:        r.RequestTimeout,
			InsecureSkipVerify:    r.InsecureSkipVerify,
			Static: &Static{
				Response: newResponse(o.Namespace, &s.Response, http.StatusOK, configMaps),
				Always:   s.ResponseMode == v1beta1.StaticRouteAlways,
			},
		}
	}
	return r, statics
}

// interceptorRouteMode resolves the cold-start mode of an InterceptorRoute and its waiting page:
// coldStart.mode when set; else Placeholder when coldStart.placeholder is set (the KEDA HTTP
// Add-on answers its placeholder at once); else the global default.
func interceptorRouteMode(o *v1beta1.InterceptorRoute, configMaps ConfigMaps, d Defaults) (ColdStartMode, *WaitingPage) {
	mode := d.ColdStartMode
	cs := o.Spec.ColdStart
	if cs != nil && cs.Placeholder != nil && cs.Placeholder.Response != nil {
		mode = ColdStartPlaceholder
	}
	if cs != nil && cs.Mode != "" {
		// The CRD admits only the three names; an object written around it is held.
		mode, _ = ParseColdStartMode(string(cs.Mode))
	}
	if mode == ColdStartHold {
		return mode, nil
	}
	if cs != nil && cs.WaitingPage != nil && cs.WaitingPage.BodyFromConfigMap != nil {
		ref := cs.WaitingPage.BodyFromConfigMap
		return mode, newWaitingPage(o.Namespace, o.Name, ref.Name, ref.Key, configMaps)
	}
	return mode, &WaitingPage{App: o.Name}
}

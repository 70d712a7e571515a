package routing

import (
	"cmp"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/lobby-http/lobby/internal/httpso"
	"github.com/lobby-http/lobby/operator/api/v1alpha1"
)

// Build builds the table of HTTPScaledObjects alone (see BuildObjects), returning the objects
// not routed because of a conflict keyed by their "namespace/name".
func Build(objs []*v1alpha1.HTTPScaledObject, targets Targets, counters Counters, d Defaults) (*Table, map[string]httpso.Conflict) {
	in := make([]*httpso.Object, len(objs))
	for i, o := range objs {
		in[i] = httpso.FromHTTPScaledObject(o)
	}
	t, cs := BuildObjects(in, targets, counters, nil, d)
	conflicts := make(map[string]httpso.Conflict, len(cs))
	for ref, c := range cs {
		conflicts[ref.Key] = c
	}
	return t, conflicts
}

// BuildObjects resolves conflicts among objs, of both kinds (see httpso.Decide), and
// builds the table of the accepted ones, resolving each object's targets, counters and responses
// once; bodies of responses read from ConfigMaps come from configMaps (nil reads none). It
// returns the objects not routed because of a conflict. A request that the routes of its host
// do not match falls through to less specific hosts only among the routes of the namespaces the
// host's owner allows (see sealLevels).
func BuildObjects(objs []*httpso.Object, targets Targets, counters Counters, configMaps ConfigMaps, d Defaults) (*Table, map[httpso.Ref]httpso.Conflict) {
	accepted, conflicts, owners := httpso.Decide(objs)
	t := &Table{routes: make([]*Route, 0, len(accepted))}
	exact, wildcard := map[string]*hostRoutes{}, map[string]*hostRoutes{}
	add := func(rule httpso.Rule, r *Route) {
		headers := compileHeaders(rule.Headers)
		for _, c := range rule.Claims() {
			var h *hostRoutes
			switch {
			case c.Host == "":
				if t.catchAll == nil {
					t.catchAll = &hostRoutes{}
				}
				h = t.catchAll
			case strings.HasPrefix(c.Host, "*."):
				h = level(wildcard, c.Host[2:])
			default:
				h = level(exact, c.Host)
			}
			h.add(c.PathPrefix, candidate{headers: headers, route: r, static: len(r.statics) > 0})
		}
	}
	for _, o := range accepted {
		var r *Route
		var statics []*Route
		if o.Kind == httpso.KindInterceptorRoute {
			r, statics = newInterceptorRoute(o.InterceptorRoute, targets, counters, configMaps, d)
		} else {
			r = newRoute(o.HTTPScaledObject, targets, counters, d)
		}
		t.routes = append(t.routes, r)
		for i, rules := range o.StaticRules {
			for _, rule := range rules {
				r.statics = append(r.statics, newStaticMatch(rule, statics[i]))
			}
		}
		for _, rule := range o.Rules {
			add(rule, r)
		}
	}
	// Every owned host has a level, even when none of its claims is routed, so that its requests
	// never fall through to another namespace's wildcard or catch-all.
	for _, k := range owners.Hosts() {
		switch {
		case k == "":
		case strings.HasPrefix(k, "*."):
			level(wildcard, k[2:])
		default:
			level(exact, k)
		}
	}
	t.catchAll.finish()
	for _, h := range exact {
		h.finish()
	}
	for _, h := range wildcard {
		h.finish()
	}
	sealLevels(exact, wildcard, t.catchAll, owners)
	t.exact = make(map[string]hostRoutes, len(exact))
	for k, h := range exact {
		t.exact[k] = *h
		t.exactLens.add(len(k))
	}
	t.wildcard = make(map[string]hostRoutes, len(wildcard))
	for k, h := range wildcard {
		t.wildcard[k] = *h
		t.wildcardLens.add(len(k))
	}
	return t, conflicts
}

// level returns the routes of key in m, adding them when missing.
func level(m map[string]*hostRoutes, key string) *hostRoutes {
	h := m[key]
	if h == nil {
		h = &hostRoutes{}
		m[key] = h
	}
	return h
}

func (h *hostRoutes) add(prefix string, c candidate) {
	i := slices.IndexFunc(h.paths, func(p pathRoutes) bool { return p.prefix == prefix })
	if i < 0 {
		h.paths = append(h.paths, pathRoutes{prefix: prefix})
		i = len(h.paths) - 1
	}
	h.paths[i].candidates = append(h.paths[i].candidates, c)
}

// finish orders what add collected. Candidates are stably sorted, so routes with as many headers
// keep the precedence order of httpso.Resolve.
func (h *hostRoutes) finish() {
	if h == nil {
		return
	}
	slices.SortStableFunc(h.paths, func(a, b pathRoutes) int {
		return cmp.Or(cmp.Compare(len(b.prefix), len(a.prefix)), cmp.Compare(a.prefix, b.prefix))
	})
	for i := range h.paths {
		p := &h.paths[i]
		slices.SortStableFunc(p.candidates, func(a, b candidate) int {
			return cmp.Compare(len(b.headers), len(a.headers))
		})
		if len(p.candidates) == 1 && len(p.candidates[0].headers) == 0 && !p.candidates[0].static {
			p.only = p.candidates[0].route
		}
	}
	if len(h.paths) == 1 && h.paths[0].prefix == "/" && len(h.paths[0].candidates) == 1 &&
		len(h.paths[0].candidates[0].headers) == 0 && !h.paths[0].candidates[0].static {
		h.only = h.paths[0].candidates[0].route
	}
	if len(h.paths) > manyPaths {
		h.byPrefix = make(map[string]*pathRoutes, len(h.paths))
		for i := range h.paths {
			h.byPrefix[h.paths[i].prefix] = &h.paths[i]
		}
	}
}

func compileHeaders(hs []v1alpha1.Header) []headerMatch {
	if len(hs) == 0 {
		return nil
	}
	out := make([]headerMatch, 0, len(hs))
	for _, h := range hs {
		m := headerMatch{name: http.CanonicalHeaderKey(h.Name), anyValue: h.Value == nil}
		if h.Value != nil {
			m.value = *h.Value
		}
		out = append(out, m)
	}
	return out
}

// newRoute resolves everything the proxy needs for one object.
func newRoute(o *v1alpha1.HTTPScaledObject, targets Targets, counters Counters, d Defaults) *Route {
	spec := &o.Spec
	key := httpso.Key(o)
	ref := spec.ScaleTargetRef
	r := &Route{
		Key:                   key,
		Kind:                  httpso.KindHTTPScaledObject,
		Namespace:             o.Namespace,
		Name:                  o.Name,
		Target:                targets.Target(o.Namespace, ref.Service, ref.Port, ref.PortName),
		ColdStartTimeout:      d.ColdStartTimeout,
		ResponseHeaderTimeout: d.ResponseHeaderTimeout,
		RequestTimeout:        d.RequestTimeout,
		MaxPending:            d.MaxPending,
		InsecureSkipVerify:    o.Annotations[v1alpha1.UpstreamTLSInsecureSkipVerifyAnnotation] == "true",
	}
	if tm := spec.Timeouts; tm != nil {
		if tm.ConditionWait != nil && tm.ConditionWait.Duration > 0 {
			r.ColdStartTimeout = tm.ConditionWait.Duration
		}
		if tm.ResponseHeader != nil && tm.ResponseHeader.Duration > 0 {
			r.ResponseHeaderTimeout = tm.ResponseHeader.Duration
		}
		if tm.Request != nil && tm.Request.Duration > 0 {
			r.RequestTimeout = tm.Request.Duration
		}
	}
	if f := spec.ColdStartTimeoutFailoverRef; f != nil {
		r.Failover = targets.Target(o.Namespace, f.Service, f.Port, f.PortName)
		if f.TimeoutSeconds > 0 {
			r.ColdStartTimeout = time.Duration(f.TimeoutSeconds) * time.Second
		}
	}
	if cs := spec.ColdStart; cs != nil {
		if cs.MaxPendingRequests != nil && *cs.MaxPendingRequests > 0 {
			r.MaxPending = int64(*cs.MaxPendingRequests)
		}
		if cs.Placeholder != nil {
			r.Placeholder = newPlaceholder(cs.Placeholder)
		}
		if cs.Overflow == v1alpha1.OverflowPlaceholder && r.Placeholder != nil {
			r.Overflow = OverflowPlaceholder
		}
	}
	window, granularity := DefaultRateWindow, DefaultRateGranularity
	if m := spec.ScalingMetric; m != nil && m.Rate != nil {
		if m.Rate.Window.Duration > 0 {
			window = m.Rate.Window.Duration
		}
		if m.Rate.Granularity.Duration > 0 {
			granularity = m.Rate.Granularity.Duration
		}
	}
	r.Counts = counters.Route(key, window, granularity)
	return r
}

// newPlaceholder prepares a placeholder response once: canonical header names, a Content-Type
// when none is given, and the Content-Length of the body.
func newPlaceholder(p *v1alpha1.PlaceholderSpec) *Placeholder {
	ph := &Placeholder{StatusCode: int(p.StatusCode), Header: make(http.Header, len(p.Headers)+2), Body: []byte(p.Body)}
	if ph.StatusCode == 0 {
		ph.StatusCode = http.StatusServiceUnavailable
	}
	for k, v := range p.Headers {
		ph.Header.Set(k, string(v))
	}
	if ph.Header.Get("Content-Type") == "" {
		ph.Header.Set("Content-Type", "text/plain; charset=utf-8")
	}
	ph.Header.Set("Content-Length", strconv.Itoa(len(ph.Body)))
	return ph
}

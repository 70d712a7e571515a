package routing

import (
	"cmp"
	"encoding/binary"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/lobby-http/lobby/interceptor/internal/counts"
	"github.com/lobby-http/lobby/interceptor/internal/endpoints"
	"github.com/lobby-http/lobby/internal/httpso"
	"github.com/lobby-http/lobby/operator/api/v1alpha1"
)

// Default rate window and granularity, used when an object does not scale on the request rate or
// leaves them unset.
const (
	DefaultRateWindow      = time.Minute
	DefaultRateGranularity = time.Second
)

// Defaults are the interceptor-wide settings that objects may override.
type Defaults struct {
	// ColdStartTimeout bounds how long a request is held when the object sets neither a failover
	// timeout nor timeouts.conditionWait.
	ColdStartTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for response headers unless timeouts.responseHeader is
	// set.
	ResponseHeaderTimeout time.Duration
	// RequestTimeout bounds the whole exchange unless timeouts.request is set; zero is unbounded.
	RequestTimeout time.Duration
	// MaxPending is the most requests held at once per route unless coldStart.maxPendingRequests
	// is set.
	MaxPending int64
}

// Targets hands out the endpoint handles of Service ports; *endpoints.Store implements it.
type Targets interface {
	Target(namespace, service string, port int32, portName string) *endpoints.Target
}

// Counters hands out the counters of routes; *counts.Registry implements it.
type Counters interface {
	Route(key string, window, granularity time.Duration) *counts.Route
}

var (
	_ Targets  = (*endpoints.Store)(nil)
	_ Counters = (*counts.Registry)(nil)
)

// Table is an immutable routing table. Lookups take no lock and do not allocate.
type Table struct {
	// exact maps a lower-case host to its routes. Values are stored in the map itself, which
	// saves a dependent memory load per lookup.
	exact map[string]hostRoutes
	// wildcard maps the suffix of a wildcard host ("example.com" for "*.example.com") to its routes.
	wildcard map[string]hostRoutes
	// exactLens and wildcardLens have bit n set when some key of exact or wildcard has length n,
	// so that lookups skip map probes that cannot hit.
	exactLens, wildcardLens lengthSet
	// catchAll holds the routes of objects without hosts; nil when there are none.
	catchAll *hostRoutes
	// routes are all routes, in precedence order.
	routes []*Route
}

// hostRoutes are the routes of one host level, by path prefix.
type hostRoutes struct {
	// only is set when the level has a single route, for every path and without headers (the
	// common case), so that a lookup needs nothing else.
	only *Route
	// paths are sorted by decreasing prefix length, so the first match is the longest.
	paths []pathRoutes
	// byPrefix indexes paths when there are many, so that a lookup walks the request path's
	// segment boundaries instead of every prefix.
	byPrefix map[string]*pathRoutes
}

// manyPaths is the number of prefixes of one host above which lookups use the prefix index.
const manyPaths = 8

// pathRoutes are the routes of one host level and path prefix.
type pathRoutes struct {
	prefix string
	// candidates are sorted by decreasing number of headers, then by precedence; one without
	// headers, if any, comes last and is the fallback.
	candidates []candidate
	// only is set when there is a single candidate without headers, saving a memory load.
	only *Route
}

type candidate struct {
	headers []headerMatch
	route   *Route
	// static is set when route has static routes, which pick among its requests: kept here, in
	// memory the lookup reads anyway, so that other lookups never load the Route itself.
	static bool
}

type headerMatch struct {
	// name is canonical, as net/http stores request header names.
	name     string
	value    string
	anyValue bool
}

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

// BuildObjects resolves conflicts among objs, of both kinds (see httpso.ResolveObjects), and
// builds the table of the accepted ones, resolving each object's targets, counters and responses
// once; bodies of responses read from ConfigMaps come from configMaps (nil reads none). It
// returns the objects not routed because of a conflict.
func BuildObjects(objs []*httpso.Object, targets Targets, counters Counters, configMaps ConfigMaps, d Defaults) (*Table, map[httpso.Ref]httpso.Conflict) {
	accepted, conflicts := httpso.ResolveObjects(objs)
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
	t.catchAll.finish()
	t.exact = make(map[string]hostRoutes, len(exact))
	for k, h := range exact {
		h.finish()
		t.exact[k] = *h
		t.exactLens.add(len(k))
	}
	t.wildcard = make(map[string]hostRoutes, len(wildcard))
	for k, h := range wildcard {
		h.finish()
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

// Routes returns the route of every routed object in precedence order (static routes are not
// listed: they share their object's target and have no counters). The slice must not be modified.
func (t *Table) Routes() []*Route {
	if t == nil {
		return nil
	}
	return t.routes
}

// Len returns the number of routed objects in the table.
func (t *Table) Len() int { return len(t.Routes()) }

// Lookup returns the route for a request's host, path and headers, or nil when none matches.
// The host is matched case-insensitively, without its port and trailing dot; the path after
// resolving its dot segments and merging slashes (cleanPath), as an ingress in front sees it. An exact host beats
// the most specific wildcard, which beats the catch-all; within a host level the longest path
// prefix on a segment boundary wins, then the route with the most matching headers. A level
// whose routes all fail to match the path or headers falls through to the next less specific one.
func (t *Table) Lookup(host, path string, header http.Header) *Route {
	if t == nil {
		return nil
	}
	host = stripPort(host)
	host = strings.TrimSuffix(host, ".")
	path = cleanPath(path)
	r, static := t.lookup(host, path, header)
	if static {
		return r.static(host, path, header)
	}
	return r
}

// lookup is Lookup for a host without port and trailing dot, and a cleaned path. static is set
// when the route has static routes.
func (t *Table) lookup(host, path string, header http.Header) (r *Route, static bool) {
	if !hasUpper(host) {
		return lookupHost(t, host, path, header)
	}
	// Lower-case into a stack buffer: map lookups keyed by string(bytes) do not allocate.
	var buf [maxHostLen]byte
	if len(host) > len(buf) {
		return t.catchAll.match(path, header)
	}
	b := buf[:len(host)]
	for i := range len(host) {
		c := host[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		b[i] = c
	}
	return lookupHost(t, b, path, header)
}

// lengthSet is a set of string lengths up to 255.
type lengthSet [4]uint64

func (s *lengthSet) add(n int) {
	if n < 256 {
		s[n>>6] |= 1 << (n & 63)
	}
}

func (s *lengthSet) has(n int) bool {
	return n < 256 && s[n>>6]&(1<<(n&63)) != 0
}

// maxHostLen is the longest valid DNS name; longer hosts can only match the catch-all.
const maxHostLen = 253

// lookupHost walks the host levels from the exact host to the catch-all.
func lookupHost[H string | []byte](t *Table, host H, path string, header http.Header) (*Route, bool) {
	if len(host) > 0 {
		if t.exactLens.has(len(host)) {
			if h, ok := t.exact[string(host)]; ok {
				if r, static := h.match(path, header); r != nil {
					return r, static
				}
			}
		}
		if len(t.wildcard) > 0 {
			// The longest suffix is tried first: "*.b.example.com" beats "*.example.com".
			for i := 0; i < len(host); i++ {
				if host[i] != '.' || !t.wildcardLens.has(len(host)-i-1) {
					continue
				}
				if h, ok := t.wildcard[string(host[i+1:])]; ok {
					if r, static := h.match(path, header); r != nil {
						return r, static
					}
				}
			}
		}
	}
	return t.catchAll.match(path, header)
}

// match returns the route of the longest prefix of path whose candidates match header, and
// whether it has static routes.
func (h *hostRoutes) match(path string, header http.Header) (*Route, bool) {
	if h == nil {
		return nil, false
	}
	if h.only != nil {
		return h.only, false
	}
	if h.byPrefix != nil {
		for p := path; ; {
			if pr := h.byPrefix[p]; pr != nil {
				if r, static := pr.match(header); r != nil {
					return r, static
				}
			}
			if p == "/" {
				return nil, false
			}
			i := strings.LastIndexByte(p, '/')
			if i <= 0 {
				p = "/"
			} else {
				p = p[:i]
			}
		}
	}
	for i := range h.paths {
		pr := &h.paths[i]
		if !hasPathPrefix(path, pr.prefix) {
			continue
		}
		if r, static := pr.match(header); r != nil {
			return r, static
		}
	}
	return nil, false
}

func (p *pathRoutes) match(header http.Header) (*Route, bool) {
	if p.only != nil {
		return p.only, false
	}
	for i := range p.candidates {
		c := &p.candidates[i]
		if headersMatch(c.headers, header) {
			return c.route, c.static
		}
	}
	return nil, false
}

func headersMatch(want []headerMatch, header http.Header) bool {
	for _, w := range want {
		vs := header[w.name]
		if len(vs) == 0 {
			return false
		}
		if !w.anyValue && !slices.Contains(vs, w.value) {
			return false
		}
	}
	return true
}

// hasPathPrefix reports whether prefix matches path on a segment boundary: "/api" matches "/api",
// "/api/" and "/api/x", not "/apix".
func hasPathPrefix(path, prefix string) bool {
	n := len(prefix)
	if n == 1 {
		return true // prefixes are normalised: the only one-byte prefix is "/"
	}
	// Lengths and the boundary byte first: they rule out most prefixes without reading them.
	return len(path) >= n && (len(path) == n || path[n] == '/') && path[:n] == prefix
}

// stripPort removes a port from a host, including from a bracketed IPv6 literal ("[::1]:8080").
// An unbracketed host is cut at its first colon: valid Host headers have at most one.
func stripPort(host string) string {
	if len(host) > 0 && host[0] == '[' {
		if i := strings.IndexByte(host, ']'); i > 0 {
			return host[1:i]
		}
		return host
	}
	if i := strings.IndexByte(host, ':'); i >= 0 {
		return host[:i]
	}
	return host
}

// hasUpper reports whether s has an ASCII upper-case letter. It tests eight bytes at a time,
// because it runs on every request.
func hasUpper(s string) bool {
	const (
		ones = 0x0101010101010101
		low7 = ones * 0x7f
		high = ones * 0x80
		// A byte b has 'A'-1 < b < 'Z'+1 when both sums below carry into its high bit.
		below = ones * (127 + 'Z' + 1)
		above = ones * (127 - ('A' - 1))
	)
	i := 0
	for ; i+8 <= len(s); i += 8 {
		x := binary.LittleEndian.Uint64([]byte(s[i : i+8]))
		if (below-(x&low7))&^x&((x&low7)+above)&high != 0 {
			return true
		}
	}
	for ; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			return true
		}
	}
	return false
}

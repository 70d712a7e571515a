package routing

import (
	"encoding/binary"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/lobby-http/lobby/interceptor/internal/counts"
	"github.com/lobby-http/lobby/interceptor/internal/endpoints"
	"github.com/lobby-http/lobby/interceptor/internal/endpointslices"
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

// Targets hands out the endpoint handles of Service ports; *endpointslices.Store implements it.
type Targets interface {
	Target(namespace, service string, port int32, portName string) *endpoints.Target
}

// Counters hands out the counters of routes; *counts.Registry implements it.
type Counters interface {
	Route(key string, window, granularity time.Duration) *counts.Route
}

var (
	_ Targets  = (*endpointslices.Store)(nil)
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
	// fallback, when set, replaces the walk to less specific levels for requests this level's
	// routes do not match: the level's host is owned, and some less specific level holds routes
	// of namespaces its owner does not allow (see sealLevels).
	fallback *fallback
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
// whose routes all fail to match the path or headers falls through to the next less specific one,
// keeping only the routes of the namespaces the level's host owner allows (docs/routing.md).
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
				if h.fallback != nil {
					return h.fallback.match(path, header)
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
					if h.fallback != nil {
						return h.fallback.match(path, header)
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

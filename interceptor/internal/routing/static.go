package routing

import (
	"net/http"
	"strings"

	"github.com/lobby-http/lobby/internal/httpso"
)

// staticMatch is one rule of a static route: the requests it picks among those routed to the
// static route's object.
type staticMatch struct {
	// anyHost is set when the rule names no host, or the catch-all.
	anyHost bool
	// hosts are exact hosts, lower case; suffixes are wildcard hosts without their "*"
	// (".example.com").
	hosts, suffixes []string
	// prefixes are path prefixes; none matches every path.
	prefixes []string
	headers  []headerMatch
	route    *Route
}

// newStaticMatch compiles rule, picking route.
func newStaticMatch(rule httpso.Rule, route *Route) staticMatch {
	m := staticMatch{route: route, headers: compileHeaders(rule.Headers), anyHost: len(rule.Hosts) == 0}
	for _, h := range rule.Hosts {
		switch h = httpso.NormalizeHost(h); {
		case h == "":
			m.anyHost = true
		case strings.HasPrefix(h, "*."):
			m.suffixes = append(m.suffixes, h[1:])
		default:
			m.hosts = append(m.hosts, h)
		}
	}
	for _, p := range rule.PathPrefixes {
		m.prefixes = append(m.prefixes, httpso.NormalizePathPrefix(p))
	}
	return m
}

// static returns the route of the first static rule of r that matches the request, or r itself.
// host has no port or trailing dot and may have upper case; path is cleaned.
func (r *Route) static(host, path string, header http.Header) *Route {
	for i := range r.statics {
		if m := &r.statics[i]; m.match(host, path, header) {
			return m.route
		}
	}
	return r
}

func (m *staticMatch) match(host, path string, header http.Header) bool {
	if !m.anyHost && !m.matchHost(host) {
		return false
	}
	if len(m.prefixes) > 0 {
		ok := false
		for _, p := range m.prefixes {
			if hasPathPrefix(path, p) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return headersMatch(m.headers, header)
}

func (m *staticMatch) matchHost(host string) bool {
	for _, h := range m.hosts {
		if strings.EqualFold(host, h) {
			return true
		}
	}
	for _, s := range m.suffixes {
		if len(host) > len(s) && strings.EqualFold(host[len(host)-len(s):], s) {
			return true
		}
	}
	return false
}

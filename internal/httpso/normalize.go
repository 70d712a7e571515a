package httpso

import (
	"fmt"
	"path"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/lobby-http/lobby/operator/api/v1alpha1"
	"github.com/lobby-http/lobby/operator/api/v1beta1"
)

// Spec is a spec of either kind lobby routes.
type Spec interface {
	*v1alpha1.HTTPScaledObjectSpec | *v1beta1.InterceptorRouteSpec
}

// Normalize rewrites spec, of either kind, in place into the form lobby routes and scales on, and
// returns one note per field it rewrote, naming the field, so the user can tidy the manifest. It
// is the one place where the leniencies of the KEDA HTTP Add-on are read: the operator's checks,
// the interceptor's routing table and the scaler all see specs through it (the informers of
// NewInformer and NewRouteInformer apply it, the operator calls it), so all three agree on what
// an object means.
//
// What it accepts and how it reads it, as the add-on does:
//   - a host with a port ("shop.example.org:8080") is routed on the host alone;
//   - a path prefix without a leading slash ("api") is routed as "/api", and one with dot
//     segments or doubled slashes ("/a//b/./c") as its cleaned form ("/a/b/c"), since requests
//     are matched on their cleaned path;
//   - on an HTTPScaledObject, a timeout of 0s (timeouts.conditionWait, responseHeader, request)
//     means the interceptor's global default, as if unset (on an InterceptorRoute, 0s means no
//     bound, as the add-on documents it, and is kept);
//   - targetPendingRequests, deprecated, is kept (the scaler reads it) and noted;
//   - a count or duration above its bound (see MaxPendingRequests and the other bounds), which
//     only an object stored before the CRD had the bound can hold, is clamped to it.
//
// Spellings that only differ in case, a trailing dot or a trailing slash are matched the same
// way without a note: they route exactly as written.
func Normalize[S Spec](spec S) []string {
	switch sp := any(spec).(type) {
	case *v1alpha1.HTTPScaledObjectSpec:
		return normalizeScaledObject(sp)
	case *v1beta1.InterceptorRouteSpec:
		return normalizeRoute(sp)
	}
	return nil
}

func normalizeScaledObject(spec *v1alpha1.HTTPScaledObjectSpec) []string {
	notes := normalizeHosts(nil, "spec.hosts", spec.Hosts)
	notes = normalizePrefixes(notes, "spec.pathPrefixes", spec.PathPrefixes)
	if tm := spec.Timeouts; tm != nil {
		for _, f := range []struct {
			name string
			d    **metav1.Duration
		}{
			{"conditionWait", &tm.ConditionWait},
			{"responseHeader", &tm.ResponseHeader},
			{"request", &tm.Request},
		} {
			if *f.d != nil && (*f.d).Duration <= 0 {
				notes = append(notes, fmt.Sprintf("spec.timeouts.%s %s means the interceptor's global default: remove it", f.name, (*f.d).Duration))
				*f.d = nil
			}
		}
	}
	if spec.TargetPendingRequests != nil {
		notes = append(notes, "spec.targetPendingRequests is deprecated: use spec.scalingMetric.concurrency.targetValue")
	}
	return boundScaledObject(notes, spec)
}

func normalizeRoute(spec *v1beta1.InterceptorRouteSpec) []string {
	var notes []string
	rules := func(field string, rs []v1beta1.RoutingRule) {
		for i := range rs {
			f := fmt.Sprintf("%s[%d]", field, i)
			notes = normalizeHosts(notes, f+".hosts", rs[i].Hosts)
			paths := make([]string, len(rs[i].Paths))
			for j, p := range rs[i].Paths {
				paths[j] = p.Value
			}
			notes = normalizePrefixes(notes, f+".paths", paths)
			for j := range paths {
				rs[i].Paths[j].Value = paths[j]
			}
		}
	}
	rules("spec.rules", spec.Rules)
	for i := range spec.StaticRoutes {
		rules(fmt.Sprintf("spec.staticRoutes[%d].rules", i), spec.StaticRoutes[i].Rules)
	}
	return boundRoute(notes, spec)
}

// normalizeHosts reads hosts with a port as the host alone, appending a note per host to notes.
func normalizeHosts(notes []string, field string, hosts []string) []string {
	for i, h := range hosts {
		if bare := hostWithoutPort(h); bare != h {
			notes = append(notes, fmt.Sprintf("%s[%d] %q is routed as %q: the port of a host is ignored", field, i, h, bare))
			hosts[i] = bare
		}
	}
	return notes
}

// normalizePrefixes reads path prefixes without a leading slash, or with dot segments or doubled
// slashes, as requests are matched, appending a note per prefix to notes.
func normalizePrefixes(notes []string, field string, prefixes []string) []string {
	for i, p := range prefixes {
		if p != "" && !strings.HasPrefix(p, "/") {
			notes = append(notes, fmt.Sprintf("%s[%d] %q is routed as %q: a path prefix starts with /", field, i, p, "/"+p))
			p = "/" + p
			prefixes[i] = p
		}
		// Requests are routed on their path with dot segments resolved and slashes merged (as an
		// ingress sees it), so a prefix spelled otherwise would never match: read it cleaned.
		if trimmed := strings.TrimRight(p, "/"); trimmed != "" && path.Clean(p) != trimmed {
			c := path.Clean(p)
			notes = append(notes, fmt.Sprintf("%s[%d] %q is routed as %q: requests are matched on their cleaned path", field, i, p, c))
			prefixes[i] = c
		}
	}
	return notes
}

// hostWithoutPort removes a port from a host ("a.io:8080" → "a.io", "[::1]:80" → "[::1]"). A host
// without a port is returned unchanged, so that callers can tell whether one was removed.
func hostWithoutPort(h string) string {
	if strings.HasPrefix(h, "[") {
		if i := strings.Index(h, "]:"); i > 0 {
			return h[:i+1]
		}
		return h
	}
	if i := strings.LastIndexByte(h, ':'); i >= 0 && strings.Count(h, ":") == 1 {
		return h[:i]
	}
	return h
}

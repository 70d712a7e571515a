package httpso

import (
	"fmt"
	"path"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/lobby-http/lobby/operator/api/v1alpha1"
)

// Normalize rewrites spec in place into the form lobby routes and scales on, and returns one
// note per field it rewrote, naming the field, so the user can tidy the manifest. It is the one
// place where the leniencies of the KEDA HTTP Add-on are read: the operator's checks, the
// interceptor's routing table and the scaler all see specs through it (the informer of
// NewInformer applies it, the operator calls it), so all three agree on what an object means.
//
// What it accepts and how it reads it, as the add-on does:
//   - a host with a port ("shop.example.org:8080") is routed on the host alone;
//   - a path prefix without a leading slash ("api") is routed as "/api", and one with dot
//     segments or doubled slashes ("/a//b/./c") as its cleaned form ("/a/b/c"), since requests
//     are matched on their cleaned path;
//   - a timeout of 0s (timeouts.conditionWait, responseHeader, request) means the interceptor's
//     global default, as if unset;
//   - targetPendingRequests, deprecated, is kept (the scaler reads it) and noted.
//
// Spellings that only differ in case, a trailing dot or a trailing slash are matched the same
// way without a note: they route exactly as written.
func Normalize(spec *v1alpha1.HTTPScaledObjectSpec) []string {
	var notes []string
	for i, h := range spec.Hosts {
		if bare := hostWithoutPort(h); bare != h {
			notes = append(notes, fmt.Sprintf("spec.hosts[%d] %q is routed as %q: the port of a host is ignored", i, h, bare))
			spec.Hosts[i] = bare
		}
	}
	for i, p := range spec.PathPrefixes {
		if p != "" && !strings.HasPrefix(p, "/") {
			notes = append(notes, fmt.Sprintf("spec.pathPrefixes[%d] %q is routed as %q: a path prefix starts with /", i, p, "/"+p))
			p = "/" + p
			spec.PathPrefixes[i] = p
		}
		// Requests are routed on their path with dot segments resolved and slashes merged (as an
		// ingress sees it), so a prefix spelled otherwise would never match: read it cleaned.
		if trimmed := strings.TrimRight(p, "/"); trimmed != "" && path.Clean(p) != trimmed {
			c := path.Clean(p)
			notes = append(notes, fmt.Sprintf("spec.pathPrefixes[%d] %q is routed as %q: requests are matched on their cleaned path", i, p, c))
			spec.PathPrefixes[i] = c
		}
	}
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

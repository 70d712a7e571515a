package routing

import (
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/go-logr/logr"

	"github.com/lobby-http/lobby/interceptor/internal/endpointslices"
	"github.com/lobby-http/lobby/internal/httpso"
	"github.com/lobby-http/lobby/operator/api/v1alpha1"
)

// crdHost, crdPrefix and crdHeader are the CRD's patterns for hosts, path prefixes and header names
// (operator/api/v1alpha1): what the API server admits.
var (
	crdHost   = regexp.MustCompile(`^(\*|(\*\.)?([A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?\.)*[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?)$`)
	crdPrefix = regexp.MustCompile(`^/`)
	crdHeader = regexp.MustCompile(`^[A-Za-z0-9!#$%&'*+.^_|~-]+$`)
)

// FuzzBuild builds tables from objects whose hosts, prefixes and header names are arbitrary
// strings — as objects stored before a validation rule existed, or written around it, can be —
// and looks requests up in them. Whatever the strings, Build and Lookup must not panic; where the
// objects are ones the CRD admits, Lookup must agree with the brute-force reference for the
// objects' own claims and for the fuzzed request.
func FuzzBuild(f *testing.F) {
	f.Add("a.example.com", "*.example.com", "/api", "/", "x-a", "b.example.com:80", "/api/v1")
	f.Add("*", "A.Example.COM.", "/api/", "//", "", "a.example.com", "/api")
	f.Add("*.*.x", "a..b", "api", "/%2e%2e", "bad header", "[::1]:80", "/../api")
	f.Add("", "-a-.example.com", "/a\x00b", "/a/", "x-b", "\u212a.example.com", "")
	f.Fuzz(func(t *testing.T, host1, host2, prefix1, prefix2, hname, reqHost, reqPath string) {
		var headers []v1alpha1.Header
		if hname != "" {
			headers = append(headers, header(hname))
		}
		objs := []*v1alpha1.HTTPScaledObject{
			object("one", 0, []string{host1, host2}, []string{prefix1}),
			object("two", 1, []string{host2}, []string{prefix1, prefix2}, headers...),
			object("three", 2, []string{host1}, nil),
		}
		table, _ := Build(objs, endpointslices.NewStore(logr.Discard()), newFakeCounters(), Defaults{})
		header := http.Header{}
		if hname != "" {
			header.Set(hname, "1")
		}
		table.Lookup(reqHost, reqPath, header) // must not panic, whatever the table holds
		if !admitted(host1, host2, prefix1, prefix2, hname) {
			return
		}
		byKey := map[string]*v1alpha1.HTTPScaledObject{}
		for _, o := range objs {
			byKey[httpso.Key(o)] = o
		}
		check := func(host, path string) {
			got, want := table.Lookup(host, path, header), reference(table.Routes(), byKey, host, path, header)
			if got != want {
				t.Fatalf("Lookup(%q, %q) = %v, reference %v", host, path, routeKey(got), routeKey(want))
			}
		}
		check(reqHost, reqPath)
		for _, o := range objs {
			for _, c := range httpso.Claims(&o.Spec) {
				check(strings.Replace(c.Host, "*", "w", 1), c.PathPrefix)
			}
		}
	})
}

// admitted reports whether the API server would admit objects with these strings.
func admitted(host1, host2, prefix1, prefix2, hname string) bool {
	for _, h := range []string{host1, host2} {
		if len(h) > 253 || !crdHost.MatchString(h) {
			return false
		}
	}
	for _, p := range []string{prefix1, prefix2} {
		if len(p) > 1024 || !crdPrefix.MatchString(p) {
			return false
		}
	}
	return hname == "" || crdHeader.MatchString(hname)
}

func routeKey(r *Route) string {
	if r == nil {
		return "<nil>"
	}
	return r.Key
}

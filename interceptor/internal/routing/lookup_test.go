package routing

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/go-logr/logr"

	"github.com/lobby-http/lobby/interceptor/internal/endpointslices"
	"github.com/lobby-http/lobby/internal/httpso"
	"github.com/lobby-http/lobby/operator/api/v1alpha1"
	"github.com/lobby-http/lobby/operator/api/v1beta1"
)

// randomObjects builds up to 20 objects from small pools of hosts, paths and headers, so that
// overlaps, conflicts and ties are frequent.
func randomObjects(seed uint64) []*v1alpha1.HTTPScaledObject {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	hostPool := []string{"a.example.com", "A.Example.com", "b.example.com", "x.b.example.com", "*.example.com",
		"*.b.example.com", "*.x.b.example.com", "other.test", "*.test"}
	pathPool := []string{"/", "/api", "/api/", "/api/v1", "/x", "/api/v1/deep", "/b", "/c", "/d", "/e", "/f/g", "/api/v2"}
	headerPool := []v1alpha1.Header{header("x-a"), header("x-a", "1"), header("x-b"), header("x-b", "2"), header("X-C", "")}
	n := 1 + rng.IntN(20)
	objs := make([]*v1alpha1.HTTPScaledObject, 0, n)
	for i := range n {
		var hosts, paths []string
		for range rng.IntN(3) {
			hosts = append(hosts, hostPool[rng.IntN(len(hostPool))])
		}
		// Up to 11 prefixes, so that hosts with many prefixes use the prefix index.
		for range rng.IntN(3) + rng.IntN(3)*rng.IntN(5) {
			paths = append(paths, pathPool[rng.IntN(len(pathPool))])
		}
		var headers []v1alpha1.Header
		seen := map[string]bool{}
		for range rng.IntN(3) {
			h := headerPool[rng.IntN(len(headerPool))]
			if !seen[strings.ToLower(h.Name)] {
				seen[strings.ToLower(h.Name)] = true
				headers = append(headers, h)
			}
		}
		objs = append(objs, object(fmt.Sprintf("o%d", i), rng.IntN(5), hosts, paths, headers...))
	}
	return objs
}

// asciiLower lower-cases ASCII letters only, as host names are ASCII.
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// reference finds the best route by brute force over every claim: the most specific host level
// (exact, then the longest wildcard, then the catch-all), then the longest prefix, then the most
// headers, then precedence.
func reference(routes []*Route, objs map[string]*v1alpha1.HTTPScaledObject, host, path string, header http.Header) *Route {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(asciiLower(host), ".")
	path = cleanPath(path) // cleanPath has its own tests; this compares the matching
	var best *Route
	var bestRank [3]int
	for _, r := range routes {
		o := objs[r.Key]
		matched := true
		for _, h := range o.Spec.Headers {
			vs := header.Values(h.Name)
			if len(vs) == 0 || (h.Value != nil && !slices.Contains(vs, *h.Value)) {
				matched = false
			}
		}
		if !matched {
			continue
		}
		for _, c := range httpso.Claims(&o.Spec) {
			level := -1
			switch {
			case c.Host == "":
				level = 0
			case strings.HasPrefix(c.Host, "*."):
				if host != "" && strings.HasSuffix(host, c.Host[1:]) {
					level = len(c.Host)
				}
			case c.Host == host && host != "":
				level = 1 << 20
			}
			if level < 0 {
				continue
			}
			if c.PathPrefix != "/" && path != c.PathPrefix && !strings.HasPrefix(path, c.PathPrefix+"/") {
				continue
			}
			rank := [3]int{level, len(c.PathPrefix), len(o.Spec.Headers)}
			// Routes are in precedence order, so only a strictly better rank replaces the best.
			if best == nil || rank[0] > bestRank[0] || (rank[0] == bestRank[0] &&
				(rank[1] > bestRank[1] || (rank[1] == bestRank[1] && rank[2] > bestRank[2]))) {
				best, bestRank = r, rank
			}
		}
	}
	return best
}

func FuzzLookup(f *testing.F) {
	f.Add(uint64(1), "a.example.com", "/api/v1", "x-a", "1")
	f.Add(uint64(2), "X.B.Example.COM.:8080", "/api/", "X-B", "2")
	f.Add(uint64(3), "[::1]:80", "/x/y", "x-c", "")
	f.Add(uint64(4), "deep.x.b.example.com", "/api/v1/deep/more", "", "")
	f.Add(uint64(5), "", "", "x-a", "")
	f.Fuzz(func(t *testing.T, seed uint64, host, path, hname, hvalue string) {
		objs := randomObjects(seed)
		table, _ := Build(objs, endpointslices.NewStore(logr.Discard()), newFakeCounters(), Defaults{})
		byKey := map[string]*v1alpha1.HTTPScaledObject{}
		for _, o := range objs {
			byKey[httpso.Key(o)] = o
		}
		header := http.Header{}
		if hname != "" {
			header.Set(hname, hvalue)
		}
		got := table.Lookup(host, path, header)
		want := reference(table.Routes(), byKey, host, path, header)
		if got != want {
			name := func(r *Route) string {
				if r == nil {
					return "<nil>"
				}
				return r.Key
			}
			t.Fatalf("Lookup(%q, %q, %v) = %s, want %s", host, path, header, name(got), name(want))
		}
	})
}

// benchmarkTable builds a table of 10,000 routes: exact hosts with one to three path prefixes
// (some behind a canary header), wildcard tenants, and a catch-all, with requests for all of them.
func benchmarkTable(b *testing.B) (*Table, []*http.Request) {
	// Half the objects of each shape are InterceptorRoutes, and a quarter of those have a static
	// route for /healthz, so that the lookup row measures both kinds in one table.
	var objs []*httpso.Object
	add := func(i int, o *v1alpha1.HTTPScaledObject) {
		if i%2 == 0 {
			objs = append(objs, httpso.FromHTTPScaledObject(o))
			return
		}
		objs = append(objs, httpso.FromInterceptorRoute(asInterceptorRoute(o, i%8 == 1)))
	}
	for i := range 8000 {
		host := fmt.Sprintf("svc-%d.apps.example.com", i)
		switch i % 4 {
		case 0:
			add(i, object(fmt.Sprintf("svc-%d", i), i, []string{host}, nil))
		case 1:
			add(i, object(fmt.Sprintf("svc-%d", i), i, []string{host}, []string{"/api", "/static"}))
		case 2:
			add(i, object(fmt.Sprintf("svc-%d", i), i, []string{host}, []string{"/api/v1", "/api/v2", "/"}))
		default:
			add(i, object(fmt.Sprintf("svc-%d", i), i, []string{host}, []string{"/"}, header("x-canary", "true")))
		}
	}
	for i := range 1999 {
		add(i, object(fmt.Sprintf("tenant-%d", i), 8000+i, []string{fmt.Sprintf("*.tenant-%d.example.net", i)}, nil))
	}
	add(0, object("catch-all", 10000, nil, nil))
	table, conflicts := BuildObjects(objs, endpointslices.NewStore(logr.Discard()), newFakeCounters(), nil, Defaults{})
	if table.Len() != 10000 || len(conflicts) != 0 {
		b.Fatalf("table has %d routes and %d conflicts, want 10000 and 0", table.Len(), len(conflicts))
	}

	rng := rand.New(rand.NewPCG(1, 2))
	paths := []string{"/", "/api/v1/users/123", "/static/app.js", "/healthz", "/api/v2/orders"}
	reqs := make([]*http.Request, 1024)
	for i := range reqs {
		var host string
		switch n := rng.IntN(10); {
		case n < 5:
			host = fmt.Sprintf("svc-%d.apps.example.com", rng.IntN(8000))
		case n < 6:
			host = fmt.Sprintf("SVC-%d.Apps.Example.com:8080", rng.IntN(8000))
		case n < 7:
			host = fmt.Sprintf("svc-%d.apps.example.com:443", rng.IntN(8000))
		case n < 9:
			host = fmt.Sprintf("user-%d.tenant-%d.example.net", rng.IntN(100), rng.IntN(1999))
		default:
			host = fmt.Sprintf("unknown-%d.test", rng.IntN(100))
		}
		r, err := http.NewRequest(http.MethodGet, "http://placeholder"+paths[rng.IntN(len(paths))], nil)
		if err != nil {
			b.Fatal(err)
		}
		r.Host = host
		if rng.IntN(4) == 0 {
			r.Header.Set("X-Canary", "true")
		}
		reqs[i] = r
	}
	return table, reqs
}

func BenchmarkLookup(b *testing.B) {
	table, reqs := benchmarkTable(b)
	rt := NewRouter()
	rt.SetTable(table)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if rt.Route(reqs[i&(len(reqs)-1)]) == nil {
			b.Fatal("no route")
		}
		i++
	}
}

// asInterceptorRoute returns the InterceptorRoute that routes what o routes, with a static route
// for /healthz when static is set.
func asInterceptorRoute(o *v1alpha1.HTTPScaledObject, static bool) *v1beta1.InterceptorRoute {
	rule := v1beta1.RoutingRule{Hosts: o.Spec.Hosts}
	for _, p := range o.Spec.PathPrefixes {
		rule.Paths = append(rule.Paths, v1beta1.PathMatch{Value: p})
	}
	for _, h := range o.Spec.Headers {
		rule.Headers = append(rule.Headers, v1beta1.HeaderMatch{Name: h.Name, Value: h.Value})
	}
	ir := &v1beta1.InterceptorRoute{
		ObjectMeta: o.ObjectMeta,
		Spec: v1beta1.InterceptorRouteSpec{
			Target:        v1beta1.TargetRef{Service: o.Spec.ScaleTargetRef.Service, Port: o.Spec.ScaleTargetRef.Port},
			Rules:         []v1beta1.RoutingRule{rule},
			ScalingMetric: v1beta1.ScalingMetricSpec{Concurrency: &v1beta1.ConcurrencyTargetSpec{TargetValue: 100}},
		},
	}
	if static {
		ok := "ok"
		ir.Spec.StaticRoutes = []v1beta1.StaticRoute{{
			Rules:        []v1beta1.RoutingRule{{Paths: []v1beta1.PathMatch{{Value: "/healthz"}}}},
			Response:     v1beta1.StaticResponse{Body: &ok},
			ResponseMode: v1beta1.StaticRouteAlways,
		}}
	}
	return ir
}

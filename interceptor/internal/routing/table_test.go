package routing

import (
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/lobby-http/lobby/interceptor/internal/counts"
	"github.com/lobby-http/lobby/interceptor/internal/endpointslices"
	"github.com/lobby-http/lobby/operator/api/v1alpha1"
)

// fakeCounters hands out one counts.Route per key and remembers the window it was asked for.
type fakeCounters struct {
	mu      sync.Mutex
	routes  map[string]*counts.Route
	windows map[string][2]time.Duration
	kept    map[string]struct{}
}

func newFakeCounters() *fakeCounters {
	return &fakeCounters{routes: map[string]*counts.Route{}, windows: map[string][2]time.Duration{}}
}

func (f *fakeCounters) Route(key string, window, granularity time.Duration) *counts.Route {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.windows[key] = [2]time.Duration{window, granularity}
	if r := f.routes[key]; r != nil {
		return r
	}
	r := new(counts.Route)
	f.routes[key] = r
	return r
}

func (f *fakeCounters) Retain(keep map[string]struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.kept = keep
}

func (f *fakeCounters) keptKeys() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Sorted(maps.Keys(f.kept))
}

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// object builds an HTTPScaledObject created age seconds after the epoch.
func object(name string, age int, hosts, paths []string, headers ...v1alpha1.Header) *v1alpha1.HTTPScaledObject {
	return &v1alpha1.HTTPScaledObject{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: "ns", Name: name, Generation: 1,
			CreationTimestamp: metav1.NewTime(epoch.Add(time.Duration(age) * time.Second)),
		},
		Spec: v1alpha1.HTTPScaledObjectSpec{
			Hosts: hosts, PathPrefixes: paths, Headers: headers,
			ScaleTargetRef: v1alpha1.ScaleTargetRef{Name: name, Service: name, Port: 80},
		},
	}
}

func header(name string, value ...string) v1alpha1.Header {
	h := v1alpha1.Header{Name: name}
	if len(value) > 0 {
		h.Value = &value[0]
	}
	return h
}

func build(t testing.TB, objs ...*v1alpha1.HTTPScaledObject) *Table {
	t.Helper()
	table, _ := Build(objs, endpointslices.NewStore(logr.Discard()), newFakeCounters(), Defaults{})
	return table
}

func TestLookupPrecedence(t *testing.T) {
	table := build(t,
		object("exact", 0, []string{"a.example.com"}, nil),
		object("exact-api", 1, []string{"A.Example.com."}, []string{"/api/"}),
		object("exact-api-v2", 2, []string{"a.example.com"}, []string{"/api"}, header("X-Version", "2")),
		object("exact-api-beta", 3, []string{"a.example.com"}, []string{"/api"}, header("x-beta")),
		object("exact-api-both", 4, []string{"a.example.com"}, []string{"/api"}, header("x-beta"), header("x-version", "2")),
		object("wild", 5, []string{"*.example.com"}, nil),
		object("wild-b", 6, []string{"*.b.example.com"}, nil),
		object("only-docs", 7, []string{"docs.example.com"}, []string{"/docs"}),
		object("wild-headers", 8, []string{"*.example.org"}, nil, header("x-tenant", "t1")),
		object("catch-all", 9, nil, []string{"/static"}),
	)
	cases := []struct {
		name   string
		host   string
		path   string
		header http.Header
		want   string
	}{
		{name: "An exact host matches.", host: "a.example.com", path: "/", want: "exact"},
		{name: "An upper-case host matches case-insensitively.", host: "A.EXAMPLE.COM", path: "/", want: "exact"},
		{name: "A port is ignored.", host: "a.example.com:8080", path: "/", want: "exact"},
		{name: "An upper-case host with a port and a trailing dot matches.", host: "A.Example.Com.:443", path: "/", want: "exact"},
		{name: "The longest path prefix wins.", host: "a.example.com", path: "/api/users", want: "exact-api"},
		{name: "A prefix matches itself with a trailing slash.", host: "a.example.com", path: "/api/", want: "exact-api"},
		{name: "A prefix matches only on segment boundaries.", host: "a.example.com", path: "/apix", want: "exact"},
		{name: "A route with a matching header beats one without.", host: "a.example.com", path: "/api", header: http.Header{"X-Version": {"2"}}, want: "exact-api-v2"},
		{name: "A header value must match exactly.", host: "a.example.com", path: "/api", header: http.Header{"X-Version": {"3"}}, want: "exact-api"},
		{name: "A header without a value only has to be present.", host: "a.example.com", path: "/api", header: http.Header{"X-Beta": {""}}, want: "exact-api-beta"},
		{name: "The route with most matching headers wins.", host: "a.example.com", path: "/api", header: http.Header{"X-Beta": {"yes"}, "X-Version": {"2"}}, want: "exact-api-both"},
		{name: "A wildcard matches a subdomain.", host: "c.example.com", path: "/", want: "wild"},
		{name: "A wildcard matches deeper subdomains.", host: "x.y.c.example.com", path: "/", want: "wild"},
		{name: "A wildcard does not match its own domain.", host: "example.com", path: "/static", want: "catch-all"},
		{name: "A longer wildcard beats a shorter one.", host: "x.b.example.com", path: "/", want: "wild-b"},
		{name: "An upper-case host matches a wildcard.", host: "X.B.EXAMPLE.COM:80", path: "/", want: "wild-b"},
		{name: "An exact host whose paths do not match falls through to the wildcard.", host: "docs.example.com", path: "/blog", want: "wild"},
		{name: "An exact host beats the wildcard when its path matches.", host: "docs.example.com", path: "/docs/intro", want: "only-docs"},
		{name: "A wildcard whose headers do not match falls through to the catch-all.", host: "a.example.org", path: "/static/x", want: "catch-all"},
		{name: "A wildcard whose headers match is chosen.", host: "a.example.org", path: "/", header: http.Header{"X-Tenant": {"t1"}}, want: "wild-headers"},
		{name: "An unknown host gets the catch-all.", host: "other.test", path: "/static", want: "catch-all"},
		{name: "An IPv6 literal with a port gets the catch-all.", host: "[::1]:8080", path: "/static", want: "catch-all"},
		{name: "No matching route gives nil.", host: "other.test", path: "/", want: ""},
		{name: "An empty host gets the catch-all.", host: "", path: "/static", want: "catch-all"},
		{name: "A dot-dot segment leaves the prefix it climbs out of, as an ingress sees it.", host: "a.example.com", path: "/api/../docs", want: "exact"},
		{name: "A dot-dot segment may climb into a prefix.", host: "a.example.com", path: "/docs/../api/users", want: "exact-api"},
		{name: "A dot segment stays within its prefix.", host: "a.example.com", path: "/api/./users", want: "exact-api"},
		{name: "Runs of slashes merge before the prefix is matched.", host: "a.example.com", path: "//api//users", want: "exact-api"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := ""
			if r := table.Lookup(tc.host, tc.path, tc.header); r != nil {
				got = r.Name
			}
			if got != tc.want {
				t.Errorf("Lookup(%q, %q, %v) = %q, want %q", tc.host, tc.path, tc.header, got, tc.want)
			}
		})
	}
}

func TestLookupManyPrefixes(t *testing.T) {
	var paths []string
	for _, p := range []string{"/a", "/b", "/c", "/d", "/e", "/f", "/g", "/h", "/i", "/a/b", "/a/b/c"} {
		paths = append(paths, p)
	}
	table := build(t, object("many", 0, []string{"h.test"}, paths), object("root", 1, []string{"h.test"}, []string{"/"}))
	cases := []struct {
		name string
		path string
		want string
	}{
		{name: "The longest prefix wins among many.", path: "/a/b/c/d", want: "many"},
		{name: "A prefix matches only on segment boundaries among many.", path: "/ab", want: "root"},
		{name: "The root catches the rest.", path: "/z", want: "root"},
		{name: "A path that is not absolute is tried against the root.", path: "*", want: "root"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := table.Lookup("h.test", tc.path, nil)
			if r == nil || r.Name != tc.want {
				t.Errorf("Lookup(%q) = %v, want %q", tc.path, r, tc.want)
			}
		})
	}
}

func TestLookupAllocatesNothing(t *testing.T) {
	table := build(t,
		object("exact", 0, []string{"a.example.com"}, []string{"/api"}, header("x-a")),
		object("wild", 1, []string{"*.example.com"}, nil),
	)
	h := http.Header{"X-A": {"1"}}
	for _, host := range []string{"a.example.com", "A.EXAMPLE.COM:8080", "x.y.example.com", "X.Y.EXAMPLE.COM"} {
		if n := testing.AllocsPerRun(100, func() { table.Lookup(host, "/api/x", h) }); n != 0 {
			t.Errorf("Lookup(%q) allocates %v times, want 0", host, n)
		}
	}
}

func TestConflictingObjectIsNotRouted(t *testing.T) {
	older := object("older", 0, []string{"a.example.com"}, []string{"/api"})
	newer := object("newer", 1, []string{"A.example.com", "b.example.com"}, []string{"/api/"})
	table, conflicts := Build([]*v1alpha1.HTTPScaledObject{newer, older}, endpointslices.NewStore(logr.Discard()), newFakeCounters(), Defaults{})
	if table.Len() != 1 || table.Routes()[0].Name != "older" {
		t.Errorf("routes = %v, want only the older object", table.Routes())
	}
	if c, ok := conflicts["ns/newer"]; !ok || c.Winner != "ns/older" {
		t.Errorf("conflicts = %v, want ns/newer lost to ns/older", conflicts)
	}
	if r := table.Lookup("b.example.com", "/api", nil); r != nil {
		t.Errorf("a host of the losing object is routed to %q", r.Key)
	}
}

func TestRouteFields(t *testing.T) {
	d := Defaults{ColdStartTimeout: time.Minute, ResponseHeaderTimeout: 10 * time.Second, RequestTimeout: 0, MaxPending: 1000}
	dur := func(d time.Duration) *metav1.Duration { return &metav1.Duration{Duration: d} }
	cases := []struct {
		name  string
		edit  func(*v1alpha1.HTTPScaledObjectSpec)
		check func(*testing.T, *Route, *fakeCounters)
	}{
		{
			name: "Unset fields take the defaults.",
			edit: func(*v1alpha1.HTTPScaledObjectSpec) {},
			check: func(t *testing.T, r *Route, f *fakeCounters) {
				if r.ColdStartTimeout != time.Minute || r.ResponseHeaderTimeout != 10*time.Second ||
					r.RequestTimeout != 0 || r.MaxPending != 1000 || r.Failover != nil ||
					r.Placeholder != nil || r.Overflow != OverflowReject {
					t.Errorf("route = %+v, want the defaults", r)
				}
				if got := f.windows["ns/app"]; got != [2]time.Duration{time.Minute, time.Second} {
					t.Errorf("rate window = %v, want 1m/1s", got)
				}
				if r.Key != "ns/app" || r.Counts != f.routes["ns/app"] || r.Target == nil {
					t.Errorf("route = %+v, want its key, counters and target", r)
				}
			},
		},
		{
			name: "Timeouts override the defaults.",
			edit: func(s *v1alpha1.HTTPScaledObjectSpec) {
				s.Timeouts = &v1alpha1.HTTPScaledObjectTimeoutsSpec{
					ConditionWait: dur(5 * time.Second), ResponseHeader: dur(2 * time.Second), Request: dur(time.Hour),
				}
			},
			check: func(t *testing.T, r *Route, _ *fakeCounters) {
				if r.ColdStartTimeout != 5*time.Second || r.ResponseHeaderTimeout != 2*time.Second || r.RequestTimeout != time.Hour {
					t.Errorf("timeouts = %v, %v, %v; want 5s, 2s, 1h", r.ColdStartTimeout, r.ResponseHeaderTimeout, r.RequestTimeout)
				}
			},
		},
		{
			name: "A failover's timeout beats conditionWait.",
			edit: func(s *v1alpha1.HTTPScaledObjectSpec) {
				s.Timeouts = &v1alpha1.HTTPScaledObjectTimeoutsSpec{ConditionWait: dur(5 * time.Second)}
				s.ColdStartTimeoutFailoverRef = &v1alpha1.ColdStartTimeoutFailoverRef{Service: "fallback", PortName: "http", TimeoutSeconds: 3}
			},
			check: func(t *testing.T, r *Route, _ *fakeCounters) {
				if r.ColdStartTimeout != 3*time.Second {
					t.Errorf("cold-start timeout = %v, want 3s", r.ColdStartTimeout)
				}
				if r.Failover == nil || r.Failover.String() != "ns/fallback:http" {
					t.Errorf("failover = %v, want ns/fallback:http", r.Failover)
				}
			},
		},
		{
			name: "A placeholder is prepared once with defaults filled in.",
			edit: func(s *v1alpha1.HTTPScaledObjectSpec) {
				s.ColdStart = &v1alpha1.ColdStartSpec{
					MaxPendingRequests: new(int32(7)),
					Overflow:           v1alpha1.OverflowPlaceholder,
					Placeholder:        &v1alpha1.PlaceholderSpec{Headers: map[string]v1alpha1.PlaceholderHeaderValue{"retry-after": "5"}, Body: "starting"},
				}
			},
			check: func(t *testing.T, r *Route, _ *fakeCounters) {
				p := r.Placeholder
				if r.MaxPending != 7 || r.Overflow != OverflowPlaceholder || p == nil {
					t.Fatalf("route = %+v, want max pending 7 and a placeholder overflow", r)
				}
				want := http.Header{"Retry-After": {"5"}, "Content-Type": {"text/plain; charset=utf-8"}, "Content-Length": {"8"}}
				if p.StatusCode != http.StatusServiceUnavailable || string(p.Body) != "starting" || len(p.Header) != len(want) {
					t.Errorf("placeholder = %+v, want 503 %q with %v", p, "starting", want)
				}
				for k, v := range want {
					if p.Header.Get(k) != v[0] {
						t.Errorf("placeholder header %s = %q, want %q", k, p.Header.Get(k), v[0])
					}
				}
			},
		},
		{
			name: "A placeholder keeps its own content type and status.",
			edit: func(s *v1alpha1.HTTPScaledObjectSpec) {
				s.ColdStart = &v1alpha1.ColdStartSpec{
					Placeholder: &v1alpha1.PlaceholderSpec{StatusCode: 200, Headers: map[string]v1alpha1.PlaceholderHeaderValue{"Content-Type": "text/html"}},
				}
			},
			check: func(t *testing.T, r *Route, _ *fakeCounters) {
				p := r.Placeholder
				if p.StatusCode != 200 || p.Header.Get("Content-Type") != "text/html" || p.Header.Get("Content-Length") != "0" {
					t.Errorf("placeholder = %+v, want 200 text/html with length 0", p)
				}
				if r.Overflow != OverflowReject {
					t.Errorf("overflow = %v, want reject", r.Overflow)
				}
			},
		},
		{
			name: "The request rate's window and granularity reach the counters.",
			edit: func(s *v1alpha1.HTTPScaledObjectSpec) {
				s.ScalingMetric = &v1alpha1.ScalingMetricSpec{Rate: &v1alpha1.RateMetricSpec{
					TargetValue: 10, Window: metav1.Duration{Duration: 30 * time.Second}, Granularity: metav1.Duration{Duration: 5 * time.Second},
				}}
			},
			check: func(t *testing.T, _ *Route, f *fakeCounters) {
				if got := f.windows["ns/app"]; got != [2]time.Duration{30 * time.Second, 5 * time.Second} {
					t.Errorf("rate window = %v, want 30s/5s", got)
				}
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := object("app", 0, []string{"app.test"}, nil)
			tc.edit(&o.Spec)
			f := newFakeCounters()
			table, _ := Build([]*v1alpha1.HTTPScaledObject{o}, endpointslices.NewStore(logr.Discard()), f, d)
			tc.check(t, table.Routes()[0], f)
		})
	}
}

func TestRouteInsecureSkipVerifyFromTheAnnotation(t *testing.T) {
	cases := []struct {
		name        string
		annotations map[string]string
		want        bool
	}{
		{"An object without the annotation is verified.", nil, false},
		{"The annotation set to true skips verification.", map[string]string{v1alpha1.UpstreamTLSInsecureSkipVerifyAnnotation: "true"}, true},
		{"The annotation set to false is verified.", map[string]string{v1alpha1.UpstreamTLSInsecureSkipVerifyAnnotation: "false"}, false},
		{"Any other value than true is verified.", map[string]string{v1alpha1.UpstreamTLSInsecureSkipVerifyAnnotation: "yes"}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := object("app", 0, []string{"app.test"}, nil)
			o.Annotations = tc.annotations
			table, _ := Build([]*v1alpha1.HTTPScaledObject{o}, endpointslices.NewStore(logr.Discard()), newFakeCounters(), Defaults{MaxPending: 1})
			if got := table.Routes()[0].InsecureSkipVerify; got != tc.want {
				t.Errorf("InsecureSkipVerify = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestRouter(t *testing.T) {
	rt := NewRouter()
	req := httptest.NewRequest(http.MethodGet, "http://App.Test:8080/x", nil)
	if r := rt.Route(req); r != nil {
		t.Errorf("Route before any table = %v, want nil", r)
	}
	rt.SetTable(build(t, object("app", 0, []string{"app.test"}, nil)))
	if r := rt.Route(req); r == nil || r.Name != "app" {
		t.Errorf("Route = %v, want app", r)
	}
}

func TestHasUpper(t *testing.T) {
	naive := func(s string) bool { return strings.ContainsFunc(s, func(r rune) bool { return 'A' <= r && r <= 'Z' }) }
	inputs := []string{"", "a", "A", "abcdefgh", "abcdefgZ", "abcdefghZ", "@[`{", "\x80\xc1\xda\xff", "ÄÖÜ.example.com",
		"svc-1.apps.example.com", "svc-1.apps.Example.com", "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzA"}
	for b := range 256 {
		inputs = append(inputs, strings.Repeat("a", b%9)+string([]byte{byte(b)})+"xxxxxxxx")
	}
	for _, in := range inputs {
		if got, want := hasUpper(in), naive(in); got != want {
			t.Errorf("hasUpper(%q) = %v, want %v", in, got, want)
		}
	}
}

package routing

import (
	"net/http"
	"testing"

	"github.com/go-logr/logr"

	"github.com/lobby-http/lobby/interceptor/internal/endpointslices"
	"github.com/lobby-http/lobby/internal/httpso"
	"github.com/lobby-http/lobby/operator/api/v1beta1"
)

func TestLookupPicksStaticRoutesAmongTheRoutesRequests(t *testing.T) {
	body := func(s string) v1beta1.StaticResponse { return v1beta1.StaticResponse{Body: &s} }
	one := "1"
	ir := asInterceptorRoute(object("app", 0, []string{"shop.example.com", "*.shop.example.com"}, []string{"/"}), false)
	ir.Spec.StaticRoutes = []v1beta1.StaticRoute{
		{Rules: []v1beta1.RoutingRule{{Paths: []v1beta1.PathMatch{{Value: "/healthz"}}}}, Response: body("first")},
		{Rules: []v1beta1.RoutingRule{{Paths: []v1beta1.PathMatch{{Value: "/healthz"}}}}, Response: body("second")},
		{Rules: []v1beta1.RoutingRule{{Hosts: []string{"*.shop.example.com"}, Paths: []v1beta1.PathMatch{{Value: "/sub"}}}}, Response: body("wild")},
		{Rules: []v1beta1.RoutingRule{
			{Hosts: []string{"shop.example.com"}, Paths: []v1beta1.PathMatch{{Value: "/probe"}}},
			{Headers: []v1beta1.HeaderMatch{{Name: "X-Probe", Value: &one}}},
		}, Response: body("probe")},
	}
	other := object("other", 1, []string{"other.example.com"}, nil)
	table, conflicts := BuildObjects([]*httpso.Object{httpso.FromInterceptorRoute(ir), httpso.FromHTTPScaledObject(other)},
		endpointslices.NewStore(logr.Discard()), newFakeCounters(), nil, Defaults{})
	if len(conflicts) != 0 {
		t.Fatalf("conflicts: %v", conflicts)
	}
	tests := []struct {
		name       string
		host, path string
		header     http.Header
		// want is the static response body, "" for the route itself, "other" for the other object.
		want string
	}{
		{name: "the first static route of two with the same rule wins", host: "shop.example.com", path: "/healthz", want: "first"},
		{name: "a path below a static prefix matches it", host: "shop.example.com", path: "/healthz/live", want: "first"},
		{name: "a path sharing only characters with a static prefix does not", host: "shop.example.com", path: "/healthzz", want: ""},
		{name: "a static wildcard host matches a subdomain", host: "a.shop.example.com", path: "/sub", want: "wild"},
		{name: "a static wildcard host does not match the bare domain", host: "shop.example.com", path: "/sub", want: ""},
		{name: "a static host matches case-insensitively, with a port", host: "SHOP.Example.com:8080", path: "/probe", want: "probe"},
		{name: "a second rule of a static route matches on its own", host: "a.shop.example.com", path: "/x", header: http.Header{"X-Probe": {"1"}}, want: "probe"},
		{name: "a header with another value does not", host: "a.shop.example.com", path: "/x", header: http.Header{"X-Probe": {"2"}}, want: ""},
		{name: "another object's requests never reach a static route", host: "other.example.com", path: "/healthz", want: "other"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := table.Lookup(tt.host, tt.path, tt.header)
			var got string
			switch {
			case r == nil:
				t.Fatal("no route")
			case r.Static != nil:
				got = string(r.Static.Response.Body)
			case r.Name == "other":
				got = "other"
			case r.Counts == nil:
				t.Fatal("the route has no counters")
			}
			if got != tt.want {
				t.Errorf("lookup answered %q, want %q", got, tt.want)
			}
		})
	}
	if allocs := testing.AllocsPerRun(100, func() { table.Lookup("SHOP.example.com", "/probe", nil) }); allocs != 0 {
		t.Errorf("a static lookup allocates %v times", allocs)
	}
}

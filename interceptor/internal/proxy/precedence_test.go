package proxy_test

import (
	"net/http"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/lobby-http/lobby/interceptor/internal/endpoints"
	"github.com/lobby-http/lobby/interceptor/internal/routing"
	"github.com/lobby-http/lobby/operator/api/v1alpha1"
)

// object is an HTTPScaledObject named and backed by Service svc.
func object(svc string, hosts, paths []string, headers ...v1alpha1.Header) *v1alpha1.HTTPScaledObject {
	return &v1alpha1.HTTPScaledObject{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: svc, CreationTimestamp: metav1.NewTime(time.Unix(1_700_000_000, 0))},
		Spec: v1alpha1.HTTPScaledObjectSpec{
			Hosts: hosts, PathPrefixes: paths, Headers: headers,
			ScaleTargetRef: v1alpha1.ScaleTargetRef{Name: svc, Service: svc, PortName: "http"},
		},
	}
}

func TestRoutingPrecedenceThroughTheChain(t *testing.T) {
	e := newTestEnv(t)
	beta := "beta"
	objs := []*v1alpha1.HTTPScaledObject{
		object("exact", []string{"shop.example.com"}, nil),
		object("exact-api", []string{"shop.example.com"}, []string{"/api"}),
		object("exact-api-beta", []string{"shop.example.com"}, []string{"/api"}, v1alpha1.Header{Name: "x-channel", Value: &beta}),
		object("wild", []string{"*.example.com"}, nil),
		object("wild-deep", []string{"*.eu.example.com"}, nil),
		object("catchall", nil, []string{"/static"}),
	}
	for i, o := range objs {
		ip := "10.0.1." + string(rune('1'+i))
		e.backend(ip, hello(o.Name))
		e.targets.Target(ns, o.Name, 0, "http")
		e.target(o.Name, endpoints.HTTP1)
		e.ready(o.Name, ip)
	}
	table, conflicts := routing.Build(objs, e.targets, e.counts, routing.Defaults{
		ColdStartTimeout: time.Second, ResponseHeaderTimeout: time.Second, MaxPending: 10,
	})
	if len(conflicts) != 0 {
		t.Fatalf("conflicts: %v", conflicts)
	}
	router := routing.NewRouter()
	router.SetTable(table)
	e.mu.Lock()
	e.router = router
	e.mu.Unlock()

	tests := []struct {
		name   string
		host   string
		path   string
		header http.Header
		want   string // the answering object, or "" for 404
	}{
		{name: "an exact host matches its object", host: "shop.example.com", path: "/", want: "exact"},
		{name: "an upper-case host matches case-insensitively", host: "SHOP.Example.COM", path: "/", want: "exact"},
		{name: "a host with a port matches without it", host: "shop.example.com:8080", path: "/", want: "exact"},
		{name: "the longest path prefix wins", host: "shop.example.com", path: "/api/items", want: "exact-api"},
		{name: "a path prefix matches whole segments only", host: "shop.example.com", path: "/apix", want: "exact"},
		{name: "a header match beats the same prefix without headers", host: "shop.example.com", path: "/api/x", header: http.Header{"X-Channel": {"beta"}}, want: "exact-api-beta"},
		{name: "a header with another value does not match", host: "shop.example.com", path: "/api/x", header: http.Header{"X-Channel": {"stable"}}, want: "exact-api"},
		{name: "a wildcard matches a subdomain without an exact route", host: "cart.example.com", path: "/", want: "wild"},
		{name: "the most specific wildcard wins", host: "cart.eu.example.com", path: "/", want: "wild-deep"},
		{name: "an upper-case host with a port matches a wildcard", host: "CART.EU.EXAMPLE.COM:443", path: "/", want: "wild-deep"},
		{name: "a wildcard does not match its bare domain", host: "example.com", path: "/static/x", want: "catchall"},
		{name: "the catch-all answers other hosts on its prefix", host: "other.test", path: "/static/app.js", want: "catchall"},
		{name: "other hosts off the catch-all prefix get 404", host: "other.test", path: "/", want: ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, e.proxy.URL+tc.path, nil)
			req.Host = tc.host
			for k, v := range tc.header {
				req.Header[k] = v
			}
			resp, err := e.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body := readAll(resp)
			switch {
			case tc.want == "" && resp.StatusCode != http.StatusNotFound:
				t.Errorf("response = %d %q, want 404", resp.StatusCode, body)
			case tc.want != "" && (resp.StatusCode != http.StatusOK || body != "hello from "+tc.want):
				t.Errorf("response = %d %q, want 200 from %s", resp.StatusCode, body, tc.want)
			}
		})
	}
}

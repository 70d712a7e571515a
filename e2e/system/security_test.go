//go:build e2e

package system

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/lobby-http/lobby/e2e/apps"
	"github.com/lobby-http/lobby/e2e/deploy"
	"github.com/lobby-http/lobby/e2e/framework/poll"
	"github.com/lobby-http/lobby/e2e/netns"
	"github.com/lobby-http/lobby/internal/externalscaler"
	"github.com/lobby-http/lobby/internal/stream"
	"github.com/lobby-http/lobby/operator/api/v1alpha1"
)

// TestAdminPortUnreachableThroughProxy sends the admin server's paths to every interceptor's proxy
// port, under every Host a client could use to name the admin server, and requires each answer to
// be the routing's: the routing's 404, or the routed app's echo. The admin port must also be on
// no Service but the admin one, in the rendered chart and in the cluster.
func TestAdminPortUnreachableThroughProxy(t *testing.T) {
	ns := testNamespace(t)
	ctx := t.Context()
	const host = "admin-isolation.test"
	deployApp(t, ns, appSpec{name: "echo", replicas: 1, hso: v1alpha1.HTTPScaledObjectSpec{
		Hosts: []string{host}, Replicas: &v1alpha1.ReplicaStruct{Min: ptr.To[int32](1), Max: ptr.To[int32](1)},
	}})

	rel := suite.lobby
	adminSvc := rel.Release + "-interceptor-admin"
	var live corev1.Service
	if err := suite.cluster.Client.Get(ctx, client.ObjectKey{Namespace: rel.Namespace, Name: adminSvc}, &live); err != nil {
		t.Fatalf("get the admin Service: %v", err)
	}
	apiServer, err := url.Parse(suite.cluster.APIServerURL)
	if err != nil {
		t.Fatal(err)
	}
	paths := []string{"/queue", "/metrics", "/livez", "/readyz", stream.Path, stream.Path + "?version=1", "/queue?x=1", "/metrics/"}

	for _, in := range rel.Instances("interceptor") {
		adminAddr := netip.AddrPortFrom(in.Addr, uint16(in.Ports["admin"])).String()
		proxyAddr := netip.AddrPortFrom(in.Addr, uint16(in.Ports["http"])).String()

		// What the admin port serves, so that the check below is known to tell it apart.
		for _, p := range []string{"/queue", "/metrics", "/livez", "/readyz"} {
			res, err := wireExchange(adminAddr, netip.Addr{}, 10*time.Second, wireRequest("GET "+p+" HTTP/1.1", "Host: "+adminAddr,
				"Authorization: Bearer "+rel.Admin.Token(), "Connection: close"))
			if err != nil || res.code != http.StatusOK {
				t.Fatalf("the admin port %s answers %s with %d, %v; want 200", adminAddr, p, res.code, err)
			}
			if routingAnswer(res, p) == nil {
				t.Fatalf("the check cannot tell the admin answer to %s (%q) from the routing's", p, excerpt(res.body))
			}
		}

		hosts := []string{
			adminAddr, in.Addr.String(), proxyAddr, "localhost", "localhost:9090", "127.0.0.1", "127.0.0.1:9090",
			adminSvc, adminSvc + "." + rel.Namespace + ".svc.cluster.local:9090", live.Spec.ClusterIP, live.Spec.ClusterIP + ":9090",
			apiServer.Host, host,
		}
		var requests []string
		for _, h := range hosts {
			for _, p := range paths {
				requests = append(requests, wireRequest("GET "+p+" HTTP/1.1", "Host: "+h, "Connection: close"))
			}
		}
		for _, p := range paths {
			requests = append(requests,
				// No Host at all (HTTP/1.0 allows it).
				wireRequest("GET "+p+" HTTP/1.0"),
				// Absolute form: the authority names the admin server, whatever Host says.
				wireRequest("GET http://"+adminAddr+p+" HTTP/1.1", "Host: "+host, "Connection: close"),
				wireRequest("GET http://localhost:9090"+p+" HTTP/1.1", "Host: localhost:9090", "Connection: close"),
				// Headers some proxies route or rewrite by.
				wireRequest("GET "+p+" HTTP/1.1", "Host: "+host, "X-Forwarded-Host: "+adminAddr, "X-Forwarded-Port: 9090",
					"Forwarded: host="+adminAddr, "X-Original-URL: "+p, "X-Rewrite-URL: "+p, "Connection: close"),
			)
		}
		for _, req := range requests {
			res, err := wireExchange(proxyAddr, netip.Addr{}, 30*time.Second, req)
			if err != nil {
				t.Errorf("%s: %q: no complete answer: %v", in.Process.Name, req, err)
				continue
			}
			if err := routingAnswer(res, wirePath(req)); err != nil {
				t.Errorf("%s: %q: %v", in.Process.Name, req, err)
			}
		}
	}

	// The admin port is on the admin Service only, which stays inside the cluster.
	for _, svc := range rel.Rendered.OfKind("Service") {
		var s corev1.Service
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(svc.Object, &s); err != nil {
			t.Fatal(err)
		}
		checkAdminPortPlacement(t, "rendered", &s, adminSvc)
		var got corev1.Service
		if err := suite.cluster.Client.Get(ctx, client.ObjectKey{Namespace: rel.Namespace, Name: s.Name}, &got); err != nil {
			t.Fatalf("get Service %s: %v", s.Name, err)
		}
		checkAdminPortPlacement(t, "in the cluster", &got, adminSvc)
	}
	var proxySlices discoveryv1.EndpointSliceList
	if err := suite.cluster.Client.List(ctx, &proxySlices, client.InNamespace(rel.Namespace),
		client.MatchingLabels{discoveryv1.LabelServiceName: rel.Release + "-interceptor-proxy"}); err != nil {
		t.Fatal(err)
	}
	if len(proxySlices.Items) == 0 {
		t.Fatal("the proxy Service has no EndpointSlice")
	}
	for _, sl := range proxySlices.Items {
		for _, p := range sl.Ports {
			if ptr.Deref(p.Name, "") != "http" || ptr.Deref(p.Port, 0) == int32(rel.Instances("interceptor")[0].Ports["admin"]) {
				t.Errorf("EndpointSlice %s of the proxy Service lists port %s %d; want only http", sl.Name, ptr.Deref(p.Name, ""), ptr.Deref(p.Port, 0))
			}
		}
	}
}

// checkAdminPortPlacement fails t when s carries the interceptor's admin port though it is not
// the admin Service, or is the admin Service and is reachable from outside the cluster.
func checkAdminPortPlacement(t *testing.T, where string, s *corev1.Service, adminSvc string) {
	t.Helper()
	if s.Spec.Selector["app.kubernetes.io/component"] != "interceptor" {
		return
	}
	for _, p := range s.Spec.Ports {
		admin := p.Name == "admin" || p.TargetPort == intstr.FromString("admin") || p.TargetPort == intstr.FromInt32(9090) || p.Port == 9090
		if admin && s.Name != adminSvc {
			t.Errorf("%s: Service %s carries the admin port (%s %d → %s)", where, s.Name, p.Name, p.Port, p.TargetPort.String())
		}
	}
	if s.Name == adminSvc {
		if typ := s.Spec.Type; typ != "" && typ != corev1.ServiceTypeClusterIP {
			t.Errorf("%s: the admin Service is of type %s; want ClusterIP, unreachable from outside the cluster", where, typ)
		}
		if len(s.Spec.ExternalIPs) > 0 {
			t.Errorf("%s: the admin Service has external IPs %v", where, s.Spec.ExternalIPs)
		}
	}
}

// routingAnswer returns nil when res is the routing's own 404 or the echo app's answer to path,
// and an error saying what it is otherwise.
func routingAnswer(res wireResult, path string) error {
	if res.code == http.StatusNotFound && res.body == "not found\n" {
		return nil
	}
	var e echoed
	if res.code == http.StatusOK && json.Unmarshal([]byte(res.body), &e) == nil && e.PodName != "" && e.Path == path {
		return nil
	}
	return fmt.Errorf("answer %d %q is neither the routing's 404 nor the routed app's echo of %s", res.code, excerpt(res.body), path)
}

// TestInterceptorDialsOnlyEndpointSliceAddresses puts canary listeners where a confused proxy
// might connect — addresses in the route Service's not-ready, terminating or misnamed-port
// endpoints, in another Service's EndpointSlice, on the Service's ClusterIP — and sends requests
// whose Host, X-Forwarded-Host, Forwarded, absolute-form target or CONNECT authority name them.
// No canary may see a connection; every answer must be the routing's; the routed requests reach
// the one ready endpoint, and when the EndpointSlice moves to another address, only that one.
func TestInterceptorDialsOnlyEndpointSliceAddresses(t *testing.T) {
	ns := testNamespace(t)
	ctx := t.Context()
	c := suite.cluster
	const host = "guarded.test"

	first, second := startWireBackend(t, "first"), startWireBackend(t, "second")
	canaryAddr, err := c.AllocAddr()
	if err != nil {
		t.Fatal(err)
	}
	canaries := []*canary{listenCanary(t, netip.AddrPortFrom(canaryAddr, 8080)), listenCanary(t, netip.AddrPortFrom(canaryAddr, 80))}

	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "guarded", Namespace: ns},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{
			Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP,
		}}},
	}
	if err := c.Client.Create(ctx, svc); err != nil {
		t.Fatalf("create Service: %v", err)
	}
	// The ClusterIP is where kube-proxy would send the Service's traffic; nothing here implements
	// it, so a canary can sit there.
	clusterIP, err := netip.ParseAddr(svc.Spec.ClusterIP)
	if err != nil {
		t.Fatalf("Service guarded has ClusterIP %q: %v", svc.Spec.ClusterIP, err)
	}
	if err := netns.AddAddr(clusterIP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = netns.DelAddr(clusterIP) })
	canaries = append(canaries, listenCanary(t, netip.AddrPortFrom(clusterIP, 80)), listenCanary(t, netip.AddrPortFrom(clusterIP, 8080)))

	canaryIP := canaryAddr.String()
	eps := []*discoveryv1.EndpointSlice{
		testSlice(ns, "guarded-ready", "guarded", "http", 8080, testEndpoint(first.addr.Addr(), true, false)),
		testSlice(ns, "guarded-not-ready", "guarded", "http", 8080, testEndpoint(canaryAddr, false, false)),
		testSlice(ns, "guarded-terminating", "guarded", "http", 8080, testEndpoint(canaryAddr, false, true)),
		testSlice(ns, "guarded-other-port", "guarded", "admin", 8080, testEndpoint(canaryAddr, true, false)),
		testSlice(ns, "bystander", "bystander", "http", 8080, testEndpoint(canaryAddr, true, false)),
	}
	for _, sl := range eps {
		if err := c.Client.Create(ctx, sl); err != nil {
			t.Fatalf("create EndpointSlice %s: %v", sl.Name, err)
		}
	}
	hso := &v1alpha1.HTTPScaledObject{
		ObjectMeta: metav1.ObjectMeta{Name: "guarded", Namespace: ns,
			// Nothing to scale: the endpoint is the test's own server.
			Annotations: map[string]string{v1alpha1.SkipScaledObjectCreationAnnotation: "true"}},
		Spec: v1alpha1.HTTPScaledObjectSpec{
			Hosts:          []string{host},
			ScaleTargetRef: v1alpha1.ScaleTargetRef{Name: "guarded", Kind: "Deployment", APIVersion: "apps/v1", Service: "guarded", Port: 80},
		},
	}
	if err := c.Client.Create(ctx, hso); err != nil {
		t.Fatalf("create HTTPScaledObject: %v", err)
	}

	interceptors := suite.lobby.Instances("interceptor")
	proxyAddr := func(i int) string {
		in := interceptors[i%len(interceptors)]
		return netip.AddrPortFrom(in.Addr, uint16(in.Ports["http"])).String()
	}
	plain := wireRequest("GET / HTTP/1.1", "Host: "+host, "Connection: close")
	for i := range interceptors {
		if err := poll.Until(t.Context(), 60*time.Second, proxyAddr(i)+" to route "+host+" to its endpoint", func() error {
			res, err := wireExchange(proxyAddr(i), netip.Addr{}, 10*time.Second, plain)
			if err == nil && res.header.Get("X-Backend") != "first" {
				err = fmt.Errorf("answer %d %q", res.code, excerpt(res.body))
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	for _, cn := range canaries {
		cn.selfTest(t)
	}

	apiServer, err := url.Parse(c.APIServerURL)
	if err != nil {
		t.Fatal(err)
	}
	adminAddr := netip.AddrPortFrom(interceptors[0].Addr, uint16(interceptors[0].Ports["admin"])).String()
	const routed, notFound, refused = "the routed endpoint", "404", "refused"
	cases := []struct {
		name string
		req  string
		// want is routed (200 from the EndpointSlice's endpoint), notFound (the routing's 404),
		// refused (a 4xx of the interceptor's own, the request not passed on) or "" (any answer
		// but a canary's; the point is only where the interceptor connects).
		want string
	}{
		{"Host names the canary", wireRequest("GET / HTTP/1.1", "Host: "+canaryIP, "Connection: close"), notFound},
		{"Host names the canary and its port", wireRequest("GET / HTTP/1.1", "Host: "+canaryIP+":8080", "Connection: close"), notFound},
		{"Host names the Service's ClusterIP", wireRequest("GET / HTTP/1.1", "Host: "+clusterIP.String()+":80", "Connection: close"), notFound},
		{"Host names the API server", wireRequest("GET / HTTP/1.1", "Host: "+apiServer.Host, "Connection: close"), notFound},
		{"Host names the admin port", wireRequest("GET / HTTP/1.1", "Host: "+adminAddr, "Connection: close"), notFound},
		{"X-Forwarded-Host names the canary", wireRequest("GET / HTTP/1.1", "Host: "+host, "X-Forwarded-Host: "+canaryIP+":8080", "Connection: close"), routed},
		{"every forwarding header names the canary", wireRequest("GET / HTTP/1.1", "Host: "+host,
			"X-Forwarded-Host: "+canaryIP+":8080", "X-Forwarded-For: "+canaryIP, "X-Forwarded-Port: 8080", "X-Forwarded-Server: "+canaryIP,
			"X-Real-IP: "+canaryIP, "X-Host: "+canaryIP+":8080", "X-Original-Host: "+canaryIP+":8080",
			"X-Original-URL: http://"+canaryIP+":8080/", "X-Rewrite-URL: http://"+canaryIP+":8080/",
			"Forwarded: for="+canaryIP+";host=\""+canaryIP+":8080\";proto=http", "Via: 1.1 "+canaryIP, "Connection: close"), routed},
		{"absolute-form target names the canary", wireRequest("GET http://"+canaryIP+":8080/ HTTP/1.1", "Host: "+host, "Connection: close"), notFound},
		{"absolute-form target names the ClusterIP", wireRequest("GET http://"+clusterIP.String()+"/ HTTP/1.1", "Host: "+host, "Connection: close"), notFound},
		{"absolute-form target names the route, Host the canary", wireRequest("GET http://"+host+"/ HTTP/1.1", "Host: "+canaryIP+":8080", "Connection: close"), routed},
		{"absolute-form target with user info naming the route", wireRequest("GET http://"+host+"@"+canaryIP+":8080/ HTTP/1.1", "Host: "+host, "Connection: close"), ""},
		{"HTTP/1.0 absolute-form target names the canary", wireRequest("GET http://" + canaryIP + ":8080/ HTTP/1.0"), notFound},
		{"path looks like an address", wireRequest("GET /"+canaryIP+":8080/ HTTP/1.1", "Host: "+host, "Connection: close"), routed},
		{"CONNECT to the canary", wireRequest("CONNECT "+canaryIP+":8080 HTTP/1.1", "Host: "+canaryIP+":8080"), ""},
		{"CONNECT to the route's host", wireRequest("CONNECT "+host+":80 HTTP/1.1", "Host: "+host), ""},
		{"WebSocket upgrade with Host naming the canary", wireRequest("GET / HTTP/1.1", "Host: "+canaryIP+":8080", "Connection: Upgrade",
			"Upgrade: websocket", "Sec-WebSocket-Version: 13", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="), notFound},
		{"two Host headers", wireRequest("GET / HTTP/1.1", "Host: "+host, "Host: "+canaryIP+":8080", "Connection: close"), refused},
		{"Host with user info", wireRequest("GET / HTTP/1.1", "Host: "+host+"@"+canaryIP+":8080", "Connection: close"), ""},
	}
	for i, tc := range cases {
		before := first.requestCount()
		res, err := wireExchange(proxyAddr(i), netip.Addr{}, 20*time.Second, tc.req)
		got := first.requestCount() - before
		switch {
		case tc.want == "":
			// Only where the interceptor connects matters; a CONNECT may be held open.
		case err != nil:
			t.Errorf("%s: no complete answer: %v", tc.name, err)
		case tc.want == routed && (res.code != http.StatusOK || res.header.Get("X-Backend") != "first" || got != 1):
			t.Errorf("%s: got %d %q (endpoint saw %d requests); want the routed endpoint's answer", tc.name, res.code, excerpt(res.body), got)
		case tc.want == notFound && (res.code != http.StatusNotFound || res.body != "not found\n" || got != 0):
			t.Errorf("%s: got %d %q (endpoint saw %d requests); want the routing's 404", tc.name, res.code, excerpt(res.body), got)
		case tc.want == refused && (res.code < 400 || res.code >= 500 || res.header.Get("X-Backend") != "" || got != 0):
			t.Errorf("%s: got %d %q (endpoint saw %d requests); want a 4xx of the interceptor's own", tc.name, res.code, excerpt(res.body), got)
		}
	}
	for _, r := range first.seen() {
		// The route matches the host whatever the port (a CONNECT's authority carries one).
		if h, _, err := net.SplitHostPort(r.host); (err != nil && r.host != host) || (err == nil && h != host) {
			t.Errorf("the endpoint got a request for host %q (%s %s); only %s routes to it", r.host, r.method, r.target, host)
		}
	}

	// The EndpointSlice moves to the second server: the interceptors follow it, and only it.
	moved := eps[0].DeepCopy()
	moved.Endpoints = []discoveryv1.Endpoint{testEndpoint(second.addr.Addr(), true, false)}
	if err := c.Client.Update(ctx, moved); err != nil {
		t.Fatalf("move the ready endpoint: %v", err)
	}
	for i := range interceptors {
		if err := poll.Until(t.Context(), 30*time.Second, proxyAddr(i)+" to follow the EndpointSlice to the second server", func() error {
			res, err := wireExchange(proxyAddr(i), netip.Addr{}, 10*time.Second, plain)
			if err == nil && res.header.Get("X-Backend") != "second" {
				err = fmt.Errorf("answered by %q", res.header.Get("X-Backend"))
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	before := first.requestCount()
	for i := range 20 {
		res, err := wireExchange(proxyAddr(i), netip.Addr{}, 10*time.Second, plain)
		if err != nil || res.header.Get("X-Backend") != "second" {
			t.Errorf("request %d after the move: %v, answered by %q; want the second server", i, err, res.header.Get("X-Backend"))
		}
	}
	if n := first.requestCount() - before; n != 0 {
		t.Errorf("the first server got %d requests after it left the EndpointSlice", n)
	}

	for _, cn := range canaries {
		if got := cn.connections(); len(got) > 0 {
			t.Errorf("canary %s got %d connections; the interceptors must connect to EndpointSlice addresses only. First bytes: %q",
				cn.addr, len(got), got[0])
		}
	}
}

// TestHopByHopHeadersStripped sends every hop-by-hop header to the echo app through each
// interceptor and requires none of them to arrive, while end-to-end headers do and
// X-Forwarded-* are appended; and has an app answer with hop-by-hop headers, which the client
// must not see.
func TestHopByHopHeadersStripped(t *testing.T) {
	ns := testNamespace(t)
	ctx := t.Context()
	c := suite.cluster
	const host = "hop-by-hop.test"
	deployApp(t, ns, appSpec{name: "echo", replicas: 1, hso: v1alpha1.HTTPScaledObjectSpec{
		Hosts: []string{host}, Replicas: &v1alpha1.ReplicaStruct{Min: ptr.To[int32](1), Max: ptr.To[int32](1)},
	}})

	// The client's own address, so that X-Forwarded-For can be checked exactly.
	from, err := c.AllocAddr()
	if err != nil {
		t.Fatal(err)
	}
	hopHeaders := []string{"X-Secret", "Keep-Alive", "Proxy-Authorization", "Te", "Trailer", "Upgrade", "Proxy-Connection", "Proxy-Authenticate"}
	for _, in := range suite.lobby.Instances("interceptor") {
		proxyAddr := netip.AddrPortFrom(in.Addr, uint16(in.Ports["http"])).String()
		tests := []struct {
			name    string
			headers []string
			// want are the X-Forwarded-* the app must see.
			want map[string]string
		}{
			{
				name: "straight from a client",
				headers: []string{"Connection: X-Secret, keep-alive", "X-Secret: s3cret", "Keep-Alive: timeout=5, max=10",
					"Proxy-Authorization: Basic dXNlcjpwYXNz", "TE: gzip, deflate", "Trailer: X-Checksum", "Upgrade: h2c",
					"Proxy-Connection: keep-alive", "Proxy-Authenticate: Basic", "X-End-To-End: kept"},
				want: map[string]string{"X-Forwarded-For": from.String(), "X-Forwarded-Host": host, "X-Forwarded-Proto": "http"},
			},
			{
				name: "behind an ingress that set X-Forwarded-*",
				headers: []string{"Connection: keep-alive, X-Secret", "X-Secret: s3cret", "Keep-Alive: timeout=5",
					"Proxy-Authorization: Basic dXNlcjpwYXNz", "TE: deflate", "Trailer: X-Checksum", "Upgrade: websocket",
					"Proxy-Connection: close", "X-End-To-End: kept",
					"X-Forwarded-For: 203.0.113.7", "X-Forwarded-For: 198.51.100.2", "X-Forwarded-Host: shop.example.com",
					"X-Forwarded-Proto: https"},
				want: map[string]string{"X-Forwarded-For": "203.0.113.7, 198.51.100.2, " + from.String(),
					"X-Forwarded-Host": "shop.example.com", "X-Forwarded-Proto": "https"},
			},
		}
		for _, tc := range tests {
			req := wireRequest("GET / HTTP/1.1", append([]string{"Host: " + host}, tc.headers...)...)
			res, err := wireExchange(proxyAddr, from, 60*time.Second, req)
			if err != nil {
				t.Fatalf("%s, %s: %v", in.Process.Name, tc.name, err)
			}
			var e echoed
			if res.code != http.StatusOK || json.Unmarshal([]byte(res.body), &e) != nil || e.PodName == "" {
				t.Fatalf("%s, %s: got %d %q; want the echo app's answer", in.Process.Name, tc.name, res.code, excerpt(res.body))
			}
			got := http.Header(e.Headers)
			for _, h := range hopHeaders {
				if v, ok := got[h]; ok {
					t.Errorf("%s, %s: the app got hop-by-hop header %s: %q", in.Process.Name, tc.name, h, v)
				}
			}
			if v := strings.ToLower(strings.Join(got["Connection"], ",")); strings.Contains(v, "x-secret") || strings.Contains(v, "keep-alive") {
				t.Errorf("%s, %s: the app got the client's Connection header %q", in.Process.Name, tc.name, v)
			}
			if v := got.Get("X-End-To-End"); v != "kept" {
				t.Errorf("%s, %s: the end-to-end header X-End-To-End is %q; want kept", in.Process.Name, tc.name, v)
			}
			if e.Host != host {
				t.Errorf("%s, %s: the app saw Host %q; want %q", in.Process.Name, tc.name, e.Host, host)
			}
			for k, want := range tc.want {
				if v := got[k]; len(v) != 1 || v[0] != want {
					t.Errorf("%s, %s: the app got %s %q; want exactly %q", in.Process.Name, tc.name, k, v, want)
				}
			}
		}
	}

	// Response direction: an app that answers with hop-by-hop headers.
	b := startWireBackend(t, "hop")
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "hop", Namespace: ns},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{
			Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP,
		}}},
	}
	sl := testSlice(ns, "hop", "hop", "http", 8080, testEndpoint(b.addr.Addr(), true, false))
	const respHost = "hop-response.test"
	hso := &v1alpha1.HTTPScaledObject{
		ObjectMeta: metav1.ObjectMeta{Name: "hop", Namespace: ns,
			Annotations: map[string]string{v1alpha1.SkipScaledObjectCreationAnnotation: "true"}},
		Spec: v1alpha1.HTTPScaledObjectSpec{
			Hosts:          []string{respHost},
			ScaleTargetRef: v1alpha1.ScaleTargetRef{Name: "hop", Kind: "Deployment", APIVersion: "apps/v1", Service: "hop", Port: 80},
		},
	}
	for _, o := range []client.Object{svc, sl, hso} {
		if err := c.Client.Create(ctx, o); err != nil {
			t.Fatalf("create %T: %v", o, err)
		}
	}
	req := wireRequest("GET "+hopResponsePath+" HTTP/1.1", "Host: "+respHost)
	for _, in := range suite.lobby.Instances("interceptor") {
		proxyAddr := netip.AddrPortFrom(in.Addr, uint16(in.Ports["http"])).String()
		var res wireResult
		if err := poll.Until(t.Context(), 60*time.Second, in.Process.Name+" to route "+respHost, func() error {
			var err error
			if res, err = wireExchange(proxyAddr, netip.Addr{}, 10*time.Second, req); err == nil && res.header.Get("X-Backend") != "hop" {
				err = fmt.Errorf("answer %d %q", res.code, excerpt(res.body))
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
		for _, h := range []string{"X-Hop-Resp", "Keep-Alive", "Proxy-Authenticate", "Proxy-Connection", "Upgrade"} {
			if v, ok := res.header[h]; ok {
				t.Errorf("%s: the client got the app's hop-by-hop header %s: %q", in.Process.Name, h, v)
			}
		}
		if v := strings.ToLower(strings.Join(res.header["Connection"], ",")); strings.Contains(v, "x-hop-resp") || strings.Contains(v, "keep-alive") {
			t.Errorf("%s: the client got the app's Connection header %q", in.Process.Name, v)
		}
		if v := res.header.Get("X-End-To-End-Resp"); v != "kept" || res.body != "hop\n" {
			t.Errorf("%s: end-to-end header %q and body %q; want kept and the app's body", in.Process.Name, v, res.body)
		}
	}
}

// TestScalerTLSWithKEDA runs a scaler of the release with the chart's scaler.tls values (TLS and
// client verification, certificates from a Secret), and has the cluster's KEDA scale an app
// from zero through it, configured as docs/scaler.md tells users: a ScaledObject of their own
// (the HTTPScaledObject carries the skip annotation) whose external-push trigger has
// enableTLS and a TriggerAuthentication with caCert, tlsClientCert and tlsClientKey. Clients
// without a certificate the scaler trusts are refused.
func TestScalerTLSWithKEDA(t *testing.T) {
	ns := testNamespace(t)
	ctx := t.Context()
	c := suite.cluster
	rel := suite.lobby
	const name, host = "tls", "scaler-tls.test"

	addr, err := c.AllocAddr()
	if err != nil {
		t.Fatal(err)
	}
	ca := newTestCA(t, "lobby scaler CA")
	serverCert, serverKey := ca.issue(t, "lobby-scaler", x509.ExtKeyUsageServerAuth, addr,
		rel.Release+"-scaler."+rel.Namespace+".svc.cluster.local")
	clientCert, clientKey := ca.issue(t, "keda-operator", x509.ExtKeyUsageClientAuth, netip.Addr{})
	stranger := newTestCA(t, "another CA")
	strangerCert, strangerKey := stranger.issue(t, "keda-operator", x509.ExtKeyUsageClientAuth, netip.Addr{})

	// The scaler's Secret, as cert-manager writes it, in the release namespace.
	suffix := randomSuffix()
	secretName := rel.Release + "-scaler-tls-" + suffix
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: secretName, Namespace: rel.Namespace},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{"tls.crt": serverCert, "tls.key": serverKey, "ca.crt": ca.certPEM},
	}
	if err := c.Client.Create(ctx, secret); err != nil {
		t.Fatalf("create the scaler's Secret: %v", err)
	}
	t.Cleanup(func() { _ = c.Client.Delete(t.Context(), secret) })
	in, err := rel.StartVariant(ctx, "scaler", deploy.VariantOptions{
		Name:        "tls-" + suffix,
		ValuesFiles: []string{filepath.Join("testdata", "values.yaml")},
		Set: map[string]string{
			"scaler.tls.enabled": "true", "scaler.tls.secretName": secretName, "scaler.tls.verifyClients": "true",
		},
		Addr: addr,
	})
	if err != nil {
		t.Fatalf("start the TLS scaler: %v", err)
	}
	t.Cleanup(func() { _ = in.Process.Stop() })
	scalerAddr := netip.AddrPortFrom(in.Addr, uint16(in.Ports["grpc"])).String()

	// The app, scaled to zero, routed by an HTTPScaledObject whose ScaledObject the user writes.
	dep, svc := apps.Echo{Namespace: ns, Name: name}.Objects()
	hso := &v1alpha1.HTTPScaledObject{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns,
			Annotations: map[string]string{v1alpha1.SkipScaledObjectCreationAnnotation: "true"}},
		Spec: v1alpha1.HTTPScaledObjectSpec{
			Hosts:          []string{host},
			ScaleTargetRef: v1alpha1.ScaleTargetRef{Name: name, Kind: "Deployment", APIVersion: "apps/v1", Service: name, Port: 80},
			Replicas:       &v1alpha1.ReplicaStruct{Min: ptr.To[int32](0), Max: ptr.To[int32](1)},
		},
	}
	kedaSecret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "lobby-scaler-client", Namespace: ns},
		Data:       map[string][]byte{"ca.crt": ca.certPEM, "tls.crt": clientCert, "tls.key": clientKey},
	}
	auth := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "keda.sh/v1alpha1", "kind": "TriggerAuthentication",
		"metadata": map[string]any{"name": "lobby-scaler-tls", "namespace": ns},
		"spec": map[string]any{"secretTargetRef": []any{
			map[string]any{"parameter": "caCert", "name": kedaSecret.Name, "key": "ca.crt"},
			map[string]any{"parameter": "tlsClientCert", "name": kedaSecret.Name, "key": "tls.crt"},
			map[string]any{"parameter": "tlsClientKey", "name": kedaSecret.Name, "key": "tls.key"},
		}},
	}}
	so := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
		"metadata": map[string]any{"name": name, "namespace": ns},
		"spec": map[string]any{
			"scaleTargetRef":  map[string]any{"name": name},
			"minReplicaCount": int64(0), "maxReplicaCount": int64(1), "cooldownPeriod": int64(300),
			"triggers": []any{map[string]any{
				"type": "external-push",
				"metadata": map[string]any{
					"scalerAddress": scalerAddr, "httpScaledObject": name, "enableTLS": "true",
				},
				"authenticationRef": map[string]any{"name": "lobby-scaler-tls"},
			}},
		},
	}}
	for _, o := range []client.Object{dep, svc, hso, kedaSecret, auth, so} {
		if err := c.Client.Create(ctx, o); err != nil {
			t.Fatalf("create %s %s: %v", o.GetObjectKind().GroupVersionKind().Kind, o.GetName(), err)
		}
	}

	// KEDA's client settings: the CA, and the client key pair the scaler verifies.
	ref := &externalscaler.ScaledObjectRef{Name: name, Namespace: ns, ScalerMetadata: map[string]string{"httpScaledObject": name}}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.certPEM)
	keyPair := func(cert, key []byte) []tls.Certificate {
		kp, err := tls.X509KeyPair(cert, key)
		if err != nil {
			t.Fatal(err)
		}
		return []tls.Certificate{kp}
	}
	trusted := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, Certificates: keyPair(clientCert, clientKey)}
	if err := poll.Until(t.Context(), 30*time.Second, "the TLS scaler to answer a client with KEDA's settings", func() error {
		_, err := callIsActive(ctx, scalerAddr, credentials.NewTLS(trusted), ref)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	refusals := []struct {
		name  string
		creds credentials.TransportCredentials
	}{
		{"a client without a certificate", credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool})},
		{"a client whose certificate another CA signed", credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool,
			Certificates: keyPair(strangerCert, strangerKey)})},
		{"a client speaking plain text", insecure.NewCredentials()},
	}
	for _, r := range refusals {
		if _, err := callIsActive(ctx, scalerAddr, r.creds, ref); status.Code(err) != codes.Unavailable {
			t.Errorf("%s: IsActive returned %v; want the connection refused (Unavailable)", r.name, err)
		}
	}
	// The client checks the scaler too: a certificate from a CA it was not given is refused.
	if _, err := callIsActive(ctx, scalerAddr, credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12,
		Certificates: keyPair(clientCert, clientKey)}), ref); status.Code(err) != codes.Unavailable {
		t.Errorf("a client that does not trust the scaler's CA: IsActive returned %v; want Unavailable", err)
	}

	waitRouting(t, ns+"/"+name, 60*time.Second)
	waitTLSStream(t, in, ns, name)

	resp := send(ctx, http.MethodGet, suite.ingress.URL+"/", host, nil)
	var e echoed
	if resp.err != nil || resp.code != http.StatusOK || json.Unmarshal([]byte(resp.body), &e) != nil || e.PodName == "" {
		t.Fatalf("request while scaled to zero: %d %q %v; want the echo app's answer after KEDA scaled it up", resp.code, excerpt(resp.body), resp.err)
	}
	a := &app{ns: ns, name: name}
	desired, _, err := a.replicas(ctx)
	if err != nil || desired < 1 {
		t.Errorf("the Deployment wants %d replicas (%v); want KEDA to have scaled it to 1", desired, err)
	}
	// KEDA's operator asked the TLS scaler for the metric too (the HPA's metric goes through it).
	waitTLSCalls(t, in)
}

// callIsActive calls IsActive on the scaler at addr over a fresh connection with creds.
func callIsActive(ctx context.Context, addr string, creds credentials.TransportCredentials, ref *externalscaler.ScaledObjectRef) (*externalscaler.IsActiveResponse, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return externalscaler.NewExternalScalerClient(conn).IsActive(ctx, ref)
}

// waitTLSStream waits until KEDA holds a StreamIsActive stream open on the TLS scaler in (so it
// passed the scaler's client-certificate check) and marks the ScaledObject ns/name ready.
func waitTLSStream(t *testing.T, in *deploy.Instance, ns, name string) {
	t.Helper()
	adminURL := in.URL("admin") + "/metrics"
	if err := poll.Until(t.Context(), 60*time.Second, "KEDA to open StreamIsActive on the TLS scaler and mark the ScaledObject ready", func() error {
		if v, err := scrapeSample(adminURL, "lobby_scaler_streams", map[string]string{"method": "StreamIsActive"}); err != nil || v < 1 {
			return fmt.Errorf("StreamIsActive streams %v (%v)", v, err)
		}
		return kedaReady(t, ns, name)
	}); err != nil {
		t.Fatal(err)
	}
}

// waitTLSCalls waits until the TLS scaler in has answered an IsActive and a GetMetricSpec call
// successfully: KEDA's operator reached it with its client certificate for the metric too.
func waitTLSCalls(t *testing.T, in *deploy.Instance) {
	t.Helper()
	adminURL := in.URL("admin") + "/metrics"
	for _, method := range []string{"IsActive", "GetMetricSpec"} {
		if err := poll.Until(t.Context(), 60*time.Second, "a successful "+method+" call on the TLS scaler", func() error {
			v, err := scrapeSample(adminURL, "lobby_scaler_rpc_duration_seconds_count", map[string]string{"method": method, "code": "OK"})
			if err == nil && v < 1 {
				err = fmt.Errorf("%v successful calls", v)
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
}

// kedaReady returns nil once KEDA's Ready condition of the ScaledObject is True.
func kedaReady(t *testing.T, ns, name string) error {
	var so unstructured.Unstructured
	so.SetGroupVersionKind(scaledObjectGVK)
	if err := suite.cluster.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: name}, &so); err != nil {
		return err
	}
	conds, _, _ := unstructured.NestedSlice(so.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == "Ready" {
			if m["status"] == "True" {
				return nil
			}
			return fmt.Errorf("ScaledObject Ready=%v: %v %v", m["status"], m["reason"], m["message"])
		}
	}
	return fmt.Errorf("ScaledObject has no Ready condition yet")
}

// scrapeSample returns the value of the sample of metric whose labels include want, summed over
// the samples that match, from the Prometheus text at url.
func scrapeSample(url, metric string, want map[string]string) (float64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var sum float64
	found := false
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, metric+"{") && !strings.HasPrefix(line, metric+" ") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		labels := line[len(metric):i]
		match := true
		for k, v := range want {
			match = match && strings.Contains(labels, k+"="+strconv.Quote(v))
		}
		if !match {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return 0, fmt.Errorf("parse %q: %w", line, err)
		}
		sum, found = sum+v, true
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	if !found {
		return 0, fmt.Errorf("no sample of %s%v at %s", metric, want, url)
	}
	return sum, nil
}

// testCA is a certificate authority for the test's certificates.
type testCA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	certPEM []byte
}

func newTestCA(t *testing.T, cn string) *testCA {
	t.Helper()
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: cn},
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, key := createCert(t, tmpl, nil, nil)
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns a certificate for cn, for usage, naming ip (when valid) and dnsNames, and its
// key, both PEM-encoded.
func (ca *testCA) issue(t *testing.T, cn string, usage x509.ExtKeyUsage, ip netip.Addr, dnsNames ...string) (certPEM, keyPEM []byte) {
	t.Helper()
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: cn},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{usage},
		DNSNames:    dnsNames,
	}
	if ip.IsValid() {
		tmpl.IPAddresses = []net.IP{ip.AsSlice()}
	}
	der, key := createCert(t, tmpl, ca.cert, ca.key)
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8})
}

// createCert generates a P-256 key and a certificate for it from tmpl, valid from an hour ago for
// a day under a random serial number, signed by parent with parentKey or, when parent is nil,
// by itself. It returns the certificate's DER and the key.
func createCert(t *testing.T, tmpl, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) ([]byte, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	return der, key
}

// wireRequest returns a request as written on the wire: the request line, the header lines, and the
// blank line that ends the head.
func wireRequest(requestLine string, headers ...string) string {
	return requestLine + "\r\n" + strings.Join(append(headers, ""), "\r\n") + "\r\n"
}

// wirePath is the path of a raw request's target, without the query.
func wirePath(raw string) string {
	line, _, _ := strings.Cut(raw, "\r\n")
	fields := strings.Fields(line)
	if len(fields) < 2 {
		return ""
	}
	u, err := url.ParseRequestURI(fields[1])
	if err != nil {
		return ""
	}
	return u.Path
}

// wireResult is the answer to a raw request.
type wireResult struct {
	code   int
	header http.Header
	body   string
}

// wireExchange sends raw on a new connection to addr, from the local address from when it is
// valid, and reads one answer, all within timeout. Writing the request by hand keeps every
// header exactly as the test means it; a client library would add, drop or merge some.
func wireExchange(addr string, from netip.Addr, timeout time.Duration, raw string) (wireResult, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	if from.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: from.AsSlice()}
	}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return wireResult{}, err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return wireResult{}, err
	}
	if _, err := io.WriteString(conn, raw); err != nil {
		return wireResult{}, err
	}
	method, _, _ := strings.Cut(raw, " ")
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: method})
	if err != nil {
		return wireResult{}, fmt.Errorf("read the answer: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return wireResult{}, fmt.Errorf("read the body of a %d answer: %w", resp.StatusCode, err)
	}
	return wireResult{code: resp.StatusCode, header: resp.Header, body: string(body)}, nil
}

func excerpt(s string) string {
	if len(s) > 200 {
		return s[:200] + "..."
	}
	return s
}

// canary is a listener no interceptor has any business connecting to; it records every
// connection it gets.
type canary struct {
	addr netip.AddrPort
	ln   net.Listener

	mu    sync.Mutex
	conns []string // the first bytes of each connection
}

func listenCanary(t *testing.T, addr netip.AddrPort) *canary {
	t.Helper()
	ln, err := net.Listen("tcp", addr.String())
	if err != nil {
		t.Fatalf("listen for the canary: %v", err)
	}
	c := &canary{addr: addr, ln: ln}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
				buf := make([]byte, 256)
				n, _ := io.ReadAtLeast(conn, buf, 1)
				c.mu.Lock()
				c.conns = append(c.conns, string(buf[:n]))
				c.mu.Unlock()
			}()
		}
	}()
	return c
}

// selfTest connects to the canary once and checks that it counts the connection, then forgets
// it: a canary that cannot notice a connection would prove nothing.
func (c *canary) selfTest(t *testing.T) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", c.addr.String(), 5*time.Second)
	if err != nil {
		t.Fatalf("connect to canary %s: %v", c.addr, err)
	}
	_, _ = io.WriteString(conn, "self-test")
	conn.Close()
	if err := poll.Until(t.Context(), 10*time.Second, "canary "+c.addr.String()+" to record a connection", func() error {
		if n := len(c.connections()); n != 1 {
			return fmt.Errorf("%d connections recorded", n)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	c.conns = nil
	c.mu.Unlock()
}

func (c *canary) connections() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.conns)
}

// hopResponsePath is the path the raw backend answers with hop-by-hop headers.
const hopResponsePath = "/hop-by-hop-response"

// wireBackend is an HTTP/1.1 server written on a bare TCP listener, so that its answers carry
// exactly the headers the test writes (net/http's server would manage Connection and Keep-Alive
// itself). It stands in for an app's pod at <addr>:8080 and records what reaches it.
type wireBackend struct {
	name string
	addr netip.AddrPort

	mu       sync.Mutex
	requests []seenRequest
}

// seenRequest is a request a wireBackend got.
type seenRequest struct {
	method, host, target string
	header               http.Header
}

func startWireBackend(t *testing.T, name string) *wireBackend {
	t.Helper()
	ip, err := suite.cluster.AllocAddr()
	if err != nil {
		t.Fatal(err)
	}
	b := &wireBackend{name: name, addr: netip.AddrPortFrom(ip, 8080)}
	ln, err := net.Listen("tcp", b.addr.String())
	if err != nil {
		t.Fatalf("listen for backend %s: %v", name, err)
	}
	var conns sync.WaitGroup
	var mu sync.Mutex
	open := map[net.Conn]bool{}
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for c := range open {
			_ = c.Close()
		}
		mu.Unlock()
		conns.Wait()
	})
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			open[conn] = true
			mu.Unlock()
			conns.Go(func() {
				defer func() {
					mu.Lock()
					delete(open, conn)
					mu.Unlock()
					conn.Close()
				}()
				b.serve(conn)
			})
		}
	}()
	return b
}

// serve answers the requests of one connection until the peer closes it.
func (b *wireBackend) serve(conn net.Conn) {
	br := bufio.NewReader(conn)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, req.Body)
		b.mu.Lock()
		b.requests = append(b.requests, seenRequest{method: req.Method, host: req.Host, target: req.RequestURI, header: req.Header})
		b.mu.Unlock()
		var out string
		mark := "X-Backend: " + b.name
		switch {
		case req.Method == http.MethodConnect:
			out = wireResponse("405 Method Not Allowed", "no tunnels\n", mark, "Connection: close")
		case req.URL.Path == hopResponsePath:
			out = wireResponse("200 OK", "hop\n",
				"Connection: X-Hop-Resp, keep-alive", "X-Hop-Resp: secret", "Keep-Alive: timeout=30, max=100",
				"Proxy-Authenticate: Basic realm=\"upstream\"", "Proxy-Connection: keep-alive", "Upgrade: h2c",
				"X-End-To-End-Resp: kept", mark)
		default:
			body, _ := json.Marshal(map[string]any{"backend": b.name, "host": req.Host, "target": req.RequestURI, "headers": req.Header})
			out = wireResponse("200 OK", string(body)+"\n", "Content-Type: application/json", mark)
		}
		if _, err := io.WriteString(conn, out); err != nil || req.Method == http.MethodConnect || req.Close {
			return
		}
	}
}

// wireResponse is an answer as written on the wire.
func wireResponse(status, body string, headers ...string) string {
	return "HTTP/1.1 " + status + "\r\n" + strings.Join(headers, "\r\n") + "\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
}

func (b *wireBackend) requestCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.requests)
}

func (b *wireBackend) seen() []seenRequest {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.requests)
}

// sliceManagedBy is the endpointslice.kubernetes.io/managed-by value of the test's own
// EndpointSlices, so that no controller of the cluster takes them over.
const sliceManagedBy = "lobby-e2e-security"

// testSlice returns an IPv4 EndpointSlice of service with one TCP port and endpoints.
func testSlice(ns, name, service, portName string, port int32, endpoints ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{
			discoveryv1.LabelServiceName: service, discoveryv1.LabelManagedBy: sliceManagedBy,
		}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To(portName), Port: ptr.To(port), Protocol: ptr.To(corev1.ProtocolTCP)}},
		Endpoints:   endpoints,
	}
}

func testEndpoint(ip netip.Addr, ready, terminating bool) discoveryv1.Endpoint {
	return discoveryv1.Endpoint{
		Addresses:  []string{ip.String()},
		Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(ready), Serving: ptr.To(ready || terminating), Terminating: ptr.To(terminating)},
	}
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"

	"github.com/lobby-http/lobby/internal/externalscaler"
	"github.com/lobby-http/lobby/internal/stream"
	"github.com/lobby-http/lobby/operator/api/v1alpha1"
	"github.com/lobby-http/lobby/operator/api/v1beta1"
)

const (
	testNamespace = "lobby"
	testService   = "lobby-interceptor-admin"
)

// testObjects are the HTTPScaledObjects every test scaler knows.
func testObjects() []*v1alpha1.HTTPScaledObject {
	return []*v1alpha1.HTTPScaledObject{
		{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "cart"}, Spec: v1alpha1.HTTPScaledObjectSpec{
			Hosts:         []string{"cart.shop.example.com"},
			ScalingMetric: &v1alpha1.ScalingMetricSpec{Concurrency: &v1alpha1.ConcurrencyMetricSpec{TargetValue: 10}},
		}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "rated"}, Spec: v1alpha1.HTTPScaledObjectSpec{
			Hosts:         []string{"rated.shop.example.com"},
			ScalingMetric: &v1alpha1.ScalingMetricSpec{Rate: &v1alpha1.RateMetricSpec{TargetValue: 5}},
		}},
	}
}

// testRoutes are the InterceptorRoutes every test scaler knows.
func testRoutes() []*v1beta1.InterceptorRoute {
	return []*v1beta1.InterceptorRoute{
		{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "checkout"}, Spec: v1beta1.InterceptorRouteSpec{
			Rules: []v1beta1.RoutingRule{{Hosts: []string{"checkout.shop.example.com"}}},
			ScalingMetric: v1beta1.ScalingMetricSpec{
				Concurrency: &v1beta1.ConcurrencyTargetSpec{TargetValue: 4},
				RequestRate: &v1beta1.RequestRateTargetSpec{TargetValue: 20},
			},
		}},
	}
}

// objectsInformer returns an informer that lists objs and never sees a change.
func objectsInformer(objs []*v1alpha1.HTTPScaledObject) cache.SharedIndexInformer {
	return listInformer(&v1alpha1.HTTPScaledObject{}, func() runtime.Object {
		list := &v1alpha1.HTTPScaledObjectList{}
		for _, o := range objs {
			list.Items = append(list.Items, *o.DeepCopy())
		}
		return list
	})
}

// routesInformer returns an informer that lists routes and never sees a change.
func routesInformer(routes []*v1beta1.InterceptorRoute) cache.SharedIndexInformer {
	return listInformer(&v1beta1.InterceptorRoute{}, func() runtime.Object {
		list := &v1beta1.InterceptorRouteList{}
		for _, r := range routes {
			list.Items = append(list.Items, *r.DeepCopy())
		}
		return list
	})
}

// listInformer returns an informer of objects of obj's type that lists what list returns.
func listInformer(obj runtime.Object, list func() runtime.Object) cache.SharedIndexInformer {
	lw := &cache.ListWatch{
		ListWithContextFunc:  func(context.Context, metav1.ListOptions) (runtime.Object, error) { return list(), nil },
		WatchFuncWithContext: func(context.Context, metav1.ListOptions) (watch.Interface, error) { return watch.NewFake(), nil },
	}
	return cache.NewSharedIndexInformer(listOnly{lw}, obj, 0, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
}

// listOnly tells the reflector that its fake watch sends no initial events, so it lists first.
type listOnly struct{ *cache.ListWatch }

// IsWatchListSemanticsUnSupported reports that the watch cannot stream the initial list.
func (listOnly) IsWatchListSemanticsUnSupported() bool { return true }

// endpointSlice is one slice of the interceptor admin Service with one ready loopback endpoint.
func endpointSlice(name string, port int32) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: testNamespace, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: testService}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("admin"), Port: ptr.To(port)}},
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"127.0.0.1"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
	}
}

func addSlice(t *testing.T, kube kubernetes.Interface, name string, port int32) {
	t.Helper()
	if _, err := kube.DiscoveryV1().EndpointSlices(testNamespace).Create(t.Context(), endpointSlice(name, port), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// startScaler builds the scaler as main does, with a fake Kubernetes client, runs it on loopback
// listeners, waits until its health service reports SERVING and returns a client playing KEDA.
func startScaler(t *testing.T, kube kubernetes.Interface) externalscaler.ExternalScalerClient {
	t.Helper()
	r := runScaler(t, kube)
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := r.health.Check(t.Context(), &healthpb.HealthCheckRequest{})
		if err == nil && st.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the scaler's health is not SERVING after 10s: %v %v", st.GetStatus(), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return r.client
}

// runningScaler is a scaler started by runScaler.
type runningScaler struct {
	// stop signals the scaler as SIGTERM does and waits until run has returned.
	stop      func()
	client    externalscaler.ExternalScalerClient
	health    healthpb.HealthClient
	adminAddr string
}

// runScaler builds the scaler as main does, with a fake Kubernetes client, and runs it on
// loopback listeners.
func runScaler(t *testing.T, kube kubernetes.Interface, env ...string) *runningScaler {
	t.Helper()
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(stubToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{"LOBBY_INTERCEPTOR_SERVICE": testService, "POD_NAMESPACE": testNamespace, "LOBBY_INTERCEPTOR_TOKEN_FILE": tokenFile}
	for _, e := range env {
		k, v, _ := strings.Cut(e, "=")
		vars[k] = v
	}
	cfg, err := loadConfig(func(name string) (string, bool) {
		v, ok := vars[name]
		return v, ok
	})
	if err != nil {
		t.Fatal(err)
	}
	objects, routes := objectsInformer(testObjects()), routesInformer(testRoutes())
	s, err := build(cfg, testr.New(t), kube, objects, routes, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	if s.grpc.Listener, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	if s.admin.Listener, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.run(ctx) }()
	var stopOnce sync.Once
	stop := func() {
		stopOnce.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("scaler stopped with %v", err)
			}
		})
	}
	t.Cleanup(stop)
	// Like KEDA, the tests talk to a scaler that has listed the HTTPScaledObjects; until then it
	// answers Unavailable (see TestAStartingScalerAnswersUnavailable).
	for deadline := time.Now().Add(5 * time.Second); !objects.HasSynced() || !routes.HasSynced(); {
		if time.Now().After(deadline) {
			t.Fatal("the HTTPScaledObject informer did not sync within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	conn, err := grpc.NewClient(s.grpc.Listener.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &runningScaler{
		stop:      stop,
		client:    externalscaler.NewExternalScalerClient(conn),
		health:    healthpb.NewHealthClient(conn),
		adminAddr: s.admin.Listener.Addr().String(),
	}
}

func ref(name string) *externalscaler.ScaledObjectRef {
	return &externalscaler.ScaledObjectRef{Namespace: "shop", Name: name, ScalerMetadata: map[string]string{"httpScaledObject": name, "scalerAddress": "x:9090"}}
}

// activity receives a StreamIsActive stream's messages.
type activity struct{ ch chan bool }

func streamActivity(t *testing.T, c externalscaler.ExternalScalerClient, name string) *activity {
	t.Helper()
	st, err := c.StreamIsActive(t.Context(), ref(name))
	if err != nil {
		t.Fatal(err)
	}
	a := &activity{ch: make(chan bool, 16)}
	go func() {
		defer close(a.ch)
		for {
			r, err := st.Recv()
			if err != nil {
				return
			}
			a.ch <- r.GetResult()
		}
	}()
	return a
}

// next returns the next message, failing after 5s.
func (a *activity) next(t *testing.T) bool {
	t.Helper()
	select {
	case v, ok := <-a.ch:
		if !ok {
			t.Fatal("StreamIsActive ended")
		}
		return v
	case <-time.After(5 * time.Second):
		t.Fatal("no StreamIsActive message within 5s")
		return false
	}
}

// none fails when a message arrives within d.
func (a *activity) none(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case v := <-a.ch:
		t.Fatalf("StreamIsActive sent %v, want nothing", v)
	case <-time.After(d):
	}
}

func metricValue(t *testing.T, c externalscaler.ExternalScalerClient, name string) float64 {
	t.Helper()
	r, err := c.GetMetrics(t.Context(), &externalscaler.GetMetricsRequest{ScaledObjectRef: ref(name), MetricName: "x"})
	if err != nil {
		t.Fatal(err)
	}
	return r.GetMetricValues()[0].GetMetricValueFloat()
}

func isActive(t *testing.T, c externalscaler.ExternalScalerClient, name string) bool {
	t.Helper()
	r, err := c.IsActive(t.Context(), ref(name))
	if err != nil {
		t.Fatal(err)
	}
	return r.GetResult()
}

// eventually polls cond for up to 5s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 5s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestScalerSumsThreeInterceptorsAndSignalsEachEdgeOnce(t *testing.T) {
	kube := fake.NewClientset()
	stubs := []*stubInterceptor{newStubInterceptor(t, "a"), newStubInterceptor(t, "b"), newStubInterceptor(t, "c")}
	for i, s := range stubs {
		s.counts(stream.RouteCounts{Key: "shop/cart"})
		addSlice(t, kube, "slice-"+s.name, stubs[i].port())
	}
	c := startScaler(t, kube)
	eventually(t, "three interceptors connected", func() bool {
		for _, s := range stubs {
			s.mu.Lock()
			n := len(s.subs)
			s.mu.Unlock()
			if n != 1 {
				return false
			}
		}
		return true
	})

	act := streamActivity(t, c, "cart")
	if act.next(t) {
		t.Fatal("first StreamIsActive message is true for an idle object")
	}

	// Idle → busy: one activate frame from one interceptor gives exactly one true.
	stubs[0].activate(stream.RouteCounts{Key: "shop/cart", Held: 1, Requests: 1, Rate: 0.5})
	if !act.next(t) {
		t.Fatal("StreamIsActive sent false on the idle→busy edge")
	}
	// More work on the other interceptors, while active: no message at all.
	stubs[1].counts(stream.RouteCounts{Key: "shop/cart", InFlight: 2, Rate: 1})
	stubs[2].counts(stream.RouteCounts{Key: "shop/cart", Held: 3, Open: 1, Rate: 1})
	stubs[0].activate(stream.RouteCounts{Key: "shop/cart", Held: 1, Requests: 1, Rate: 0.5})
	eventually(t, "GetMetrics sums in-flight and held over the interceptors", func() bool { return metricValue(t, c, "cart") == 6 })
	act.none(t, 200*time.Millisecond)
	if !isActive(t, c, "cart") {
		t.Fatal("IsActive is false with requests held")
	}

	// Busy → idle once every interceptor is idle: one false.
	for _, s := range stubs {
		s.counts(stream.RouteCounts{Key: "shop/cart", Requests: 1})
	}
	if act.next(t) {
		t.Fatal("StreamIsActive sent true on the busy→idle edge")
	}
	act.none(t, 100*time.Millisecond)
	if isActive(t, c, "cart") || metricValue(t, c, "cart") != 0 {
		t.Fatal("IsActive or GetMetrics still counts work after every interceptor went idle")
	}

	// And the next edge gives one true again.
	stubs[2].activate(stream.RouteCounts{Key: "shop/cart", InFlight: 1, Requests: 2})
	if !act.next(t) {
		t.Fatal("StreamIsActive sent false on the second idle→busy edge")
	}
	act.none(t, 100*time.Millisecond)
}

func TestScalerDropsTheShareOfAnInterceptorThatLeavesDiscovery(t *testing.T) {
	kube := fake.NewClientset()
	stubs := []*stubInterceptor{newStubInterceptor(t, "a"), newStubInterceptor(t, "b"), newStubInterceptor(t, "c")}
	for i, s := range stubs {
		s.counts(stream.RouteCounts{Key: "shop/cart", InFlight: int64(i + 1)})
		addSlice(t, kube, "slice-"+s.name, s.port())
	}
	c := startScaler(t, kube)
	eventually(t, "GetMetrics sums three interceptors", func() bool { return metricValue(t, c, "cart") == 6 })

	if err := kube.DiscoveryV1().EndpointSlices(testNamespace).Delete(t.Context(), "slice-c", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "GetMetrics drops the removed interceptor's share", func() bool { return metricValue(t, c, "cart") == 3 })
}

func TestScalerAnswersWithinBoundsWhileInterceptorsHang(t *testing.T) {
	kube := fake.NewClientset()
	live := newStubInterceptor(t, "live")
	live.counts(stream.RouteCounts{Key: "shop/cart", InFlight: 2})
	addSlice(t, kube, "slice-live", live.port())
	stuck := newStubInterceptor(t, "stuck")
	stuck.hang = true
	addSlice(t, kube, "slice-stuck", stuck.port())
	addSlice(t, kube, "slice-blackhole", blackHole(t))
	c := startScaler(t, kube)

	// The bound is generous on purpose: it is not a benchmark but proof that no RPC waits on an
	// interceptor that does not answer.
	const bound = 100 * time.Millisecond
	for i := range 50 {
		for name, call := range map[string]func() error{
			"IsActive": func() error { _, err := c.IsActive(t.Context(), ref("cart")); return err },
			"GetMetrics": func() error {
				_, err := c.GetMetrics(t.Context(), &externalscaler.GetMetricsRequest{ScaledObjectRef: ref("cart")})
				return err
			},
			"GetMetricSpec": func() error { _, err := c.GetMetricSpec(t.Context(), ref("cart")); return err },
		} {
			start := time.Now()
			if err := call(); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if d := time.Since(start); d > bound {
				t.Fatalf("%s call %d took %s with a black-holed and a stuck interceptor, want at most %s", name, i, d, bound)
			}
		}
	}
	if v := metricValue(t, c, "cart"); v != 2 {
		t.Fatalf("GetMetrics = %v, want the live interceptor's 2", v)
	}
}

func TestTwoScalersFedByTheSameStreamsGiveIdenticalAnswers(t *testing.T) {
	kube := fake.NewClientset()
	// Rates whose float sum depends on the order of addition: both replicas must add alike.
	for i, rate := range []float64{0.1, 0.2, 0.3, 0.7} {
		s := newStubInterceptor(t, string(rune('a'+i)))
		s.counts(stream.RouteCounts{Key: "shop/rated", Rate: rate, InFlight: 1})
		addSlice(t, kube, "slice-"+s.name, s.port())
	}
	one, two := startScaler(t, kube), startScaler(t, kube)
	eventually(t, "both scalers see four interceptors", func() bool {
		return metricValue(t, one, "rated") > 1.29 && metricValue(t, two, "rated") > 1.29
	})
	for range 20 {
		a, err := one.GetMetrics(t.Context(), &externalscaler.GetMetricsRequest{ScaledObjectRef: ref("rated")})
		if err != nil {
			t.Fatal(err)
		}
		b, err := two.GetMetrics(t.Context(), &externalscaler.GetMetricsRequest{ScaledObjectRef: ref("rated")})
		if err != nil {
			t.Fatal(err)
		}
		av, bv := a.GetMetricValues()[0], b.GetMetricValues()[0]
		if av.GetMetricValueFloat() != bv.GetMetricValueFloat() || av.GetMetricName() != bv.GetMetricName() || av.GetMetricValue() != bv.GetMetricValue() {
			t.Fatalf("replicas disagree: %v vs %v", av, bv)
		}
	}
}

func TestScalerRejectsBadReferencesWithClearCodes(t *testing.T) {
	kube := fake.NewClientset()
	s := newStubInterceptor(t, "a")
	addSlice(t, kube, "slice-a", s.port())
	c := startScaler(t, kube)
	tests := []struct {
		name string
		ref  *externalscaler.ScaledObjectRef
		code codes.Code
		msg  string
	}{
		{"an unknown object is not found, by namespace/name", ref("nope"), codes.NotFound, "shop/nope"},
		{"a trigger without httpScaledObject metadata is invalid", &externalscaler.ScaledObjectRef{Namespace: "shop", Name: "cart"}, codes.InvalidArgument, "httpScaledObject"},
		{"a reference without namespace is invalid", &externalscaler.ScaledObjectRef{Name: "cart", ScalerMetadata: map[string]string{"httpScaledObject": "cart"}}, codes.InvalidArgument, "namespace"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for method, call := range map[string]func() error{
				"IsActive":      func() error { _, err := c.IsActive(t.Context(), tt.ref); return err },
				"GetMetricSpec": func() error { _, err := c.GetMetricSpec(t.Context(), tt.ref); return err },
				"GetMetrics": func() error {
					_, err := c.GetMetrics(t.Context(), &externalscaler.GetMetricsRequest{ScaledObjectRef: tt.ref})
					return err
				},
				"StreamIsActive": func() error {
					st, err := c.StreamIsActive(t.Context(), tt.ref)
					if err != nil {
						return err
					}
					_, err = st.Recv()
					return err
				},
			} {
				err := call()
				if st, _ := status.FromError(err); st.Code() != tt.code || !strings.Contains(st.Message(), tt.msg) {
					t.Errorf("%s: got %v, want code %v with %q in the message", method, err, tt.code, tt.msg)
				}
			}
		})
	}
	t.Run("StreamMetricSpec is unimplemented, so KEDA falls back to GetMetricSpec", func(t *testing.T) {
		st, err := c.StreamMetricSpec(t.Context(), ref("cart"))
		if err == nil {
			_, err = st.Recv()
		}
		if status.Code(err) != codes.Unimplemented || errors.Is(err, io.EOF) {
			t.Fatalf("got %v, want Unimplemented", err)
		}
	})
	t.Run("GetMetricSpec names the metric as the HTTP Add-on does and gives float targets", func(t *testing.T) {
		r, err := c.GetMetricSpec(t.Context(), ref("rated"))
		if err != nil {
			t.Fatal(err)
		}
		m := r.GetMetricSpecs()[0]
		if m.GetMetricName() != "http-shop_002Frated" || m.GetTargetSizeFloat() != 5 || m.GetTargetSize() != 5 {
			t.Fatalf("got %v", m)
		}
	})
}

func TestScalerIsNotReadyUntilAnInterceptorStreamDeliversASnapshot(t *testing.T) {
	kube := fake.NewClientset()
	r := runScaler(t, kube)
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + r.adminAddr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	eventually(t, "the informers to sync", func() bool {
		_, body := get("/readyz")
		return !strings.Contains(body, "not synced")
	})
	if code, body := get("/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "no interceptor stream has delivered a snapshot") {
		t.Fatalf("/readyz = %d %q without any interceptor", code, body)
	}
	for _, svc := range []string{"", "externalscaler.ExternalScaler"} {
		st, err := r.health.Check(t.Context(), &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || st.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
			t.Fatalf("health of %q = %v, %v without any interceptor, want NOT_SERVING", svc, st.GetStatus(), err)
		}
	}
	if code, _ := get("/livez"); code != http.StatusOK {
		t.Fatalf("/livez = %d", code)
	}

	s := newStubInterceptor(t, "a")
	addSlice(t, kube, "slice-a", s.port())
	eventually(t, "health SERVING and /readyz 200", func() bool {
		st, err := r.health.Check(t.Context(), &healthpb.HealthCheckRequest{})
		code, _ := get("/readyz")
		return err == nil && st.GetStatus() == healthpb.HealthCheckResponse_SERVING && code == http.StatusOK
	})
	_, metrics := get("/metrics")
	for _, m := range []string{"lobby_scaler_interceptors 1", "lobby_scaler_interceptors_connected 1", "lobby_scaler_objects 3",
		"lobby_scaler_stream_reconnects_total 0", "lobby_scaler_activations_total 0", `lobby_scaler_rpc_duration_seconds_count{code="OK",method="Check"}`} {
		if !strings.Contains(metrics, m) {
			t.Errorf("/metrics lacks %q", m)
		}
	}
}

func TestScalerAnswersUnavailableWhenNoInterceptorCountsRemain(t *testing.T) {
	kube := fake.NewClientset()
	s := newStubInterceptor(t, "a")
	s.counts(stream.RouteCounts{Key: "shop/cart", Held: 1})
	addSlice(t, kube, "slice-a", s.port())
	r := runScaler(t, kube, "LOBBY_STREAM_GRACE=200ms")
	eventually(t, "the held request to count", func() bool {
		m, err := r.client.GetMetrics(t.Context(), &externalscaler.GetMetricsRequest{ScaledObjectRef: ref("cart")})
		return err == nil && m.GetMetricValues()[0].GetMetricValueFloat() == 1
	})

	// The interceptor becomes unreachable but stays listed: after the grace period the scaler
	// says it does not know, rather than that the app is idle.
	s.srv.CloseClientConnections()
	s.srv.Close()
	eventually(t, "IsActive and GetMetrics to fail with Unavailable", func() bool {
		_, err1 := r.client.IsActive(t.Context(), ref("cart"))
		_, err2 := r.client.GetMetrics(t.Context(), &externalscaler.GetMetricsRequest{ScaledObjectRef: ref("cart")})
		return status.Code(err1) == codes.Unavailable && status.Code(err2) == codes.Unavailable
	})
	_, err := r.client.IsActive(t.Context(), ref("cart"))
	if !strings.Contains(status.Convert(err).Message(), "shop/cart") {
		t.Fatalf("the Unavailable message does not name the object: %v", err)
	}
}

func TestAStoppingScalerEndsActivityStreamsCleanly(t *testing.T) {
	kube := fake.NewClientset()
	s := newStubInterceptor(t, "a")
	addSlice(t, kube, "slice-a", s.port())
	r := runScaler(t, kube)
	st, err := r.client.StreamIsActive(t.Context(), ref("cart"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != nil {
		t.Fatal(err)
	}
	r.stop()
	// A clean end of stream, not a connection cut by the end of the graceful stop: KEDA
	// reconnects at once, to another replica.
	if _, err := st.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("the stream ended with %v, want io.EOF", err)
	}
}

func TestScalerServesAnInterceptorRouteWithBothMetrics(t *testing.T) {
	kube := fake.NewClientset()
	stub := newStubInterceptor(t, "a")
	stub.counts(stream.RouteCounts{Key: "shop/checkout"})
	addSlice(t, kube, "slice-a", stub.port())
	c := startScaler(t, kube)
	routeRef := &externalscaler.ScaledObjectRef{Namespace: "shop", Name: "checkout-so",
		ScalerMetadata: map[string]string{"interceptorRoute": "checkout", "scalerAddress": "x:9090"}}

	spec, err := c.GetMetricSpec(t.Context(), routeRef)
	if err != nil {
		t.Fatal(err)
	}
	var specs []string
	for _, m := range spec.GetMetricSpecs() {
		specs = append(specs, fmt.Sprintf("%s=%v", m.GetMetricName(), m.GetTargetSizeFloat()))
	}
	if want := []string{"http_checkout_concurrency=4", "http_checkout_rate=20"}; !slices.Equal(specs, want) {
		t.Fatalf("GetMetricSpec = %v, want %v", specs, want)
	}

	st, err := c.StreamIsActive(t.Context(), routeRef)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := st.Recv(); err != nil || r.GetResult() {
		t.Fatalf("first activity = %v, %v; want false", r.GetResult(), err)
	}
	stub.activate(stream.RouteCounts{Key: "shop/checkout", Held: 3, InFlight: 2, Requests: 7, Rate: 1.5})
	if r, err := st.Recv(); err != nil || !r.GetResult() {
		t.Fatalf("activity after a pushed activation = %v, %v; want true", r.GetResult(), err)
	}

	tests := []struct {
		name   string
		metric string
		want   []string
	}{
		{"without a metric name both values are returned", "", []string{"http_checkout_concurrency=5", "http_checkout_rate=1.5"}},
		{"the concurrency metric is held plus in flight", "http_checkout_concurrency", []string{"http_checkout_concurrency=5"}},
		{"the rate metric is the interceptors' rate", "http_checkout_rate", []string{"http_checkout_rate=1.5"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			eventually(t, "the metrics follow the pushed counts", func() bool {
				r, err := c.GetMetrics(t.Context(), &externalscaler.GetMetricsRequest{ScaledObjectRef: routeRef, MetricName: tt.metric})
				if err != nil {
					t.Fatal(err)
				}
				got = got[:0]
				for _, v := range r.GetMetricValues() {
					got = append(got, fmt.Sprintf("%s=%v", v.GetMetricName(), v.GetMetricValueFloat()))
				}
				return slices.Equal(got, tt.want)
			})
		})
	}

	t.Run("an unknown route is NotFound, naming the kind", func(t *testing.T) {
		bad := &externalscaler.ScaledObjectRef{Namespace: "shop", Name: "x", ScalerMetadata: map[string]string{"interceptorRoute": "nope"}}
		_, err := c.GetMetricSpec(t.Context(), bad)
		if status.Code(err) != codes.NotFound || !strings.Contains(err.Error(), "InterceptorRoute shop/nope not found") {
			t.Errorf("err = %v, want NotFound for InterceptorRoute shop/nope", err)
		}
	})
}

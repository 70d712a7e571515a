// Package activation tests and benchmarks the activation path with lobby's real binaries: the
// interceptor and the scaler built with `go build` and run as processes against a real API
// server, inside a private network namespace (Kubernetes rejects loopback endpoint addresses, so
// the interceptor's EndpointSlice needs an address of its own). A client playing KEDA's operator
// holds StreamIsActive streams open; a request reaching the interceptor for an idle
// HTTPScaledObject must come out of the stream as one true.
package activation

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/lobby-http/lobby/e2e/framework"
	"github.com/lobby-http/lobby/e2e/framework/poll"
	"github.com/lobby-http/lobby/internal/externalscaler"
	"github.com/lobby-http/lobby/operator/api/v1alpha1"
)

const (
	// lobbyNamespace holds the interceptor admin Service, as the chart installs it.
	lobbyNamespace = "lobby"
	adminService   = "lobby-interceptor-admin"
	// appNamespace holds the HTTPScaledObjects.
	appNamespace = "apps"
	// objects is how many HTTPScaledObjects the benchmark cycles through, so that each
	// activation hits an idle object without waiting for the last one's rate window to pass.
	objects = 32
)

// env is the shared setup: one cluster, one interceptor, one scaler, and a KEDA-side client.
type env struct {
	cluster *framework.Cluster
	proxy   string // the interceptor's proxy address
	scaler  externalscaler.ExternalScalerClient
}

var shared env

func TestMain(m *testing.M) {
	os.Exit(framework.RunSuite(m, framework.Options{WithoutKEDA: true, WithoutKubelet: true}, setup))
}

func objectName(i int) string { return "app-" + strconv.Itoa(i) }

// setup creates the interceptor admin Service and its EndpointSlice, the HTTPScaledObjects,
// builds and starts the interceptor and the scaler as the chart configures them, and connects a
// KEDA-side gRPC client once the scaler's health is SERVING.
func setup(ctx context.Context, c *framework.Cluster) error {
	shared.cluster = c
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	for _, ns := range []string{lobbyNamespace, appNamespace} {
		if _, err := c.Kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create namespace %s: %w", ns, err)
		}
	}
	for i := range objects {
		name := objectName(i)
		o := &v1alpha1.HTTPScaledObject{
			ObjectMeta: metav1.ObjectMeta{Namespace: appNamespace, Name: name},
			Spec: v1alpha1.HTTPScaledObjectSpec{
				Hosts:          []string{name + ".test"},
				ScaleTargetRef: v1alpha1.ScaleTargetRef{Name: name, Kind: "Deployment", APIVersion: "apps/v1", Service: name, Port: 8080},
				// A one-second rate window, so that an object is idle again soon after its
				// request is gone.
				ScalingMetric: &v1alpha1.ScalingMetricSpec{Rate: &v1alpha1.RateMetricSpec{
					TargetValue: 10, Window: metav1.Duration{Duration: time.Second}, Granularity: metav1.Duration{Duration: time.Second},
				}},
			},
		}
		if err := c.Client.Create(ctx, o); err != nil {
			return fmt.Errorf("create HTTPScaledObject %s: %w", name, err)
		}
		// The target Service exists but has no endpoint: requests for it are held.
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: appNamespace, Name: name},
			Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 8080}}},
		}
		if _, err := c.Kube.CoreV1().Services(appNamespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create Service %s: %w", name, err)
		}
	}

	interceptorBin, err := c.Build(ctx, "./interceptor")
	if err != nil {
		return err
	}
	scalerBin, err := c.Build(ctx, "./scaler")
	if err != nil {
		return err
	}
	interceptorAddr, err := c.AllocAddr()
	if err != nil {
		return err
	}
	common := []string{"KUBECONFIG=" + c.Kubeconfig, "LOBBY_LOG_FORMAT=console"}
	// The scaler presents a token of the ServiceAccount the interceptor allows, as the chart's
	// projected token; the test reads /queue with the same identity.
	admin, err := c.AdminFor(ctx, framework.AdminServiceAccount, framework.AdminAudience)
	if err != nil {
		return err
	}
	tokenFile, err := c.WriteTokenFile("scaler", admin.Token())
	if err != nil {
		return err
	}
	if _, err := c.RunBinary(ctx, framework.ProcessSpec{
		Name: "interceptor",
		Path: interceptorBin,
		Addr: interceptorAddr,
		Env: append(slices.Clone(common), "POD_NAME=interceptor-0", "POD_NAMESPACE="+lobbyNamespace,
			"LOBBY_PROXY_ADDR=$(POD_IP):8080", "LOBBY_ADMIN_ADDR=$(POD_IP):9090", "LOBBY_DRAIN_DELAY=0s",
			"LOBBY_ADMIN_ALLOWED_SERVICE_ACCOUNTS="+framework.AdminServiceAccount),
	}); err != nil {
		return err
	}

	// The admin Service and the EndpointSlice the endpoints controller would write for the
	// interceptor pod.
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: lobbyNamespace, Name: adminService},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "admin", Port: 9090}}},
	}
	if _, err := c.Kube.CoreV1().Services(lobbyNamespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create Service %s: %w", adminService, err)
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: lobbyNamespace, Name: adminService + "-x",
			Labels: map[string]string{discoveryv1.LabelServiceName: adminService}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("admin"), Port: ptr.To[int32](9090)}},
		Endpoints: []discoveryv1.Endpoint{{
			Addresses:  []string{interceptorAddr.String()},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: lobbyNamespace, Name: "interceptor-0"},
		}},
	}
	if _, err := c.Kube.DiscoveryV1().EndpointSlices(lobbyNamespace).Create(ctx, slice, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create the interceptor's EndpointSlice: %w", err)
	}

	scalerAddr, err := c.AllocAddr()
	if err != nil {
		return err
	}
	if _, err := c.RunBinary(ctx, framework.ProcessSpec{
		Name: "scaler",
		Path: scalerBin,
		Addr: scalerAddr,
		Env: append(slices.Clone(common), "POD_NAME=scaler-0", "POD_NAMESPACE="+lobbyNamespace,
			"LOBBY_INTERCEPTOR_SERVICE="+adminService, "LOBBY_GRPC_ADDR=$(POD_IP):9090", "LOBBY_ADMIN_ADDR=$(POD_IP):9091",
			"LOBBY_INTERCEPTOR_TOKEN_FILE="+tokenFile),
	}); err != nil {
		return err
	}
	shared.proxy = net.JoinHostPort(interceptorAddr.String(), "8080")

	// The interceptor routes every object once its /queue lists them all.
	adminURL := "http://" + net.JoinHostPort(interceptorAddr.String(), "9090")
	if err := poll.Until(ctx, 2*time.Minute, "the interceptor to route every HTTPScaledObject", func() error {
		q, err := admin.Queue(ctx, adminURL)
		if err != nil {
			return err
		}
		for i := range objects {
			key := appNamespace + "/" + objectName(i)
			if _, ok := q[key]; !ok {
				return fmt.Errorf("/queue lacks %s", key)
			}
		}
		return nil
	}); err != nil {
		return err
	}

	conn, err := grpc.NewClient(net.JoinHostPort(scalerAddr.String(), "9090"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("dial the scaler: %w", err)
	}
	c.OnStop(conn.Close)
	hc := healthpb.NewHealthClient(conn)
	if err := poll.Until(ctx, time.Minute, "the scaler's health to be SERVING", func() error {
		r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "externalscaler.ExternalScaler"})
		if err != nil {
			return err
		}
		if r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("status %v", r.GetStatus())
		}
		return nil
	}); err != nil {
		return err
	}
	shared.scaler = externalscaler.NewExternalScalerClient(conn)
	return nil
}

func need(tb testing.TB) {
	tb.Helper()
	framework.SuiteCluster(tb)
}

func ref(name string) *externalscaler.ScaledObjectRef {
	return &externalscaler.ScaledObjectRef{Namespace: appNamespace, Name: name,
		ScalerMetadata: map[string]string{"httpScaledObject": name, "scalerAddress": "scaler:9090"}}
}

// watcher is one StreamIsActive stream, as KEDA's operator holds it for a ScaledObject.
type watcher struct {
	ch chan received
}

// received is one message and when it arrived.
type received struct {
	active bool
	at     time.Time
}

func watch(ctx context.Context, tb testing.TB, name string) *watcher {
	tb.Helper()
	st, err := shared.scaler.StreamIsActive(ctx, ref(name))
	if err != nil {
		tb.Fatalf("StreamIsActive %s: %v", name, err)
	}
	w := &watcher{ch: make(chan received, 64)}
	go func() {
		defer close(w.ch)
		for {
			r, err := st.Recv()
			if err != nil {
				return
			}
			w.ch <- received{active: r.GetResult(), at: time.Now()}
		}
	}()
	return w
}

func (w *watcher) next(tb testing.TB, within time.Duration) received {
	tb.Helper()
	select {
	case r, ok := <-w.ch:
		if !ok {
			tb.Fatal("StreamIsActive ended")
		}
		return r
	case <-time.After(within):
		tb.Fatalf("no StreamIsActive message within %s", within)
		return received{}
	}
}

// hold sends one request for name to the interceptor, where it is held (the app has no
// endpoint), until ctx ends.
func hold(ctx context.Context, name string) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+shared.proxy+"/", nil)
	req.Host = name + ".test"
	resp, err := http.DefaultClient.Do(req)
	if err == nil {
		resp.Body.Close()
	}
}

func TestARequestHeldByTheRealInterceptorActivatesThroughTheRealScaler(t *testing.T) {
	need(t)
	name := objectName(0)
	w := watch(t.Context(), t, name)
	if r := w.next(t, 10*time.Second); r.active {
		t.Fatalf("the first StreamIsActive message for the idle %s is true", name)
	}

	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Add(1)
	start := time.Now()
	go func() { defer wg.Done(); hold(ctx, name) }()
	r := w.next(t, 10*time.Second)
	if !r.active {
		t.Fatal("StreamIsActive sent false when a request was held")
	}
	t.Logf("request → StreamIsActive(true): %s", r.at.Sub(start))

	active, err := shared.scaler.IsActive(t.Context(), ref(name))
	if err != nil || !active.GetResult() {
		t.Fatalf("IsActive = %v, %v while a request is held", active.GetResult(), err)
	}
	spec, err := shared.scaler.GetMetricSpec(t.Context(), ref(name))
	if err != nil || spec.GetMetricSpecs()[0].GetTargetSizeFloat() != 10 {
		t.Fatalf("GetMetricSpec = %v, %v; want the requestRate target 10", spec, err)
	}

	// The client gives up: the object goes idle once its one-second rate window has passed.
	cancel()
	wg.Wait()
	if r := w.next(t, 10*time.Second); r.active {
		t.Fatal("StreamIsActive sent a second true for one request")
	}
	if active, err := shared.scaler.IsActive(t.Context(), ref(name)); err != nil || active.GetResult() {
		t.Fatalf("IsActive = %v, %v after the request and its rate window are gone", active.GetResult(), err)
	}
}

// BenchmarkActivationLatency measures, per iteration, the time from sending a request for an
// idle HTTPScaledObject to the real interceptor to the StreamIsActive(true) message reaching a
// KEDA-side client of the real scaler, and reports its p50 and p99 against the 20 ms target.
func BenchmarkActivationLatency(b *testing.B) {
	need(b)
	ctx := b.Context()
	ws := make([]*watcher, objects)
	for i := range objects {
		ws[i] = watch(ctx, b, objectName(i))
		if r := ws[i].next(b, 10*time.Second); r.active {
			// A previous run left it active: wait for its false.
			ws[i].next(b, 10*time.Second)
		}
	}
	var lat []time.Duration
	var wg sync.WaitGroup
	cancels := make([]context.CancelFunc, objects)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		k := i % objects
		if cancels[k] != nil {
			// The object's last request is gone; wait until the scaler says it is idle.
			b.StopTimer()
			cancels[k]()
			if r := ws[k].next(b, 10*time.Second); r.active {
				b.Fatalf("%s: a second true for one request", objectName(k))
			}
			b.StartTimer()
		}
		rctx, cancel := context.WithCancel(ctx)
		cancels[k] = cancel
		wg.Add(1)
		start := time.Now()
		go func() { defer wg.Done(); hold(rctx, objectName(k)) }()
		r := ws[k].next(b, 10*time.Second)
		if !r.active {
			b.Fatalf("%s: StreamIsActive sent false for a held request", objectName(k))
		}
		lat = append(lat, r.at.Sub(start))
		// Let go of the request at once, so that rate windows run while other objects are used.
		cancel()
	}
	b.StopTimer()
	wg.Wait()
	slices.Sort(lat)
	p := func(q float64) time.Duration { return lat[min(len(lat)-1, int(q*float64(len(lat))))] }
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(p(0.50)), "p50-ms")
	b.ReportMetric(ms(p(0.99)), "p99-ms")
	b.ReportMetric(ms(p(0.99))/20, "p99/target")
}

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/lobby-http/lobby/interceptor/internal/admin"
	"github.com/lobby-http/lobby/internal/stream"
	"github.com/lobby-http/lobby/operator/api/v1alpha1"
)

// podAddr is the pod address the test's EndpointSlice announces. Kubernetes rejects loopback
// endpoint addresses, so the test gives the interceptor a dialer that maps this address to the
// loopback backend; everything else is wired exactly as main wires it.
const podAddr = "10.244.0.10"

// running is an interceptor started against a real API server.
type running struct {
	kube     client.Client
	proxyURL string
	adminURL string
	backend  string
	// token is the allowed ServiceAccount's token for the admin API; otherToken is a valid token
	// of a ServiceAccount that is not allowed.
	token, otherToken string
	// apiToken is the allowed ServiceAccount's token for the API server's audience.
	apiToken string
	stop     context.CancelFunc
	stopped  chan error
	// drainDelay is the configured wait between the signal and closing the proxy.
	drainDelay time.Duration

	waitOnce sync.Once
	runErr   error
}

// wait signals the interceptor and returns what run returned, failing the test when it does not
// stop in time.
func (r *running) wait(t *testing.T) error {
	t.Helper()
	r.stop()
	r.waitOnce.Do(func() {
		select {
		case r.runErr = <-r.stopped:
		case <-time.After(30 * time.Second):
			r.runErr = errors.New("the interceptor did not stop within 30s of its signal")
		}
	})
	return r.runErr
}

// startInterceptor starts a control plane (kube-apiserver and etcd from KUBEBUILDER_ASSETS) with
// lobby's CRD, a backend on loopback, and the interceptor built by build and run by run.
func startInterceptor(t *testing.T) *running {
	t.Helper()
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Skip("KUBEBUILDER_ASSETS is unset: this test needs kube-apiserver and etcd; run `make test`, " +
			"or set it to the folder printed by `bash e2e/tools/build.sh .cache/tools`")
	}
	if testing.Short() {
		t.Skip("skipping the control-plane test in short mode")
	}
	env := &envtest.Environment{CRDDirectoryPaths: []string{"../config/crd"}, ErrorIfCRDPathMissing: true}
	kubeCfg, err := env.Start()
	if err != nil {
		t.Fatalf("start control plane: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stop control plane: %v", err)
		}
	})
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	kube, err := client.New(kubeCfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}

	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "backend saw host %s", r.Host)
	}))
	t.Cleanup(backend.Close)
	backendAddr := backend.Listener.Addr().String()
	var dialer net.Dialer
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		if host, _, _ := net.SplitHostPort(addr); host == podAddr {
			addr = backendAddr
		}
		return dialer.DialContext(ctx, network, addr)
	}

	cfg, err := loadConfig(func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	cfg.PodName = "interceptor-test"
	cfg.DrainDelay = 300 * time.Millisecond
	cfg.StreamInterval = 100 * time.Millisecond
	cfg.AdminAllowedServiceAccounts = []string{"default/scaler"}
	clientset, err := kubernetes.NewForConfig(kubeCfg)
	if err != nil {
		t.Fatal(err)
	}
	tokens := map[string]string{}
	for _, sa := range []string{"scaler", "other"} {
		if _, err := clientset.CoreV1().ServiceAccounts("default").Create(t.Context(),
			&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		tr, err := clientset.CoreV1().ServiceAccounts("default").CreateToken(t.Context(), sa, &authenticationv1.TokenRequest{
			Spec: authenticationv1.TokenRequestSpec{Audiences: []string{cfg.AdminTokenAudience}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("request a token for %s: %v", sa, err)
		}
		tokens[sa] = tr.Status.Token
	}
	// A token of the allowed ServiceAccount issued for the API server, not for the interceptor.
	tr, err := clientset.CoreV1().ServiceAccounts("default").CreateToken(t.Context(), "scaler", &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tokens["scaler-api"] = tr.Status.Token
	ic, err := build(cfg, testr.New(t), kubeCfg, prometheus.NewPedanticRegistry(), dial)
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	proxyLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	adminLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ic.proxy.Listener, ic.adminServer.Listener = proxyLn, adminLn

	signals, stop := context.WithCancel(context.Background())
	r := &running{
		kube:       kube,
		proxyURL:   "http://" + proxyLn.Addr().String(),
		adminURL:   "http://" + adminLn.Addr().String(),
		backend:    backendAddr,
		token:      tokens["scaler"],
		otherToken: tokens["other"],
		apiToken:   tokens["scaler-api"],
		stop:       stop,
		stopped:    make(chan error, 1),

		drainDelay: cfg.DrainDelay,
	}
	go func() { r.stopped <- ic.run(signals) }()
	t.Cleanup(func() {
		if err := r.wait(t); err != nil {
			t.Errorf("run() = %v, want nil after a signal", err)
		}
	})
	eventually(t, 30*time.Second, "/readyz to succeed", func() bool {
		code, _ := r.get(t, r.adminURL+"/readyz", "")
		return code == http.StatusOK
	})
	return r
}

// get sends a GET through url with the given Host header and returns the status and body, or
// zero and the error text when the request failed.
func (r *running) get(t *testing.T, url, host string) (int, string) {
	t.Helper()
	return r.getAs(t, url, host, "")
}

// getAs is get with the bearer token given (none when empty).
func (r *running) getAs(t *testing.T, url, host, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// eventually polls cond until it holds, failing the test after within.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > within {
			t.Fatalf("waited %v for %s", within, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}

func httpScaledObject(name, host string) *v1alpha1.HTTPScaledObject {
	return &v1alpha1.HTTPScaledObject{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec: v1alpha1.HTTPScaledObjectSpec{
			Hosts:          []string{host},
			ScaleTargetRef: v1alpha1.ScaleTargetRef{Name: name, Service: name, Port: 80},
		},
	}
}

func service(name string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}},
	}
}

func endpointSlice(service string, ready bool) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: "default",
			Name:      service + "-abcde",
			Labels:    map[string]string{discoveryv1.LabelServiceName: service},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{
			Addresses:  []string{podAddr},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(ready)},
		}},
		Ports: []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
}

func TestAgainstAPIServer(t *testing.T) {
	r := startInterceptor(t)
	ctx := t.Context()

	t.Run("An HTTPScaledObject makes its host routable within a second, and deleting it unroutes it.", func(t *testing.T) {
		const host = "web.example.com"
		for _, o := range []client.Object{service("web"), endpointSlice("web", true)} {
			if err := r.kube.Create(ctx, o); err != nil {
				t.Fatal(err)
			}
		}
		if code, _ := r.get(t, r.proxyURL+"/", host); code != http.StatusNotFound {
			t.Fatalf("GET before the HTTPScaledObject exists = %d, want 404", code)
		}
		hso := httpScaledObject("web", host)
		if err := r.kube.Create(ctx, hso); err != nil {
			t.Fatal(err)
		}
		took := eventually(t, time.Second, "the new host to be routed", func() bool {
			code, body := r.get(t, r.proxyURL+"/", strings.ToUpper(host)+":8080")
			return code == http.StatusOK && body == "backend saw host "+strings.ToUpper(host)+":8080"
		})
		t.Logf("routable %v after create", took)

		if err := r.kube.Delete(ctx, hso); err != nil {
			t.Fatal(err)
		}
		took = eventually(t, time.Second, "the deleted host to answer 404", func() bool {
			code, _ := r.get(t, r.proxyURL+"/", host)
			return code == http.StatusNotFound
		})
		t.Logf("unroutable %v after delete", took)
		// The deleted route's metric series go with it (just after the new table is in place).
		eventually(t, time.Second, "the deleted route's metric series to go", func() bool {
			_, metrics := r.get(t, r.adminURL+"/metrics", "")
			return !strings.Contains(metrics, `route="default/web"`)
		})
	})

	t.Run("A held request is forwarded once its EndpointSlice turns ready.", func(t *testing.T) {
		const host = "cold.example.com"
		slice := endpointSlice("cold", false)
		for _, o := range []client.Object{service("cold"), slice, httpScaledObject("cold", host)} {
			if err := r.kube.Create(ctx, o); err != nil {
				t.Fatal(err)
			}
		}
		// The subscriber sees the activation that the held request causes.
		frames := subscribe(t, r.adminURL+stream.Path, r.token)
		eventually(t, 5*time.Second, "the route to appear on the stream", func() bool {
			f := <-frames
			return hasRoute(f, "default/cold")
		})

		type result struct {
			code int
			body string
		}
		done := make(chan result, 1)
		go func() {
			code, body := r.get(t, r.proxyURL+"/", host)
			done <- result{code, body}
		}()
		for f := range frames {
			if f.Kind == stream.KindActivate && hasRoute(f, "default/cold") {
				break
			}
		}
		eventually(t, 5*time.Second, "the request to be held", func() bool {
			_, body := r.getAs(t, r.adminURL+"/queue", "", r.token)
			return strings.Contains(body, `"default/cold":{"inFlight":0,"held":1`)
		})
		select {
		case res := <-done:
			t.Fatalf("request answered %d %q while no endpoint was ready, want it held", res.code, res.body)
		default:
		}

		slice.Endpoints[0].Conditions.Ready = ptr.To(true)
		if err := r.kube.Update(ctx, slice); err != nil {
			t.Fatal(err)
		}
		select {
		case res := <-done:
			if res.code != http.StatusOK || res.body != "backend saw host "+host {
				t.Errorf("held request answered %d %q, want 200 from the backend", res.code, res.body)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("held request not answered within 10s of its EndpointSlice turning ready")
		}
		_, metrics := r.get(t, r.adminURL+"/metrics", "")
		for _, want := range []string{
			`lobby_interceptor_held_requests{route="default/cold"} 0`,
			`lobby_interceptor_in_flight_requests{route="default/cold"} 0`,
			"lobby_interceptor_stream_subscribers 1",
		} {
			if !strings.Contains(metrics, want) {
				t.Errorf("/metrics lacks %q", want)
			}
		}
	})

	t.Run("The status page shows the held request's cold start, from arrival to first answer.", func(t *testing.T) {
		eventually(t, 5*time.Second, "the cold start on /status.json", func() bool {
			_, body := r.get(t, r.adminURL+"/status.json", "")
			var v admin.StatusView
			if json.Unmarshal([]byte(body), &v) != nil {
				return false
			}
			for _, rt := range v.Routes {
				if rt.Key == "default/cold" {
					return rt.State == admin.StateWarm && rt.Ready == 1 && rt.ColdStart != nil && len(rt.ColdStart.Steps) == 4 &&
						rt.ColdStart.Steps[3].Name == admin.StepAnswered
				}
			}
			return false
		})
		if code, body := r.get(t, r.adminURL+"/status", ""); code != http.StatusOK || !strings.Contains(body, "status/events") {
			t.Errorf("GET /status = %d, want 200 and the page", code)
		}
	})

	t.Run("The stream and /queue answer the allowed ServiceAccount's token only, checked by a TokenReview.", func(t *testing.T) {
		for _, tt := range []struct {
			who, token string
			want       int
		}{{"no token", "", http.StatusUnauthorized}, {"a corrupted token", r.token + "x", http.StatusUnauthorized},
			{"the allowed ServiceAccount's token for the API server", r.apiToken, http.StatusUnauthorized},
			{"another ServiceAccount", r.otherToken, http.StatusForbidden}, {"the allowed ServiceAccount", r.token, http.StatusOK}} {
			if code, body := r.getAs(t, r.adminURL+"/queue", "", tt.token); code != tt.want {
				t.Errorf("GET /queue with %s = %d %q, want %d", tt.who, code, body, tt.want)
			}
		}
		if code, _ := r.get(t, r.adminURL+"/metrics", ""); code != http.StatusOK {
			t.Errorf("GET /metrics without a token = %d, want 200", code)
		}
	})

	t.Run("SIGTERM fails readiness at once, drains after the delay, and ends the stream.", func(t *testing.T) {
		testDrain(t, r, "cold.example.com")
	})
}

// testDrain checks the shutdown sequence: on the signal /readyz fails at once while the proxy keeps
// serving for the drain delay; then the proxy closes, the stream ends cleanly, and run returns nil.
func testDrain(t *testing.T, r *running, host string) {
	frames := subscribe(t, r.adminURL+stream.Path, r.token)
	<-frames
	signalled := time.Now()
	r.stop()
	eventually(t, time.Second, "/readyz to fail", func() bool {
		code, _ := r.get(t, r.adminURL+"/readyz", "")
		return code == http.StatusServiceUnavailable
	})
	if time.Since(signalled) < r.drainDelay {
		if code, _ := r.get(t, r.proxyURL+"/", host); code != http.StatusOK {
			t.Errorf("GET during the drain delay = %d, want 200: the proxy must keep serving", code)
		}
	}
	if err := r.wait(t); err != nil {
		t.Fatalf("run() = %v, want nil after a signal", err)
	}
	if d := time.Since(signalled); d < r.drainDelay {
		t.Errorf("run returned %v after the signal, before the drain delay of %v", d, r.drainDelay)
	}
	for range frames {
		// The stream ends (the channel closes) rather than hanging.
	}
	if code, body := r.get(t, r.proxyURL+"/", host); code != 0 {
		t.Errorf("GET after shutdown = %d %q, want a refused connection", code, body)
	}
}

// subscribe opens the push stream and returns its frames.
func subscribe(t *testing.T, url, token string) <-chan stream.Frame {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	frames := make(chan stream.Frame, 16)
	go func() {
		defer close(frames)
		dec := stream.NewDecoder(resp.Body, 0)
		for {
			var f stream.Frame
			if dec.Decode(&f) != nil {
				return
			}
			frames <- f
		}
	}()
	return frames
}

func hasRoute(f stream.Frame, key string) bool {
	for _, c := range f.Routes {
		if c.Key == key {
			return true
		}
	}
	return false
}

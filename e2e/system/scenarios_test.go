//go:build e2e

package system

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/lobby-http/lobby/e2e/coldstart"
	"github.com/lobby-http/lobby/e2e/framework/poll"
	"github.com/lobby-http/lobby/operator/api/v1alpha1"
)

// checkAll fails t unless every response has the wanted code.
func checkAll(t *testing.T, what string, got []response, code int) {
	t.Helper()
	bad := 0
	for _, r := range got {
		if r.err != nil || r.code != code {
			if bad < 5 {
				t.Errorf("%s: got %d %q (err %v), want %d", what, r.code, r.body, r.err, code)
			}
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%s: %d of %d responses were not %d", what, bad, len(got), code)
	}
}

func TestColdStartThroughIngress(t *testing.T) {
	ns := testNamespace(t)
	a := deployApp(t, ns, appSpec{
		name: "cold",
		env:  map[string]string{"STARTUP_DELAY": "500ms"},
		hso:  v1alpha1.HTTPScaledObjectSpec{Hosts: []string{"cold.example.com"}},
	})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	tl := coldstart.NewTimeline()
	var admins []string
	for _, in := range suite.lobby.Instances("interceptor") {
		admins = append(admins, in.URL("admin"))
	}
	coldstart.Watch(ctx, suite.cluster.Client, suite.lobby.Admin, admins, a.ns, a.name, tl)
	time.Sleep(200 * time.Millisecond) // let the stream subscriptions connect
	tl.Begin("50 requests sent to nginx")
	got := sendMany(ctx, 50, suite.ingress.URL+"/", "cold.example.com")
	for _, r := range got {
		if r.err == nil && r.code == http.StatusOK {
			tl.Mark("first response", r.at)
		}
	}
	tl.Mark("last response", slices.MaxFunc(got, func(a, b response) int { return a.at.Compare(b.at) }).at)
	t.Logf("cold start timeline:\n%s", tl)
	checkAll(t, "cold start", got, http.StatusOK)
	var e echoed
	if err := json.Unmarshal([]byte(got[0].body), &e); err != nil || e.Host != "cold.example.com" {
		t.Errorf("the app saw host %q (%v), want cold.example.com preserved", e.Host, err)
	}
	if got[0].header.Get("X-Lobby-Cold-Start") == "" {
		t.Errorf("a held request's response lacks the cold-start header; headers %v", got[0].header)
	}
	if desired, _, _ := a.replicas(ctx); desired != 1 {
		t.Errorf("Deployment replicas = %d after the cold start, want 1 (KEDA scaled 0→1)", desired)
	}
}

func TestRouting(t *testing.T) {
	ns := testNamespace(t)
	deployApp(t, ns, appSpec{name: "one", replicas: 1, hso: v1alpha1.HTTPScaledObjectSpec{Hosts: []string{"one.example.com"}}})
	deployApp(t, ns, appSpec{name: "two", replicas: 1, hso: v1alpha1.HTTPScaledObjectSpec{Hosts: []string{"two.example.com"}}})
	deployApp(t, ns, appSpec{name: "wild", replicas: 1, hso: v1alpha1.HTTPScaledObjectSpec{Hosts: []string{"*.apps.example.com"}}})
	deployApp(t, ns, appSpec{name: "api", replicas: 1, hso: v1alpha1.HTTPScaledObjectSpec{
		Hosts: []string{"one.example.com"}, PathPrefixes: []string{"/api"}}})
	deployApp(t, ns, appSpec{name: "canary", replicas: 1, hso: v1alpha1.HTTPScaledObjectSpec{
		Hosts: []string{"one.example.com"}, Headers: []v1alpha1.Header{{Name: "X-Canary", Value: ptr.To("yes")}}}})

	for _, tc := range []struct {
		name, host, path string
		header           http.Header
		want             string // the pod name prefix that answers, or "" for 404
	}{
		{"An exact host goes to its app.", "one.example.com", "/", nil, "one-"},
		{"Another host goes to the other app.", "TWO.example.com", "/x", nil, "two-"},
		{"A subdomain matches the wildcard.", "a.b.apps.example.com", "/", nil, "wild-"},
		{"A longer path prefix wins on the same host.", "one.example.com", "/api/v1", nil, "api-"},
		{"A path prefix matches on segment boundaries only.", "one.example.com", "/apiary", nil, "one-"},
		{"A matching header selects its app.", "one.example.com", "/", http.Header{"X-Canary": {"yes"}}, "canary-"},
		{"An unknown host gets 404.", "nobody.example.org", "/", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := send(t.Context(), http.MethodGet, suite.ingress.URL+tc.path, tc.host, tc.header)
			if r.err != nil {
				t.Fatal(r.err)
			}
			if tc.want == "" {
				if r.code != http.StatusNotFound {
					t.Fatalf("got %d %q, want 404", r.code, r.body)
				}
				return
			}
			var e echoed
			if r.code != http.StatusOK || json.Unmarshal([]byte(r.body), &e) != nil || !strings.HasPrefix(e.PodName, tc.want) {
				t.Fatalf("got %d %q, want 200 from a pod %s*", r.code, r.body, tc.want)
			}
		})
	}
}

func TestColdStartTimeout(t *testing.T) {
	ns := testNamespace(t)
	// The apps never become ready within the timeouts: they start after a minute.
	slow := map[string]string{"STARTUP_DELAY": "60s"}
	// A failover Service is not scaled to zero: it is what answers while the app is.
	deployApp(t, ns, appSpec{name: "failover-target", replicas: 1, plain: true})
	deployApp(t, ns, appSpec{name: "plain", env: slow, hso: v1alpha1.HTTPScaledObjectSpec{
		Hosts: []string{"plain.example.com"}, Timeouts: &v1alpha1.HTTPScaledObjectTimeoutsSpec{ConditionWait: duration(2 * time.Second)}}})
	deployApp(t, ns, appSpec{name: "failover", env: slow, hso: v1alpha1.HTTPScaledObjectSpec{
		Hosts: []string{"failover.example.com"},
		ColdStartTimeoutFailoverRef: &v1alpha1.ColdStartTimeoutFailoverRef{
			Service: "failover-target", Port: 80, TimeoutSeconds: 2}}})
	deployApp(t, ns, appSpec{name: "placeholder", env: slow, hso: v1alpha1.HTTPScaledObjectSpec{
		Hosts:    []string{"placeholder.example.com"},
		Timeouts: &v1alpha1.HTTPScaledObjectTimeoutsSpec{ConditionWait: duration(2 * time.Second)},
		ColdStart: &v1alpha1.ColdStartSpec{Placeholder: &v1alpha1.PlaceholderSpec{
			StatusCode: 202, Headers: map[string]v1alpha1.PlaceholderHeaderValue{"Refresh": "5"}, Body: "warming up"}}}})

	ctx := t.Context()
	if r := send(ctx, http.MethodGet, suite.ingress.URL+"/", "plain.example.com", nil); r.code != http.StatusGatewayTimeout {
		t.Errorf("without failover or placeholder: got %d %q (%v), want 504", r.code, r.body, r.err)
	}
	r := send(ctx, http.MethodGet, suite.ingress.URL+"/", "failover.example.com", nil)
	var e echoed
	if r.code != http.StatusOK || json.Unmarshal([]byte(r.body), &e) != nil || !strings.HasPrefix(e.PodName, "failover-target-") {
		t.Errorf("with a failover: got %d %q (%v), want 200 from the failover Service", r.code, r.body, r.err)
	}
	r = send(ctx, http.MethodGet, suite.ingress.URL+"/", "placeholder.example.com", nil)
	if r.code != 202 || r.body != "warming up" || r.header.Get("Refresh") != "5" {
		t.Errorf("with a placeholder: got %d %q %v (%v), want 202 \"warming up\" with Refresh: 5", r.code, r.body, r.header, r.err)
	}
}

func TestQueueBound(t *testing.T) {
	ns := testNamespace(t)
	a := deployApp(t, ns, appSpec{name: "bounded", env: map[string]string{"STARTUP_DELAY": "3s"}, hso: v1alpha1.HTTPScaledObjectSpec{
		Hosts: []string{"bounded.example.com"}, ColdStart: &v1alpha1.ColdStartSpec{MaxPendingRequests: ptr.To[int32](5)}}})
	// Send straight to one interceptor: the bound is per interceptor.
	in := suite.lobby.Instances("interceptor")[0]
	ctx := t.Context()
	held := make(chan []response, 1)
	go func() { held <- sendMany(ctx, 5, in.URL("http")+"/", "bounded.example.com") }()
	if err := poll.Until(t.Context(), 10*time.Second, "five requests to be held", func() error {
		q, err := queue(in.URL("admin"))
		if err != nil {
			return err
		}
		if q[a.key()].Held != 5 {
			return fmt.Errorf("held = %d", q[a.key()].Held)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	extra := sendMany(ctx, 3, in.URL("http")+"/", "bounded.example.com")
	checkAll(t, "requests beyond the bound", extra, http.StatusServiceUnavailable)
	for _, r := range extra {
		if r.header.Get("Retry-After") == "" {
			t.Errorf("a rejected request lacks Retry-After: %v", r.header)
			break
		}
	}
	checkAll(t, "held requests once the app is up", <-held, http.StatusOK)
}

func TestScaleOutAndBackToZero(t *testing.T) {
	ns := testNamespace(t)
	a := deployApp(t, ns, appSpec{name: "busy", env: map[string]string{"RESPONSE_DELAY": "300ms"}, hso: v1alpha1.HTTPScaledObjectSpec{
		Hosts:          []string{"busy.example.com"},
		Replicas:       &v1alpha1.ReplicaStruct{Min: ptr.To[int32](0), Max: ptr.To[int32](3)},
		CooldownPeriod: ptr.To[int32](5),
		ScalingMetric:  &v1alpha1.ScalingMetricSpec{Concurrency: &v1alpha1.ConcurrencyMetricSpec{TargetValue: 2}},
	}})
	ctx, cancel := context.WithCancel(t.Context())
	// Twelve clients in a loop keep about twelve requests in flight: six times the target.
	var mu sync.Mutex
	var results []response
	var wg sync.WaitGroup
	for range 12 {
		wg.Go(func() {
			for ctx.Err() == nil {
				r := send(ctx, http.MethodGet, suite.ingress.URL+"/", "busy.example.com", nil)
				if ctx.Err() != nil {
					return
				}
				mu.Lock()
				results = append(results, r)
				mu.Unlock()
			}
		})
	}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		desired, ready, err := a.replicas(t.Context())
		if err == nil && desired > 1 && ready > 1 {
			t.Logf("scaled out to %d ready replicas", ready)
			break
		}
		if time.Now().After(deadline) {
			cancel()
			wg.Wait()
			t.Fatalf("the HPA did not scale out beyond one ready replica within 3m (desired %d, ready %d, err %v)", desired, ready, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	checkAll(t, "requests under load", results, http.StatusOK)

	if err := poll.Until(t.Context(), 4*time.Minute, "KEDA to scale the idle app back to zero", func() error {
		desired, _, err := a.replicas(t.Context())
		if err != nil {
			return err
		}
		if desired != 0 {
			return fmt.Errorf("replicas = %d", desired)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// At zero means no pod left: a request sent while the last pod is still shutting down can
	// reach it before its EndpointSlice says so (see the note on scale-down in docs/proxy.md).
	if err := poll.Until(t.Context(), time.Minute, "the app's last pod to be gone", func() error {
		var pods corev1.PodList
		if err := suite.cluster.Client.List(t.Context(), &pods, client.InNamespace(a.ns)); err != nil {
			return err
		}
		if len(pods.Items) > 0 {
			return fmt.Errorf("%d pods left", len(pods.Items))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	r := send(t.Context(), http.MethodGet, suite.ingress.URL+"/", "busy.example.com", nil)
	if r.code != http.StatusOK {
		t.Fatalf("the request after scale to zero got %d %q (%v), want 200 after a new cold start", r.code, r.body, r.err)
	}
}

func TestEditAndDelete(t *testing.T) {
	ns := testNamespace(t)
	a := deployApp(t, ns, appSpec{name: "edited", replicas: 1, hso: v1alpha1.HTTPScaledObjectSpec{Hosts: []string{"before.example.com"}}})
	ctx := t.Context()
	var hso v1alpha1.HTTPScaledObject
	// The operator writes the status meanwhile: retry on conflicts, as kubectl edit would.
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := suite.cluster.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: a.name}, &hso); err != nil {
			return err
		}
		hso.Spec.Hosts = []string{"after.example.com"}
		return suite.cluster.Client.Update(ctx, &hso)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := poll.Until(t.Context(), 10*time.Second, "the edited host to route and the old one to stop", func() error {
		if r := send(ctx, http.MethodGet, suite.ingress.URL+"/", "after.example.com", nil); r.code != http.StatusOK {
			return fmt.Errorf("new host: %d", r.code)
		}
		if r := send(ctx, http.MethodGet, suite.ingress.URL+"/", "before.example.com", nil); r.code != http.StatusNotFound {
			return fmt.Errorf("old host: %d", r.code)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := suite.cluster.Client.Delete(ctx, &hso); err != nil {
		t.Fatal(err)
	}
	if err := poll.Until(t.Context(), 10*time.Second, "the deleted object's host to answer 404", func() error {
		if r := send(ctx, http.MethodGet, suite.ingress.URL+"/", "after.example.com", nil); r.code != http.StatusNotFound {
			return fmt.Errorf("got %d", r.code)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// The garbage collector deletes KEDA's ScaledObject with the HTTPScaledObject that owns it.
	if err := poll.Until(t.Context(), 30*time.Second, "the ScaledObject to be garbage-collected", func() error {
		var so unstructured.Unstructured
		so.SetGroupVersionKind(scaledObjectGVK)
		err := suite.cluster.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: a.name}, &so)
		if err == nil {
			return fmt.Errorf("ScaledObject %s still exists", a.key())
		}
		return client.IgnoreNotFound(err)
	}); err != nil {
		t.Fatal(err)
	}
}

// duration returns d as a *metav1.Duration.
func duration(d time.Duration) *metav1.Duration { return &metav1.Duration{Duration: d} }

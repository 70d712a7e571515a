//go:build e2e

package system

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/lobby-http/lobby/e2e/apps"
	"github.com/lobby-http/lobby/e2e/deploy"
	"github.com/lobby-http/lobby/e2e/framework/poll"
	"github.com/lobby-http/lobby/operator/api/v1alpha1"
)

// The control-plane fault scenarios stop the shared cluster's API server or etcd under lobby.
// What should hold, by design: the request path never reads the API (routes and endpoints are
// snapshots of informer caches), so warm apps keep answering; the interceptors and scalers stay
// ready on their last-synced caches; and the informers re-list and re-watch on their own once the
// API is back, so changes made afterwards take effect without restarting anything.
//
// make test runs them apart from the rest of the package, in a cluster of their own
// (CONTROL_PLANE_TESTS in the Makefile), the etcd restart first: what an API server outage
// leaves behind, client-go watches backing off by up to a minute for two minutes, would slow the
// tests that follow it.

// apiOutage is how long the API server stays down in TestAPIServerDownFor30Seconds.
const apiOutage = 30 * time.Second

// etcdOutage is how long etcd stays down in TestEtcdRestart: a restart as an upgrade or a node
// reboot makes it, shorter than the operator's lease renew deadline (10 s), so that nothing of
// lobby's needs to restart.
const etcdOutage = 5 * time.Second

// recoveryTimeout bounds how long a change made after an outage may take to reach lobby.
// client-go's reflectors back off exponentially while the API is down, up to 30 s doubled by
// jitter, so their next attempt can come a minute after it is back; the restarted API server
// answers that watch "too old", and the relist after it waits as long again. The HTTPScaledObject
// informers (and kube-controller-manager's) use that back-off; lobby's EndpointSlice and Service
// reflectors wait at most 8 s (endpoints.watchBackoff).
const recoveryTimeout = 3 * time.Minute

func TestEtcdRestart(t *testing.T) {
	c := suite.cluster
	s := newOutageScenario(t)
	s.outage(t, "etcd", etcdOutage, c.StopEtcd, c.StartEtcd, func() {})
	seen := s.routeLateApp(t, "etcd")
	t.Logf("during the restart: %s", seen)

	t.Run("The warm app answered every request through nginx while etcd restarted, each within the latency bound.", func(t *testing.T) {
		seen.load.check(t, "requests for the warm app during the restart")
		s.watch.counts.agree(t, "requests for the warm app during the restart", seen.load)
		if seen.load.slowest > warmLatencyBound {
			t.Errorf("the slowest request for the warm app took %v, want ≤ %v: the request path waited on the control plane", seen.load.slowest, warmLatencyBound)
		}
		if seen.notReady > 0 {
			t.Errorf("%d of %d readiness probes failed: %v", seen.notReady, seen.probes, seen.notReadyLines)
		}
	})

	s.checkRecovered(t, "the restart")

	t.Run("Every lobby process is the one that ran before: nothing restarted.", func(t *testing.T) {
		now := lobbyPIDs()
		for name, in := range s.pids {
			if !running(in) {
				t.Errorf("%s exited: see %s", name, in.Process.LogFile)
			}
			if _, ok := now[name]; !ok {
				t.Errorf("%s is no longer one of lobby's instances", name)
			}
		}
		if len(now) != len(s.pids) {
			t.Errorf("lobby runs %d processes after the restart, %d before", len(now), len(s.pids))
		}
	})

	waitLobbyReady(t)
}

func TestAPIServerDownFor30Seconds(t *testing.T) {
	c := suite.cluster
	s := newOutageScenario(t)
	// Whatever happens below, later tests need the operator back; a cleanup registered first runs
	// last, after the API server is started again.
	t.Cleanup(func() { replaceExitedOperators(t) })
	var exitedDuring map[string]error
	s.outage(t, "the API server", apiOutage, c.StopAPIServer, c.StartAPIServer, func() { exitedDuring = exitedLobby() })
	// A Deployment's kubelet would restart an operator that exited; this does it at once.
	replaceExitedOperators(t)
	seen := s.routeLateApp(t, "the API server")
	t.Logf("during the outage and the re-list: %s", seen)

	t.Run("The warm app answered every request through nginx while the API server was down.", func(t *testing.T) {
		if seen.load.sent < int(apiOutage/time.Second) {
			t.Fatalf("only %d requests were sent during the outage; the watch did not run", seen.load.sent)
		}
		seen.load.check(t, "requests for the warm app during the outage")
		s.watch.counts.agree(t, "requests for the warm app during the outage", seen.load)
	})

	t.Run("The interceptors and scalers stayed ready, serving their caches.", func(t *testing.T) {
		if seen.probes == 0 {
			t.Fatal("no readiness probe ran during the outage")
		}
		if seen.notReady > 0 {
			t.Errorf("%d of %d readiness probes failed: %v", seen.notReady, seen.probes, seen.notReadyLines)
		}
	})

	t.Run("No interceptor or scaler exited or restarted; the operator only gave up its lease.", func(t *testing.T) {
		for name, exitErr := range exitedDuring {
			in := s.pids[name]
			if in.Component == "operator" && operatorLostLease(in) {
				// controller-runtime ends the manager when the Lease cannot be renewed within its
				// renew deadline (10 s): a replica that may have lost the lease must stop
				// reconciling. The pod's restart policy brings it back; replaceExitedOperators
				// does what the kubelet would.
				t.Logf("%s exited after losing its leader-election Lease (%v), as controller-runtime does; it is replaced", name, exitErr)
				continue
			}
			t.Errorf("%s exited during the outage: %v; see %s", name, exitErr, in.Process.LogFile)
		}
		for name, in := range s.pids {
			if in.Component != "operator" && !running(in) {
				t.Errorf("%s is not running after the outage", name)
			}
		}
	})

	s.checkRecovered(t, "the outage")
	waitLobbyReady(t)
}

// outageScenario is what the control-plane scenarios share: a warm app that must keep answering
// through the outage, a cold one scaled to zero to be woken after it, lobby's processes as they
// were before it, and the watch of the warm app's requests and lobby's readiness.
type outageScenario struct {
	ns         string
	warm, cold *app
	pids       map[string]*deploy.Instance
	watch      *outageWatch
	// back is when the control plane was ready again.
	back time.Time
}

// newOutageScenario deploys the scenario's apps in a namespace of t's, checks that the warm one
// answers, records lobby's processes and starts the watch.
func newOutageScenario(t *testing.T) *outageScenario {
	t.Helper()
	ns := testNamespace(t)
	s := &outageScenario{ns: ns}
	s.warm = deployApp(t, ns, warmSpec(ns))
	s.cold = deployApp(t, ns, appSpec{name: "cold", env: map[string]string{"STARTUP_DELAY": "500ms"},
		hso: v1alpha1.HTTPScaledObjectSpec{Hosts: []string{outageHost("cold", ns)}}})
	if r := send(t.Context(), http.MethodGet, suite.ingress.URL+"/", outageHost("warm", ns), nil); r.code != http.StatusOK {
		t.Fatalf("the warm app before the outage: got %d %q (%v), want 200", r.code, r.body, r.err)
	}
	s.pids = lobbyPIDs()
	s.watch = watchOutage(t, s.warm, outageHost("warm", ns))
	return s
}

// outage stops the control-plane component what with stop, keeps it down for d, runs during and
// starts it again with start. If the test ends while the component is down, a cleanup starts it
// again, for the tests that follow.
func (s *outageScenario) outage(t *testing.T, what string, d time.Duration, stop func() error, start func(context.Context) error, during func()) {
	t.Helper()
	down := true
	if err := stop(); err != nil {
		s.watch.stop()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if down {
			if err := start(context.Background()); err != nil {
				t.Errorf("start %s again: %v", what, err)
			}
		}
	})
	t.Logf("%s stopped; down for %s", what, d)
	// The outage itself is the scenario, so this is a fixed wait, not a wait for a condition.
	time.Sleep(d)
	during()
	if err := start(t.Context()); err != nil {
		t.Fatal(err)
	}
	down = false
	s.back = time.Now()
	t.Logf("%s is back and the API server ready", what)
}

// routeLateApp makes a change after the outage of what: a new app behind a new HTTPScaledObject.
// Every interceptor routing it shows that its HTTPScaledObject informer re-watched; the app
// answering through nginx, that its EndpointSlice informer did (and the controller manager and
// kubelet); KEDA's HPA, that the operator and KEDA did. It stops the watch and returns what it
// saw.
func (s *outageScenario) routeLateApp(t *testing.T, what string) outageSeen {
	t.Helper()
	late := createOutageApp(t, s.ns, "late", outageHost("late", s.ns))
	waitRouted(t, late, outageHost("late", s.ns), recoveryTimeout)
	t.Logf("a new HTTPScaledObject was routed %s after %s came back", time.Since(s.back).Round(time.Millisecond), what)
	waitScaledObject(t, late, recoveryTimeout)
	return s.watch.stop()
}

// checkRecovered checks, after the outage or restart named after, that an edit of the warm app's
// HTTPScaledObject takes effect and that the cold app is woken from zero.
func (s *outageScenario) checkRecovered(t *testing.T, after string) {
	t.Helper()
	t.Run("An HTTPScaledObject edited after "+after+" moves its host.", func(t *testing.T) {
		moveHost(t, s.warm, outageHost("warm", s.ns), outageHost("moved", s.ns), recoveryTimeout)
	})

	t.Run("A cold app is woken after "+after+": the scalers and KEDA scale it from zero.", func(t *testing.T) {
		r := send(t.Context(), http.MethodGet, suite.ingress.URL+"/", outageHost("cold", s.ns), nil)
		if r.code != http.StatusOK {
			t.Fatalf("got %d %q (%v), want 200 after a cold start", r.code, r.body, r.err)
		}
		if desired, _, _ := s.cold.replicas(t.Context()); desired < 1 {
			t.Errorf("Deployment replicas = %d after the wake, want ≥ 1", desired)
		}
	})
}

// warmSpec is an app that stays up: KEDA would scale an idle app with a minimum of zero down
// at once, and a request for it would then wait for a cold start, which needs the control plane.
func warmSpec(ns string) appSpec {
	return appSpec{name: "warm", replicas: 1, hso: v1alpha1.HTTPScaledObjectSpec{
		Hosts:    []string{outageHost("warm", ns)},
		Replicas: &v1alpha1.ReplicaStruct{Min: ptr.To[int32](1), Max: ptr.To[int32](3)},
	}}
}

// outageHost is a host name unique to the test's namespace, so that routes of other tests
// never overlap.
func outageHost(app, ns string) string { return app + "." + ns + ".example.com" }

// createOutageApp creates a one-replica app behind an HTTPScaledObject for host, waiting for
// nothing: deployApp's bounds are for a control plane that has not just come back.
func createOutageApp(t *testing.T, ns, name, host string) *app {
	t.Helper()
	dep, svc := apps.Echo{Namespace: ns, Name: name, Replicas: 1}.Objects()
	hso := &v1alpha1.HTTPScaledObject{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1alpha1.HTTPScaledObjectSpec{
			Hosts:          []string{host},
			ScaleTargetRef: v1alpha1.ScaleTargetRef{Name: name, Kind: "Deployment", APIVersion: "apps/v1", Service: name, Port: 80},
			Replicas:       &v1alpha1.ReplicaStruct{Min: ptr.To[int32](0), Max: ptr.To[int32](3)},
			CooldownPeriod: ptr.To[int32](300),
		},
	}
	for _, o := range []client.Object{dep, svc, hso} {
		if err := suite.cluster.Client.Create(t.Context(), o); err != nil {
			t.Fatalf("create %T %s: %v", o, name, err)
		}
	}
	return &app{ns: ns, name: name}
}

// waitScaledObject waits until KEDA has taken a's ScaledObject over: the operator wrote it and
// the KEDA operator created its HPA.
func waitScaledObject(t *testing.T, a *app, timeout time.Duration) {
	t.Helper()
	if err := poll.Until(t.Context(), timeout, "KEDA to create the HPA of "+a.key(), func() error {
		var hpa unstructured.Unstructured
		hpa.SetGroupVersionKind(schema.GroupVersionKind{Group: "autoscaling", Version: "v2", Kind: "HorizontalPodAutoscaler"})
		return suite.cluster.Client.Get(t.Context(), client.ObjectKey{Namespace: a.ns, Name: "keda-hpa-" + a.name}, &hpa)
	}); err != nil {
		t.Fatal(err)
	}
}

// waitRouted waits until every interceptor routes a and a request for host through nginx is
// answered by one of its pods.
func waitRouted(t *testing.T, a *app, host string, timeout time.Duration) {
	t.Helper()
	waitRouting(t, a.key(), timeout)
	if err := poll.Until(t.Context(), timeout, a.key()+" to answer through nginx", func() error {
		r := send(t.Context(), http.MethodGet, suite.ingress.URL+"/", host, nil)
		if r.err != nil || r.code != http.StatusOK {
			return fmt.Errorf("got %d %q (%v)", r.code, r.body, r.err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// moveHost edits a's HTTPScaledObject from host from to host to and waits until nginx routes
// the new host to it and answers 404 for the old one.
func moveHost(t *testing.T, a *app, from, to string, timeout time.Duration) {
	t.Helper()
	ctx := t.Context()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var hso v1alpha1.HTTPScaledObject
		if err := suite.cluster.Client.Get(ctx, client.ObjectKey{Namespace: a.ns, Name: a.name}, &hso); err != nil {
			return err
		}
		hso.Spec.Hosts = []string{to}
		return suite.cluster.Client.Update(ctx, &hso)
	})
	if err != nil {
		t.Fatalf("edit the hosts of %s: %v", a.key(), err)
	}
	if err := poll.Until(t.Context(), timeout, "the edited host to route and the old one to stop", func() error {
		if r := send(ctx, http.MethodGet, suite.ingress.URL+"/", to, nil); r.code != http.StatusOK {
			return fmt.Errorf("new host: %d %q (%v)", r.code, r.body, r.err)
		}
		if r := send(ctx, http.MethodGet, suite.ingress.URL+"/", from, nil); r.code != http.StatusNotFound {
			return fmt.Errorf("old host: %d %q (%v)", r.code, r.body, r.err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// lobbyPIDs returns lobby's instances by process name.
func lobbyPIDs() map[string]*deploy.Instance {
	out := map[string]*deploy.Instance{}
	for _, component := range deploy.Components {
		for _, in := range suite.lobby.Instances(component) {
			out[in.Process.Name] = in
		}
	}
	return out
}

// running reports whether the instance's process is still alive.
func running(in *deploy.Instance) bool {
	exited, _ := in.Process.Exited()
	return !exited
}

// exitedLobby returns lobby's processes that have exited, with their wait errors.
func exitedLobby() map[string]error {
	out := map[string]error{}
	for name, in := range lobbyPIDs() {
		if exited, err := in.Process.Exited(); exited {
			out[name] = err
		}
	}
	return out
}

// operatorLostLease reports whether the operator's log ends with controller-runtime's account of
// a lost leader election.
func operatorLostLease(in *deploy.Instance) bool {
	b, err := os.ReadFile(in.Process.LogFile)
	return err == nil && strings.Contains(string(b), "leader election lost")
}

// replaceExitedOperators starts a new operator for each that has exited, as a Deployment's pod
// would be restarted, and takes the exited one out of the release.
func replaceExitedOperators(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	for _, in := range suite.lobby.Instances("operator") {
		if running(in) {
			continue
		}
		// Its Stop reports that it had exited on its own, which is known here.
		_ = suite.lobby.Stop(ctx, in)
		if _, err := suite.lobby.Start(ctx, "operator"); err != nil {
			t.Errorf("start a new operator in place of %s: %v", in.Process.Name, err)
		}
	}
}

// waitLobbyReady waits until every lobby process passes its readiness probe, so that the next
// test starts on a healthy release.
func waitLobbyReady(t *testing.T) {
	t.Helper()
	hc := &http.Client{Timeout: 2 * time.Second}
	if err := poll.Until(t.Context(), recoveryTimeout, "every lobby process to be ready", func() error {
		for name, in := range lobbyPIDs() {
			port := "admin"
			if in.Component == "operator" {
				port = "health"
			}
			resp, err := hc.Get(in.URL(port) + "/readyz")
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("%s: /readyz %s", name, resp.Status)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// warmLatencyBound bounds the time a request through a warm route takes while the control plane
// restarts. The request path reads no Kubernetes object (routes and endpoints are snapshots of
// informer caches), so neither etcd nor the API server is on it: a request for a warm app with
// a ready pod is answered in milliseconds whatever the control plane does. A request that waited
// on the control plane would wait for the rest of the outage (5 s for etcd), then for the
// informers' relist; the bound is far above the milliseconds, for a machine the restarting
// control plane keeps busy, and far below that.
const warmLatencyBound = time.Second

// outageWatch sends requests for a warm app, counted, through an nginx without retries, and polls
// the readiness of the interceptors and scalers while a control-plane fault lasts, and records
// what it saw.
type outageWatch struct {
	load   *load
	counts *serverCounts
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu   sync.Mutex
	seen outageSeen
}

// outageSeen is what an outageWatch saw.
type outageSeen struct {
	// load counts the requests for the warm app.
	load             tally
	probes, notReady int
	notReadyLines    []string
}

func (s outageSeen) String() string {
	return fmt.Sprintf("requests for the warm app: %v; %d readiness probes, %d failed", s.load, s.probes, s.notReady)
}

// watchOutage starts a watch: one request for host every 100 ms through its own nginx without
// retries, the interceptors' counters of the warm app's route, and one readiness probe of each
// interceptor and scaler every 500 ms.
func watchOutage(t *testing.T, a *app, host string) *outageWatch {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	noRetry := noRetryIngress(t)
	w := &outageWatch{cancel: cancel, counts: watchServerCounts(t, a.key())}
	w.load = startLoad(ctx, 1, 100*time.Millisecond, noRetry.URL+"/", host)
	var probed []*deploy.Instance
	for _, component := range []string{"interceptor", "scaler"} {
		probed = append(probed, suite.lobby.Instances(component)...)
	}
	w.wg.Go(func() {
		hc := &http.Client{Timeout: 2 * time.Second}
		for ctx.Err() == nil {
			for _, in := range probed {
				err := readyz(ctx, hc, in.URL("admin"))
				if ctx.Err() != nil {
					return
				}
				w.mu.Lock()
				w.seen.probes++
				if err != nil {
					w.seen.notReady++
					if len(w.seen.notReadyLines) < 5 {
						w.seen.notReadyLines = append(w.seen.notReadyLines, fmt.Sprintf("%s %s: %v", time.Now().Format("15:04:05.000"), in.Process.Name, err))
					}
				}
				w.mu.Unlock()
			}
			sleepCtx(ctx, 500*time.Millisecond)
		}
	})
	return w
}

// stop ends the watch: the load stops and is counted once its requests on their way are
// answered; it returns what it saw.
func (w *outageWatch) stop() outageSeen {
	got := w.load.stop()
	w.cancel()
	w.wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.seen.load = got
	return w.seen
}

// readyz GETs base/readyz and wants 200.
func readyz(ctx context.Context, hc *http.Client, base string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/readyz", nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return errors.New(resp.Status)
	}
	return nil
}

// sleepCtx sleeps for d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

//go:build e2e

package system

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/lobby-http/lobby/e2e/deploy"
	"github.com/lobby-http/lobby/e2e/framework/poll"
	"github.com/lobby-http/lobby/operator/api/v1alpha1"
)

// Faults: an app that crashes with a request in flight, an app killed during its cold start, an
// interceptor stopped under load, and both scalers restarted. Each test asserts what a client
// sees (every status, no hang) and what the cluster does (replicas, readiness, exits).

func TestAppCrashMidRequest(t *testing.T) {
	ns := testNamespace(t)
	// One replica, pinned: the crash is survived by the kubelet restarting the container, not by
	// another pod taking the traffic. The start-up delay keeps the restarted container unready
	// for a few seconds, the window the test sends into.
	pinned := func() *v1alpha1.ReplicaStruct {
		return &v1alpha1.ReplicaStruct{Min: ptr.To[int32](1), Max: ptr.To[int32](1)}
	}
	a := deployApp(t, ns, appSpec{name: "crashy", replicas: 1, env: map[string]string{"STARTUP_DELAY": "3s"},
		hso: v1alpha1.HTTPScaledObjectSpec{Hosts: []string{"crashy.example.com"}, Replicas: pinned()}})
	b := deployApp(t, ns, appSpec{name: "bystander", replicas: 1,
		hso: v1alpha1.HTTPScaledObjectSpec{Hosts: []string{"bystander.example.com"}, Replicas: pinned()}})
	ctx := t.Context()
	pod := waitPod(t, a, 60*time.Second, "ready", podIsReady)
	waitPod(t, b, 60*time.Second, "ready", podIsReady)
	for _, host := range []string{"crashy.example.com", "bystander.example.com"} {
		if r := send(ctx, http.MethodGet, suite.ingress.URL+"/", host, nil); r.code != http.StatusOK {
			t.Fatalf("%s before the crash: got %d %q (%v), want 200", host, r.code, r.body, r.err)
		}
	}
	// The bystander's load, and the requests for the crashed app below, go through an nginx
	// without retries: each request reaches one interceptor once, so a request lost to the crash
	// is counted, not sent again.
	noRetry := noRetryIngress(t)
	bystanderCounts := watchServerCounts(t, b.key())
	bystander := startLoad(ctx, 2, 0, noRetry.URL+"/", "bystander.example.com")
	defer bystander.stop()

	// The slow request goes to one interceptor directly, so that the 502 it gets is the
	// interceptor's own answer: through nginx, a 502 could also be nginx's, about the
	// interceptor.
	in := suite.lobby.Instances("interceptor")[0]
	// A first request through the same interceptor leaves a kept-alive connection to the pod,
	// which the slow request then takes: the harder case, since net/http sends a request again
	// on a new connection when a reused one closes before the response, and that dial is refused.
	if r := send(ctx, http.MethodGet, in.URL("http")+"/", "crashy.example.com", nil); r.code != http.StatusOK {
		t.Fatalf("crashy.example.com at %s before the crash: got %d %q (%v), want 200", in.Process.Name, r.code, r.body, r.err)
	}
	// From here on, the interceptors' counters of the crashed app must show what its clients
	// see: the 502 of the request in flight, and the answers to the requests sent after.
	crashyCounts := watchServerCounts(t, a.key())
	crashyAnswers := map[int]int{}
	inflight := make(chan response, 1)
	go func() { inflight <- send(ctx, http.MethodGet, in.URL("http")+"/?delay=60s", "crashy.example.com", nil) }()
	if err := poll.Until(t.Context(), 10*time.Second, "the slow request to be in flight", func() error {
		q, err := queue(in.URL("admin"))
		if err != nil {
			return err
		}
		if n := q[a.key()].InFlight; n != 1 {
			return fmt.Errorf("in flight = %d", n)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// The interceptor counts the request in flight from its arrival; the crash must come once the
	// app has it. Crashed earlier, the interceptor's dial would be refused and the request held
	// for the restarted container, which is a different scenario.
	podAddr := net.JoinHostPort(pod.Status.PodIP, "8080")
	if err := poll.Until(t.Context(), 10*time.Second, "the slow request to reach the app", func() error {
		r := send(ctx, http.MethodGet, "http://"+podAddr+"/delayed", "crashy.example.com", nil)
		if r.err != nil || r.code != http.StatusOK || strings.TrimSpace(r.body) != "1" {
			return fmt.Errorf("GET /delayed at the pod: %d %q (%v), want 1", r.code, r.body, r.err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if r := send(ctx, http.MethodGet, "http://"+podAddr+"/crash", "crashy.example.com", nil); r.code != http.StatusOK {
		t.Fatalf("GET /crash at the pod: got %d %q (%v), want 200", r.code, r.body, r.err)
	}
	if err := poll.Until(t.Context(), 10*time.Second, "the crashed process to stop listening", func() error { return refused(podAddr) }); err != nil {
		t.Fatal(err)
	}

	// Requests sent now find the app down: first while its EndpointSlice may still call the dead
	// pod ready (the dial is refused), then while it is not ready. All of them wait for the
	// restarted container.
	var after []chan response
	sendOne := func() {
		c := make(chan response, 1)
		go func() { c <- send(ctx, http.MethodGet, noRetry.URL+"/", "crashy.example.com", nil) }()
		after = append(after, c)
	}
	for range 3 {
		sendOne()
	}
	select {
	case r := <-inflight:
		if r.err == nil {
			crashyAnswers[r.code]++
		}
		if r.err != nil || r.code != http.StatusBadGateway {
			t.Errorf("the request in flight at the crash: got %d %q (%v), want 502", r.code, r.body, r.err)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("the request in flight at the crash had no answer 30s after the crash, want 502 at once")
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		time.Sleep(200 * time.Millisecond) // pace: one request every 200 ms until the pod is back
		var p corev1.Pod
		err := suite.cluster.Client.Get(ctx, client.ObjectKeyFromObject(&pod), &p)
		if err == nil && podIsReady(&p) == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the crashed pod was not ready again within 60s (err %v)", err)
		}
		sendOne()
	}
	var got []response
	for _, c := range after {
		got = append(got, <-c)
	}
	checkAll(t, fmt.Sprintf("%d requests sent between the crash and the restarted container's readiness", len(got)), got, http.StatusOK)
	held := 0
	for _, r := range got {
		if r.err == nil {
			crashyAnswers[r.code]++
		}
		var e echoed
		if r.code == http.StatusOK && (json.Unmarshal([]byte(r.body), &e) != nil || e.PodName != pod.Name) {
			t.Errorf("a request after the crash was answered by %q (%q), want the restarted container of %s", e.PodName, r.body, pod.Name)
		}
		if r.header.Get("X-Lobby-Cold-Start") != "" {
			held++
		}
	}
	if held == 0 {
		t.Errorf("none of the %d requests sent while the app was down carries X-Lobby-Cold-Start: none was held", len(got))
	}
	// Every answer the crashed app's clients saw is the interceptors' own (no retries, no
	// answer of nginx's), and the 502 has its cause counted: a failed exchange with the app.
	// Whether requests also met the dead pod's refused port before its EndpointSlice said so
	// depends on the timing of the kubelet's status update; the log says which case this run
	// covered.
	crashy := crashyCounts.await(t, "the crashed app's requests", crashyAnswers)
	failedExchanges := 0.0
	for _, n := range crashy.upstream {
		failedExchanges += n
	}
	if failedExchanges < 1 {
		t.Errorf("the interceptors counted no failed exchange with the crashed app (%v), want at least the one that ended in 502", crashy.upstream)
	}
	t.Logf("%d requests sent while the app was down, %d of them answered with X-Lobby-Cold-Start; failed exchanges with the app by reason %v (the reset of the request in flight and the dials the dead pod refused)", len(got), held, crashy.upstream)
	var p corev1.Pod
	if err := suite.cluster.Client.Get(ctx, client.ObjectKeyFromObject(&pod), &p); err != nil {
		t.Fatal(err)
	}
	if p.UID != pod.UID || len(p.Status.ContainerStatuses) != 1 || p.Status.ContainerStatuses[0].RestartCount != 1 {
		t.Errorf("pod %s after the crash: uid %s (was %s), container statuses %+v; want the same pod with one restart", p.Name, p.UID, pod.UID, p.Status.ContainerStatuses)
	}
	other := bystander.stop()
	t.Logf("the other app's load during the crash: %v", other)
	other.check(t, "the other app's requests during the crash")
	bystanderCounts.agree(t, "the other app's requests during the crash", other)
}

func TestAppKilledDuringColdStart(t *testing.T) {
	t.Run("Held requests are answered by the replacement of a pod deleted before it was ready.", func(t *testing.T) {
		ns := testNamespace(t)
		a := deployApp(t, ns, appSpec{name: "replaced", env: map[string]string{"STARTUP_DELAY": "5s"},
			hso: v1alpha1.HTTPScaledObjectSpec{Hosts: []string{"replaced.example.com"}}})
		ctx := t.Context()
		held := make(chan []response, 1)
		go func() { held <- sendMany(ctx, 5, suite.ingress.URL+"/", "replaced.example.com") }()
		first := waitPod(t, a, 30*time.Second, "started", podIsStarted)
		if podIsReady(&first) == nil {
			t.Fatalf("pod %s was ready before it could be killed; the scenario needs it starting", first.Name)
		}
		if err := suite.cluster.Client.Delete(ctx, &first, client.GracePeriodSeconds(0)); err != nil {
			t.Fatal(err)
		}
		select {
		case got := <-held:
			t.Fatalf("the held requests were answered before the first pod was deleted: %+v", got)
		default:
		}
		got := <-held
		checkAll(t, "requests held across the deletion of the first pod", got, http.StatusOK)
		for _, r := range got {
			var e echoed
			if r.code != http.StatusOK {
				continue
			}
			if json.Unmarshal([]byte(r.body), &e) != nil || e.PodName == first.Name || !strings.HasPrefix(e.PodName, "replaced-") {
				t.Errorf("a held request was answered by %q (%q), want the replacement of %s", e.PodName, r.body, first.Name)
			}
			if r.header.Get("X-Lobby-Cold-Start") == "" {
				t.Errorf("a held request's answer lacks X-Lobby-Cold-Start: %v", r.header)
			}
		}
	})

	t.Run("Held requests time out with the defined answer when the killed pod is not back in time.", func(t *testing.T) {
		ns := testNamespace(t)
		// The restarted container sleeps through its start-up delay again: it is not ready
		// before the cold-start timeout.
		slow := map[string]string{"STARTUP_DELAY": "30s"}
		timeouts := func() *v1alpha1.HTTPScaledObjectTimeoutsSpec {
			return &v1alpha1.HTTPScaledObjectTimeoutsSpec{ConditionWait: duration(10 * time.Second)}
		}
		plain := deployApp(t, ns, appSpec{name: "doomed", env: slow, hso: v1alpha1.HTTPScaledObjectSpec{
			Hosts: []string{"doomed.example.com"}, Timeouts: timeouts()}})
		placeholder := deployApp(t, ns, appSpec{name: "doomed-placeholder", env: slow, hso: v1alpha1.HTTPScaledObjectSpec{
			Hosts: []string{"doomed-placeholder.example.com"}, Timeouts: timeouts(),
			ColdStart: &v1alpha1.ColdStartSpec{Placeholder: &v1alpha1.PlaceholderSpec{StatusCode: 202, Body: "warming up"}}}})
		ctx := t.Context()
		heldPlain, heldPlaceholder := make(chan []response, 1), make(chan []response, 1)
		go func() { heldPlain <- sendMany(ctx, 3, suite.ingress.URL+"/", "doomed.example.com") }()
		go func() { heldPlaceholder <- sendMany(ctx, 3, suite.ingress.URL+"/", "doomed-placeholder.example.com") }()
		var killed []corev1.Pod
		for _, a := range []*app{plain, placeholder} {
			p := waitPod(t, a, 30*time.Second, "started", podIsStarted)
			pid, err := containerPID(&p)
			if err != nil {
				t.Fatal(err)
			}
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Fatalf("kill the process %d of pod %s: %v", pid, p.Name, err)
			}
			killed = append(killed, p)
		}
		if len(heldPlain) > 0 || len(heldPlaceholder) > 0 {
			t.Fatalf("the held requests were answered before the pods were killed")
		}
		for _, p := range killed {
			if err := poll.Until(t.Context(), 30*time.Second, "the kubelet to restart the killed container of "+p.Name, func() error {
				var now corev1.Pod
				if err := suite.cluster.Client.Get(ctx, client.ObjectKeyFromObject(&p), &now); err != nil {
					return err
				}
				if len(now.Status.ContainerStatuses) == 0 || now.Status.ContainerStatuses[0].RestartCount < 1 {
					return fmt.Errorf("container statuses %+v", now.Status.ContainerStatuses)
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
		}
		got := <-heldPlain
		checkAll(t, "held requests of the app without a placeholder", got, http.StatusGatewayTimeout)
		for _, r := range <-heldPlaceholder {
			if r.err != nil || r.code != 202 || r.body != "warming up" {
				t.Errorf("held request of the app with a placeholder: got %d %q (%v), want 202 \"warming up\"", r.code, r.body, r.err)
			}
			got = append(got, r)
		}
		for _, r := range got {
			if r.err == nil && r.header.Get("X-Lobby-Cold-Start") == "" {
				t.Errorf("a timed-out answer lacks X-Lobby-Cold-Start: %d %v", r.code, r.header)
			}
		}
	})
}

func TestInterceptorSIGTERMUnderLoad(t *testing.T) {
	ns := testNamespace(t)
	steady := deployApp(t, ns, appSpec{name: "steady", replicas: 1, env: map[string]string{"RESPONSE_DELAY": "10ms"},
		hso: v1alpha1.HTTPScaledObjectSpec{Hosts: []string{"steady.example.com"},
			Replicas: &v1alpha1.ReplicaStruct{Min: ptr.To[int32](1), Max: ptr.To[int32](1)}}})
	// Requests held on the interceptor that is stopped: one for an app that is ready a few
	// seconds later, after the drain delay; one for an app that is never ready in time.
	waking := deployApp(t, ns, appSpec{name: "waking", env: map[string]string{"STARTUP_DELAY": "3s"},
		hso: v1alpha1.HTTPScaledObjectSpec{Hosts: []string{"waking.example.com"}}})
	stuck := deployApp(t, ns, appSpec{name: "stuck", env: map[string]string{"STARTUP_DELAY": "60s"},
		hso: v1alpha1.HTTPScaledObjectSpec{Hosts: []string{"stuck.example.com"},
			Timeouts: &v1alpha1.HTTPScaledObjectTimeoutsSpec{ConditionWait: duration(5 * time.Second)}}})
	ctx := t.Context()
	spec, err := suite.lobby.Rendered.Process("interceptor")
	if err != nil {
		t.Fatal(err)
	}
	drainDelay, err1 := time.ParseDuration(spec.Env["LOBBY_DRAIN_DELAY"])
	drainTimeout, err2 := time.ParseDuration(spec.Env["LOBBY_DRAIN_TIMEOUT"])
	if err := errors.Join(err1, err2); err != nil {
		t.Fatalf("the chart's drain settings: %v", err)
	}
	ins := suite.lobby.Instances("interceptor")
	if len(ins) < 2 {
		t.Fatalf("the suite runs %d interceptors, want 2", len(ins))
	}
	// Later tests expect two interceptors, whatever happens here.
	t.Cleanup(func() { restoreInterceptors(t, len(ins)) })
	victim := ins[len(ins)-1]
	waitPod(t, steady, 60*time.Second, "ready", podIsReady)
	if r := send(ctx, http.MethodGet, suite.ingress.URL+"/", "steady.example.com", nil); r.code != http.StatusOK {
		t.Fatalf("before the load: got %d %q (%v), want 200", r.code, r.body, r.err)
	}

	// The load goes through an nginx without retries, so that every request the stopped
	// interceptor drops is counted: lobby's drain, not nginx's retry on the next upstream, is
	// what keeps them.
	noRetry := noRetryIngress(t)
	counts := watchServerCounts(t, steady.key())
	counts.keepLast(victim)
	load := startLoad(ctx, 4, 0, noRetry.URL+"/", "steady.example.com")
	defer load.stop()
	heldWaking, heldStuck := make(chan response, 1), make(chan response, 1)
	go func() { heldWaking <- send(ctx, http.MethodGet, victim.URL("http")+"/", "waking.example.com", nil) }()
	go func() { heldStuck <- send(ctx, http.MethodGet, victim.URL("http")+"/", "stuck.example.com", nil) }()
	if err := poll.Until(t.Context(), 10*time.Second, "two requests to be held on "+victim.Process.Name, func() error {
		q, err := queue(victim.URL("admin"))
		if err != nil {
			return err
		}
		if q[waking.key()].Held != 1 || q[stuck.key()].Held != 1 {
			return fmt.Errorf("held: %s %d, %s %d", waking.key(), q[waking.key()].Held, stuck.key(), q[stuck.key()].Held)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// SIGTERM first, as the kubelet sends it; the ingress learns of the change last.
	sigterm := time.Now()
	stopped := make(chan error, 1)
	go func() { stopped <- victim.Process.Stop() }()
	if err := poll.Until(t.Context(), 10*time.Second, "the terminating interceptor's /readyz to fail", func() error {
		resp, err := http.Get(victim.URL("admin") + "/readyz")
		if err != nil {
			return fmt.Errorf("GET /readyz: %w (the admin server must answer until the drain ends)", err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			return errors.New("/readyz answers 200")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := suite.lobby.Unpublish(ctx, victim); err != nil {
		t.Fatal(err)
	}
	for _, in := range []*ingress{noRetry, suite.ingress} {
		if err := in.reload(); err != nil {
			t.Fatal(err)
		}
	}
	proxyAddr := net.JoinHostPort(victim.Addr.String(), strconv.Itoa(int(victim.Ports["http"])))
	if err := poll.Until(t.Context(), 10*time.Second, "the terminating interceptor to close its proxy listener", func() error { return refused(proxyAddr) }); err != nil {
		t.Fatal(err)
	}
	if len(heldWaking) > 0 || len(heldStuck) > 0 {
		t.Errorf("a held request was answered before the proxy listener closed; the drain was not shown to wait for it")
	}

	r := <-heldWaking
	if r.err != nil || r.code != http.StatusOK || r.header.Get("X-Lobby-Cold-Start") == "" {
		t.Errorf("the request held across SIGTERM for an app that starts: got %d %q %v (%v), want 200 with X-Lobby-Cold-Start", r.code, r.body, r.header, r.err)
	}
	r = <-heldStuck
	if r.err != nil || r.code != http.StatusGatewayTimeout || r.header.Get("X-Lobby-Cold-Start") == "" {
		t.Errorf("the request held across SIGTERM for an app that is never ready: got %d %q %v (%v), want 504 at its cold-start timeout", r.code, r.body, r.header, r.err)
	}
	var exited time.Time
	select {
	case err := <-stopped:
		exited = time.Now()
		exitedAfter := exited.Sub(sigterm)
		if err != nil {
			t.Errorf("stop %s: %v", victim.Process.Name, err)
		} else if _, exitErr := victim.Process.Exited(); exitErr != nil {
			t.Errorf("%s exited with %v after SIGTERM, want status 0 (log %s)", victim.Process.Name, exitErr, victim.Process.LogFile)
		}
		if exitedAfter < drainDelay || exitedAfter > drainDelay+drainTimeout+5*time.Second {
			t.Errorf("%s exited %v after SIGTERM, want between the drain delay %v and delay plus drain timeout %v", victim.Process.Name, exitedAfter, drainDelay, drainDelay+drainTimeout)
		}
	case <-time.After(drainDelay + drainTimeout + 15*time.Second):
		t.Fatalf("%s did not exit after SIGTERM", victim.Process.Name)
	}

	// The replacement joins and nginx sends to it, with the load still running.
	restoreInterceptors(t, len(ins), noRetry)
	if err := poll.Until(t.Context(), 30*time.Second, "the replacement interceptor to route "+steady.key(), func() error {
		for _, in := range suite.lobby.Instances("interceptor") {
			if q, err := queue(in.URL("admin")); err != nil || q[steady.key()].Requests == 0 {
				return fmt.Errorf("%s: requests %d (%v)", in.Process.Name, q[steady.key()].Requests, err)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	got := load.stop()
	during := 0
	for _, r := range got.got {
		if r.at.After(sigterm) && r.at.Before(exited) {
			during++
		}
	}
	t.Logf("the load: %v; %d answered between SIGTERM and the interceptor's exit", got, during)
	if during == 0 {
		t.Errorf("no request of the load was answered between SIGTERM and the interceptor's exit")
	}
	got.check(t, "requests through nginx while an interceptor stopped")
	counts.agree(t, "requests through nginx while an interceptor stopped", got)
}

// restoreInterceptors starts interceptors until there are n again, and has the suite's nginx and
// the others given send to them.
func restoreInterceptors(t *testing.T, n int, others ...*ingress) {
	t.Helper()
	for len(suite.lobby.Instances("interceptor")) < n {
		if _, err := suite.lobby.Start(context.Background(), "interceptor"); err != nil {
			t.Errorf("start a replacement interceptor: %v", err)
			return
		}
	}
	for _, in := range append([]*ingress{suite.ingress}, others...) {
		if err := in.reload(); err != nil {
			t.Errorf("reload nginx: %v", err)
		}
	}
}

func TestScalerRestart(t *testing.T) {
	ns := testNamespace(t)
	// A short cooldown: were KEDA to take the outage for idleness, it would scale the warm app to
	// zero at its next poll. The polling interval is the operator's (the add-on's 15 s), which it
	// owns on the ScaledObjects it writes.
	const cooldown, polling = 5 * time.Second, 15 * time.Second
	warm := deployApp(t, ns, appSpec{name: "warm", replicas: 1, env: map[string]string{"RESPONSE_DELAY": "100ms"},
		hso: v1alpha1.HTTPScaledObjectSpec{Hosts: []string{"warm.example.com"},
			Replicas:       &v1alpha1.ReplicaStruct{Min: ptr.To[int32](0), Max: ptr.To[int32](1)},
			CooldownPeriod: ptr.To(int32(cooldown / time.Second))}})
	// The cold app's waking request may wait for KEDA's StreamIsActive retry (2 s doubling to a
	// minute) or its next poll, so its cold-start timeout is long and the request goes to an
	// interceptor directly (nginx gives up after 60 s).
	deployApp(t, ns, appSpec{name: "cold", env: map[string]string{"STARTUP_DELAY": "500ms"},
		hso: v1alpha1.HTTPScaledObjectSpec{Hosts: []string{"cold.example.com"},
			Timeouts: &v1alpha1.HTTPScaledObjectTimeoutsSpec{ConditionWait: duration(85 * time.Second)}}})
	ctx := t.Context()

	// The load goes through an nginx without retries, so that every request lost while the
	// scalers are down is counted.
	noRetry := noRetryIngress(t)
	counts := watchServerCounts(t, warm.key())
	load := startLoad(ctx, 3, 0, noRetry.URL+"/", "warm.example.com")
	defer load.stop()
	if err := poll.Until(t.Context(), 60*time.Second, "KEDA to see "+warm.key()+" ready and active", func() error {
		return scaledObjectConditions(ctx, warm, map[string]string{"Ready": "True", "Active": "True"})
	}); err != nil {
		t.Fatal(err)
	}
	// KEDA may have scaled the app to zero before the load began (it had never been active);
	// from here on, with traffic flowing, it must stay up.
	waitPod(t, warm, 60*time.Second, "ready", podIsReady)
	replicas := watchReplicas(t, warm)

	scalers := suite.lobby.Instances("scaler")
	// Later tests expect every scaler up, whatever happens here.
	t.Cleanup(func() {
		for _, in := range suite.lobby.Instances("scaler") {
			if exited, _ := in.Process.Exited(); exited {
				if _, err := suite.lobby.StartInPlace(context.Background(), in); err != nil {
					t.Errorf("restart %s: %v", in.Process.Name, err)
				}
			}
		}
	})
	forEach(t, scalers, func(in *deploy.Instance) error { return suite.lobby.StopInPlace(in) })
	if err := poll.Until(t.Context(), 60*time.Second, "KEDA to see the trigger of "+warm.key()+" fail", func() error {
		return scaledObjectConditions(ctx, warm, map[string]string{"Ready": "False"})
	}); err != nil {
		t.Fatal(err)
	}
	// The outage lasts past the cooldown and two polls more, the time KEDA would need to scale
	// an app it took for idle to zero.
	time.Sleep(cooldown + 2*polling)
	var mu sync.Mutex
	var restarted []*deploy.Instance
	forEach(t, scalers, func(in *deploy.Instance) error {
		next, err := suite.lobby.StartInPlace(ctx, in)
		mu.Lock()
		defer mu.Unlock()
		restarted = append(restarted, next)
		return err
	})
	if t.Failed() {
		t.FailNow()
	}
	back := time.Now()
	in := suite.lobby.Instances("interceptor")[0]
	woken := make(chan response, 1)
	go func() { woken <- send(ctx, http.MethodGet, in.URL("http")+"/", "cold.example.com", nil) }()

	if err := poll.Until(t.Context(), 2*time.Minute, "KEDA to read the trigger of "+warm.key()+" again", func() error {
		return scaledObjectConditions(ctx, warm, map[string]string{"Ready": "True"})
	}); err != nil {
		t.Fatal(err)
	}
	got := load.stop()
	t.Logf("the warm app's load: %v", got)
	got.check(t, "requests to the warm app while the scalers restarted")
	counts.agree(t, "requests to the warm app while the scalers restarted", got)
	if seen := replicas(); anyZero(seen) {
		t.Errorf("the warm app was scaled to zero while its traffic flowed: replicas over time %v", seen)
	} else {
		t.Logf("warm app's replicas over time: %v", seen)
	}

	r := <-woken
	if r.err != nil || r.code != http.StatusOK {
		t.Fatalf("the request to the cold app sent once the scalers were back: got %d %q (%v), want 200", r.code, r.body, r.err)
	}
	t.Logf("the cold app answered %v after the scalers were ready again", r.at.Sub(back).Round(time.Millisecond))
	// KEDA reconnects its push streams with a back-off of its own (2 s doubling to a minute).
	if err := poll.Until(t.Context(), 2*time.Minute, "KEDA to reopen a StreamIsActive stream on the restarted scalers", func() error {
		streams := 0
		for _, s := range restarted {
			n, err := scalerStreams(s)
			if err != nil {
				return err
			}
			streams += n
		}
		if streams == 0 {
			return errors.New("no StreamIsActive stream is open")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// forEach runs f on every instance at once and fails t with each error.
func forEach(t *testing.T, ins []*deploy.Instance, f func(*deploy.Instance) error) {
	t.Helper()
	errs := make([]error, len(ins))
	var wg sync.WaitGroup
	for i, in := range ins {
		wg.Go(func() { errs[i] = f(in) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Error(err)
	}
}

// anyZero reports whether any of the replica counts is zero.
func anyZero(seen []int32) bool {
	for _, n := range seen {
		if n == 0 {
			return true
		}
	}
	return false
}

// scaledObjectConditions returns nil when the app's ScaledObject has every condition type with
// the wanted status.
func scaledObjectConditions(ctx context.Context, a *app, want map[string]string) error {
	so := &unstructured.Unstructured{}
	so.SetGroupVersionKind(scaledObjectGVK)
	if err := suite.cluster.Client.Get(ctx, client.ObjectKey{Namespace: a.ns, Name: a.name}, so); err != nil {
		return err
	}
	conds, _, _ := unstructured.NestedSlice(so.Object, "status", "conditions")
	have := map[string]string{}
	for _, c := range conds {
		m, _ := c.(map[string]any)
		typ, _ := m["type"].(string)
		status, _ := m["status"].(string)
		reason, _ := m["reason"].(string)
		have[typ] = status + " (" + reason + ")"
		if w, ok := want[typ]; ok && w == status {
			delete(want, typ)
		}
	}
	if len(want) > 0 {
		return fmt.Errorf("conditions %v, want %v", have, want)
	}
	return nil
}

// watchReplicas watches the app's Deployment until t ends; the function it returns gives every
// spec.replicas seen so far, in order.
func watchReplicas(t *testing.T, a *app) func() []int32 {
	t.Helper()
	w, err := suite.cluster.Kube.AppsV1().Deployments(a.ns).Watch(t.Context(), metav1.ListOptions{FieldSelector: "metadata.name=" + a.name})
	if err != nil {
		t.Fatalf("watch Deployment %s: %v", a.key(), err)
	}
	t.Cleanup(w.Stop)
	var mu sync.Mutex
	var seen []int32
	var failed error
	go func() {
		for ev := range w.ResultChan() {
			dep, ok := ev.Object.(*appsv1.Deployment)
			mu.Lock()
			if ok {
				seen = append(seen, ptr.Deref(dep.Spec.Replicas, 1))
			} else if failed == nil {
				failed = fmt.Errorf("watch Deployment %s: %v event %T", a.key(), ev.Type, ev.Object)
			}
			mu.Unlock()
		}
	}()
	return func() []int32 {
		mu.Lock()
		defer mu.Unlock()
		if failed != nil {
			t.Error(failed)
		}
		return append([]int32(nil), seen...)
	}
}

// scalerStreams returns how many StreamIsActive streams a scaler has open, from its metrics.
func scalerStreams(in *deploy.Instance) (int, error) {
	resp, err := http.Get(in.URL("admin") + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	const series = `lobby_scaler_streams{method="StreamIsActive"} `
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series); ok {
			f, err := strconv.ParseFloat(v, 64)
			return int(f), err
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, nil
}

// waitPod waits until the app has exactly one pod that is not being deleted and check accepts
// it, and returns that pod.
func waitPod(t *testing.T, a *app, timeout time.Duration, what string, check func(*corev1.Pod) error) corev1.Pod {
	t.Helper()
	var pod corev1.Pod
	if err := poll.Until(t.Context(), timeout, "the pod of "+a.key()+" to be "+what, func() error {
		var pods corev1.PodList
		if err := suite.cluster.Client.List(t.Context(), &pods, client.InNamespace(a.ns), client.MatchingLabels{"app": a.name}); err != nil {
			return err
		}
		var live []corev1.Pod
		for _, p := range pods.Items {
			if p.DeletionTimestamp == nil {
				live = append(live, p)
			}
		}
		if len(live) != 1 {
			return fmt.Errorf("%d pods", len(live))
		}
		pod = live[0]
		return check(&pod)
	}); err != nil {
		t.Fatal(err)
	}
	return pod
}

// podIsReady accepts a pod whose Ready condition is true.
func podIsReady(p *corev1.Pod) error {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			return nil
		}
	}
	return fmt.Errorf("pod %s is not ready", p.Name)
}

// podIsStarted accepts a pod whose container's process runs.
func podIsStarted(p *corev1.Pod) error {
	_, err := containerPID(p)
	return err
}

// containerPID returns the process id of the pod's running container: the process kubelet
// reports container IDs as process://<pid>.
func containerPID(p *corev1.Pod) (int, error) {
	if len(p.Status.ContainerStatuses) != 1 || p.Status.ContainerStatuses[0].State.Running == nil {
		return 0, fmt.Errorf("pod %s has no running container: %+v", p.Name, p.Status.ContainerStatuses)
	}
	id, ok := strings.CutPrefix(p.Status.ContainerStatuses[0].ContainerID, "process://")
	if !ok {
		return 0, fmt.Errorf("pod %s: container ID %q is not process://<pid>", p.Name, p.Status.ContainerStatuses[0].ContainerID)
	}
	return strconv.Atoi(id)
}

// refused returns nil when a TCP connection to addr is refused: nothing listens there.
func refused(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("%s accepts connections", addr)
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return nil
	}
	return err
}

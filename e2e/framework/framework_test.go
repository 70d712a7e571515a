package framework_test

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/lobby-http/lobby/e2e/apps"
	"github.com/lobby-http/lobby/e2e/framework"
	"github.com/lobby-http/lobby/e2e/framework/poll"
	"github.com/lobby-http/lobby/e2e/netns"
)

// shared is the cluster every test in this package uses; nil when it could not start, and
// setupErr says why.
var (
	shared   *framework.Cluster
	setupErr error
)

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() || !netns.Inside() {
		// In short mode the tests skip themselves; outside the namespace this re-runs the
		// binary inside a fresh one.
		if testing.Short() {
			setupErr = errors.New("skipping the local-cluster tests in short mode")
			os.Exit(m.Run())
		}
		os.Exit(netns.RunTestsInside(m))
	}
	os.Exit(runInside(m))
}

// runInside starts the shared cluster, runs the tests, stops the cluster and checks that
// every process it started is gone.
func runInside(m *testing.M) int {
	c, err := framework.Start(context.Background(), framework.Options{KeepDir: os.Getenv("LOBBY_E2E_KEEP") != ""})
	if err != nil {
		if errors.Is(err, framework.ErrNoBinaries) && os.Getenv("CI") != "true" {
			setupErr = err
			return m.Run()
		}
		fmt.Fprintf(os.Stderr, "FAIL: start the local cluster: %v\n", err)
		return 1
	}
	shared = c
	code := m.Run()
	procs := c.Processes()
	if err := c.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: stop the local cluster: %v\n", err)
		code = 1
	}
	if left := leftovers(procs); len(left) > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: processes still running after Stop: %v\n", left)
		code = 1
	}
	return code
}

// leftovers returns the processes (or members of their process groups) still alive.
func leftovers(procs []*framework.Process) []string {
	var left []string
	for _, p := range procs {
		if err := syscall.Kill(-p.PID(), 0); !errors.Is(err, syscall.ESRCH) {
			left = append(left, fmt.Sprintf("%s (pid %d): %v", p.Name, p.PID(), err))
		}
	}
	return left
}

// cluster returns the shared cluster, skipping the test when there is none, and prints the
// components' logs if the test fails.
func cluster(t *testing.T) *framework.Cluster {
	t.Helper()
	if shared == nil {
		if setupErr == nil {
			setupErr = errors.New("the local cluster was not started")
		}
		t.Skip(setupErr)
	}
	shared.DumpLogsIfFailed(t)
	return shared
}

// namespace creates a Kubernetes namespace for one test and deletes it afterwards.
func namespace(t *testing.T, c *framework.Cluster) string {
	t.Helper()
	name := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	if len(name) > 50 {
		name = name[:50]
	}
	name = strings.Trim(name, "-") + fmt.Sprintf("-%d", time.Now().UnixNano()%100000)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := c.Client.Create(t.Context(), ns); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Client.Delete(context.Background(), ns); err != nil {
			t.Errorf("delete namespace %s: %v", name, err)
		}
	})
	return name
}

// echoDeployment returns a Deployment of the echo sample app with replicas replicas, and a
// Service selecting it.
func echoDeployment(ns, name string, replicas int32) (*appsv1.Deployment, *corev1.Service) {
	return apps.Echo{Namespace: ns, Name: name, Replicas: replicas, GracePeriodSeconds: 5}.Objects()
}

func TestDeploymentScaledByHand(t *testing.T) {
	c := cluster(t)
	if c.Images == nil {
		t.Skip("the cluster runs without the process kubelet")
	}
	ctx := t.Context()
	ns := namespace(t, c)
	dep, svc := echoDeployment(ns, "echo", 0)
	if err := c.Client.Create(ctx, dep); err != nil {
		t.Fatal(err)
	}
	if err := c.Client.Create(ctx, svc); err != nil {
		t.Fatal(err)
	}

	t.Run("scaling a Deployment from 0 to 2 runs two processes that answer on their pod addresses and are ready in the Service's EndpointSlice", func(t *testing.T) {
		scale := &autoscalingv1.Scale{ObjectMeta: metav1.ObjectMeta{Name: "echo", Namespace: ns}, Spec: autoscalingv1.ScaleSpec{Replicas: 2}}
		if _, err := c.Kube.AppsV1().Deployments(ns).UpdateScale(ctx, "echo", scale, metav1.UpdateOptions{}); err != nil {
			t.Fatalf("scale to 2: %v", err)
		}
		var ips []string
		if err := poll.Until(t.Context(), 60*time.Second, "two ready pods", func() error {
			pods, err := c.Kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=echo"})
			if err != nil {
				return err
			}
			ips = ips[:0]
			for _, p := range pods.Items {
				if p.DeletionTimestamp == nil && p.Status.PodIP != "" && podReady(&p) {
					ips = append(ips, p.Status.PodIP)
				}
			}
			if len(ips) != 2 {
				return fmt.Errorf("%d of %d pods ready with an address", len(ips), len(pods.Items))
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		names := map[string]bool{}
		for _, ip := range ips {
			if !netip.MustParseAddr(ip).IsPrivate() || netip.MustParseAddr(ip).IsLoopback() {
				t.Errorf("pod address %s is not a 10.244/16 address", ip)
			}
			resp, err := http.Get("http://" + net.JoinHostPort(ip, "8080") + "/")
			if err != nil {
				t.Fatalf("GET pod %s: %v", ip, err)
			}
			var echo struct {
				PodName string `json:"podName"`
			}
			err = json.NewDecoder(resp.Body).Decode(&echo)
			_ = resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("GET pod %s: %s, decode: %v", ip, resp.Status, err)
			}
			names[echo.PodName] = true
		}
		if len(names) != 2 {
			t.Errorf("the two addresses answered as pods %v, want two different pods", names)
		}
		if err := poll.Until(t.Context(), 30*time.Second, "EndpointSlice with both pods ready", func() error {
			slices, err := c.Kube.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=echo"})
			if err != nil {
				return err
			}
			var ready []string
			for _, s := range slices.Items {
				for _, ep := range s.Endpoints {
					if ep.Conditions.Ready != nil && *ep.Conditions.Ready {
						ready = append(ready, ep.Addresses...)
					}
				}
			}
			if !sameSet(ready, ips) {
				return fmt.Errorf("ready endpoints %v, want %v", ready, ips)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	})
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// scaledObject returns a KEDA ScaledObject for the Deployment name with the given triggers.
func scaledObject(ns, name string, minReplicas, maxReplicas int64, triggers ...map[string]any) *unstructured.Unstructured {
	ts := make([]any, len(triggers))
	for i, tr := range triggers {
		ts[i] = tr
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "keda.sh/v1alpha1",
		"kind":       "ScaledObject",
		"metadata":   map[string]any{"name": name, "namespace": ns},
		"spec": map[string]any{
			"scaleTargetRef":  map[string]any{"name": name},
			"pollingInterval": int64(1),
			"cooldownPeriod":  int64(300),
			"minReplicaCount": minReplicas,
			"maxReplicaCount": maxReplicas,
			"triggers":        ts,
		},
	}}
}

// waitReplicas waits until the Deployment wants want replicas and, with the kubelet, has that
// many ready.
func waitReplicas(t *testing.T, c *framework.Cluster, ns, name string, want int32, timeout time.Duration) {
	t.Helper()
	if err := poll.Until(t.Context(), timeout, fmt.Sprintf("Deployment %s at %d replicas", name, want), func() error {
		dep, err := c.Kube.AppsV1().Deployments(ns).Get(t.Context(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if got := ptr.Deref(dep.Spec.Replicas, 1); got != want {
			return fmt.Errorf("spec.replicas %d", got)
		}
		if c.Images != nil && dep.Status.ReadyReplicas != want {
			return fmt.Errorf("%d ready replicas", dep.Status.ReadyReplicas)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func TestKEDACronScalesFromZero(t *testing.T) {
	c := cluster(t)
	ctx := t.Context()
	ns := namespace(t, c)
	dep, svc := echoDeployment(ns, "cron", 0)
	if err := c.Client.Create(ctx, dep); err != nil {
		t.Fatal(err)
	}
	if err := c.Client.Create(ctx, svc); err != nil {
		t.Fatal(err)
	}

	t.Run("a cron trigger whose window covers now scales the Deployment from 0 to 1 through the KEDA operator", func(t *testing.T) {
		// Minute-granular schedules: the window opened two minutes ago and closes in thirty,
		// whatever the hour.
		now := time.Now().UTC()
		so := scaledObject(ns, "cron", 0, 2, map[string]any{
			"type": "cron",
			"metadata": map[string]any{
				"timezone":        "UTC",
				"start":           fmt.Sprintf("%d * * * *", now.Add(-2*time.Minute).Minute()),
				"end":             fmt.Sprintf("%d * * * *", now.Add(30*time.Minute).Minute()),
				"desiredReplicas": "1",
			},
		})
		if err := c.Client.Create(ctx, so); err != nil {
			t.Fatalf("create ScaledObject: %v", err)
		}
		waitReplicas(t, c, ns, "cron", 1, 60*time.Second)
	})
}

func TestKEDAExternalMetricScalesOut(t *testing.T) {
	c := cluster(t)
	ctx := t.Context()
	ns := namespace(t, c)

	// The metrics-api trigger reads {"value": 9} from this server; with a target of 3 per
	// replica the HPA wants 3 replicas.
	addr, err := c.AllocAddr()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"value": 9}`)
	}))
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)

	dep, svc := echoDeployment(ns, "busy", 1)
	if err := c.Client.Create(ctx, dep); err != nil {
		t.Fatal(err)
	}
	if err := c.Client.Create(ctx, svc); err != nil {
		t.Fatal(err)
	}

	t.Run("the HPA KEDA creates scales from 1 to 3 on an external metric served through the aggregation layer", func(t *testing.T) {
		so := scaledObject(ns, "busy", 1, 3, map[string]any{
			"type": "metrics-api",
			"metadata": map[string]any{
				"url":           srv.URL + "/metric",
				"valueLocation": "value",
				"targetValue":   "3",
				"format":        "json",
			},
		})
		if err := c.Client.Create(ctx, so); err != nil {
			t.Fatalf("create ScaledObject: %v", err)
		}
		var hpa *autoscalingv2.HorizontalPodAutoscaler
		if err := poll.Until(t.Context(), 60*time.Second, "KEDA's HPA wanting 3 replicas", func() error {
			var err error
			hpa, err = c.Kube.AutoscalingV2().HorizontalPodAutoscalers(ns).Get(ctx, "keda-hpa-busy", metav1.GetOptions{})
			if err != nil {
				return err
			}
			if hpa.Status.DesiredReplicas != 3 {
				return fmt.Errorf("desiredReplicas %d, conditions %v", hpa.Status.DesiredReplicas, hpa.Status.Conditions)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		waitReplicas(t, c, ns, "busy", 3, 60*time.Second)

		if len(hpa.Spec.Metrics) != 1 || hpa.Spec.Metrics[0].External == nil {
			t.Fatalf("HPA metrics %+v, want one external metric", hpa.Spec.Metrics)
		}
		metric := hpa.Spec.Metrics[0].External.Metric
		sel, err := metav1.LabelSelectorAsSelector(metric.Selector)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := c.Kube.CoreV1().RESTClient().Get().AbsPath("/apis/external.metrics.k8s.io/v1beta1/namespaces", ns, metric.Name).
			Param("labelSelector", sel.String()).DoRaw(ctx)
		if err != nil {
			t.Fatalf("GET the external metric %s: %v", metric.Name, err)
		}
		var list struct {
			Items []struct {
				Value string `json:"value"`
			} `json:"items"`
		}
		if err := json.Unmarshal(raw, &list); err != nil {
			t.Fatalf("decode %s: %v", raw, err)
		}
		if len(list.Items) != 1 || list.Items[0].Value != "9" {
			t.Errorf("external metric %s = %s, want one item of value 9", metric.Name, raw)
		}
	})
}

func TestRunBinary(t *testing.T) {
	c := cluster(t)
	ctx := t.Context()

	t.Run("a process runs on its own address with a service-account kubeconfig that authenticates as that account", func(t *testing.T) {
		path, err := c.Build(ctx, "./e2e/framework/internal/whoami")
		if err != nil {
			t.Fatal(err)
		}
		ns := namespace(t, c)
		p, err := c.RunBinary(ctx, framework.ProcessSpec{
			Name:           "whoami-" + ns,
			Path:           path,
			Args:           []string{"-listen=$(POD_IP):8080"},
			ServiceAccount: ns + "/tester",
		})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Stop()
		var body string
		if err := poll.Until(t.Context(), 20*time.Second, "whoami answering", func() error {
			resp, err := http.Get("http://" + netip.AddrPortFrom(p.Addr, 8080).String() + "/")
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			body = string(b)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if want := "system:serviceaccount:" + ns + ":tester"; body != want {
			t.Errorf("the process authenticated as %q, want %q", body, want)
		}
		if err := p.Stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
}

func TestStop(t *testing.T) {
	if shared == nil {
		t.Skip(setupErr)
	}
	t.Run("Stop ends every process the cluster started, its own and RunBinary's, and removes its folders", func(t *testing.T) {
		c, err := framework.Start(t.Context(), framework.Options{WithoutKEDA: true, WithoutKubelet: true, LogWriter: io.Discard})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.RunBinary(t.Context(), framework.ProcessSpec{Name: "sleeper", Path: "/bin/sleep", Args: []string{"300"}}); err != nil {
			_ = c.Stop()
			t.Fatal(err)
		}
		procs := c.Processes()
		var names []string
		for _, p := range procs {
			names = append(names, p.Name)
		}
		for _, want := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "sleeper"} {
			if !slices.Contains(names, want) {
				t.Errorf("processes %v lack %s", names, want)
			}
		}
		// sleep ignores nothing, so SIGTERM ends it: Stop reports no error.
		if err := c.Stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
		if left := leftovers(procs); len(left) > 0 {
			t.Errorf("still running after Stop: %v", left)
		}
		if _, err := os.Stat(c.Dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("cluster folder %s still there after Stop: %v", c.Dir, err)
		}
	})
}

func TestControlPlaneRestarts(t *testing.T) {
	if shared == nil {
		t.Skip(setupErr)
	}
	// A cluster of its own: the shared one must not lose its API server under other tests.
	c, err := framework.Start(t.Context(), framework.Options{WithoutKEDA: true, WithoutKubelet: true, LogWriter: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	var all []*framework.Process // every process the cluster ever ran
	t.Cleanup(func() {
		all = append(all, c.Processes()...)
		if err := c.Stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
		if left := leftovers(all); len(left) > 0 {
			t.Errorf("still running after Stop: %v", left)
		}
	})
	ctx := t.Context()
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "survivor", Namespace: "default"}, Data: map[string]string{"k": "v"}}
	if err := c.Client.Create(ctx, cm); err != nil {
		t.Fatal(err)
	}
	process := func(name string) *framework.Process {
		t.Helper()
		var found *framework.Process
		for _, p := range c.Processes() {
			if p.Name == name {
				if found != nil {
					t.Fatalf("two processes named %s in the cluster's list", name)
				}
				found = p
			}
		}
		if found == nil {
			t.Fatalf("no process %s in the cluster's list", name)
		}
		return found
	}
	names := func() []string {
		var n []string
		for _, p := range c.Processes() {
			n = append(n, p.Name)
		}
		return n
	}
	before := names()

	t.Run("while the API server is stopped requests are refused; started again it serves the same objects to the same clients", func(t *testing.T) {
		old := process("kube-apiserver")
		all = append(all, old)
		log := readLog(t, old.LogFile)
		if err := c.StopAPIServer(); err != nil {
			t.Fatal(err)
		}
		if exited, _ := old.Exited(); !exited {
			t.Fatal("StopAPIServer returned before the process exited")
		}
		if err := c.StopAPIServer(); err == nil {
			t.Error("stopping a stopped API server did not fail")
		}
		get := &corev1.ConfigMap{}
		if err := c.Client.Get(ctx, client.ObjectKeyFromObject(cm), get); err == nil || !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("a GET while the API server is down gave %v, want connection refused", err)
		}
		if err := c.StartAPIServer(ctx); err != nil {
			t.Fatal(err)
		}
		if err := c.StartAPIServer(ctx); err == nil {
			t.Error("starting a running API server did not fail")
		}
		if err := c.Client.Get(ctx, client.ObjectKeyFromObject(cm), get); err != nil || get.Data["k"] != "v" {
			t.Errorf("after the restart: %v, data %v", err, get.Data)
		}
		if p := process("kube-apiserver"); p == old || p.PID() == old.PID() {
			t.Error("the process list still holds the stopped API server")
		}
		if got := names(); !slices.Equal(got, before) {
			t.Errorf("processes %v after the restart, want %v in the same order", got, before)
		}
		checkLogKept(t, old.LogFile, log, "kube-apiserver")
	})

	t.Run("etcd restarted on its data folder keeps every object, and the API server serves writes again", func(t *testing.T) {
		old := process("etcd")
		all = append(all, old)
		log := readLog(t, old.LogFile)
		if err := c.RestartEtcd(ctx, time.Second); err != nil {
			t.Fatal(err)
		}
		if p := process("etcd"); p.PID() == old.PID() {
			t.Error("etcd has the same pid after RestartEtcd")
		}
		get := &corev1.ConfigMap{}
		if err := c.Client.Get(ctx, client.ObjectKeyFromObject(cm), get); err != nil || get.Data["k"] != "v" {
			t.Fatalf("after the restart: %v, data %v", err, get.Data)
		}
		get.Data["k"] = "w"
		if err := c.Client.Update(ctx, get); err != nil {
			t.Errorf("update after the restart: %v", err)
		}
		if got := names(); !slices.Equal(got, before) {
			t.Errorf("processes %v after the restart, want %v in the same order", got, before)
		}
		checkLogKept(t, old.LogFile, log, "etcd")
	})

	t.Run("RestartAPIServer keeps the API server down for the given time", func(t *testing.T) {
		old := process("kube-apiserver")
		all = append(all, old)
		t0 := time.Now()
		if err := c.RestartAPIServer(ctx, 2*time.Second); err != nil {
			t.Fatal(err)
		}
		if took := time.Since(t0); took < 2*time.Second {
			t.Errorf("RestartAPIServer returned after %s, before the outage ended", took)
		}
		if err := c.Client.Get(ctx, client.ObjectKeyFromObject(cm), &corev1.ConfigMap{}); err != nil {
			t.Error(err)
		}
		var got []string
		for _, o := range c.Outages() {
			if o.From.Before(t0) || o.To.Sub(o.From) < 2*time.Second {
				continue
			}
			got = append(got, o.Component)
		}
		if !slices.Equal(got, []string{"kube-apiserver"}) {
			t.Errorf("outages since the restart began: %v, want one of kube-apiserver of at least the 2s it was down", c.Outages())
		}
	})
}

// readLog returns the content of a component's log.
func readLog(t *testing.T, file string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// checkLogKept fails t unless the log still starts with what it held before the restart and
// then says that the component was started again.
func checkLogKept(t *testing.T, file, before, name string) {
	t.Helper()
	after := readLog(t, file)
	if !strings.HasPrefix(after, before) {
		t.Errorf("the log %s lost its earlier output across the restart", file)
	}
	if !strings.Contains(after[len(before):], "starting "+name+" again") {
		t.Errorf("the log %s does not say that %s was started again; it ends:\n%s", file, name, after[max(len(after)-2000, 0):])
	}
}

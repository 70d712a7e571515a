//go:build e2e

package node_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/lobby-http/lobby/e2e/framework"
	"github.com/lobby-http/lobby/e2e/framework/poll"
	"github.com/lobby-http/lobby/e2e/node"
	"github.com/lobby-http/lobby/e2e/prebuilt"
)

// release and releaseNS are the Helm release the test installs on the real node.
const (
	release   = "lobby"
	releaseNS = "lobby"
)

// TestChartOnRealNode installs lobby's chart, unchanged, with `helm install` on the real node and
// holds a request through nginx across the cold start of a containerised app:
//   - the chart's pods run from lobby's images (imported from the tarballs hack/images wrote)
//     with the chart's security context, resource limits and probes, run by the kubelet;
//   - the interceptor's LOBBY_MEMORY_LIMIT (downward API) is its container's cgroup limit;
//   - a request through nginx for an app at zero replicas is held while KEDA scales it 0→1 and
//     the kubelet starts its container, then answered 200 by that container;
//   - once idle, the app goes back to zero.
func TestChartOnRealNode(t *testing.T) {
	c := framework.SuiteCluster(t)
	n := suiteNode(t)
	c.DumpLogsIfFailed(t)
	ctx := t.Context()
	root, err := prebuilt.Root()
	if err != nil {
		t.Fatal(err)
	}

	helmInstall(t, c, n, root)
	pods := chartPods(t, c, n)
	checkMemoryLimit(t, c, n, pods)
	if err := node.PublishServices(ctx, c.Kube, releaseNS); err != nil {
		t.Fatal(err)
	}

	const appNS, appName, host = "shop", "echo", "echo.node.test"
	deployEcho(t, c, n, appNS, appName, host)
	interceptors := endpointAddrs(t, c, releaseNS, release+"-interceptor-proxy")
	waitRouting(t, c, pods, appNS+"/"+appName)
	ingress := startNginx(t, c, root, interceptors)

	// The cold start: the app is at zero; one request through nginx.
	if got := readyReplicas(t, c, appNS, appName); got != 0 {
		t.Fatalf("echo has %d ready replicas before the request; want 0", got)
	}
	start := time.Now()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, ingress+"/", nil)
	req.Host = host
	resp, err := (&http.Client{Timeout: 2 * time.Minute}).Do(req)
	if err != nil {
		t.Fatalf("GET %s through nginx: %v", host, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	held := time.Since(start)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s through nginx: %s after %s: %s", host, resp.Status, held, body)
	}
	var echo struct {
		PodName string `json:"podName"`
	}
	if err := json.Unmarshal(body, &echo); err != nil || echo.PodName == "" {
		t.Fatalf("GET %s: the answer is not the echo app's: %v: %s", host, err, body)
	}
	app, err := c.Kube.CoreV1().Pods(appNS).Get(ctx, echo.PodName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("read the pod that answered: %v", err)
	}
	if app.Spec.NodeName != n.Name {
		t.Fatalf("pod %s answered from node %q; want %s", app.Name, app.Spec.NodeName, n.Name)
	}
	t.Logf("cold start through nginx: %s after %s, answered by pod %s (%s, image %s) on node %s",
		resp.Status, held.Round(time.Millisecond), app.Name, app.Status.PodIP, app.Status.ContainerStatuses[0].Image, app.Spec.NodeName)

	// Back to zero once idle: KEDA's cooldown, then the Deployment scaled to zero and its pod gone.
	start = time.Now()
	err = poll.Until(ctx, 3*time.Minute, "echo back to zero", func() error {
		list, err := c.Kube.CoreV1().Pods(appNS).List(ctx, metav1.ListOptions{LabelSelector: "app=" + appName})
		if err != nil {
			return err
		}
		dep, err := c.Kube.AppsV1().Deployments(appNS).Get(ctx, appName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if r := ptr.Deref(dep.Spec.Replicas, 1); r != 0 || len(list.Items) != 0 {
			return fmt.Errorf("replicas %d, %d pods", r, len(list.Items))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("echo back to zero replicas and no pod %s after the answer", time.Since(start).Round(time.Second))
}

// helmInstall runs `helm install` of the chart in root with the pinned Helm (HELM), its pods
// selecting the real node, and waits for them to be ready.
func helmInstall(t *testing.T, c *framework.Cluster, n *node.Node, root string) {
	t.Helper()
	helm := os.Getenv("HELM")
	if helm == "" {
		t.Fatal("HELM is unset (prebuilt.Prepare sets it before entering the network namespace)")
	}
	args := []string{"install", release, filepath.Join(root, "charts", "lobby"),
		"--kubeconfig", c.Kubeconfig, "--namespace", releaseNS, "--create-namespace",
		"--wait", "--timeout", "4m"}
	for _, comp := range []string{"interceptor", "scaler", "operator"} {
		args = append(args, "--set-string", comp+`.nodeSelector.kubernetes\.io/hostname=`+n.Name)
	}
	start := time.Now()
	out, err := exec.CommandContext(t.Context(), helm, args...).CombinedOutput()
	if err != nil {
		dumpPods(t, c, n, releaseNS)
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Logf("helm install: every pod ready after %s", time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() {
		out, err := exec.Command(helm, "uninstall", release, "--kubeconfig", c.Kubeconfig, "--namespace", releaseNS, "--wait").CombinedOutput()
		if err != nil {
			t.Logf("helm uninstall: %v\n%s", err, out)
		}
	})
}

// chartPods checks that every pod of the release runs on the real node from lobby's image of its
// component, every container ready, as the chart's user, and returns them.
func chartPods(t *testing.T, c *framework.Cluster, n *node.Node) []corev1.Pod {
	t.Helper()
	ctx := t.Context()
	list, err := c.Kube.CoreV1().Pods(releaseNS).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/instance=" + release})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, p := range list.Items {
		comp := p.Labels["app.kubernetes.io/component"]
		seen[comp]++
		if p.Spec.NodeName != n.Name || p.Status.Phase != corev1.PodRunning {
			t.Errorf("pod %s: %s on node %q; want Running on %s", p.Name, p.Status.Phase, p.Spec.NodeName, n.Name)
			continue
		}
		for _, spec := range p.Spec.Containers {
			// Ready comes from the kubelet running these probes; nothing in the test probes pods.
			if spec.ReadinessProbe == nil || spec.LivenessProbe == nil {
				t.Errorf("pod %s container %s: the chart declares no readiness or liveness probe", p.Name, spec.Name)
			}
		}
		for _, cs := range p.Status.ContainerStatuses {
			if want := "ghcr.io/lobby-http/" + comp + ":"; !strings.HasPrefix(cs.Image, want) || cs.ImageID == "" || !cs.Ready {
				t.Errorf("pod %s container %s: image %s (%s), ready %t; want ready from %s<version>", p.Name, cs.Name, cs.Image, cs.ImageID, cs.Ready, want)
				continue
			}
			pid, err := n.ContainerPID(ctx, cs.ContainerID)
			if err != nil {
				t.Error(err)
				continue
			}
			sec, err := node.ProcessSecurity(pid)
			if err != nil {
				t.Error(err)
				continue
			}
			// The chart's securityContext: user 65532, every capability dropped, no privilege
			// escalation, a read-only root filesystem.
			want := node.Security{UID: "65532", GID: "65532", CapEff: "0000000000000000", NoNewPrivs: true, ReadOnlyRoot: true}
			if sec != want {
				t.Errorf("pod %s container %s runs with %+v; want the chart's %+v", p.Name, cs.Name, sec, want)
			}
			t.Logf("pod %s Running on %s, ready, from %s (%s), pid %d: %+v", p.Name, p.Spec.NodeName, cs.Image, cs.ImageID, pid, sec)
		}
	}
	for _, comp := range []string{"interceptor", "scaler", "operator"} {
		if seen[comp] == 0 {
			t.Errorf("no %s pod in release %s", comp, release)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	return list.Items
}

// memoryLimitLine is the interceptor's log line about its memory limit (internal/memlimit).
var memoryLimitLine = regexp.MustCompile(`"memory limit".*"containerLimitBytes":(\d+)`)

// checkMemoryLimit checks, for each interceptor, that the container's memory cgroup has the limit
// the chart sets, and that the interceptor read the same limit from LOBBY_MEMORY_LIMIT (its log
// line about its memory limit).
func checkMemoryLimit(t *testing.T, c *framework.Cluster, n *node.Node, pods []corev1.Pod) {
	t.Helper()
	for _, p := range pods {
		if p.Labels["app.kubernetes.io/component"] != "interceptor" {
			continue
		}
		var spec *corev1.Container
		for i := range p.Spec.Containers {
			if p.Spec.Containers[i].Name == "interceptor" {
				spec = &p.Spec.Containers[i]
			}
		}
		if spec == nil || len(p.Status.ContainerStatuses) == 0 {
			t.Fatalf("pod %s has no interceptor container", p.Name)
		}
		want := spec.Resources.Limits.Memory().Value()
		pid, err := n.ContainerPID(t.Context(), p.Status.ContainerStatuses[0].ContainerID)
		if err != nil {
			t.Fatal(err)
		}
		cgroup, limit, err := n.MemoryCgroup(pid)
		if err != nil {
			t.Fatal(err)
		}
		log, err := n.ContainerLog(&p, "interceptor")
		if err != nil {
			t.Fatal(err)
		}
		m := memoryLimitLine.FindStringSubmatch(log)
		if m == nil {
			t.Fatalf("pod %s: no memory-limit line in the interceptor's log:\n%s", p.Name, log)
		}
		logged, _ := strconv.ParseInt(m[1], 10, 64)
		line := m[0]
		for _, l := range strings.Split(log, "\n") {
			if strings.Contains(l, m[0]) {
				line = l
			}
		}
		if limit != want || logged != want {
			t.Fatalf("pod %s: chart limit %d bytes, cgroup %s limit %d, interceptor logged %d; want all equal", p.Name, want, cgroup, limit, logged)
		}
		t.Logf("pod %s: memory limit %d bytes (%s) in the chart, in cgroup %s, and in the interceptor's log: %s",
			p.Name, want, spec.Resources.Limits.Memory(), cgroup, line)
	}
}

// dumpPods logs the status of every pod in ns and the node's kubelet-side view of it.
func dumpPods(t *testing.T, c *framework.Cluster, n *node.Node, ns string) {
	t.Helper()
	list, err := c.Kube.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Logf("list pods of %s: %v", ns, err)
		return
	}
	for _, p := range list.Items {
		b, _ := json.MarshalIndent(p.Status, "", "  ")
		t.Logf("pod %s on %q:\n%s", p.Name, p.Spec.NodeName, b)
		for _, cs := range p.Spec.Containers {
			if log, err := n.ContainerLog(&p, cs.Name); err == nil {
				t.Logf("log of %s/%s:\n%s", p.Name, cs.Name, log)
			}
		}
	}
}

package kubelet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/lobby-http/lobby/e2e/framework/poll"
	"github.com/lobby-http/lobby/e2e/netns"
	"github.com/lobby-http/lobby/e2e/prebuilt"
)

// TestMain runs the tests inside a private network namespace, where the kubelet may put pod
// addresses on the loopback device, and stops the shared control plane afterwards.
func TestMain(m *testing.M) {
	if !netns.Inside() {
		os.Exit(netns.RunTestsInside(m))
	}
	code := m.Run()
	if cp.env != nil {
		if err := cp.env.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "stop control plane: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

const nodeName = "node-1"

var podCIDR = netip.MustParsePrefix("10.244.0.0/16")

// cp is the control plane and the built apps the control-plane tests share.
var cp struct {
	once   sync.Once
	env    *envtest.Environment
	kube   kubernetes.Interface
	images map[string]string
	err    error
}

// controlPlane returns a client of the shared control plane and the sample apps' images,
// starting and building them on first use; it skips the test where that is not possible.
func controlPlane(t *testing.T) (kubernetes.Interface, map[string]string) {
	t.Helper()
	if testing.Short() {
		t.Skip("skipping the control-plane test in short mode")
	}
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Skip("KUBEBUILDER_ASSETS is unset: this test needs kube-apiserver and etcd; run `make test`, " +
			"or set it to the folder printed by `bash e2e/tools/build.sh .cache/tools`")
	}
	cp.once.Do(func() {
		images, err := prebuilt.Apps()
		if err != nil {
			cp.err = err
			return
		}
		cp.images = images
		cp.env = &envtest.Environment{}
		// With no default route in the namespace, kube-apiserver cannot pick an address to
		// advertise on its own.
		cp.env.ControlPlane.GetAPIServer().Configure().Set("advertise-address", netns.ControlPlaneAddr.String())
		cfg, err := cp.env.Start()
		if err != nil {
			cp.env, cp.err = nil, fmt.Errorf("start control plane: %w", err)
			return
		}
		cp.kube, cp.err = kubernetes.NewForConfig(cfg)
	})
	if cp.err != nil {
		t.Fatal(cp.err)
	}
	return cp.kube, cp.images
}

// testLog is an io.Writer that passes the kubelet's lines to t.Log.
type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// harness is a kubelet running against the shared control plane, with a namespace of its own.
type harness struct {
	t    *testing.T
	kube kubernetes.Interface
	ns   string
	logs string
	stop func() // stops the kubelet and waits for Start to return
}

// startKubelet starts a kubelet for the test. Cleanup deletes the namespace's pods, then stops
// the kubelet.
func startKubelet(t *testing.T) *harness {
	t.Helper()
	kube, images := controlPlane(t)
	ns := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	if len(ns) > 50 {
		ns = ns[:50]
	}
	ns = strings.Trim(ns, "-")
	if _, err := kube.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	logs := t.TempDir()
	k, err := New(Options{Client: kube, NodeName: nodeName, PodCIDR: podCIDR, Images: images, LogDir: logs, Log: testLog{t}, ShutdownGracePeriod: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- k.Start(ctx) }()
	var once sync.Once
	h := &harness{t: t, kube: kube, ns: ns, logs: logs}
	h.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("kubelet Start: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Error("the kubelet did not stop within 30s")
			}
		})
	}
	t.Cleanup(h.stop)
	if err := poll.Until(t.Context(), 30*time.Second, "node registration", func() error {
		// The lease is the last step of the registration.
		_, err := kube.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(t.Context(), nodeName, metav1.GetOptions{})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = kube.CoreV1().Pods(ns).DeleteCollection(context.Background(),
			metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}, metav1.ListOptions{})
	})
	return h
}

// echoPod is a pod running the echo app, answering on port 8080.
func echoPod(name string, env ...corev1.EnvVar) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: ptr.To[int64](5),
			Containers: []corev1.Container{{
				Name:  "app",
				Image: prebuilt.ImagePrefix + "echo",
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
				Env:   append([]corev1.EnvVar{{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}}, env...),
			}},
		},
	}
}

func (h *harness) create(pod *corev1.Pod) *corev1.Pod {
	h.t.Helper()
	out, err := h.kube.CoreV1().Pods(h.ns).Create(h.t.Context(), pod, metav1.CreateOptions{})
	if err != nil {
		h.t.Fatal(err)
	}
	return out
}

// waitPod polls the pod until cond holds, failing the test after timeout with the last state.
func (h *harness) waitPod(name string, timeout time.Duration, what string, cond func(*corev1.Pod) bool) *corev1.Pod {
	h.t.Helper()
	var last *corev1.Pod
	err := poll.Until(h.t.Context(), timeout, "pod "+name+": "+what, func() error {
		pod, err := h.kube.CoreV1().Pods(h.ns).Get(h.t.Context(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		last = pod
		if !cond(pod) {
			return fmt.Errorf("phase %s", pod.Status.Phase)
		}
		return nil
	})
	if err != nil {
		b, _ := json.MarshalIndent(last, "", "  ")
		h.t.Fatalf("%v; last seen:\n%s", err, b)
	}
	return last
}

// podRemoved returns nil once the pod name is gone from the API.
func podRemoved(t *testing.T, h *harness, name string) error {
	_, err := h.kube.CoreV1().Pods(h.ns).Get(t.Context(), name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err == nil {
		return fmt.Errorf("pod %s still exists", name)
	}
	return err
}

func podReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func condition(pod *corev1.Pod, t corev1.PodConditionType) *corev1.PodCondition {
	for i := range pod.Status.Conditions {
		if pod.Status.Conditions[i].Type == t {
			return &pod.Status.Conditions[i]
		}
	}
	return nil
}

// pidOf returns the process id of the pod's first container.
func pidOf(t *testing.T, pod *corev1.Pod) int {
	t.Helper()
	id := pod.Status.ContainerStatuses[0].ContainerID
	pid, err := strconv.Atoi(strings.TrimPrefix(id, "process://"))
	if err != nil {
		t.Fatalf("container ID %q names no process", id)
	}
	return pid
}

func processGone(pid int) bool {
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

// onLoopback reports whether ip is an address of the loopback device.
func onLoopback(t *testing.T, ip string) bool {
	t.Helper()
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := lo.Addrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.String() == ip {
			return true
		}
	}
	return false
}

// getEcho asks the echo app at addr for / and decodes the answer.
func getEcho(t *testing.T, addr string) map[string]any {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatalf("GET %s: %v", addr, err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("decode echo from %s: %v", addr, err)
	}
	return out
}

func TestPodLifecycle(t *testing.T) {
	h := startKubelet(t)

	t.Run("the node is registered Ready with its address and a lease", func(t *testing.T) {
		node, err := h.kube.CoreV1().Nodes().Get(t.Context(), nodeName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ready := false
		for _, c := range node.Status.Conditions {
			ready = ready || c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue
		}
		if !ready || len(node.Status.Addresses) == 0 || node.Status.Addresses[0].Address != "10.244.0.1" ||
			node.Status.Allocatable.Pods().Value() != 250 {
			t.Errorf("node status = %+v", node.Status)
		}
		var lease *coordinationv1.Lease
		lease, err = h.kube.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(t.Context(), nodeName, metav1.GetOptions{})
		if err != nil || lease.Spec.RenewTime == nil || ptr.Deref(lease.Spec.HolderIdentity, "") != nodeName {
			t.Errorf("lease = %+v, err %v", lease, err)
		}
	})

	pod := echoPod("web", corev1.EnvVar{Name: "STARTUP_DELAY", Value: "1s"})
	pod.Spec.Containers[0].ReadinessProbe = &corev1.Probe{
		ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("http")}},
		PeriodSeconds: 1,
	}
	h.create(pod)
	pod = h.waitPod("web", 30*time.Second, "becoming Ready", podReady)

	t.Run("a Ready pod is bound and its status is complete", func(t *testing.T) {
		st := pod.Status
		if pod.Spec.NodeName != nodeName {
			t.Errorf("nodeName = %q, want %q", pod.Spec.NodeName, nodeName)
		}
		if st.Phase != corev1.PodRunning || st.HostIP != "10.244.0.1" || st.StartTime == nil ||
			len(st.PodIPs) != 1 || st.PodIPs[0].IP != st.PodIP || !strings.HasPrefix(st.PodIP, "10.244.") || strings.HasPrefix(st.PodIP, "10.244.0.") {
			t.Errorf("phase %s hostIP %s startTime %v podIP %s podIPs %v", st.Phase, st.HostIP, st.StartTime, st.PodIP, st.PodIPs)
		}
		for _, ct := range []corev1.PodConditionType{corev1.PodScheduled, corev1.PodInitialized, corev1.ContainersReady, corev1.PodReady} {
			if c := condition(pod, ct); c == nil || c.Status != corev1.ConditionTrue {
				t.Errorf("condition %s = %+v, want True", ct, c)
			}
		}
		cs := st.ContainerStatuses[0]
		if !cs.Ready || !ptr.Deref(cs.Started, false) || cs.RestartCount != 0 || cs.State.Running == nil || cs.Image != prebuilt.ImagePrefix+"echo" {
			t.Errorf("container status = %+v", cs)
		}
		// The app listens only after STARTUP_DELAY, so readiness cannot have passed sooner.
		if ready := condition(pod, corev1.PodReady).LastTransitionTime; ready.Before(ptr.To(metav1.NewTime(cs.State.Running.StartedAt.Add(time.Second)))) {
			t.Errorf("Ready at %v, less than STARTUP_DELAY after the start at %v", ready, cs.State.Running.StartedAt)
		}
	})

	t.Run("the app answers on its pod address with its name from the downward API", func(t *testing.T) {
		got := getEcho(t, net.JoinHostPort(pod.Status.PodIP, "8080"))
		if got["podName"] != "web" {
			t.Errorf("echo = %v, want podName web", got)
		}
		logFile := filepath.Join(h.logs, h.ns+"_web_app.log")
		if b, err := os.ReadFile(logFile); err != nil || !strings.Contains(string(b), "listening on "+pod.Status.PodIP) {
			t.Errorf("container log %s = %q (err %v), want the app's output", logFile, b, err)
		}
	})

	t.Run("deleting the pod stops its process, removes its address and the pod", func(t *testing.T) {
		pid := pidOf(t, pod)
		if processGone(pid) {
			t.Fatalf("process %d is not running before the deletion", pid)
		}
		if err := h.kube.CoreV1().Pods(h.ns).Delete(t.Context(), "web", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := poll.Until(t.Context(), 10*time.Second, "the pod object to be removed", func() error {
			return podRemoved(t, h, "web")
		}); err != nil {
			t.Fatal(err)
		}
		if !processGone(pid) {
			t.Errorf("process %d still runs after the pod was removed", pid)
		}
		if onLoopback(t, pod.Status.PodIP) {
			t.Errorf("the pod address %s is still on lo", pod.Status.PodIP)
		}
	})
}

func TestDeletionKillsAfterGracePeriod(t *testing.T) {
	h := startKubelet(t)
	// The app keeps serving for an hour after SIGTERM, so only SIGKILL ends it.
	pod := echoPod("stubborn", corev1.EnvVar{Name: "SHUTDOWN_DELAY", Value: "1h"})
	pod.Spec.TerminationGracePeriodSeconds = ptr.To[int64](2)
	h.create(pod)
	pod = h.waitPod("stubborn", 30*time.Second, "running", func(p *corev1.Pod) bool {
		return len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].State.Running != nil
	})
	pid := pidOf(t, pod)
	if err := h.kube.CoreV1().Pods(h.ns).Delete(t.Context(), "stubborn", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := poll.Until(t.Context(), 15*time.Second, "the pod object to be removed", func() error {
		return podRemoved(t, h, "stubborn")
	}); err != nil {
		t.Fatal(err)
	}
	if !processGone(pid) {
		t.Errorf("process %d still runs after the pod was removed", pid)
	}
}

func TestRestarts(t *testing.T) {
	h := startKubelet(t)

	t.Run("a crashing app is restarted and its restart count rises", func(t *testing.T) {
		h.create(echoPod("crasher", corev1.EnvVar{Name: "CRASH_AFTER", Value: "200ms"}))
		pod := h.waitPod("crasher", 30*time.Second, "two restarts", func(p *corev1.Pod) bool {
			return len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].RestartCount >= 2
		})
		cs := pod.Status.ContainerStatuses[0]
		if last := cs.LastTerminationState.Terminated; last == nil || last.ExitCode != 1 || last.Reason != "Error" {
			t.Errorf("last state = %+v, want terminated with exit code 1", cs.LastTerminationState)
		}
		if pod.Status.Phase != corev1.PodRunning {
			t.Errorf("phase = %s, want Running while crash-looping", pod.Status.Phase)
		}
	})

	t.Run("with restartPolicy Never a crashed pod ends Failed and releases its address", func(t *testing.T) {
		pod := echoPod("once", corev1.EnvVar{Name: "CRASH_AFTER", Value: "200ms"})
		pod.Spec.RestartPolicy = corev1.RestartPolicyNever
		h.create(pod)
		pod = h.waitPod("once", 30*time.Second, "phase Failed", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodFailed })
		cs := pod.Status.ContainerStatuses[0]
		if term := cs.State.Terminated; term == nil || term.ExitCode != 1 || cs.RestartCount != 0 {
			t.Errorf("container status = %+v, want terminated with exit code 1 and no restart", cs)
		}
		if c := condition(pod, corev1.PodReady); c == nil || c.Status != corev1.ConditionFalse {
			t.Errorf("Ready = %+v, want False", c)
		}
		if err := poll.Until(t.Context(), 5*time.Second, "the address to leave lo", func() error {
			if onLoopback(t, pod.Status.PodIP) {
				return fmt.Errorf("%s is on lo", pod.Status.PodIP)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("a startup probe holds off readiness until it passes", func(t *testing.T) {
		pod := echoPod("slow", corev1.EnvVar{Name: "STARTUP_DELAY", Value: "1s"})
		pod.Spec.Containers[0].StartupProbe = &corev1.Probe{
			ProbeHandler:     corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(8080)}},
			PeriodSeconds:    1,
			FailureThreshold: 20,
		}
		h.create(pod)
		pod = h.waitPod("slow", 30*time.Second, "becoming Ready", podReady)
		cs := pod.Status.ContainerStatuses[0]
		if !ptr.Deref(cs.Started, false) || cs.RestartCount != 0 {
			t.Errorf("container status = %+v, want started without restarts", cs)
		}
	})

	t.Run("a startup probe that never passes restarts the container", func(t *testing.T) {
		pod := echoPod("neverstarts")
		pod.Spec.Containers[0].StartupProbe = &corev1.Probe{
			ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/status/503", Port: intstr.FromInt32(8080)}},
			PeriodSeconds:    1,
			FailureThreshold: 2,
		}
		h.create(pod)
		pod = h.waitPod("neverstarts", 30*time.Second, "a restart", func(p *corev1.Pod) bool {
			return len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].RestartCount >= 1
		})
		if c := condition(pod, corev1.PodReady); c == nil || c.Status != corev1.ConditionFalse {
			t.Errorf("Ready = %+v, want False while the startup probe fails", c)
		}
	})

	t.Run("a failing liveness probe restarts the container", func(t *testing.T) {
		pod := echoPod("unwell")
		pod.Spec.Containers[0].LivenessProbe = &corev1.Probe{
			ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/status/500", Port: intstr.FromInt32(8080)}},
			PeriodSeconds:    1,
			FailureThreshold: 2,
		}
		h.create(pod)
		pod = h.waitPod("unwell", 30*time.Second, "a restart", func(p *corev1.Pod) bool {
			return len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].RestartCount >= 1
		})
		// The app shuts down cleanly on the kubelet's SIGTERM, so the restart shows exit code 0:
		// only the liveness probe could have ended it.
		if last := pod.Status.ContainerStatuses[0].LastTerminationState.Terminated; last == nil || last.ExitCode != 0 {
			t.Errorf("last state = %+v, want terminated with exit code 0 after SIGTERM", last)
		}
	})
}

func TestContainerConfiguration(t *testing.T) {
	h := startKubelet(t)

	t.Run("env, fieldRef, configMapKeyRef and $(VAR) expansion reach the app", func(t *testing.T) {
		if _, err := h.kube.CoreV1().ConfigMaps(h.ns).Create(t.Context(), &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: "settings"}, Data: map[string]string{"port": "9090"},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		pod := echoPod("configured",
			corev1.EnvVar{Name: "NODE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}},
			corev1.EnvVar{Name: "NS", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
			corev1.EnvVar{Name: "PORT", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: "settings"}, Key: "port"}}},
			corev1.EnvVar{Name: "GREETING", Value: "hi-$(POD_NAME)"},
		)
		pod.Spec.Containers[0].Command = []string{"echo", "-pod-name", "$(GREETING)@$(NODE)/$(NS)"}
		pod.Spec.Containers[0].Args = []string{"-ready-path", "/ready-$(POD_IP)"}
		pod.Spec.Containers[0].ReadinessProbe = &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(9090)}},
			PeriodSeconds: 1,
		}
		h.create(pod)
		pod = h.waitPod("configured", 30*time.Second, "becoming Ready", podReady)
		got := getEcho(t, net.JoinHostPort(pod.Status.PodIP, "9090"))
		if want := "hi-configured@" + nodeName + "/" + h.ns; got["podName"] != want {
			t.Errorf("podName = %v, want %q", got["podName"], want)
		}
		resp, err := http.Get("http://" + net.JoinHostPort(pod.Status.PodIP, "9090") + "/ready-" + pod.Status.PodIP)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET the expanded ready path: %d, want 200", resp.StatusCode)
		}
	})

	t.Run("a gRPC readiness probe passes against the app's health service", func(t *testing.T) {
		pod := echoPod("grpc", corev1.EnvVar{Name: "GRPC_PORT", Value: "9091"})
		pod.Spec.Containers[0].ReadinessProbe = &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{GRPC: &corev1.GRPCAction{Port: 9091}},
			PeriodSeconds: 1,
		}
		h.create(pod)
		h.waitPod("grpc", 30*time.Second, "becoming Ready", podReady)
	})

	t.Run("a missing ConfigMap keeps the container waiting with a message naming it", func(t *testing.T) {
		pod := echoPod("unconfigured", corev1.EnvVar{Name: "X", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: "absent"}, Key: "k"}}})
		h.create(pod)
		pod = h.waitPod("unconfigured", 30*time.Second, "waiting on its configuration", func(p *corev1.Pod) bool {
			return len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].State.Waiting != nil &&
				p.Status.ContainerStatuses[0].State.Waiting.Reason == "CreateContainerConfigError"
		})
		if msg := pod.Status.ContainerStatuses[0].State.Waiting.Message; !strings.Contains(msg, `configmap "absent" not found`) {
			t.Errorf("message = %q, want it to name the ConfigMap", msg)
		}
		if pod.Status.Phase != corev1.PodPending {
			t.Errorf("phase = %s, want Pending", pod.Status.Phase)
		}
	})

	t.Run("an unknown image keeps the container waiting with a pull error", func(t *testing.T) {
		pod := echoPod("mystery")
		pod.Spec.Containers[0].Image = "registry.example/nope:1"
		h.create(pod)
		pod = h.waitPod("mystery", 30*time.Second, "an image pull back-off", func(p *corev1.Pod) bool {
			return len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].State.Waiting != nil &&
				p.Status.ContainerStatuses[0].State.Waiting.Reason == "ImagePullBackOff"
		})
		if msg := pod.Status.ContainerStatuses[0].State.Waiting.Message; !strings.Contains(msg, "registry.example/nope:1") {
			t.Errorf("message = %q, want it to name the image", msg)
		}
		if pod.Status.Phase != corev1.PodPending {
			t.Errorf("phase = %s, want Pending", pod.Status.Phase)
		}
	})
}

func TestStopStopsEveryPod(t *testing.T) {
	h := startKubelet(t)
	h.create(echoPod("a"))
	h.create(echoPod("b"))
	var pods []*corev1.Pod
	for _, name := range []string{"a", "b"} {
		pods = append(pods, h.waitPod(name, 30*time.Second, "running", func(p *corev1.Pod) bool {
			return len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].State.Running != nil
		}))
	}
	if pods[0].Status.PodIP == pods[1].Status.PodIP {
		t.Fatalf("both pods got %s", pods[0].Status.PodIP)
	}
	if len(kubeletGoroutines()) == 0 {
		t.Fatal("found none of the kubelet's goroutines while it runs; the leak check below would prove nothing")
	}
	h.stop()
	if leaked := kubeletGoroutines(); len(leaked) > 0 {
		t.Errorf("%d of the kubelet's goroutines outlived Start:\n%s", len(leaked), strings.Join(leaked, "\n\n"))
	}
	for _, p := range pods {
		if pid := pidOf(t, p); !processGone(pid) {
			t.Errorf("pod %s: process %d still runs after Start returned", p.Name, pid)
		}
		if onLoopback(t, p.Status.PodIP) {
			t.Errorf("pod %s: address %s is still on lo after Start returned", p.Name, p.Status.PodIP)
		}
	}
}

// kubeletGoroutines returns the stacks of goroutines running the kubelet's own code.
func kubeletGoroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		for _, t := range []string{"(*Kubelet)", "(*podWorker)", "(*containerRunner)", "(*prober)"} {
			if strings.Contains(g, "e2e/kubelet."+t) {
				out = append(out, g)
				break
			}
		}
	}
	return out
}

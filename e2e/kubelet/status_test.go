package kubelet

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var (
	running    = containerState{state: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}
	creating   = containerState{state: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}}}
	exited0    = containerState{state: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0}}}
	exited1    = containerState{state: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1}}}
	backingOff = containerState{
		state: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}},
		last:  corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1}},
	}
)

func TestPodPhase(t *testing.T) {
	tests := []struct {
		name       string
		policy     corev1.RestartPolicy
		containers []containerState
		want       corev1.PodPhase
	}{
		{"a pod whose container has not started is Pending", corev1.RestartPolicyAlways, []containerState{creating}, corev1.PodPending},
		{"a pod with one container still creating is Pending", corev1.RestartPolicyAlways, []containerState{running, creating}, corev1.PodPending},
		{"a pod with a running container is Running", corev1.RestartPolicyNever, []containerState{running, exited1}, corev1.PodRunning},
		{"a crash-looping pod is Running", corev1.RestartPolicyAlways, []containerState{backingOff}, corev1.PodRunning},
		{"a pod under Never whose containers exited 0 Succeeded", corev1.RestartPolicyNever, []containerState{exited0, exited0}, corev1.PodSucceeded},
		{"a pod under Never with a failed container Failed", corev1.RestartPolicyNever, []containerState{exited0, exited1}, corev1.PodFailed},
		{"a pod under OnFailure whose containers exited 0 Succeeded", corev1.RestartPolicyOnFailure, []containerState{exited0}, corev1.PodSucceeded},
		{"a pod under OnFailure restarting a failed container is Running", corev1.RestartPolicyOnFailure, []containerState{exited0, backingOff}, corev1.PodRunning},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := podPhase(tt.policy, false, tt.containers); got != tt.want {
				t.Errorf("phase = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestPodStatus(t *testing.T) {
	t0 := metav1.NewTime(time.Unix(1000, 0))
	t1 := metav1.NewTime(time.Unix(2000, 0))
	pod := &corev1.Pod{Spec: corev1.PodSpec{
		RestartPolicy:  corev1.RestartPolicyAlways,
		Containers:     []corev1.Container{{Name: "a", Image: "img"}, {Name: "b", Image: "img"}},
		ReadinessGates: []corev1.PodReadinessGate{{ConditionType: "example.com/gate"}},
	}}
	ready := running
	ready.ready = true
	in := statusInput{podIP: "10.244.1.1", hostIP: "10.244.0.1", sandboxReady: true, containers: []containerState{ready, running}, now: t0}

	st := podStatus(pod, in)
	if st.Phase != corev1.PodRunning || st.PodIP != "10.244.1.1" || st.HostIP != "10.244.0.1" || st.StartTime == nil {
		t.Fatalf("status = phase %s podIP %s hostIP %s startTime %v", st.Phase, st.PodIP, st.HostIP, st.StartTime)
	}
	cond := func(st corev1.PodStatus, ct corev1.PodConditionType) corev1.PodCondition {
		c := findCondition(&st, ct)
		if c == nil {
			t.Fatalf("condition %s missing", ct)
		}
		return *c
	}
	if c := cond(st, corev1.ContainersReady); c.Status != corev1.ConditionFalse || c.Message != "containers with unready status: [b]" {
		t.Errorf("ContainersReady = %s %q, want False naming b", c.Status, c.Message)
	}

	t.Run("a condition keeps its transition time while its status holds", func(t *testing.T) {
		next := pod.DeepCopy()
		next.Status = st
		in2 := in
		in2.now = t1
		st2 := podStatus(next, in2)
		if c := cond(st2, corev1.PodScheduled); !c.LastTransitionTime.Equal(&t0) {
			t.Errorf("PodScheduled moved to %v", c.LastTransitionTime)
		}
	})

	t.Run("ready containers make the pod Ready only when its readiness gates are true", func(t *testing.T) {
		next := pod.DeepCopy()
		in2 := in
		in2.containers = []containerState{ready, ready}
		if c := cond(podStatus(next, in2), corev1.PodReady); c.Status != corev1.ConditionFalse || c.Reason != "ReadinessGatesNotReady" {
			t.Errorf("Ready = %s %s with the gate unset, want False ReadinessGatesNotReady", c.Status, c.Reason)
		}
		next.Status.Conditions = []corev1.PodCondition{{Type: "example.com/gate", Status: corev1.ConditionTrue}}
		st := podStatus(next, in2)
		if c := cond(st, corev1.PodReady); c.Status != corev1.ConditionTrue {
			t.Errorf("Ready = %s with the gate true, want True", c.Status)
		}
		if c := cond(st, "example.com/gate"); c.Status != corev1.ConditionTrue {
			t.Error("the readiness gate's condition was not kept")
		}
	})

	t.Run("a terminal phase is never left", func(t *testing.T) {
		next := pod.DeepCopy()
		next.Status.Phase = corev1.PodFailed
		if got := podStatus(next, in).Phase; got != corev1.PodFailed {
			t.Errorf("phase = %s, want Failed kept", got)
		}
	})
}

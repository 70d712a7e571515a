package kubelet

import (
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// PodReadyToStartContainers is the condition the kubelet sets once a pod's sandbox (here: its
// address) is set up.
const podReadyToStartContainers corev1.PodConditionType = "PodReadyToStartContainers"

// statusInput is what the pod worker knows when it reports a pod's status.
type statusInput struct {
	podIP, hostIP string
	sandboxReady  bool
	// initError, when set, keeps the pod from initializing (e.g. it has init containers).
	initError  string
	containers []containerState
	now        metav1.Time
}

// podStatus returns the pod's new status: old with the fields the kubelet owns replaced.
// Conditions the kubelet does not own (readiness gates, DisruptionTarget, …) are kept, and a
// condition keeps its lastTransitionTime while its status does not change.
func podStatus(pod *corev1.Pod, in statusInput) corev1.PodStatus {
	old := pod.Status
	st := *old.DeepCopy()
	if st.StartTime == nil {
		t := in.now
		st.StartTime = &t
	}
	if in.hostIP != "" {
		st.HostIP = in.hostIP
		st.HostIPs = []corev1.HostIP{{IP: in.hostIP}}
	}
	if in.podIP != "" {
		st.PodIP = in.podIP
		st.PodIPs = []corev1.PodIP{{IP: in.podIP}}
	}

	st.ContainerStatuses = make([]corev1.ContainerStatus, len(pod.Spec.Containers))
	var unready []string
	for i, c := range pod.Spec.Containers {
		cs := in.containers[i]
		started := cs.started
		st.ContainerStatuses[i] = corev1.ContainerStatus{
			Name:                 c.Name,
			Image:                c.Image,
			ImageID:              cs.imageID,
			ContainerID:          cs.containerID,
			State:                cs.state,
			LastTerminationState: cs.last,
			Ready:                cs.ready,
			Started:              &started,
			RestartCount:         cs.restarts,
		}
		if !cs.ready {
			unready = append(unready, c.Name)
		}
	}
	if phase := st.Phase; phase != corev1.PodSucceeded && phase != corev1.PodFailed {
		st.Phase = podPhase(pod.Spec.RestartPolicy, in.initError != "", in.containers)
	}

	setCondition(&st, in.now, corev1.PodScheduled, true, "", "")
	setCondition(&st, in.now, podReadyToStartContainers, in.sandboxReady, "", "")
	if in.initError != "" {
		setCondition(&st, in.now, corev1.PodInitialized, false, "ContainersNotInitialized", in.initError)
	} else {
		setCondition(&st, in.now, corev1.PodInitialized, true, "", "")
	}
	containersReady := len(unready) == 0
	reason, message := "", ""
	if st.Phase == corev1.PodSucceeded || st.Phase == corev1.PodFailed {
		containersReady = false
		reason = "PodCompleted"
	} else if !containersReady {
		reason = "ContainersNotReady"
		message = fmt.Sprintf("containers with unready status: [%s]", strings.Join(unready, " "))
	}
	setCondition(&st, in.now, corev1.ContainersReady, containersReady, reason, message)

	ready, readyReason, readyMessage := containersReady, reason, message
	if ready {
		var missing []string
		for _, g := range pod.Spec.ReadinessGates {
			if c := findCondition(&st, g.ConditionType); c == nil || c.Status != corev1.ConditionTrue {
				missing = append(missing, string(g.ConditionType))
			}
		}
		if len(missing) > 0 {
			ready, readyReason = false, "ReadinessGatesNotReady"
			readyMessage = fmt.Sprintf("corresponding condition of pod readiness gate %q does not exist or is not true", strings.Join(missing, ", "))
		}
	}
	setCondition(&st, in.now, corev1.PodReady, ready, readyReason, readyMessage)
	return st
}

// podPhase computes the phase from the containers' states as the kubelet does: Pending while a
// container has not run yet, Running while one runs or will restart, and Succeeded or Failed
// once all stopped for good.
func podPhase(policy corev1.RestartPolicy, initFailed bool, containers []containerState) corev1.PodPhase {
	if initFailed {
		return corev1.PodPending
	}
	var waiting, running, stopped, succeeded int
	for _, c := range containers {
		switch {
		case c.state.Running != nil:
			running++
		case c.state.Terminated != nil:
			stopped++
			if c.state.Terminated.ExitCode == 0 {
				succeeded++
			}
		case c.last.Terminated != nil:
			stopped++
		default:
			waiting++
		}
	}
	switch {
	case waiting > 0:
		return corev1.PodPending
	case running > 0:
		return corev1.PodRunning
	case stopped == 0:
		return corev1.PodPending
	case policy == corev1.RestartPolicyAlways:
		return corev1.PodRunning
	case stopped == succeeded:
		return corev1.PodSucceeded
	case policy == corev1.RestartPolicyNever:
		return corev1.PodFailed
	default:
		return corev1.PodRunning
	}
}

// setCondition sets condition t, keeping its lastTransitionTime when the status is unchanged.
func setCondition(st *corev1.PodStatus, now metav1.Time, t corev1.PodConditionType, status bool, reason, message string) {
	s := corev1.ConditionFalse
	if status {
		s = corev1.ConditionTrue
	}
	c := corev1.PodCondition{Type: t, Status: s, Reason: reason, Message: message, LastTransitionTime: now}
	if old := findCondition(st, t); old != nil {
		if old.Status == s {
			c.LastTransitionTime = old.LastTransitionTime
		}
		c.LastProbeTime = old.LastProbeTime
		*old = c
		return
	}
	st.Conditions = append(st.Conditions, c)
}

func findCondition(st *corev1.PodStatus, t corev1.PodConditionType) *corev1.PodCondition {
	i := slices.IndexFunc(st.Conditions, func(c corev1.PodCondition) bool { return c.Type == t })
	if i < 0 {
		return nil
	}
	return &st.Conditions[i]
}

package kubelet

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
)

const (
	// retryStatus is how long the worker waits before writing a status the API server refused.
	retryStatus = time.Second
	// minGracePeriod is the least time a deleted pod's containers get between SIGTERM and
	// SIGKILL, as in the kubelet.
	minGracePeriod = 2 * time.Second
)

// podWorker owns one pod on this node: its address, its containers, its status and its end.
type podWorker struct {
	k   *Kubelet
	uid types.UID
	key string // namespace/name, for logs

	mu      sync.Mutex
	pod     *corev1.Pod // latest seen
	gone    bool        // deleted from the API server
	ip      netip.Addr
	hasAddr bool // ip is on the loopback device

	signal chan struct{} // the pod changed or was deleted
	dirty  chan struct{} // the status needs writing
	done   chan struct{} // the worker's goroutine ended

	runners    []*containerRunner
	lastStatus *corev1.PodStatus // last status written
}

func newPodWorker(k *Kubelet, pod *corev1.Pod) *podWorker {
	return &podWorker{
		k:      k,
		uid:    pod.UID,
		key:    pod.Namespace + "/" + pod.Name,
		pod:    pod,
		signal: make(chan struct{}, 1),
		dirty:  make(chan struct{}, 1),
		done:   make(chan struct{}),
	}
}

func (w *podWorker) logf(format string, args ...any) {
	w.k.logf("pod "+w.key+": "+format, args...)
}

// update hands the worker a newer copy of its pod; it never blocks.
func (w *podWorker) update(pod *corev1.Pod) {
	w.mu.Lock()
	w.pod = pod
	w.mu.Unlock()
	notify(w.signal)
}

// deleted tells the worker its pod is gone from the API server; it never blocks.
func (w *podWorker) deleted() {
	w.mu.Lock()
	w.gone = true
	w.mu.Unlock()
	notify(w.signal)
}

func (w *podWorker) markDirty() { notify(w.dirty) }

func notify(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

func (w *podWorker) currentPod() *corev1.Pod {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pod
}

func (w *podWorker) addrs() podAddrs {
	w.mu.Lock()
	defer w.mu.Unlock()
	a := podAddrs{hostIP: w.k.hostIP.String()}
	if w.ip.IsValid() {
		a.podIP = w.ip.String()
	}
	return a
}

// run is the pod's life on this node. It returns when the pod is gone, or when ctx ends (the
// kubelet stops), after every container process has stopped and the address is released.
func (w *podWorker) run(ctx context.Context) {
	defer close(w.done)
	defer w.releaseAddr()
	pod := w.currentPod()
	w.logf("admitted")

	if !w.setUpSandbox(ctx) {
		return
	}
	initError := ""
	if len(pod.Spec.InitContainers) > 0 {
		initError = "the process kubelet does not run init containers; remove them from the pod spec"
		w.logf("has init containers; not starting it")
	} else {
		for i := range pod.Spec.Containers {
			r := newContainerRunner(w, &pod.Spec.Containers[i])
			w.runners = append(w.runners, r)
			w.k.wg.Go(func() { r.run(ctx) })
		}
	}
	w.markDirty()

	var retry <-chan time.Time
	terminal := false
	for {
		select {
		case <-ctx.Done():
			w.stopContainers(w.k.shutdownGrace(w.currentPod()))
			return
		case <-w.signal:
			w.mu.Lock()
			pod, gone := w.pod, w.gone
			w.mu.Unlock()
			if gone || pod.DeletionTimestamp != nil {
				w.terminate(ctx, pod, gone)
				return
			}
		case <-w.dirty:
			if !w.writeStatus(ctx, initError) {
				retry = w.k.clock.After(retryStatus)
			}
		case <-retry:
			retry = nil
			w.markDirty()
		}
		if !terminal && w.isTerminal() {
			// Every container stopped for good: tear the sandbox down as the kubelet does,
			// keep the status, and wait for the pod to be deleted.
			terminal = true
			w.logf("finished phase=%s", w.lastPhase())
			w.stopContainers(0)
			w.releaseAddr()
		}
	}
}

// setUpSandbox gives the pod its address (none for hostNetwork pods, which use the node's),
// retrying until it works or the pod or kubelet goes away; it reports whether to go on.
func (w *podWorker) setUpSandbox(ctx context.Context) bool {
	pod := w.currentPod()
	if pod.Spec.HostNetwork {
		w.mu.Lock()
		w.ip = w.k.hostIP
		w.mu.Unlock()
		return true
	}
	lastErr := ""
	for {
		ip, err := w.k.ipam.allocate()
		if err == nil {
			w.mu.Lock()
			w.ip = ip
			w.mu.Unlock()
			if err = w.k.addAddr(ip); err == nil {
				w.mu.Lock()
				w.hasAddr = true
				w.mu.Unlock()
				w.logf("sandbox ready podIP=%s", ip)
				return true
			}
			w.k.ipam.release(ip)
			w.mu.Lock()
			w.ip = netip.Addr{}
			w.mu.Unlock()
		}
		if err.Error() != lastErr { // once per distinct error, not once per retry
			lastErr = err.Error()
			w.logf("cannot set up the pod address: %v", err)
		}
		select {
		case <-ctx.Done():
			return false
		case <-w.signal:
			w.mu.Lock()
			pod, gone := w.pod, w.gone
			w.mu.Unlock()
			if gone || pod.DeletionTimestamp != nil {
				w.terminate(ctx, pod, gone)
				return false
			}
		case <-w.k.clock.After(retryConfig):
		}
	}
}

// releaseAddr removes the pod's address from the loopback device and frees it; it is safe to
// call more than once.
func (w *podWorker) releaseAddr() {
	w.mu.Lock()
	ip, has := w.ip, w.hasAddr
	w.hasAddr = false
	w.mu.Unlock()
	if !has {
		return
	}
	if err := w.k.delAddr(ip); err != nil {
		w.logf("cannot remove the pod address %s: %v", ip, err)
	}
	w.k.ipam.release(ip)
}

// terminate stops the containers with the pod's deletion grace period and, unless the pod is
// already gone, writes the final status and finalizes the deletion (grace period 0), as the
// kubelet does.
func (w *podWorker) terminate(ctx context.Context, pod *corev1.Pod, gone bool) {
	grace := podGrace(pod)
	if pod.DeletionGracePeriodSeconds != nil {
		grace = time.Duration(*pod.DeletionGracePeriodSeconds) * time.Second
	}
	// Like the kubelet, give even a force-deleted pod a moment to stop cleanly.
	grace = max(grace, minGracePeriod)
	w.logf("stopping gracePeriod=%s", grace)
	w.stopContainers(grace)
	w.releaseAddr()
	if gone || ctx.Err() != nil {
		w.logf("stopped")
		return
	}
	w.writeStatus(ctx, "")
	err := w.k.opts.Client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: ptr.To[int64](0),
		Preconditions:      &metav1.Preconditions{UID: &pod.UID},
	})
	switch {
	case err == nil, apierrors.IsNotFound(err), apierrors.IsConflict(err):
		w.logf("stopped and deleted")
	case ctx.Err() != nil:
		w.logf("stopped; the kubelet stops before finalizing the deletion")
	default:
		w.logf("stopped; cannot finalize the deletion: %v", err)
	}
}

// stopContainers asks every container to stop within grace and waits until they have.
func (w *podWorker) stopContainers(grace time.Duration) {
	for _, r := range w.runners {
		r.requestStop(grace)
	}
	for _, r := range w.runners {
		<-r.done
	}
}

// isTerminal reports whether the last status written has a terminal phase.
func (w *podWorker) isTerminal() bool {
	p := w.lastPhase()
	return p == corev1.PodSucceeded || p == corev1.PodFailed
}

func (w *podWorker) lastPhase() corev1.PodPhase {
	if w.lastStatus == nil {
		return ""
	}
	return w.lastStatus.Phase
}

// writeStatus computes the pod's status and writes it through the status subresource if it
// differs from the last one written; it reports false when the write failed.
func (w *podWorker) writeStatus(ctx context.Context, initError string) bool {
	states := make([]containerState, len(w.currentPod().Spec.Containers))
	for i := range states {
		if i < len(w.runners) {
			states[i] = w.runners[i].snapshot()
		} else {
			states[i] = containerState{state: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "PodInitializing"}}}
		}
	}
	addrs := w.addrs()
	w.mu.Lock()
	in := statusInput{
		podIP: addrs.podIP, hostIP: addrs.hostIP, sandboxReady: w.hasAddr || w.currentPodLocked().Spec.HostNetwork,
		initError: initError, containers: states, now: metav1.Now().Rfc3339Copy(),
	}
	w.mu.Unlock()

	var written *corev1.PodStatus
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		pod := w.currentPod()
		if written != nil { // a conflict: start from the server's copy
			fresh, err := w.k.opts.Client.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if fresh.UID != w.uid {
				return apierrors.NewNotFound(corev1.Resource("pods"), pod.Name)
			}
			pod = fresh
		}
		if w.lastStatus != nil {
			// Start from what was last written: the informer's copy may not have caught up.
			pod = pod.DeepCopy()
			owned := *w.lastStatus.DeepCopy()
			owned.Conditions = mergeConditions(pod.Status.Conditions, owned.Conditions)
			pod.Status = owned
		}
		st := podStatus(pod, in)
		if w.lastStatus != nil && written == nil && apiequality.Semantic.DeepEqual(st, *w.lastStatus) {
			return nil
		}
		next := pod.DeepCopy()
		next.Status = st
		written = &st
		out, err := w.k.opts.Client.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, next, metav1.UpdateOptions{})
		if err != nil {
			return err
		}
		w.lastStatus = out.Status.DeepCopy()
		if old := pod.Status.Phase; old != out.Status.Phase {
			w.logf("phase %s", out.Status.Phase)
		}
		return nil
	})
	switch {
	case err == nil:
		return true
	case apierrors.IsNotFound(err), ctx.Err() != nil:
		return true // the pod is gone or the kubelet stops: nothing to retry
	default:
		w.logf("cannot write status: %v", err)
		return false
	}
}

func (w *podWorker) currentPodLocked() *corev1.Pod { return w.pod }

// mergeConditions returns ours with the conditions of theirs whose types ours lacks appended:
// conditions others set (readiness gates, DisruptionTarget) survive the kubelet's writes.
func mergeConditions(theirs, ours []corev1.PodCondition) []corev1.PodCondition {
	out := append([]corev1.PodCondition(nil), ours...)
	for _, c := range theirs {
		found := false
		for _, o := range ours {
			if o.Type == c.Type {
				found = true
				break
			}
		}
		if !found {
			out = append(out, c)
		}
	}
	return out
}

// podGrace is the pod's termination grace period (30s when unset, as the API defaults it).
func podGrace(pod *corev1.Pod) time.Duration {
	if g := pod.Spec.TerminationGracePeriodSeconds; g != nil {
		return time.Duration(*g) * time.Second
	}
	return 30 * time.Second
}

// String names the worker's pod for logs.
func (w *podWorker) String() string { return fmt.Sprintf("%s (%s)", w.key, w.uid) }

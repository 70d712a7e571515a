package kubelet

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
)

// Heartbeats: the lease is renewed every leaseRenewInterval (the real kubelet: 10s, a quarter of
// its 40s duration) and the Node's status every statusInterval.
const (
	leaseDuration      = 40 * time.Second
	leaseRenewInterval = 5 * time.Second
	statusInterval     = 30 * time.Second
	leaseNamespace     = corev1.NamespaceNodeLease
	maxPods            = 250
	kubeletVersion     = "v1.36.3-process"
)

// registerNode creates the Node, or takes over an existing one of that name, and reports it
// Ready.
func (k *Kubelet) registerNode(ctx context.Context) error {
	nodes := k.opts.Client.CoreV1().Nodes()
	node := k.nodeObject()
	created, err := nodes.Create(ctx, node, metav1.CreateOptions{})
	switch {
	case err == nil:
		node = created
	case apierrors.IsAlreadyExists(err):
		err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
			cur, err := nodes.Get(ctx, k.opts.NodeName, metav1.GetOptions{})
			if err != nil {
				return err
			}
			want := k.nodeObject()
			for key, v := range want.Labels {
				if cur.Labels == nil {
					cur.Labels = map[string]string{}
				}
				cur.Labels[key] = v
			}
			cur.Spec.Unschedulable = false
			cur.Spec.PodCIDR, cur.Spec.PodCIDRs = want.Spec.PodCIDR, want.Spec.PodCIDRs
			node, err = nodes.Update(ctx, cur, metav1.UpdateOptions{})
			return err
		})
		if err != nil {
			return fmt.Errorf("register node %s: %w", k.opts.NodeName, err)
		}
	default:
		return fmt.Errorf("register node %s: %w", k.opts.NodeName, err)
	}
	if err := k.updateNodeStatus(ctx); err != nil {
		return fmt.Errorf("register node %s: %w", k.opts.NodeName, err)
	}
	if err := k.renewLease(ctx, node); err != nil {
		return fmt.Errorf("register node %s: %w", k.opts.NodeName, err)
	}
	return nil
}

// nodeObject is the Node as this kubelet describes itself.
func (k *Kubelet) nodeObject() *corev1.Node {
	cidr := k.opts.PodCIDR.Masked().String()
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:   k.opts.NodeName,
			Labels: k.nodeLabels(),
		},
		Spec:   corev1.NodeSpec{PodCIDR: cidr, PodCIDRs: []string{cidr}},
		Status: k.nodeStatus(nil),
	}
}

// nodeLabels are the labels of the node, as a real kubelet sets them.
func (k *Kubelet) nodeLabels() labels.Set {
	return labels.Set{
		corev1.LabelHostname:   k.opts.NodeName,
		corev1.LabelOSStable:   runtime.GOOS,
		corev1.LabelArchStable: runtime.GOARCH,
	}
}

// nodeStatus is the node's status, keeping the transition times of old's conditions.
func (k *Kubelet) nodeStatus(old *corev1.NodeStatus) corev1.NodeStatus {
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:              *resource.NewQuantity(int64(runtime.NumCPU()), resource.DecimalSI),
		corev1.ResourceMemory:           *resource.NewQuantity(memTotal(), resource.BinarySI),
		corev1.ResourcePods:             *resource.NewQuantity(maxPods, resource.DecimalSI),
		corev1.ResourceEphemeralStorage: resource.MustParse("100Gi"),
	}
	now := metav1.NewTime(k.clock.Now()).Rfc3339Copy()
	cond := func(t corev1.NodeConditionType, s corev1.ConditionStatus, reason, message string) corev1.NodeCondition {
		c := corev1.NodeCondition{Type: t, Status: s, Reason: reason, Message: message, LastHeartbeatTime: now, LastTransitionTime: now}
		if old != nil {
			for _, o := range old.Conditions {
				if o.Type == t && o.Status == s {
					c.LastTransitionTime = o.LastTransitionTime
				}
			}
		}
		return c
	}
	return corev1.NodeStatus{
		Capacity:    capacity,
		Allocatable: capacity,
		Phase:       corev1.NodeRunning,
		Conditions: []corev1.NodeCondition{
			cond(corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
			cond(corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
			cond(corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
			cond(corev1.NodeReady, corev1.ConditionTrue, "KubeletReady", "process kubelet is posting ready status"),
		},
		Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: k.hostIP.String()},
			{Type: corev1.NodeHostName, Address: k.opts.NodeName},
		},
		NodeInfo: corev1.NodeSystemInfo{
			OperatingSystem:         runtime.GOOS,
			Architecture:            runtime.GOARCH,
			KubeletVersion:          kubeletVersion,
			ContainerRuntimeVersion: "process://" + runtime.Version(),
			KernelVersion:           kernelVersion(),
			OSImage:                 "lobby process kubelet",
		},
	}
}

// updateNodeStatus writes a fresh node status (heartbeat times included).
func (k *Kubelet) updateNodeStatus(ctx context.Context) error {
	nodes := k.opts.Client.CoreV1().Nodes()
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := nodes.Get(ctx, k.opts.NodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		cur.Status = k.nodeStatus(&cur.Status)
		_, err = nodes.UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		return err
	})
}

// renewLease creates or renews the node's lease in kube-node-lease, which is how the node
// lifecycle controller knows the node is alive.
func (k *Kubelet) renewLease(ctx context.Context, node *corev1.Node) error {
	leases := k.opts.Client.CoordinationV1().Leases(leaseNamespace)
	now := metav1.NewMicroTime(k.clock.Now())
	lease, err := leases.Get(ctx, k.opts.NodeName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		lease = &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: k.opts.NodeName, Namespace: leaseNamespace},
		}
		if node != nil {
			lease.OwnerReferences = []metav1.OwnerReference{{
				APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID,
			}}
		}
		lease.Spec = coordinationv1.LeaseSpec{
			HolderIdentity:       ptr.To(k.opts.NodeName),
			LeaseDurationSeconds: ptr.To(int32(leaseDuration / time.Second)),
			RenewTime:            &now,
		}
		_, err = leases.Create(ctx, lease, metav1.CreateOptions{})
		if apierrors.IsNotFound(err) { // the namespace is missing: the API server makes it, but may not have yet
			_, nsErr := k.opts.Client.CoreV1().Namespaces().Create(ctx,
				&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: leaseNamespace}}, metav1.CreateOptions{})
			if nsErr != nil && !apierrors.IsAlreadyExists(nsErr) {
				return fmt.Errorf("create namespace %s: %w", leaseNamespace, nsErr)
			}
			_, err = leases.Create(ctx, lease, metav1.CreateOptions{})
		}
		if err != nil {
			return fmt.Errorf("create lease: %w", err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("get lease: %w", err)
	}
	lease.Spec.HolderIdentity = ptr.To(k.opts.NodeName)
	lease.Spec.LeaseDurationSeconds = ptr.To(int32(leaseDuration / time.Second))
	lease.Spec.RenewTime = &now
	if _, err := leases.Update(ctx, lease, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("renew lease: %w", err)
	}
	return nil
}

// heartbeat renews the lease and the node status until ctx ends.
func (k *Kubelet) heartbeat(ctx context.Context) {
	lease := k.clock.NewTicker(leaseRenewInterval)
	defer lease.Stop()
	status := k.clock.NewTicker(statusInterval)
	defer status.Stop()
	failing := false
	report := func(what string, err error) {
		switch {
		case err != nil && ctx.Err() == nil && !failing:
			k.logf("cannot %s: %v", what, err)
			failing = true
		case err == nil && failing:
			k.logf("%s works again", what)
			failing = false
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-lease.C():
			report("renew the node lease", k.renewLease(ctx, nil))
		case <-status.C():
			report("update the node status", k.updateNodeStatus(ctx))
		}
	}
}

// memTotal is the machine's memory in bytes (8Gi when /proc/meminfo cannot tell).
func memTotal() int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 8 << 30
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), "MemTotal:"); ok {
			fields := strings.Fields(rest)
			if len(fields) > 0 {
				if kb, err := strconv.ParseInt(fields[0], 10, 64); err == nil {
					return kb << 10
				}
			}
		}
	}
	return 8 << 30
}

func kernelVersion() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

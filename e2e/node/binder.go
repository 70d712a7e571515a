package node

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"

	"github.com/lobby-http/lobby/e2e/framework"
)

// bindResync is how often pending pods are looked at again, so a failed binding is retried.
const bindResync = 2 * time.Second

// bind stands in for the scheduler for the node until ctx ends: it binds every pending pod of the
// default scheduler whose nodeSelector matches the node's labels. Affinity, taints and resources
// are not considered; the process kubelet leaves such pods alone (see e2e/kubelet).
func bind(ctx context.Context, c *framework.Cluster, node *corev1.Node) {
	nodeLabels := labels.Set(node.Labels)
	factory := informers.NewSharedInformerFactoryWithOptions(c.Kube, bindResync,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", "").String()
		}))
	try := func(obj any) {
		pod, ok := obj.(*corev1.Pod)
		if !ok || !pending(pod) || len(pod.Spec.NodeSelector) == 0 ||
			!labels.SelectorFromSet(pod.Spec.NodeSelector).Matches(nodeLabels) {
			return
		}
		// A failed binding is tried again at the next resync, while the pod is still pending.
		_ = c.Kube.CoreV1().Pods(pod.Namespace).Bind(ctx, &corev1.Binding{
			ObjectMeta: metav1.ObjectMeta{Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID},
			Target:     corev1.ObjectReference{Kind: "Node", Name: node.Name},
		}, metav1.CreateOptions{})
	}
	inf := factory.Core().V1().Pods().Informer()
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    try,
		UpdateFunc: func(_, obj any) { try(obj) },
	})
	factory.Start(ctx.Done())
	<-ctx.Done()
	factory.Shutdown()
}

// pending reports whether pod waits for the default scheduler.
func pending(pod *corev1.Pod) bool {
	return pod.Spec.NodeName == "" && pod.DeletionTimestamp == nil &&
		(pod.Spec.SchedulerName == "" || pod.Spec.SchedulerName == corev1.DefaultSchedulerName) &&
		pod.Status.Phase != corev1.PodSucceeded && pod.Status.Phase != corev1.PodFailed
}

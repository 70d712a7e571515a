package kubelet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"

	"github.com/lobby-http/lobby/e2e/netns"
)

// Options configures a Kubelet.
type Options struct {
	// Client talks to the API server.
	Client kubernetes.Interface
	// NodeName is the name of the Node the kubelet registers and runs pods for.
	NodeName string
	// PodCIDR is where pod addresses come from: from the second /24 upward (10.244.1.1 for
	// 10.244.0.0/16); the first /24 holds the node's own address (its first host address,
	// 10.244.0.1) and the control plane, the last /24 is left to other processes.
	PodCIDR netip.Prefix
	// Images maps an image name, as pods name it, to the executable that runs it.
	Images map[string]string
	// LogDir receives each container's stdout and stderr, as <namespace>_<pod>_<container>.log.
	LogDir string
	// Log receives one line per state change (pod admitted, container started, probe result,
	// exit, restart, deletion). Nil discards them.
	Log io.Writer
	// ShutdownGracePeriod, when positive, caps the grace period each container gets when
	// Start's context ends; zero gives each pod its own terminationGracePeriodSeconds.
	ShutdownGracePeriod time.Duration
	// Clock drives probes, back-off and grace periods; nil is the real clock.
	Clock clock.WithTicker
}

// Kubelet is a node agent that runs pods as local processes. Create it with New and run it
// with Start.
type Kubelet struct {
	opts   Options
	clock  clock.WithTicker
	ipam   *allocator
	hostIP netip.Addr
	// addAddr and delAddr put a pod address on the loopback device and take it off.
	addAddr, delAddr func(netip.Addr) error

	logMu sync.Mutex

	mu      sync.Mutex
	workers map[types.UID]*podWorker

	wg sync.WaitGroup // every goroutine the kubelet starts
}

// New validates opts and returns a Kubelet; nothing runs until Start.
func New(opts Options) (*Kubelet, error) {
	if opts.Client == nil {
		return nil, errors.New("kubelet options: Client is nil")
	}
	if opts.NodeName == "" {
		return nil, errors.New("kubelet options: NodeName is empty")
	}
	ipam, err := newAllocator(opts.PodCIDR)
	if err != nil {
		return nil, fmt.Errorf("kubelet options: %w", err)
	}
	for name, path := range opts.Images {
		fi, err := os.Stat(path)
		if err != nil {
			return nil, fmt.Errorf("kubelet options: Images[%q]: %w", name, err)
		}
		if fi.IsDir() || fi.Mode()&0o111 == 0 {
			return nil, fmt.Errorf("kubelet options: Images[%q]: %s is not an executable file", name, path)
		}
	}
	if opts.LogDir == "" {
		return nil, errors.New("kubelet options: LogDir is empty")
	}
	if err := os.MkdirAll(opts.LogDir, 0o755); err != nil {
		return nil, fmt.Errorf("kubelet options: LogDir: %w", err)
	}
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	clk := opts.Clock
	if clk == nil {
		clk = clock.RealClock{}
	}
	return &Kubelet{
		opts:    opts,
		clock:   clk,
		ipam:    ipam,
		hostIP:  opts.PodCIDR.Masked().Addr().Next(),
		addAddr: netns.AddAddr,
		delAddr: netns.DelAddr,
		workers: make(map[types.UID]*podWorker),
	}, nil
}

// logf writes one timestamped line to the log.
func (k *Kubelet) logf(format string, args ...any) {
	line := k.clock.Now().Format("15:04:05.000") + " kubelet " + k.opts.NodeName + ": " + fmt.Sprintf(format, args...) + "\n"
	k.logMu.Lock()
	defer k.logMu.Unlock()
	_, _ = io.WriteString(k.opts.Log, line)
}

// Start registers the node, keeps its lease and status fresh, binds pending pods to it and runs
// the pods bound to it, until ctx ends. Then it stops every container (SIGTERM, the grace
// period, SIGKILL), removes the pod addresses and returns. It returns an error early only when
// it runs outside the network namespace of e2e/netns, the node cannot be registered, or the
// pod informer cannot sync.
func (k *Kubelet) Start(ctx context.Context) error {
	if !netns.Inside() {
		return errors.New("start kubelet: pods get addresses on the loopback device of a private network namespace; " +
			"run inside one created by netns.RunTestsInside")
	}
	if err := k.registerNode(ctx); err != nil {
		return err
	}
	k.logf("registered node hostIP=%s", k.hostIP)

	ctx, cancel := context.WithCancel(ctx)
	defer k.wg.Wait()
	defer cancel()

	k.wg.Go(func() { k.heartbeat(ctx) })

	binds := workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.DefaultTypedControllerRateLimiter[types.NamespacedName](),
		workqueue.TypedRateLimitingQueueConfig[types.NamespacedName]{Name: "kubelet-bind"})
	defer binds.ShutDown()

	factory := informers.NewSharedInformerFactory(k.opts.Client, 0)
	pods := factory.Core().V1().Pods()
	informer := pods.Informer()
	lister := pods.Lister()
	if _, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { k.observe(ctx, obj, binds) },
		UpdateFunc: func(_, obj any) { k.observe(ctx, obj, binds) },
		DeleteFunc: func(obj any) { k.forget(obj) },
	}); err != nil {
		return fmt.Errorf("watch pods: %w", err)
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), informer.HasSynced) {
		if ctx.Err() != nil {
			return nil
		}
		return errors.New("watch pods: the informer did not sync")
	}
	k.wg.Go(func() {
		for k.bindNext(ctx, binds, lister) {
		}
	})

	<-ctx.Done()
	binds.ShutDown()
	k.mu.Lock()
	workers := make([]*podWorker, 0, len(k.workers))
	for _, w := range k.workers {
		workers = append(workers, w)
	}
	k.mu.Unlock()
	for _, w := range workers {
		<-w.done
	}
	k.logf("stopped")
	return nil
}

// shutdownGrace is the grace period a pod's containers get when the kubelet stops.
func (k *Kubelet) shutdownGrace(pod *corev1.Pod) time.Duration {
	g := podGrace(pod)
	if c := k.opts.ShutdownGracePeriod; c > 0 && c < g {
		return c
	}
	return g
}

// observe handles an added or updated pod: queue it for binding when it waits for a node, hand
// it to its worker when it is bound here.
func (k *Kubelet) observe(ctx context.Context, obj any, binds workqueue.TypedRateLimitingInterface[types.NamespacedName]) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	if k.needsBinding(pod) {
		binds.Add(types.NamespacedName{Namespace: pod.Namespace, Name: pod.Name})
		return
	}
	if pod.Spec.NodeName != k.opts.NodeName {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if w, ok := k.workers[pod.UID]; ok {
		w.update(pod)
		return
	}
	if ctx.Err() != nil {
		return
	}
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		// Finished before this kubelet started; nothing to run. Finalize its deletion if asked.
		if pod.DeletionTimestamp != nil {
			k.wg.Go(func() { k.finalize(ctx, pod) })
		}
		return
	}
	w := newPodWorker(k, pod)
	k.workers[pod.UID] = w
	k.wg.Go(func() { w.run(ctx) })
}

// forget handles a pod deleted from the API server.
func (k *Kubelet) forget(obj any) {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	k.mu.Lock()
	w, ok := k.workers[pod.UID]
	delete(k.workers, pod.UID)
	k.mu.Unlock()
	if ok {
		w.deleted()
	}
}

// finalize deletes a pod with grace period 0, as the kubelet does once its containers stopped.
func (k *Kubelet) finalize(ctx context.Context, pod *corev1.Pod) {
	err := k.opts.Client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: new(int64),
		Preconditions:      &metav1.Preconditions{UID: &pod.UID},
	})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		k.logf("pod %s/%s: cannot finalize the deletion: %v", pod.Namespace, pod.Name, err)
	}
}

// needsBinding reports whether pod waits for the default scheduler, which this kubelet stands
// in for, and may run here: its nodeSelector, if any, matches this node's labels. A pod that
// selects another node (the local cluster's real node, say) is left to that node's binder.
func (k *Kubelet) needsBinding(pod *corev1.Pod) bool {
	return pod.Spec.NodeName == "" && pod.DeletionTimestamp == nil &&
		(pod.Spec.SchedulerName == "" || pod.Spec.SchedulerName == corev1.DefaultSchedulerName) &&
		pod.Status.Phase != corev1.PodSucceeded && pod.Status.Phase != corev1.PodFailed &&
		labels.SelectorFromSet(pod.Spec.NodeSelector).Matches(k.nodeLabels())
}

// bindNext binds the next queued pod to this node; it reports false once the queue shut down.
func (k *Kubelet) bindNext(ctx context.Context, q workqueue.TypedRateLimitingInterface[types.NamespacedName], pods corelisters.PodLister) bool {
	key, shutdown := q.Get()
	if shutdown {
		return false
	}
	defer q.Done(key)
	pod, err := pods.Pods(key.Namespace).Get(key.Name)
	if err != nil || !k.needsBinding(pod) {
		q.Forget(key)
		return true
	}
	err = k.opts.Client.CoreV1().Pods(pod.Namespace).Bind(ctx, &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID},
		Target:     corev1.ObjectReference{Kind: "Node", Name: k.opts.NodeName},
	}, metav1.CreateOptions{})
	switch {
	case err == nil:
		k.logf("pod %s/%s: bound", pod.Namespace, pod.Name)
		q.Forget(key)
	case apierrors.IsNotFound(err), apierrors.IsConflict(err), ctx.Err() != nil:
		q.Forget(key) // gone, or bound by someone else
	default:
		k.logf("pod %s/%s: cannot bind: %v", pod.Namespace, pod.Name, err)
		q.AddRateLimited(key)
	}
	return true
}

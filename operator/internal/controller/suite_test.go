package controller

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/lobby-http/lobby/operator/api/v1alpha1"
	"github.com/lobby-http/lobby/operator/api/v1beta1"
	"github.com/lobby-http/lobby/operator/internal/resources"
	"github.com/lobby-http/lobby/operator/internal/testenv"
)

const testScalerAddress = "lobby-scaler.lobby.svc.cluster.local:9090"

// cluster is a control plane with lobby's and KEDA's CRDs and the reconciler running in a
// manager, as main wires it.
type cluster struct {
	// kube reads straight from the API server, so assertions never see a stale cache.
	kube   client.Client
	cfg    *rest.Config
	scheme *runtime.Scheme
}

// startCluster starts kube-apiserver and etcd from KUBEBUILDER_ASSETS, or skips the test when they
// are not available, and runs the reconciler against them, with a plain-text scaler trigger,
// until the test ends.
func startCluster(t *testing.T) *cluster {
	t.Helper()
	c := startControlPlane(t)
	c.runReconciler(t, resources.Trigger{ScalerAddress: testScalerAddress})
	return c
}

// startControlPlane starts kube-apiserver and etcd with lobby's and KEDA's CRDs, without a
// reconciler.
func startControlPlane(t *testing.T) *cluster {
	t.Helper()
	cfg := testenv.Start(t, testenv.Options{KEDA: true})
	kube, scheme := testenv.Client(t, cfg, clientgoscheme.AddToScheme, v1alpha1.AddToScheme, v1beta1.AddToScheme)
	return &cluster{kube: kube, cfg: cfg, scheme: scheme}
}

// runReconciler runs the reconciler, writing triggers as trigger says, in a manager of its own,
// as one run of the operator process. It returns a function that stops the manager and waits for
// it, as a restart of the operator does; the test's end stops it otherwise.
func (c *cluster) runReconciler(t *testing.T, trigger resources.Trigger) (stop func()) {
	t.Helper()
	log := testr.NewWithOptions(t, testr.Options{Verbosity: 1})
	mgr, err := ctrl.NewManager(c.cfg, manager.Options{
		Scheme:  c.scheme,
		Logger:  log,
		Metrics: metricsserver.Options{BindAddress: "0"},
		Client:  client.Options{Cache: &client.CacheOptions{Unstructured: true}},
		// Each test runs its own manager in this one process.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	r := &Reconciler{
		Client:  mgr.GetClient(),
		Events:  mgr.GetEventRecorder(FieldManager),
		Trigger: trigger,
		Log:     log.WithName("controller"),
		Routes:  true,
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := r.SetupWithManager(ctx, mgr); err != nil {
		cancel()
		t.Fatal(err)
	}
	rr := &RouteReconciler{Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), Log: log.WithName("routes")}
	if err := rr.SetupWithManager(mgr); err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("manager stopped with %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Error("manager did not stop within 30s")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// namespace creates a namespace for one test case, so cases do not see each other's objects.
func (c *cluster) namespace(t *testing.T, name string) string {
	t.Helper()
	if err := c.kube.Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
		t.Fatalf("create namespace %s: %v", name, err)
	}
	return name
}

// service creates a Service with the given named ports ("http=8080").
func (c *cluster) service(t *testing.T, namespace, name string, ports ...string) {
	t.Helper()
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}}
	for _, p := range ports {
		n, num, _ := strings.Cut(p, "=")
		var port int32
		if _, err := fmt.Sscan(num, &port); err != nil {
			t.Fatalf("port %q: %v", p, err)
		}
		svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: n, Port: port, TargetPort: intstr.FromInt32(port)})
	}
	if err := c.kube.Create(t.Context(), svc); err != nil {
		t.Fatalf("create Service %s/%s: %v", namespace, name, err)
	}
}

func (c *cluster) create(t *testing.T, obj client.Object) {
	t.Helper()
	if err := c.kube.Create(t.Context(), obj); err != nil {
		t.Fatalf("create %T %s: %v", obj, obj.GetName(), err)
	}
}

// update applies mutate to the latest version of the HTTPScaledObject, retrying on conflicts.
func (c *cluster) update(t *testing.T, key types.NamespacedName, mutate func(*v1alpha1.HTTPScaledObject)) {
	t.Helper()
	for range 10 {
		hso := &v1alpha1.HTTPScaledObject{}
		if err := c.kube.Get(t.Context(), key, hso); err != nil {
			t.Fatal(err)
		}
		mutate(hso)
		err := c.kube.Update(t.Context(), hso)
		if err == nil {
			return
		}
		if !strings.Contains(err.Error(), "the object has been modified") {
			t.Fatalf("update %s: %v", key, err)
		}
	}
	t.Fatalf("update %s: kept conflicting", key)
}

func (c *cluster) httpso(t *testing.T, key types.NamespacedName) *v1alpha1.HTTPScaledObject {
	t.Helper()
	hso := &v1alpha1.HTTPScaledObject{}
	if err := c.kube.Get(t.Context(), key, hso); err != nil {
		t.Fatalf("get HTTPScaledObject %s: %v", key, err)
	}
	return hso
}

// scaledObject returns the ScaledObject named key, or nil when there is none.
func (c *cluster) scaledObject(t *testing.T, key types.NamespacedName) *unstructured.Unstructured {
	t.Helper()
	so := &unstructured.Unstructured{}
	so.SetGroupVersionKind(resources.ScaledObjectGVK)
	if err := c.kube.Get(t.Context(), key, so); err != nil {
		if client.IgnoreNotFound(err) == nil {
			return nil
		}
		t.Fatalf("get ScaledObject %s: %v", key, err)
	}
	return so
}

// eventually polls cond until it returns "", failing the test with cond's last answer after
// within.
func eventually(t *testing.T, within time.Duration, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		why := cond()
		if why == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %v: %s", within, why)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// readyIs returns a condition for eventually: the object's Ready condition has the status and
// reason, for its current generation, and its message contains every fragment.
func (c *cluster) readyIs(t *testing.T, key types.NamespacedName, status metav1.ConditionStatus, reason string, fragments ...string) func() string {
	return func() string {
		hso := c.httpso(t, key)
		got := meta.FindStatusCondition(hso.Status.Conditions, v1alpha1.ConditionReady)
		if got == nil {
			return fmt.Sprintf("%s has no Ready condition", key)
		}
		if got.Status != status || got.Reason != reason || got.ObservedGeneration != hso.Generation {
			return fmt.Sprintf("%s Ready = %s/%s (generation %d of %d) %q, want %s/%s", key, got.Status, got.Reason,
				got.ObservedGeneration, hso.Generation, got.Message, status, reason)
		}
		for _, f := range fragments {
			if !strings.Contains(got.Message, f) {
				return fmt.Sprintf("%s Ready message %q lacks %q", key, got.Message, f)
			}
		}
		return ""
	}
}

// eventFor returns a condition for eventually: an event with the reason regards the object, with
// a note containing fragment.
func (c *cluster) eventFor(t *testing.T, key types.NamespacedName, reason, fragment string) func() string {
	return func() string {
		var list eventsv1.EventList
		if err := c.kube.List(t.Context(), &list, client.InNamespace(key.Namespace)); err != nil {
			return err.Error()
		}
		var seen []string
		for _, e := range list.Items {
			if e.Regarding.Name != key.Name || e.Regarding.Kind != "HTTPScaledObject" {
				continue
			}
			if e.Reason == reason && strings.Contains(e.Note, fragment) {
				return ""
			}
			seen = append(seen, e.Reason+": "+e.Note)
		}
		return fmt.Sprintf("no %s event containing %q for %s; saw %q", reason, fragment, key, seen)
	}
}

// countEvents returns how many events with the reason regard the object.
func (c *cluster) countEvents(t *testing.T, key types.NamespacedName, reason string) int {
	t.Helper()
	var list eventsv1.EventList
	if err := c.kube.List(t.Context(), &list, client.InNamespace(key.Namespace)); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range list.Items {
		if e.Regarding.Name == key.Name && e.Reason == reason {
			n += max(1, int(eventCount(e)))
		}
	}
	return n
}

func eventCount(e eventsv1.Event) int32 {
	if e.Series != nil {
		return e.Series.Count
	}
	return 1
}

// soField returns a field of a ScaledObject's spec, failing the test when it is missing.
func soField(t *testing.T, so *unstructured.Unstructured, path ...string) any {
	t.Helper()
	v, ok, err := unstructured.NestedFieldNoCopy(so.Object, append([]string{"spec"}, path...)...)
	if err != nil || !ok {
		t.Fatalf("ScaledObject %s has no spec.%s (%v)", so.GetName(), strings.Join(path, "."), err)
	}
	return v
}

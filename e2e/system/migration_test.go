//go:build e2e

package system

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/lobby-http/lobby/e2e/apps"
	"github.com/lobby-http/lobby/e2e/deploy"
	"github.com/lobby-http/lobby/e2e/framework/poll"
	"github.com/lobby-http/lobby/operator/api/v1alpha1"
)

// addOnFieldManager is the field manager the KEDA HTTP Add-on's operator writes as.
const addOnFieldManager = "keda-add-ons-http-operator"

// TestMigrationFromAddOn follows docs/migration.md step by step on a cluster that holds what the
// KEDA HTTP Add-on leaves behind, while traffic flows, and counts every request sent against
// every answer.
//
// The add-on's own images cannot run here (no registry is reachable), so its data plane is
// played by an interceptor and a scaler of lobby's chart, started apart from the release and
// limited to the test's namespace: the "previous" interceptor, which the test's nginx sends to
// first, and the "previous" scaler, which only sees that interceptor and which the add-on-shaped
// ScaledObjects name. Everything the migration acts on is as the add-on leaves it:
// HTTPScaledObjects with its finalizer and status, ScaledObjects of its shape (its field manager,
// an owner reference that blocks deletion, its scaler's address). The release's interceptors
// and scalers stand for step 3's `helm install` with the operator at zero replicas: the
// release's operator is stopped until step 5.
func TestMigrationFromAddOn(t *testing.T) {
	ns := testNamespace(t)
	ctx := t.Context()
	c := suite.cluster
	rel := suite.lobby
	suffix := randomSuffix()
	values := []string{filepath.Join("testdata", "values.yaml")}
	warmHost, zeroHost := "warm-"+suffix+".migration.test", "zero-"+suffix+".migration.test"

	// Lobby's operator is not running: step 3 installs it with no replica.
	ops := rel.Instances("operator")
	if len(ops) != 1 {
		t.Fatalf("the release runs %d operators, want 1", len(ops))
	}
	if err := rel.StopInPlace(ops[0]); err != nil {
		t.Fatalf("stop the release's operator: %v", err)
	}
	operatorRunning := false
	t.Cleanup(func() {
		if !operatorRunning {
			if _, err := rel.StartInPlace(context.Background(), ops[0]); err != nil {
				t.Errorf("start the release's operator again: %v", err)
			}
		}
	})

	// The previous data plane, standing in for the add-on's interceptor and scaler.
	prevIn, prevScaler := startPreviousDataPlane(t, rel, values, ns, suffix)
	prevScalerAddr := netip.AddrPortFrom(prevScaler.Addr, uint16(prevScaler.Ports["grpc"])).String()

	// What the add-on leaves: a warm app (one replica), an app whose Deployment had two
	// replicas when the add-on took it over and that is now at zero, their HTTPScaledObjects as
	// their users wrote them for the add-on (a host with a port, a path prefix without a slash,
	// a 0s timeout), with its finalizer and status, and their ScaledObjects in its shape.
	type leftover struct {
		name, manifest string
		replicas       int32
	}
	left := []leftover{
		{"warm", `
spec:
  hosts: ["` + warmHost + `:80"]
  scaleTargetRef: {name: warm, kind: Deployment, apiVersion: apps/v1, service: warm, port: 80}
  replicas: {min: 0, max: 3}
  scalingMetric: {concurrency: {targetValue: 50}}`, 1},
		{"zero", `
spec:
  hosts: ["` + zeroHost + `"]
  pathPrefixes: [api]
  scaleTargetRef: {name: zero, service: zero, port: 80}
  replicas: {min: 0, max: 2}
  scaledownPeriod: 300
  timeouts: {conditionWait: 0s}`, 2},
	}
	hsos := map[string]*v1alpha1.HTTPScaledObject{}
	for _, l := range left {
		dep, svc := apps.Echo{Namespace: ns, Name: l.name, Replicas: l.replicas}.Objects()
		for _, o := range []client.Object{dep, svc} {
			if err := c.Client.Create(ctx, o); err != nil {
				t.Fatalf("create %T %s: %v", o, l.name, err)
			}
		}
		hsos[l.name] = createAddOnObject(t, ns, l.name, l.manifest)
		if err := c.Client.Create(ctx, addOnScaledObject(ns, l.name, hsos[l.name], prevScalerAddr), client.FieldOwner(addOnFieldManager)); err != nil {
			t.Fatalf("create the add-on's ScaledObject %s: %v", l.name, err)
		}
	}
	// nginx, as the ingress, sends to the previous interceptor; retries off, so each request is
	// answered once by the interceptor it reached.
	in, err := startNginx(ctx, c, "nginx.conf.tmpl", fixedUpstreams(proxyAddrs([]*deploy.Instance{prevIn}, "http")),
		map[string]any{"NoRetry": true})
	if err != nil {
		t.Fatalf("start nginx: %v", err)
	}
	t.Cleanup(func() { _ = in.proc.Stop() })
	waitRoutingOn(t, []*deploy.Instance{prevIn}, ns+"/warm", 30*time.Second)

	// Steady traffic on the warm app from here to the end of the switch.
	load := startCountedLoad(ctx, in.URL+"/", warmHost, 2, 10*time.Millisecond, 20000, 4*time.Minute)
	// KEDA scaled the warm app to zero when it took its ScaledObject over; the first requests
	// wake it through the previous installation and are held meanwhile, as with the add-on.
	if err := poll.Until(t.Context(), 60*time.Second, "the warm app to answer through the previous interceptor", func() error {
		if n := load.answered.Load(); n < 200 {
			return fmt.Errorf("%d answered", n)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	zero := &app{ns: ns, name: "zero"}
	if err := poll.Until(t.Context(), 90*time.Second, "KEDA to scale the idle app to zero through the previous scaler", func() error {
		desired, _, err := zero.replicas(ctx)
		if err == nil && desired != 0 {
			err = fmt.Errorf("%d replicas", desired)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	originalZero := kedaOriginalReplicas(t, ns, "zero")
	if originalZero != 2 {
		t.Fatalf("KEDA recorded %d as the original replica count of the idle app, want 2", originalZero)
	}

	// Step 1: back up the HTTPScaledObjects.
	var backup v1alpha1.HTTPScaledObjectList
	if err := c.Client.List(ctx, &backup, client.InNamespace(ns)); err != nil || len(backup.Items) != len(left) {
		t.Fatalf("back up the HTTPScaledObjects: %d listed, %v", len(backup.Items), err)
	}
	// Step 2 stops the add-on's operator: here nothing plays it, so nothing writes the
	// ScaledObjects until lobby's operator does. Step 3 (lobby installed, operator at zero) is
	// the release, with its CRD, as the suite installed it.

	// Step 4: point the ingress at lobby's interceptors, then send the request that must wake
	// the app at zero: it is held by lobby's interceptor while KEDA still asks the previous
	// scaler, which does not see it.
	if err := in.pointAt(proxyAddrs(rel.Instances("interceptor"), "http")); err != nil {
		t.Fatalf("point nginx at lobby's interceptors: %v", err)
	}
	// nginx's old worker stops taking connections once the new ones run; the request goes on a
	// fresh connection, so it reaches a new worker (the interceptors' counts below check it).
	time.Sleep(time.Second)
	switched := time.Now()
	wake := make(chan response, 1)
	go func() {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, in.URL+"/api/hello", nil)
		if err != nil {
			wake <- response{err: err}
			return
		}
		req.Host = zeroHost
		fresh := &http.Client{Timeout: 90 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := fresh.Do(req)
		if err != nil {
			wake <- response{err: err, at: time.Now()}
			return
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		wake <- response{code: resp.StatusCode, body: string(body), header: resp.Header, err: err, at: time.Now()}
	}()
	if err := poll.Until(t.Context(), 10*time.Second, "lobby's interceptors to hold the request for the app at zero", func() error {
		if n := routeRequests(t, rel.Instances("interceptor"), ns+"/zero"); n != 1 {
			return fmt.Errorf("lobby's interceptors received %d requests for it", n)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// The previous interceptor answers what it still has in flight before the next step.
	if err := poll.Until(t.Context(), 30*time.Second, "the previous interceptor to finish its requests", func() error {
		q, err := queue(prevIn.URL("admin"))
		if err != nil {
			return err
		}
		for key, rc := range q {
			if rc.InFlight+rc.Held > 0 {
				return fmt.Errorf("%s has %d in flight and %d held", key, rc.InFlight, rc.Held)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// Step 5: scale lobby's operator up. It takes the objects over.
	if _, err := rel.StartInPlace(ctx, ops[0]); err != nil {
		t.Fatalf("start lobby's operator: %v", err)
	}
	operatorRunning = true
	lobbyScaler := rel.Release + "-scaler." + rel.Namespace + ".svc.cluster.local:9090"
	for _, l := range left {
		key := client.ObjectKey{Namespace: ns, Name: l.name}
		if err := poll.Until(t.Context(), 60*time.Second, key.String()+" to be Ready and scaled through lobby's scaler", func() error {
			return migrated(ctx, key, lobbyScaler)
		}); err != nil {
			t.Fatal(err)
		}
	}
	r := <-wake
	if r.err != nil || r.code != http.StatusOK {
		t.Errorf("the request sent to the app at zero during the switch got %d %q (%v), want 200 from the app", r.code, r.body, r.err)
	} else {
		t.Logf("the app at zero answered the request sent during the switch after %v", r.at.Sub(switched).Round(time.Millisecond))
	}

	if n := routeRequests(t, []*deploy.Instance{prevIn}, ns+"/zero"); n != 0 {
		t.Errorf("the previous interceptor received %d requests for the app at zero, want none: the wake-up is lobby's", n)
	}

	// Step 6: remove the previous installation; the warm app keeps serving through lobby.
	before := load.answered.Load()
	if err := prevScaler.Process.Stop(); err != nil {
		t.Errorf("stop the previous scaler: %v", err)
	}
	if err := prevIn.Process.Stop(); err != nil {
		t.Errorf("stop the previous interceptor: %v", err)
	}
	if err := poll.Until(t.Context(), 30*time.Second, "the warm app to keep answering after the previous installation is gone", func() error {
		if n := load.answered.Load(); n < before+300 {
			return fmt.Errorf("%d answered since", n-before)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	sent, answered, failures := load.stop()
	t.Logf("warm app: %d requests sent, %d answered 200", sent, answered)
	if sent != answered || sent < 500 {
		t.Errorf("warm app: %d requests sent, %d answered 200, want every one of at least 500; first failures: %q", sent, answered, failures)
	}

	// A migrated object is deleted: the delete completes, and KEDA puts the workload back at
	// the replica count it had before it was scaled.
	deleted := time.Now()
	if err := c.Client.Delete(ctx, hsos["zero"]); err != nil {
		t.Fatalf("delete the HTTPScaledObject: %v", err)
	}
	if err := poll.Until(t.Context(), 10*time.Second, "the deleted HTTPScaledObject to be gone", func() error {
		err := c.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "zero"}, &v1alpha1.HTTPScaledObject{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("still there (%v)", err)
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("the HTTPScaledObject was gone %v after the delete", time.Since(deleted).Round(time.Millisecond))
	if err := poll.Until(t.Context(), 90*time.Second, "the workload to be back at its original replica count", func() error {
		desired, _, err := zero.replicas(ctx)
		if err == nil && desired != originalZero {
			err = fmt.Errorf("%d replicas, want %d", desired, originalZero)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

// routeRequests returns how many requests for the route key the interceptors received.
func routeRequests(t *testing.T, interceptors []*deploy.Instance, key string) uint64 {
	t.Helper()
	var n uint64
	for _, in := range interceptors {
		q, err := queue(in.URL("admin"))
		if err != nil {
			t.Fatalf("read the queue of %s: %v", in.Process.Name, err)
		}
		n += q[key].Requests
	}
	return n
}

// startPreviousDataPlane starts the stand-ins for the add-on's interceptor and scaler, limited to
// ns: the scaler finds the interceptor through a Service of its own in the release namespace.
func startPreviousDataPlane(t *testing.T, rel *deploy.Lobby, values []string, ns, suffix string) (interceptor, scaler *deploy.Instance) {
	t.Helper()
	ctx := t.Context()
	c := suite.cluster
	prevIn, err := rel.StartVariant(ctx, "interceptor", deploy.VariantOptions{Name: "previous-" + suffix, ValuesFiles: values,
		Set: map[string]string{"watchNamespace": ns}})
	if err != nil {
		t.Fatalf("start the previous interceptor: %v", err)
	}
	t.Cleanup(func() { _ = prevIn.Process.Stop() })

	svcName := "previous-" + suffix + "-interceptor-admin"
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: rel.Namespace, Name: svcName},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "admin", Port: prevIn.Ports["admin"]}}},
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: rel.Namespace, Name: svcName,
			Labels: map[string]string{discoveryv1.LabelServiceName: svcName, discoveryv1.LabelManagedBy: "lobby-e2e-migration"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{prevIn.Addr.String()},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: rel.Namespace, Name: prevIn.Process.Name}}},
		Ports: []discoveryv1.EndpointPort{{Name: ptr.To("admin"), Port: ptr.To(prevIn.Ports["admin"]), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
	for _, o := range []client.Object{svc, slice} {
		if err := c.Client.Create(ctx, o); err != nil {
			t.Fatalf("create %T %s: %v", o, svcName, err)
		}
		t.Cleanup(func() { _ = c.Client.Delete(context.Background(), o) })
	}
	prevScaler, err := rel.StartVariant(ctx, "scaler", deploy.VariantOptions{Name: "previous-" + suffix, ValuesFiles: values,
		Set: map[string]string{"watchNamespace": ns,
			"scaler.env[0].name": "LOBBY_INTERCEPTOR_SERVICE", "scaler.env[0].value": svcName}})
	if err != nil {
		t.Fatalf("start the previous scaler: %v", err)
	}
	t.Cleanup(func() { _ = prevScaler.Process.Stop() })
	return prevIn, prevScaler
}

// createAddOnObject creates an HTTPScaledObject from spec YAML as the add-on leaves it: with its
// finalizer and the status it writes.
func createAddOnObject(t *testing.T, ns, name, specYAML string) *v1alpha1.HTTPScaledObject {
	t.Helper()
	ctx := t.Context()
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte("apiVersion: http.keda.sh/v1alpha1\nkind: HTTPScaledObject\n"+specYAML), &u.Object); err != nil {
		t.Fatalf("parse %s: %v", name, err)
	}
	u.SetNamespace(ns)
	u.SetName(name)
	u.SetFinalizers([]string{v1alpha1.AddOnFinalizer})
	if err := suite.cluster.Client.Create(ctx, u, client.FieldOwner(addOnFieldManager)); err != nil {
		t.Fatalf("create HTTPScaledObject %s as the add-on's users wrote it: %v", name, err)
	}
	u.Object["status"] = map[string]any{
		"targetWorkload": "apps/v1/Deployment/" + name,
		"targetService":  name + ":80",
		"conditions": []any{map[string]any{"type": "Ready", "status": "True", "reason": "HTTPScaledObjectIsReady",
			"message": "Finished object creation", "lastTransitionTime": time.Now().UTC().Format(time.RFC3339)}},
	}
	if err := suite.cluster.Client.Status().Update(ctx, u, client.FieldOwner(addOnFieldManager)); err != nil {
		t.Fatalf("write the add-on's status on %s: %v", name, err)
	}
	hso := &v1alpha1.HTTPScaledObject{}
	if err := suite.cluster.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, hso); err != nil {
		t.Fatal(err)
	}
	return hso
}

// addOnScaledObject is a ScaledObject as the add-on writes it for hso: owned by it with
// blockOwnerDeletion, polled every 15 s, restoring the replica count, its trigger naming the
// add-on's scaler at scalerAddr.
func addOnScaledObject(ns, name string, hso *v1alpha1.HTTPScaledObject, scalerAddr string) *unstructured.Unstructured {
	lo, hi := int64(0), int64(100)
	if r := hso.Spec.Replicas; r != nil {
		lo, hi = int64(ptr.Deref(r.Min, 0)), int64(ptr.Deref(r.Max, 100))
	}
	so := &unstructured.Unstructured{Object: map[string]any{
		"spec": map[string]any{
			"scaleTargetRef":  map[string]any{"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
			"minReplicaCount": lo, "maxReplicaCount": hi,
			"cooldownPeriod":  int64(ptr.Deref(hso.Spec.CooldownPeriod, 300)),
			"pollingInterval": int64(15),
			"advanced":        map[string]any{"restoreToOriginalReplicaCount": true},
			"triggers": []any{map[string]any{"type": "external-push", "metadata": map[string]any{
				"scalerAddress": scalerAddr, "httpScaledObject": name,
			}}},
		},
	}}
	so.SetGroupVersionKind(scaledObjectGVK)
	so.SetNamespace(ns)
	so.SetName(name)
	so.SetLabels(map[string]string{"app.kubernetes.io/managed-by": "keda-add-ons-http"})
	so.SetOwnerReferences([]metav1.OwnerReference{{APIVersion: v1alpha1.GroupVersion.String(), Kind: "HTTPScaledObject",
		Name: name, UID: hso.UID, Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}})
	return so
}

// kedaOriginalReplicas returns the replica count KEDA recorded for the ScaledObject's target when
// it took it over.
func kedaOriginalReplicas(t *testing.T, ns, name string) int32 {
	t.Helper()
	var n int64
	if err := poll.Until(t.Context(), 30*time.Second, "KEDA to record the original replica count of "+ns+"/"+name, func() error {
		so := &unstructured.Unstructured{}
		so.SetGroupVersionKind(scaledObjectGVK)
		if err := suite.cluster.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: name}, so); err != nil {
			return err
		}
		v, ok, err := unstructured.NestedInt64(so.Object, "status", "originalReplicaCount")
		if !ok || err != nil {
			return fmt.Errorf("status.originalReplicaCount unset (%v)", err)
		}
		n = v
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return int32(n)
}

// migrated checks that lobby took the HTTPScaledObject over: Ready, without the add-on's
// finalizer, its ScaledObject controlled by it, scaled through lobby's scaler, with the
// replica count restored on delete and the polling interval as lobby's operator applies them.
func migrated(ctx context.Context, key client.ObjectKey, scalerAddr string) error {
	c := suite.cluster.Client
	hso := &v1alpha1.HTTPScaledObject{}
	if err := c.Get(ctx, key, hso); err != nil {
		return err
	}
	if slices.Contains(hso.Finalizers, v1alpha1.AddOnFinalizer) {
		return fmt.Errorf("still carries the add-on's finalizer")
	}
	ready := meta.FindStatusCondition(hso.Status.Conditions, v1alpha1.ConditionReady)
	if ready == nil || ready.Status != metav1.ConditionTrue || ready.Reason != "Reconciled" || ready.ObservedGeneration != hso.Generation {
		return fmt.Errorf("Ready = %+v, want True/Reconciled", ready)
	}
	so := &unstructured.Unstructured{}
	so.SetGroupVersionKind(scaledObjectGVK)
	if err := c.Get(ctx, key, so); err != nil {
		return err
	}
	triggers, _, _ := unstructured.NestedSlice(so.Object, "spec", "triggers")
	if len(triggers) != 1 {
		return fmt.Errorf("ScaledObject has %d triggers, want 1", len(triggers))
	}
	addr, _, _ := unstructured.NestedString(triggers[0].(map[string]any), "metadata", "scalerAddress")
	if addr != scalerAddr {
		return fmt.Errorf("ScaledObject trigger names scaler %q, want lobby's %q", addr, scalerAddr)
	}
	if ref := metav1.GetControllerOf(so); ref == nil || ref.UID != hso.UID {
		return fmt.Errorf("ScaledObject controller = %v, want the HTTPScaledObject", ref)
	}
	// Lobby's operator, not a leftover of the add-on, sets the fields that restore the workload.
	owned := false
	for _, mf := range so.GetManagedFields() {
		if mf.Manager == "lobby-operator" && mf.FieldsV1 != nil &&
			strings.Contains(string(mf.FieldsV1.Raw), `"f:restoreToOriginalReplicaCount"`) &&
			strings.Contains(string(mf.FieldsV1.Raw), `"f:pollingInterval"`) {
			owned = true
		}
	}
	if !owned {
		return fmt.Errorf("lobby's operator does not own spec.advanced.restoreToOriginalReplicaCount and spec.pollingInterval")
	}
	ready = meta.FindStatusCondition(hso.Status.Conditions, v1alpha1.ConditionScaledObjectReady)
	if ready == nil || ready.Status != metav1.ConditionTrue {
		return fmt.Errorf("ScaledObjectReady = %+v, want KEDA's Ready True mirrored", ready)
	}
	return nil
}

// countedLoad sends requests in a bounded loop and counts what was sent and what was answered.
type countedLoad struct {
	sent, answered atomic.Int64
	cancel         context.CancelFunc
	wg             sync.WaitGroup
	mu             sync.Mutex
	failures       []string
}

// startCountedLoad sends GET url with Host host from workers, each waiting pause between
// requests, until stop, max requests in all, or limit passes.
func startCountedLoad(ctx context.Context, url, host string, workers int, pause time.Duration, max int64, limit time.Duration) *countedLoad {
	ctx, cancel := context.WithTimeout(ctx, limit)
	l := &countedLoad{cancel: cancel}
	for range workers {
		l.wg.Go(func() {
			for ctx.Err() == nil && l.sent.Load() < max {
				l.sent.Add(1)
				r := send(context.WithoutCancel(ctx), http.MethodGet, url, host, nil)
				if r.err == nil && r.code == http.StatusOK {
					l.answered.Add(1)
				} else {
					l.mu.Lock()
					if len(l.failures) < 10 {
						l.failures = append(l.failures, fmt.Sprintf("%s: %d %q %v", r.at.Format(time.TimeOnly), r.code, r.body, r.err))
					}
					l.mu.Unlock()
				}
				select {
				case <-ctx.Done():
				case <-time.After(pause):
				}
			}
		})
	}
	return l
}

// stop ends the load, waits for the requests on their way, and returns the counts.
func (l *countedLoad) stop() (sent, answered int64, failures []string) {
	l.cancel()
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sent.Load(), l.answered.Load(), slices.Clone(l.failures)
}

// pointAt rewrites nginx's upstreams and has it reload them: new requests go to upstreams, and
// the old workers finish the requests they have.
func (in *ingress) pointAt(upstreams []string) error {
	in.upstreams = fixedUpstreams(upstreams)
	conf, err := in.render()
	if err != nil {
		return err
	}
	if err := os.WriteFile(in.conf, conf, 0o644); err != nil {
		return err
	}
	return syscall.Kill(in.proc.PID(), syscall.SIGHUP)
}

// fixedUpstreams returns an ingress's upstreams function for a fixed list.
func fixedUpstreams(upstreams []string) func() []string {
	return func() []string { return upstreams }
}

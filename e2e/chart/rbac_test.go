package chart

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// kedaCRDDir is where e2e/tools/build.sh puts KEDA's CRDs: beside the binaries' folder.
func kedaCRDDir(assets string) string {
	return filepath.Join(filepath.Dir(filepath.Clean(assets)), "keda-crds")
}

// cluster is a real API server with the chart's RBAC applied, and clients for it.
type cluster struct {
	admin  *rest.Config
	dyn    dynamic.Interface
	mapper meta.RESTMapper
	// keda is whether KEDA's CRDs are installed, so that ScaledObjects can be applied.
	keda bool
}

func startCluster(t *testing.T) *cluster {
	t.Helper()
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		t.Skip("KUBEBUILDER_ASSETS is unset: this test needs kube-apiserver and etcd; run `make test`, " +
			"or set it to the folder printed by `bash e2e/tools/build.sh .cache/tools`")
	}
	if testing.Short() {
		t.Skip("skipping the control-plane test in short mode")
	}
	env := &envtest.Environment{}
	c := &cluster{}
	if _, err := os.Stat(kedaCRDDir(assets)); err == nil {
		env.CRDDirectoryPaths = []string{kedaCRDDir(assets)}
		env.ErrorIfCRDPathMissing = true
		c.keda = true
	} else {
		t.Logf("KEDA's CRDs are not at %s: ScaledObjects are not applied (run `make tools`)", kedaCRDDir(assets))
	}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("start control plane: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stop control plane: %v", err)
		}
	})
	// Client-side rate limits would only slow the many small calls down.
	cfg.QPS, cfg.Burst = 500, 1000
	c.admin = cfg
	if c.dyn, err = dynamic.NewForConfig(cfg); err != nil {
		t.Fatal(err)
	}
	c.resetMapper(t)
	return c
}

func (c *cluster) resetMapper(t *testing.T) {
	t.Helper()
	dc, err := discovery.NewDiscoveryClientForConfig(c.admin)
	if err != nil {
		t.Fatal(err)
	}
	c.mapper = restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
}

// resource returns the client for o's kind in o's namespace.
func (c *cluster) resource(o *unstructured.Unstructured) (dynamic.ResourceInterface, error) {
	gvk := o.GroupVersionKind()
	m, err := c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return nil, fmt.Errorf("map %s: %w", gvk, err)
	}
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		return c.dyn.Resource(m.Resource).Namespace(o.GetNamespace()), nil
	}
	return c.dyn.Resource(m.Resource), nil
}

// apply server-side applies o, only validating it when dryRun.
func (c *cluster) apply(ctx context.Context, o *unstructured.Unstructured, dryRun bool) error {
	ri, err := c.resource(o)
	if err != nil {
		return err
	}
	opts := metav1.ApplyOptions{FieldManager: "lobby-chart-test", Force: true}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	if _, err := ri.Apply(ctx, o.GetName(), o, opts); err != nil {
		return fmt.Errorf("apply %s %s/%s (dry run %t): %w", o.GetKind(), o.GetNamespace(), o.GetName(), dryRun, err)
	}
	return nil
}

// install applies the rendered release: the CRD first (waiting until it is served), then a dry
// run of every object, then every object for real.
func (c *cluster) install(t *testing.T, r *Rendered, namespaces ...string) {
	t.Helper()
	ctx := t.Context()
	for _, ns := range namespaces {
		nsObj := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns}}}
		if err := c.apply(ctx, nsObj, false); err != nil {
			t.Fatal(err)
		}
	}
	var objs []*unstructured.Unstructured
	for _, o := range r.Objects {
		switch {
		case ForPrometheusOperator(o):
			t.Logf("not applying %s %s: the Prometheus Operator's CRDs are not available here", o.GetKind(), o.GetName())
			continue
		case o.GetKind() == "ScaledObject" && !c.keda:
			t.Logf("not applying ScaledObject %s: KEDA's CRDs are not installed", o.GetName())
			continue
		case o.GetKind() == "CustomResourceDefinition":
			if err := c.apply(ctx, o, true); err != nil {
				t.Fatal(err)
			}
			if err := c.apply(ctx, o, false); err != nil {
				t.Fatal(err)
			}
			c.waitEstablished(t, o.GetName())
			continue
		}
		objs = append(objs, o)
	}
	c.resetMapper(t)
	for _, o := range objs {
		if err := c.apply(ctx, o, true); err != nil {
			t.Error(err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	for _, o := range objs {
		if err := c.apply(ctx, o, false); err != nil {
			t.Fatal(err)
		}
	}
}

func (c *cluster) waitEstablished(t *testing.T, name string) {
	t.Helper()
	crds := c.dyn.Resource(schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"})
	err := wait.PollUntilContextTimeout(t.Context(), 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		u, err := crds.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
		for _, cond := range conds {
			m, _ := cond.(map[string]any)
			if m["type"] == "Established" && m["status"] == "True" {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("wait for CRD %s to be established: %v", name, err)
	}
}

// as returns a dynamic client acting as the service account.
func (c *cluster) as(t *testing.T, namespace, sa string) dynamic.Interface {
	t.Helper()
	cfg := rest.CopyConfig(c.admin)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:" + namespace + ":" + sa}
	d, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

var (
	httpsoGVR      = schema.GroupVersionResource{Group: "http.keda.sh", Version: "v1alpha1", Resource: "httpscaledobjects"}
	servicesGVR    = schema.GroupVersionResource{Version: "v1", Resource: "services"}
	slicesGVR      = schema.GroupVersionResource{Group: "discovery.k8s.io", Version: "v1", Resource: "endpointslices"}
	secretsGVR     = schema.GroupVersionResource{Version: "v1", Resource: "secrets"}
	deployGVR      = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
	nodesGVR       = schema.GroupVersionResource{Version: "v1", Resource: "nodes"}
	soGVR          = schema.GroupVersionResource{Group: "keda.sh", Version: "v1alpha1", Resource: "scaledobjects"}
	eventsGVR      = schema.GroupVersionResource{Version: "v1", Resource: "events"}
	newEventsGVR   = schema.GroupVersionResource{Group: "events.k8s.io", Version: "v1", Resource: "events"}
	leasesGVR      = schema.GroupVersionResource{Group: "coordination.k8s.io", Version: "v1", Resource: "leases"}
	configMapsGVR  = schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}
	irGVR          = schema.GroupVersionResource{Group: "http.keda.sh", Version: "v1beta1", Resource: "interceptorroutes"}
	podsGVR        = schema.GroupVersionResource{Version: "v1", Resource: "pods"}
	roleBindGVR    = schema.GroupVersionResource{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "rolebindings"}
	clusterBindGVR = schema.GroupVersionResource{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterrolebindings"}
	ssarGVR        = schema.GroupVersionResource{Group: "authorization.k8s.io", Version: "v1", Resource: "selfsubjectaccessreviews"}
)

// call is one request a binary makes (or must not be able to make).
type call struct {
	name string
	do   func(ctx context.Context, d dynamic.Interface) error
}

func list(gvr schema.GroupVersionResource, ns string) call {
	return call{fmt.Sprintf("list %s in %q", gvr.Resource, ns), func(ctx context.Context, d dynamic.Interface) error {
		_, err := d.Resource(gvr).Namespace(ns).List(ctx, metav1.ListOptions{Limit: 1})
		return err
	}}
}

func watch(gvr schema.GroupVersionResource, ns string) call {
	return call{fmt.Sprintf("watch %s in %q", gvr.Resource, ns), func(ctx context.Context, d dynamic.Interface) error {
		// A watch list streams the current objects and a bookmark at once, so the server answers
		// without waiting for a change; the authorizer has decided by then either way.
		w, err := d.Resource(gvr).Namespace(ns).Watch(ctx, metav1.ListOptions{
			SendInitialEvents: ptrTo(true), ResourceVersionMatch: metav1.ResourceVersionMatchNotOlderThan,
			AllowWatchBookmarks: true, TimeoutSeconds: ptrTo(int64(5)),
		})
		if err == nil {
			w.Stop()
		}
		return err
	}}
}

func get(gvr schema.GroupVersionResource, ns, name string) call {
	return call{fmt.Sprintf("get %s %s/%s", gvr.Resource, ns, name), func(ctx context.Context, d dynamic.Interface) error {
		_, err := d.Resource(gvr).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
		return err
	}}
}

func create(gvr schema.GroupVersionResource, ns string, obj map[string]any) call {
	return call{fmt.Sprintf("create %s in %q", gvr.Resource, ns), func(ctx context.Context, d dynamic.Interface) error {
		_, err := d.Resource(gvr).Namespace(ns).Create(ctx, &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{})
		return err
	}}
}

func patch(gvr schema.GroupVersionResource, ns, name string, sub ...string) call {
	what := gvr.Resource
	if len(sub) > 0 {
		what += "/" + strings.Join(sub, "/")
	}
	return call{fmt.Sprintf("patch %s %s/%s", what, ns, name), func(ctx context.Context, d dynamic.Interface) error {
		_, err := d.Resource(gvr).Namespace(ns).Patch(ctx, name, types.MergePatchType,
			[]byte(`{"metadata":{"annotations":{"lobby.dev/touched":"yes"}}}`), metav1.PatchOptions{}, sub...)
		return err
	}}
}

func del(gvr schema.GroupVersionResource, ns, name string) call {
	return call{fmt.Sprintf("delete %s %s/%s", gvr.Resource, ns, name), func(ctx context.Context, d dynamic.Interface) error {
		return d.Resource(gvr).Namespace(ns).Delete(ctx, name, metav1.DeleteOptions{})
	}}
}

func createSub(gvr schema.GroupVersionResource, ns, name, sub string, obj map[string]any) call {
	return call{fmt.Sprintf("create %s/%s %s/%s", gvr.Resource, sub, ns, name), func(ctx context.Context, d dynamic.Interface) error {
		_, err := d.Resource(gvr).Namespace(ns).Create(ctx, &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{}, sub)
		return err
	}}
}

// can asks the API server, as the impersonated account, whether it may do verb on resource (a
// SelfSubjectAccessReview), for what cannot be tried without side effects or needs a protocol
// the dynamic client does not speak (impersonate, escalate, bind, connect verbs). It answers as
// the request itself would: nil when allowed, Forbidden when not.
func can(verb, group, resource, subresource, ns string) call {
	what := resource
	if subresource != "" {
		what += "/" + subresource
	}
	if group != "" {
		what += "." + group
	}
	return call{fmt.Sprintf("%s %s in %q (access review)", verb, what, ns), func(ctx context.Context, d dynamic.Interface) error {
		review := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
			"spec": map[string]any{"resourceAttributes": map[string]any{
				"verb": verb, "group": group, "resource": resource, "subresource": subresource, "namespace": ns,
			}},
		}}
		out, err := d.Resource(ssarGVR).Create(ctx, review, metav1.CreateOptions{})
		if err != nil {
			// Not %w: a refused review must not pass for a refused request.
			return fmt.Errorf("create SelfSubjectAccessReview: %v", err)
		}
		if ok, _, _ := unstructured.NestedBool(out.Object, "status", "allowed"); ok {
			return nil
		}
		return apierrors.NewForbidden(schema.GroupResource{Group: group, Resource: what}, "", errors.New("denied by a SelfSubjectAccessReview"))
	}}
}

// denyAll is what none of lobby's service accounts may do, wherever it is installed: read
// Secrets, run or exec into pods, scale workloads (KEDA's job), grant or escalate permissions,
// mint tokens, impersonate, reach nodes, or change cluster-wide objects.
func denyAll(ns, appNS string) []call {
	secret := map[string]any{"apiVersion": "v1", "kind": "Secret", "metadata": map[string]any{"name": "stolen"}}
	pod := map[string]any{"apiVersion": "v1", "kind": "Pod", "metadata": map[string]any{"name": "intruder"},
		"spec": map[string]any{"containers": []any{map[string]any{"name": "c", "image": "busybox"}}}}
	binding := map[string]any{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
		"metadata": map[string]any{"name": "grab"},
		"roleRef":  map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
		"subjects": []any{map[string]any{"kind": "ServiceAccount", "name": "default", "namespace": ns}}}
	clusterBinding := map[string]any{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
		"metadata": map[string]any{"name": "grab"},
		"roleRef":  map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
		"subjects": []any{map[string]any{"kind": "ServiceAccount", "name": "default", "namespace": ns}}}
	exec := map[string]any{"apiVersion": "v1", "kind": "PodExecOptions", "metadata": map[string]any{"name": "shop-0"},
		"command": []any{"sh"}}
	return []call{
		get(secretsGVR, ns, "lobby-scaler-tls"), list(secretsGVR, ns), list(secretsGVR, ""), watch(secretsGVR, appNS),
		create(secretsGVR, ns, secret),
		list(podsGVR, appNS), create(podsGVR, appNS, pod), createSub(podsGVR, appNS, "shop-0", "exec", exec),
		can("create", "", "pods", "exec", appNS), can("create", "", "pods", "portforward", appNS), can("get", "", "pods", "log", appNS),
		patch(deployGVR, appNS, "shop", "scale"), patch(deployGVR, ns, "lobby-operator"),
		create(roleBindGVR, ns, binding), create(roleBindGVR, appNS, binding), create(clusterBindGVR, "", clusterBinding),
		can("escalate", "rbac.authorization.k8s.io", "clusterroles", "", ""), can("bind", "rbac.authorization.k8s.io", "clusterroles", "", ""),
		can("impersonate", "", "users", "", ""), can("impersonate", "", "serviceaccounts", "", ns),
		can("create", "", "serviceaccounts", "token", ns), can("get", "", "nodes", "proxy", ""), list(nodesGVR, ""),
		can("create", "", "namespaces", "", ""), can("delete", "", "namespaces", "", appNS),
		can("update", "apiextensions.k8s.io", "customresourcedefinitions", "", ""),
		can("patch", "admissionregistration.k8s.io", "validatingwebhookconfigurations", "", ""),
		can("update", "apiregistration.k8s.io", "apiservices", "", ""),
		del(httpsoGVR, appNS, "shop"),
		create(configMapsGVR, "kube-system", map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": "x"}}),
	}
}

func ptrTo[T any](v T) *T { return &v }

// allowed reports whether err is an authorization success: NotFound or AlreadyExists mean the
// request got past the authorizer.
func allowed(err error) bool {
	return err == nil || apierrors.IsNotFound(err) || apierrors.IsAlreadyExists(err)
}

func TestRBACAgainstAPIServer(t *testing.T) {
	c := startCluster(t)
	tests := []struct {
		name    string
		release string
		ns      string
		watch   string
		files   []string
	}{
		{name: "with the defaults every binary can do its work and nothing more", release: "lobby", ns: "lobby-system"},
		{name: "watching one namespace confines every binary to it", release: "edge", ns: "edge-system", watch: "apps",
			files: []string{filepath.Join(Dir(), "ci", "namespace-values.yaml")}},
		{name: "the self-scaling and monitoring values apply too", release: "scaled", ns: "scaled-system",
			files: []string{filepath.Join(Dir(), "ci", "autoscaling-values.yaml"), filepath.Join(Dir(), "ci", "monitoring-values.yaml"),
				filepath.Join(Dir(), "ci", "scaler-tls-values.yaml")}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := Render(t.Context(), tc.release, tc.ns, tc.files, nil)
			if err != nil {
				t.Fatal(err)
			}
			appNS := tc.watch
			if appNS == "" {
				appNS = "shop"
			}
			c.install(t, r, tc.ns, appNS, "elsewhere")
			if tc.watch != "" {
				// TokenReviews are cluster-scoped: that grant is the only cluster-wide one.
				for _, o := range r.OfKind("ClusterRole") {
					if o.GetName() != tc.release+"-interceptor-tokenreviews" {
						t.Fatalf("a single-namespace release renders the ClusterRole %s", o.GetName())
					}
				}
			}
			c.checkCalls(t, tc.release, tc.ns, tc.watch, appNS)
		})
	}
}

// checkCalls impersonates each binary's service account and makes the calls the binary makes
// (which must be allowed) and some it must not be able to make (which must be Forbidden).
func (c *cluster) checkCalls(t *testing.T, release, ns, watchNS, appNS string) {
	t.Helper()
	ctx := t.Context()
	scope := watchNS // "" lists across every namespace
	// An HTTPScaledObject to patch, created as the administrator.
	hso := map[string]any{
		"apiVersion": "http.keda.sh/v1alpha1", "kind": "HTTPScaledObject",
		"metadata": map[string]any{"name": "shop", "namespace": appNS},
		"spec": map[string]any{"hosts": []any{"shop.example.com"},
			"scaleTargetRef": map[string]any{"name": "shop", "service": "shop", "port": int64(8080)}},
	}
	if _, err := c.dyn.Resource(httpsoGVR).Namespace(appNS).Create(ctx, &unstructured.Unstructured{Object: hso}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("create HTTPScaledObject as administrator: %v", err)
	}
	event := func(apiVersion string) map[string]any {
		e := map[string]any{"apiVersion": apiVersion, "kind": "Event",
			"metadata": map[string]any{"generateName": "shop-", "namespace": appNS},
			"reason":   "Reconciled", "type": "Normal"}
		if apiVersion == "v1" {
			e["involvedObject"] = map[string]any{"kind": "HTTPScaledObject", "name": "shop", "namespace": appNS}
			e["message"] = "ScaledObject written"
		} else {
			e["regarding"] = map[string]any{"kind": "HTTPScaledObject", "name": "shop", "namespace": appNS}
			e["note"] = "ScaledObject written"
			e["action"] = "Reconcile"
			e["reportingController"] = "lobby.dev/operator"
			e["reportingInstance"] = "operator-0"
			e["eventTime"] = time.Now().UTC().Format("2006-01-02T15:04:05.000000Z07:00")
		}
		return e
	}
	lease := map[string]any{"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
		"metadata": map[string]any{"name": "lobby-operator", "namespace": ns},
		"spec":     map[string]any{"holderIdentity": "operator-0", "leaseDurationSeconds": int64(15)}}
	so := map[string]any{"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
		"metadata": map[string]any{"name": "shop", "namespace": appNS},
		"spec": map[string]any{"scaleTargetRef": map[string]any{"name": "shop"},
			"triggers": []any{map[string]any{"type": "external-push",
				"metadata": map[string]any{"scalerAddress": release + "-scaler." + ns + ".svc.cluster.local:9090", "httpScaledObject": "shop"}}}}}

	tests := []struct {
		sa      string
		allowed []call
		refused []call
	}{
		{
			sa: "interceptor",
			allowed: []call{
				list(httpsoGVR, scope), watch(httpsoGVR, scope), get(httpsoGVR, appNS, "shop"),
				list(servicesGVR, scope), watch(servicesGVR, scope), get(servicesGVR, appNS, "shop"),
				list(slicesGVR, scope), watch(slicesGVR, scope), get(slicesGVR, appNS, "shop-abcde"),
				can("watch", "discovery.k8s.io", "endpointslices", "", appNS),
				list(irGVR, scope), watch(irGVR, scope),
				// Response bodies of InterceptorRoutes: one ConfigMap at a time, by field selector.
				list(configMapsGVR, appNS), watch(configMapsGVR, appNS),
				// The admin API's tokens.
				can("create", "authentication.k8s.io", "tokenreviews", "", ""),
			},
			refused: []call{
				create(secretsGVR, appNS, map[string]any{"apiVersion": "v1", "kind": "Secret", "metadata": map[string]any{"name": "stolen"}}),
				list(secretsGVR, appNS),
				patch(httpsoGVR, appNS, "shop"),
				get(configMapsGVR, ns, "x"),
				create(configMapsGVR, appNS, map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": "x"}}),
				patch(irGVR, appNS, "shop", "status"),
				// The routing table's sources: writing them would redirect traffic.
				create(slicesGVR, appNS, map[string]any{"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
					"metadata":    map[string]any{"name": "shop-hijack", "labels": map[string]any{"kubernetes.io/service-name": "shop"}},
					"addressType": "IPv4", "endpoints": []any{}}),
				patch(servicesGVR, appNS, "shop"),
				patch(httpsoGVR, appNS, "shop", "status"),
				can("create", "keda.sh", "scaledobjects", "", appNS),
				can("create", "", "events", "", appNS),
			},
		},
		{
			sa: "scaler",
			allowed: []call{
				list(httpsoGVR, scope), watch(httpsoGVR, scope), get(httpsoGVR, appNS, "shop"),
				list(irGVR, scope), watch(irGVR, scope),
				list(slicesGVR, ns), watch(slicesGVR, ns), get(slicesGVR, ns, release+"-interceptor-admin-abcde"),
			},
			refused: []call{
				patch(deployGVR, ns, release+"-operator"),
				list(slicesGVR, appNS),
				watch(slicesGVR, ""),
				list(slicesGVR, ""),
				list(servicesGVR, ns),
				patch(httpsoGVR, appNS, "shop", "status"),
				// The interceptors' EndpointSlices tell the scaler whom to trust for counts.
				create(slicesGVR, ns, map[string]any{"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
					"metadata":    map[string]any{"name": "fake-interceptors", "labels": map[string]any{"kubernetes.io/service-name": release + "-interceptor-admin"}},
					"addressType": "IPv4", "endpoints": []any{}}),
				patch(slicesGVR, ns, release+"-interceptor-admin-abcde"),
				patch(httpsoGVR, appNS, "shop"),
				can("create", "keda.sh", "scaledobjects", "", appNS),
				can("get", "keda.sh", "scaledobjects", "", appNS),
				can("create", "coordination.k8s.io", "leases", "", ns),
				can("create", "authentication.k8s.io", "tokenreviews", "", ""),
			},
		},
		{
			sa: "operator",
			allowed: append([]call{
				list(httpsoGVR, scope), watch(httpsoGVR, scope), get(httpsoGVR, appNS, "shop"),
				patch(httpsoGVR, appNS, "shop"), patch(httpsoGVR, appNS, "shop", "status"),
				list(servicesGVR, scope), watch(servicesGVR, scope), get(servicesGVR, appNS, "shop"),
				create(eventsGVR, appNS, event("v1")), create(newEventsGVR, appNS, event("events.k8s.io/v1")),
				create(leasesGVR, ns, lease), get(leasesGVR, ns, "lobby-operator"), patch(leasesGVR, ns, "lobby-operator"),
				list(leasesGVR, ns), del(leasesGVR, ns, "lobby-operator"),
				list(soGVR, scope), watch(soGVR, scope),
				can("create", "keda.sh", "scaledobjects", "", appNS), can("patch", "http.keda.sh", "httpscaledobjects", "status", appNS),
				list(irGVR, scope), watch(irGVR, scope), can("patch", "http.keda.sh", "interceptorroutes", "status", appNS),
				can("get", "", "configmaps", "", appNS),
			}, c.scaledObjectCalls(appNS, so)...),
			refused: []call{
				del(nodesGVR, "", "node-1"),
				del(httpsoGVR, appNS, "shop"),
				create(secretsGVR, appNS, map[string]any{"apiVersion": "v1", "kind": "Secret", "metadata": map[string]any{"name": "stolen"}}),
				patch(deployGVR, appNS, "shop"),
				create(leasesGVR, appNS, lease),
				create(leasesGVR, "kube-system", lease),
				patch(servicesGVR, appNS, "shop"),
				can("create", "", "services", "", appNS),
				can("create", "discovery.k8s.io", "endpointslices", "", appNS),
				can("create", "http.keda.sh", "httpscaledobjects", "", appNS),
				// InterceptorRoutes are the users': the operator only writes their status.
				can("patch", "http.keda.sh", "interceptorroutes", "", appNS),
				// ConfigMaps are read one at a time by name, never listed.
				list(configMapsGVR, appNS),
				// KEDA's other kinds: the operator writes ScaledObjects only.
				can("create", "keda.sh", "triggerauthentications", "", appNS),
				can("create", "keda.sh", "clustertriggerauthentications", "", ""),
				can("create", "keda.sh", "scaledjobs", "", appNS),
				can("create", "autoscaling", "horizontalpodautoscalers", "", appNS),
			},
		},
	}
	for i := range tests {
		tests[i].refused = append(tests[i].refused, denyAll(ns, appNS)...)
	}
	if watchNS != "" {
		// Confined to the watched namespace: the same reads elsewhere are refused.
		tests[0].refused = append(tests[0].refused, list(httpsoGVR, ""), watch(httpsoGVR, ""), list(servicesGVR, "elsewhere"),
			watch(slicesGVR, "elsewhere"))
		tests[1].refused = append(tests[1].refused, list(httpsoGVR, ""), list(httpsoGVR, "elsewhere"))
		tests[2].refused = append(tests[2].refused, list(httpsoGVR, ""), patch(httpsoGVR, "elsewhere", "shop"),
			create(eventsGVR, "elsewhere", event("v1")), can("create", "keda.sh", "scaledobjects", "", "elsewhere"),
			can("list", "", "services", "", "elsewhere"))
	}
	for _, tc := range tests {
		d := c.as(t, ns, release+"-"+tc.sa)
		for _, call := range tc.allowed {
			if err := call.do(ctx, d); !allowed(err) {
				t.Errorf("the %s may %s, but the API server said: %v", tc.sa, call.name, err)
			}
		}
		for _, call := range tc.refused {
			err := call.do(ctx, d)
			if !apierrors.IsForbidden(err) {
				t.Errorf("the %s must not %s: want Forbidden, got %v", tc.sa, call.name, errOrNil(err))
			}
		}
	}
}

// scaledObjectCalls are the operator's writes of KEDA ScaledObjects, when KEDA's CRD is there.
func (c *cluster) scaledObjectCalls(ns string, so map[string]any) []call {
	if !c.keda {
		return nil
	}
	return []call{create(soGVR, ns, so), get(soGVR, ns, "shop"), patch(soGVR, ns, "shop"), del(soGVR, ns, "shop")}
}

func errOrNil(err error) error {
	if err == nil {
		return errors.New("no error: the request was allowed")
	}
	return err
}

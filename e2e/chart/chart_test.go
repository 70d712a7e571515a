package chart

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"
)

const (
	testRelease   = "lobby"
	testNamespace = "lobby-system"
)

// ciValues returns the values files Helm's chart-testing convention keeps in ci/.
func ciValues(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(Dir(), "ci", "*.yaml"))
	if err != nil || len(files) < 5 {
		t.Fatalf("want at least 5 values files in charts/lobby/ci, got %v (%v)", files, err)
	}
	return files
}

func render(t *testing.T, files []string, set map[string]string) *Rendered {
	t.Helper()
	r, err := Render(t.Context(), testRelease, testNamespace, files, set)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func convert[T any](t *testing.T, o *unstructured.Unstructured) *T {
	t.Helper()
	out := new(T)
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, out); err != nil {
		t.Fatalf("convert %s %s: %v", o.GetKind(), o.GetName(), err)
	}
	return out
}

func TestLint(t *testing.T) {
	if testing.Short() {
		t.Skip("helm lint runs Helm; skipped in short mode")
	}
	for _, f := range append([]string{""}, ciValues(t)...) {
		name := "the chart lints strictly with " + filepath.Base(f)
		if f == "" {
			name = "the chart lints strictly with no values file"
		}
		t.Run(name, func(t *testing.T) {
			args := []string{"lint", "--strict", Dir(), "--namespace", testNamespace}
			if f != "" {
				args = append(args, "--values", f)
			}
			if out, err := RunHelm(t.Context(), args...); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
		})
	}
}

func TestTemplateInvariants(t *testing.T) {
	if testing.Short() {
		t.Skip("rendering runs Helm; skipped in short mode")
	}
	for _, f := range ciValues(t) {
		t.Run("every invariant holds with "+filepath.Base(f), func(t *testing.T) {
			r := render(t, []string{f}, nil)
			p, err := r.Process("interceptor")
			if err != nil {
				t.Fatal(err)
			}
			watchNS := p.Env["LOBBY_WATCH_NAMESPACE"]
			checkObjects(t, r)
			checkPods(t, r)
			checkServices(t, r)
			checkRBAC(t, r, watchNS)
			checkProcesses(t, r)
		})
	}
}

// checkObjects: every namespaced object is in the release namespace (or the watched one, for
// RBAC) and the CRD is the generated one.
func checkObjects(t *testing.T, r *Rendered) {
	t.Helper()
	clusterScoped := map[string]bool{"CustomResourceDefinition": true, "ClusterRole": true, "ClusterRoleBinding": true}
	for _, o := range r.Objects {
		if clusterScoped[o.GetKind()] {
			if o.GetNamespace() != "" {
				t.Errorf("%s %s is cluster-scoped but has namespace %q", o.GetKind(), o.GetName(), o.GetNamespace())
			}
			continue
		}
		if o.GetNamespace() == "" {
			t.Errorf("%s %s has no namespace", o.GetKind(), o.GetName())
		}
	}
	crds := r.OfKind("CustomResourceDefinition")
	var names []string
	for _, c := range crds {
		names = append(names, c.GetName())
	}
	slices.Sort(names)
	if want := []string{"httpscaledobjects.http.keda.sh", "interceptorroutes.http.keda.sh"}; !slices.Equal(names, want) {
		t.Fatalf("want exactly the CRDs %v, got %v", want, names)
	}
	for _, file := range []string{"http.keda.sh_httpscaledobjects.yaml", "http.keda.sh_interceptorroutes.yaml"} {
		want, err := os.ReadFile(filepath.Join(repoRoot(), "config", "crd", file))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(Dir(), "crds", file))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(want, got) {
			t.Errorf("charts/lobby/crds/%s differs from config/crd: run `bash hack/sync-chart-crds.sh`", file)
		}
	}
}

func checkPods(t *testing.T, r *Rendered) {
	t.Helper()
	deps := r.OfKind("Deployment")
	if len(deps) != 3 {
		t.Fatalf("want 3 Deployments, got %d", len(deps))
	}
	for _, o := range deps {
		d := convert[appsv1.Deployment](t, o)
		pod := d.Spec.Template.Spec
		if pod.SecurityContext == nil || pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot {
			t.Errorf("Deployment %s: pod securityContext must set runAsNonRoot", d.Name)
		}
		if pod.ServiceAccountName == "" || r.Find("ServiceAccount", pod.ServiceAccountName) == nil {
			t.Errorf("Deployment %s: service account %q is not rendered", d.Name, pod.ServiceAccountName)
		}
		if !reflect.DeepEqual(d.Spec.Selector.MatchLabels, selectorOf(d.Spec.Template.Labels)) {
			t.Errorf("Deployment %s: selector %v does not match the pod's selector labels", d.Name, d.Spec.Selector.MatchLabels)
		}
		for _, c := range append(slices.Clone(pod.InitContainers), pod.Containers...) {
			where := fmt.Sprintf("Deployment %s container %s", d.Name, c.Name)
			checkSecurityContext(t, where, c.SecurityContext)
			if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet == nil {
				t.Errorf("%s: no HTTP liveness probe", where)
			}
			if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil {
				t.Errorf("%s: no HTTP readiness probe", where)
			}
			for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
				if q, ok := c.Resources.Requests[res]; !ok || q.IsZero() {
					t.Errorf("%s: no %s request", where, res)
				}
			}
			if q, ok := c.Resources.Limits[corev1.ResourceMemory]; !ok || q.IsZero() {
				t.Errorf("%s: no memory limit", where)
			}
		}
	}
	for _, name := range []string{testRelease + "-interceptor", testRelease + "-scaler"} {
		if r.Find("PodDisruptionBudget", name) == nil {
			t.Errorf("no PodDisruptionBudget %s", name)
		}
	}
}

func selectorOf(labels map[string]string) map[string]string {
	out := map[string]string{}
	for _, k := range []string{"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component"} {
		out[k] = labels[k]
	}
	return out
}

func checkSecurityContext(t *testing.T, where string, sc *corev1.SecurityContext) {
	t.Helper()
	switch {
	case sc == nil:
		t.Errorf("%s: no securityContext", where)
	case sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot:
		t.Errorf("%s: runAsNonRoot is not true", where)
	case sc.RunAsUser == nil || *sc.RunAsUser != 65532:
		t.Errorf("%s: runAsUser is not 65532", where)
	case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
		t.Errorf("%s: readOnlyRootFilesystem is not true", where)
	case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
		t.Errorf("%s: allowPrivilegeEscalation is not false", where)
	case sc.Capabilities == nil || !reflect.DeepEqual(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0:
		t.Errorf("%s: capabilities must drop ALL and add none, got %+v", where, sc.Capabilities)
	case sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault:
		t.Errorf("%s: seccompProfile is not RuntimeDefault", where)
	}
}

func checkServices(t *testing.T, r *Rendered) {
	t.Helper()
	ports := func(name string) map[string]int32 {
		o := r.Find("Service", name)
		if o == nil {
			t.Fatalf("no Service %s", name)
		}
		out := map[string]int32{}
		for _, p := range convert[corev1.Service](t, o).Spec.Ports {
			out[p.Name] = p.Port
			if p.TargetPort.StrVal != p.Name {
				t.Errorf("Service %s port %s targets %v, want the container port of the same name", name, p.Name, p.TargetPort.String())
			}
		}
		return out
	}
	proxy := ports(testRelease + "-interceptor-proxy")
	want := map[string]int32{"http": 8080}
	if p, _ := r.Process("interceptor"); p.Env["LOBBY_PROXY_TLS_ADDR"] != "" {
		want["https"] = 8443
	}
	if !reflect.DeepEqual(proxy, want) {
		t.Errorf("the proxy Service must carry only port http 8080, and https 8443 with TLS (never admin), got %v", proxy)
	}
	if admin := ports(testRelease + "-interceptor-admin"); !reflect.DeepEqual(admin, map[string]int32{"admin": 9090}) {
		t.Errorf("the interceptor admin Service must carry only port admin 9090, got %v", admin)
	}
	if scaler := ports(testRelease + "-scaler"); scaler["grpc"] != 9090 {
		t.Errorf("the scaler Service must carry port grpc 9090, got %v", scaler)
	}
}

// grant is one permission of one service account: a verb on a resource in a namespace ("*" for
// every namespace).
type grant struct {
	sa, namespace, group, resource, verb string
}

func (g grant) String() string {
	group := g.group
	if group == "" {
		group = "core"
	}
	return fmt.Sprintf("%s may %s %s.%s in %s", g.sa, g.verb, g.resource, group, g.namespace)
}

// contractGrants are the permissions the configuration contract gives each binary, and nothing
// else.
func contractGrants(release, ns, watchNS string) map[grant]bool {
	watch := "*"
	if watchNS != "" {
		watch = watchNS
	}
	out := map[grant]bool{}
	add := func(component, namespace, group, resource string, verbs ...string) {
		for _, v := range verbs {
			out[grant{release + "-" + component, namespace, group, resource, v}] = true
		}
	}
	read := []string{"get", "list", "watch"}
	add("interceptor", watch, "http.keda.sh", "httpscaledobjects", read...)
	add("interceptor", watch, "http.keda.sh", "interceptorroutes", read...)
	// One ConfigMap at a time, by field selector: list and watch, never get.
	add("interceptor", watch, "", "configmaps", "list", "watch")
	add("interceptor", watch, "", "services", read...)
	add("interceptor", watch, "discovery.k8s.io", "endpointslices", read...)
	// The tokens presented to the admin API are checked with TokenReviews, which are
	// cluster-scoped whatever the release watches.
	add("interceptor", "*", "authentication.k8s.io", "tokenreviews", "create")

	add("scaler", watch, "http.keda.sh", "httpscaledobjects", read...)
	add("scaler", watch, "http.keda.sh", "interceptorroutes", read...)
	add("scaler", ns, "discovery.k8s.io", "endpointslices", read...)

	add("operator", watch, "http.keda.sh", "httpscaledobjects", "get", "list", "watch", "update", "patch")
	add("operator", watch, "http.keda.sh", "httpscaledobjects/status", "get", "update", "patch")
	add("operator", watch, "http.keda.sh", "interceptorroutes", read...)
	add("operator", watch, "http.keda.sh", "interceptorroutes/status", "get", "update", "patch")
	add("operator", watch, "", "configmaps", "get")
	add("operator", watch, "keda.sh", "scaledobjects", "get", "list", "watch", "create", "update", "patch", "delete")
	add("operator", watch, "", "services", read...)
	for _, n := range []string{watch, ns} {
		add("operator", n, "", "events", "create", "patch")
		add("operator", n, "events.k8s.io", "events", "create", "patch")
	}
	add("operator", ns, "coordination.k8s.io", "leases", "get", "list", "watch", "create", "update", "patch", "delete")
	// A cluster-wide grant covers the release namespace too.
	for g := range out {
		if g.namespace == ns && out[grant{g.sa, "*", g.group, g.resource, g.verb}] {
			delete(out, g)
		}
	}
	return out
}

// renderedGrants resolves the rendered bindings to the permissions they give.
func renderedGrants(t *testing.T, r *Rendered) map[grant]bool {
	t.Helper()
	rules := map[string][]rbacv1.PolicyRule{}
	for _, o := range r.OfKind("ClusterRole") {
		rules["ClusterRole/"+o.GetName()] = convert[rbacv1.ClusterRole](t, o).Rules
	}
	for _, o := range r.OfKind("Role") {
		rules["Role/"+o.GetNamespace()+"/"+o.GetName()] = convert[rbacv1.Role](t, o).Rules
	}
	out := map[grant]bool{}
	bind := func(where, namespace string, ref rbacv1.RoleRef, subjects []rbacv1.Subject) {
		key := ref.Kind + "/" + ref.Name
		if ref.Kind == "Role" {
			key = "Role/" + namespace + "/" + ref.Name
		}
		rs, ok := rules[key]
		if !ok {
			t.Errorf("%s refers to %s, which is not rendered", where, key)
		}
		for _, s := range subjects {
			if s.Kind != "ServiceAccount" || s.Namespace != testNamespace {
				t.Errorf("%s binds %s %s/%s; want service accounts of the release namespace", where, s.Kind, s.Namespace, s.Name)
			}
			for _, rule := range rs {
				if len(rule.ResourceNames) > 0 || len(rule.NonResourceURLs) > 0 {
					t.Errorf("%s: unexpected resourceNames or nonResourceURLs in %+v", key, rule)
				}
				for _, g := range rule.APIGroups {
					for _, res := range rule.Resources {
						for _, v := range rule.Verbs {
							if g == "*" || res == "*" || v == "*" {
								t.Errorf("%s: wildcard in %+v", key, rule)
							}
							out[grant{s.Name, namespace, g, res, v}] = true
						}
					}
				}
			}
		}
	}
	for _, o := range r.OfKind("ClusterRoleBinding") {
		b := convert[rbacv1.ClusterRoleBinding](t, o)
		bind("ClusterRoleBinding "+b.Name, "*", b.RoleRef, b.Subjects)
	}
	for _, o := range r.OfKind("RoleBinding") {
		b := convert[rbacv1.RoleBinding](t, o)
		bind("RoleBinding "+b.Name, b.Namespace, b.RoleRef, b.Subjects)
	}
	for g := range out {
		if g.namespace == testNamespace && out[grant{g.sa, "*", g.group, g.resource, g.verb}] {
			delete(out, g)
		}
	}
	return out
}

func checkRBAC(t *testing.T, r *Rendered, watchNS string) {
	t.Helper()
	got := renderedGrants(t, r)
	want := contractGrants(testRelease, testNamespace, watchNS)
	var missing, extra []string
	for g := range want {
		if !got[g] {
			missing = append(missing, g.String())
		}
	}
	for g := range got {
		if !want[g] {
			extra = append(extra, g.String())
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	if len(missing)+len(extra) > 0 {
		t.Errorf("RBAC differs from the contract:\nmissing:\n  %s\nnot in the contract:\n  %s",
			strings.Join(missing, "\n  "), strings.Join(extra, "\n  "))
	}
	if watchNS != "" {
		// TokenReviews are cluster-scoped: that grant is the only cluster-wide one.
		for _, o := range r.OfKind("ClusterRole") {
			if o.GetName() != testRelease+"-interceptor-tokenreviews" {
				t.Errorf("watching one namespace must render no ClusterRole but the TokenReview one, got %s", o.GetName())
			}
		}
	}
}

func checkProcesses(t *testing.T, r *Rendered) {
	t.Helper()
	for _, c := range Components {
		p, err := r.Process(c)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]string{"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}
		if !reflect.DeepEqual(p.FieldRefs, want) {
			t.Errorf("%s: downward API env %v, want %v", c, p.FieldRefs, want)
		}
		for _, k := range []string{"LOBBY_LOG_LEVEL", "LOBBY_LOG_FORMAT"} {
			if p.Env[k] == "" {
				t.Errorf("%s: %s unset", c, k)
			}
		}
		if p.Probes.Liveness == nil || p.Probes.Readiness == nil {
			t.Errorf("%s: liveness or readiness probe missing", c)
		}
	}
	ic, _ := r.Process("interceptor")
	delay, err1 := time.ParseDuration(ic.Env["LOBBY_DRAIN_DELAY"])
	timeout, err2 := time.ParseDuration(ic.Env["LOBBY_DRAIN_TIMEOUT"])
	if err1 != nil || err2 != nil {
		t.Fatalf("interceptor drain durations do not parse: %v %v", err1, err2)
	}
	if ic.TerminationGracePeriod < delay+timeout+5*time.Second {
		t.Errorf("interceptor grace period %s is shorter than drain delay %s + drain timeout %s + 5s", ic.TerminationGracePeriod, delay, timeout)
	}
	sc, _ := r.Process("scaler")
	if sc.Env["LOBBY_INTERCEPTOR_SERVICE"] != testRelease+"-interceptor-admin" || r.Find("Service", sc.Env["LOBBY_INTERCEPTOR_SERVICE"]) == nil {
		t.Errorf("scaler LOBBY_INTERCEPTOR_SERVICE %q does not name the rendered interceptor admin Service", sc.Env["LOBBY_INTERCEPTOR_SERVICE"])
	}
	if sc.Replicas < 2 {
		t.Errorf("scaler replicas %d, want at least 2", sc.Replicas)
	}
	op, _ := r.Process("operator")
	wantAddr := fmt.Sprintf("%s-scaler.%s.svc.cluster.local:9090", testRelease, testNamespace)
	if op.Env["LOBBY_SCALER_ADDRESS"] != wantAddr {
		t.Errorf("operator LOBBY_SCALER_ADDRESS %q, want %q", op.Env["LOBBY_SCALER_ADDRESS"], wantAddr)
	}
	if op.Replicas < 1 || op.Replicas > 2 {
		t.Errorf("operator replicas %d, want 1 or 2", op.Replicas)
	}
}

func TestProcessOfTheDefaults(t *testing.T) {
	if testing.Short() {
		t.Skip("rendering runs Helm; skipped in short mode")
	}
	r := render(t, nil, nil)
	tests := []struct {
		name      string
		component string
		env       map[string]string
		ports     map[string]int32
		probe     Probe
	}{
		{
			name:      "the interceptor listens on the proxy and admin ports and drains for 45 seconds",
			component: "interceptor",
			env: map[string]string{
				"LOBBY_PROXY_ADDR": ":8080", "LOBBY_ADMIN_ADDR": ":9090", "LOBBY_WATCH_NAMESPACE": "",
				"LOBBY_COLD_START_TIMEOUT": "0s", "LOBBY_RESPONSE_HEADER_TIMEOUT": "300s", "LOBBY_REQUEST_TIMEOUT": "0s",
				"LOBBY_MAX_PENDING_REQUESTS": "1000", "LOBBY_ADDON_COLD_START_HEADER": "false", "LOBBY_STREAM_INTERVAL": "1s", "LOBBY_STREAM_WRITE_TIMEOUT": "10s",
				// Two scalers and one more in their rolling update, twice, and eight for tools.
				"LOBBY_STREAM_MAX_SUBSCRIBERS": "14",
				"LOBBY_ADMIN_TOKEN_AUDIENCE":   "lobby-interceptor", "LOBBY_ADMIN_ALLOWED_SERVICE_ACCOUNTS": testNamespace + "/lobby-scaler",
				"LOBBY_ADMIN_AUTH_CACHE_TTL": "1m", "LOBBY_ADMIN_AUTH_NEGATIVE_TTL": "10s",
				"LOBBY_DRAIN_DELAY": "5s", "LOBBY_DRAIN_TIMEOUT": "40s", "LOBBY_MAX_HEADER_BYTES": "1048576",
				"LOBBY_READ_HEADER_TIMEOUT": "10s", "LOBBY_IDLE_TIMEOUT": "90s",
				"LOBBY_LOG_LEVEL": "info", "LOBBY_LOG_FORMAT": "json",
				"LOBBY_UPSTREAM_CA_FILE": "", "LOBBY_CLUSTER_DOMAIN": "cluster.local", "LOBBY_TLS_RELOAD_INTERVAL": "10s",
				// The 512Mi limit, as the downward API writes it; LOBBY_MAX_CONNECTIONS is unset, so
				// the interceptor derives its cap from it.
				"LOBBY_MEMORY_LIMIT": "536870912",
			},
			ports: map[string]int32{"http": 8080, "admin": 9090},
			probe: Probe{Path: "/readyz", Port: 9090, PortName: "admin", Period: 2 * time.Second, Timeout: 2 * time.Second, FailureThreshold: 1},
		},
		{
			name:      "the scaler finds interceptors through the admin Service of its release",
			component: "scaler",
			env: map[string]string{
				"LOBBY_GRPC_ADDR": ":9090", "LOBBY_ADMIN_ADDR": ":9091",
				"LOBBY_INTERCEPTOR_SERVICE": "lobby-interceptor-admin", "LOBBY_INTERCEPTOR_NAMESPACE": testNamespace,
				"LOBBY_INTERCEPTOR_PORT_NAME": "admin", "LOBBY_WATCH_NAMESPACE": "", "LOBBY_STREAM_GRACE": "10s",
				"LOBBY_INTERCEPTOR_TOKEN_FILE": "/var/run/secrets/lobby/interceptor/token",
				"LOBBY_LOG_LEVEL":              "info", "LOBBY_LOG_FORMAT": "json", "LOBBY_MEMORY_LIMIT": "268435456",
			},
			ports: map[string]int32{"grpc": 9090, "admin": 9091},
			probe: Probe{Path: "/readyz", Port: 9091, PortName: "admin", Period: 5 * time.Second, Timeout: 2 * time.Second, FailureThreshold: 2},
		},
		{
			name:      "the operator points KEDA at the scaler Service and elects a leader",
			component: "operator",
			env: map[string]string{
				"LOBBY_SCALER_ADDRESS": "lobby-scaler.lobby-system.svc.cluster.local:9090",
				"LOBBY_METRICS_ADDR":   ":8080", "LOBBY_HEALTH_ADDR": ":8081", "LOBBY_LEADER_ELECT": "true",
				"LOBBY_LEADER_ELECTION_NAMESPACE": testNamespace, "LOBBY_WATCH_NAMESPACE": "",
				"LOBBY_LOG_LEVEL": "info", "LOBBY_LOG_FORMAT": "json", "LOBBY_MEMORY_LIMIT": "268435456",
			},
			ports: map[string]int32{"metrics": 8080, "health": 8081},
			probe: Probe{Path: "/readyz", Port: 8081, PortName: "health", Period: 5 * time.Second, Timeout: 2 * time.Second, FailureThreshold: 2},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := r.Process(tc.component)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(p.Env, tc.env) {
				t.Errorf("env:\n got %v\nwant %v", p.Env, tc.env)
			}
			if !reflect.DeepEqual(p.Ports, tc.ports) {
				t.Errorf("ports: got %v, want %v", p.Ports, tc.ports)
			}
			if *p.Probes.Readiness != tc.probe {
				t.Errorf("readiness probe: got %+v, want %+v", *p.Probes.Readiness, tc.probe)
			}
			if p.ServiceAccount != testRelease+"-"+tc.component {
				t.Errorf("service account %q", p.ServiceAccount)
			}
			if len(p.Args) != 0 {
				t.Errorf("args %v, want none: the image's entrypoint is the binary", p.Args)
			}
			if want := "ghcr.io/lobby-http/" + tc.component + ":"; !strings.HasPrefix(p.Image, want) {
				t.Errorf("image %q, want prefix %q", p.Image, want)
			}
		})
	}
	t.Run("the scaler's token for the interceptors is projected for their audience only", func(t *testing.T) {
		p, err := r.Process("scaler")
		if err != nil {
			t.Fatal(err)
		}
		want := []Token{{Path: p.Env["LOBBY_INTERCEPTOR_TOKEN_FILE"], Audience: "lobby-interceptor", ExpirationSeconds: 3600}}
		if !reflect.DeepEqual(p.Tokens, want) {
			t.Errorf("scaler tokens %+v, want %+v", p.Tokens, want)
		}
		for _, c := range []string{"interceptor", "operator"} {
			if p, _ := r.Process(c); len(p.Tokens) != 0 {
				t.Errorf("%s has projected tokens %+v, want none", c, p.Tokens)
			}
		}
	})
	t.Run("an unknown component is an error that lists the known ones", func(t *testing.T) {
		if _, err := r.Process("proxy"); err == nil || !strings.Contains(err.Error(), "interceptor") {
			t.Fatalf("got %v", err)
		}
	})
}

func TestValuesFilesChangeWhatTheyShould(t *testing.T) {
	if testing.Short() {
		t.Skip("rendering runs Helm; skipped in short mode")
	}
	ci := func(name string) []string { return []string{filepath.Join(Dir(), "ci", name)} }
	tests := []struct {
		name  string
		files []string
		set   map[string]string
		check func(t *testing.T, r *Rendered)
	}{
		{
			name: "the defaults render no optional object",
			check: func(t *testing.T, r *Rendered) {
				for _, kind := range []string{"ServiceMonitor", "PrometheusRule", "ScaledObject", "ConfigMap"} {
					if n := len(r.OfKind(kind)); n != 0 {
						t.Errorf("%d %s rendered by default", n, kind)
					}
				}
				if p, _ := r.Process("interceptor"); p.Replicas != 3 || p.TerminationGracePeriod != 50*time.Second {
					t.Errorf("interceptor replicas %d grace %s, want 3 and 50s", p.Replicas, p.TerminationGracePeriod)
				}
			},
		},
		{
			name: "the operator at zero replicas, as while moving from the add-on, renders with the interceptor's add-on header on",
			set:  map[string]string{"operator.replicas": "0", "interceptor.addOnColdStartHeader": "true"},
			check: func(t *testing.T, r *Rendered) {
				if p, _ := r.Process("operator"); p.Replicas != 0 {
					t.Errorf("operator replicas %d, want 0", p.Replicas)
				}
				if p, _ := r.Process("interceptor"); p.Env["LOBBY_ADDON_COLD_START_HEADER"] != "true" {
					t.Errorf("interceptor LOBBY_ADDON_COLD_START_HEADER = %q, want true", p.Env["LOBBY_ADDON_COLD_START_HEADER"])
				}
			},
		},
		{
			name:  "monitoring renders ServiceMonitors on the admin ports, the alerts and the dashboard ConfigMap",
			files: ci("monitoring-values.yaml"),
			check: func(t *testing.T, r *Rendered) {
				sms := r.OfKind("ServiceMonitor")
				if len(sms) != 2 {
					t.Fatalf("want 2 ServiceMonitors, got %d", len(sms))
				}
				for _, sm := range sms {
					if sm.GetAPIVersion() != "monitoring.coreos.com/v1" {
						t.Errorf("ServiceMonitor apiVersion %s", sm.GetAPIVersion())
					}
					eps, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
					if len(eps) != 1 || eps[0].(map[string]any)["port"] != "admin" {
						t.Errorf("ServiceMonitor %s endpoints %v, want port admin", sm.GetName(), eps)
					}
					sel, _, _ := unstructured.NestedStringMap(sm.Object, "spec", "selector", "matchLabels")
					matched := 0
					for _, svc := range r.OfKind("Service") {
						if isSubset(sel, svc.GetLabels()) {
							matched++
							if svc.GetName() == testRelease+"-interceptor-proxy" {
								t.Errorf("ServiceMonitor %s selects the proxy Service", sm.GetName())
							}
						}
					}
					if matched != 1 {
						t.Errorf("ServiceMonitor %s selects %d Services, want 1", sm.GetName(), matched)
					}
					if sm.GetLabels()["release"] != "kube-prometheus-stack" {
						t.Errorf("ServiceMonitor %s lacks the extra label", sm.GetName())
					}
				}
				pr := r.Find("PrometheusRule", testRelease+"-alerts")
				if pr == nil {
					t.Fatal("no PrometheusRule")
				}
				if pr.GetAPIVersion() != "monitoring.coreos.com/v1" || pr.GetLabels()["release"] != "kube-prometheus-stack" {
					t.Errorf("PrometheusRule apiVersion %s labels %v, want monitoring.coreos.com/v1 and the extra label", pr.GetAPIVersion(), pr.GetLabels())
				}
				raw, err := os.ReadFile(AlertRulesPath())
				if err != nil {
					t.Fatal(err)
				}
				var shipped map[string]any
				if err := yaml.Unmarshal(raw, &shipped); err != nil {
					t.Fatal(err)
				}
				if spec, _, _ := unstructured.NestedMap(pr.Object, "spec"); !reflect.DeepEqual(spec, shipped) {
					t.Errorf("the PrometheusRule's spec is not the shipped rule file:\n%v\nwant\n%v", spec, shipped)
				}
				cm := r.Find("ConfigMap", testRelease+"-dashboard")
				if cm == nil {
					t.Fatal("no dashboard ConfigMap")
				}
				if cm.GetLabels()["grafana_dashboard"] != "1" {
					t.Errorf("dashboard ConfigMap labels %v lack grafana_dashboard: \"1\"", cm.GetLabels())
				}
				data, _, _ := unstructured.NestedString(cm.Object, "data", "lobby.json")
				file, err := os.ReadFile(DashboardPath())
				if err != nil {
					t.Fatal(err)
				}
				if strings.TrimSpace(data) != strings.TrimSpace(string(file)) || !json.Valid([]byte(data)) {
					t.Error("the ConfigMap's dashboard is not the shipped JSON")
				}
			},
		},
		{
			name:  "self-scaling hands the interceptor's replica count to a KEDA cpu trigger",
			files: ci("autoscaling-values.yaml"),
			check: func(t *testing.T, r *Rendered) {
				so := r.Find("ScaledObject", testRelease+"-interceptor")
				if so == nil {
					t.Fatal("no ScaledObject for the interceptor")
				}
				target, _, _ := unstructured.NestedString(so.Object, "spec", "scaleTargetRef", "name")
				triggers, _, _ := unstructured.NestedSlice(so.Object, "spec", "triggers")
				minR, _, _ := unstructured.NestedInt64(so.Object, "spec", "minReplicaCount")
				if target != testRelease+"-interceptor" || len(triggers) != 1 || triggers[0].(map[string]any)["type"] != "cpu" || minR != 2 {
					t.Errorf("ScaledObject targets %q with triggers %v and min %d", target, triggers, minR)
				}
				if p, _ := r.Process("interceptor"); p.Replicas != 0 || p.TerminationGracePeriod != 90*time.Second {
					t.Errorf("interceptor replicas %d grace %s, want unset (KEDA owns it) and 90s", p.Replicas, p.TerminationGracePeriod)
				}
				if p, _ := r.Process("operator"); p.Replicas != 2 || p.Env["LOBBY_LEADER_ELECT"] != "true" {
					t.Errorf("operator replicas %d leader election %q", p.Replicas, p.Env["LOBBY_LEADER_ELECT"])
				}
			},
		},
		{
			name:  "watching one namespace tells every binary and scopes RBAC to it",
			files: ci("namespace-values.yaml"),
			check: func(t *testing.T, r *Rendered) {
				for _, c := range Components {
					if p, _ := r.Process(c); p.Env["LOBBY_WATCH_NAMESPACE"] != "apps" || p.Env["LOBBY_LOG_FORMAT"] != "console" {
						t.Errorf("%s: LOBBY_WATCH_NAMESPACE %q LOBBY_LOG_FORMAT %q", c, p.Env["LOBBY_WATCH_NAMESPACE"], p.Env["LOBBY_LOG_FORMAT"])
					}
				}
				p, _ := r.Process("interceptor")
				if p.Env["GOMAXPROCS"] != "2" || p.Env["LOBBY_COLD_START_TIMEOUT"] != "1m" || p.Env["LOBBY_MAX_PENDING_REQUESTS"] != "200" {
					t.Errorf("interceptor env %v lacks the values file's settings", p.Env)
				}
				d := convert[appsv1.Deployment](t, r.Find("Deployment", testRelease+"-interceptor"))
				if len(d.Spec.Template.Spec.ImagePullSecrets) != 1 || d.Spec.Template.Annotations["example.com/team"] != "web" ||
					d.Spec.Template.Spec.NodeSelector["kubernetes.io/os"] != "linux" {
					t.Errorf("interceptor pod lacks pull secret, annotation or node selector: %+v", d.Spec.Template)
				}
			},
		},
		{
			name:  "scaler TLS mounts the Secret and names its files",
			files: ci("scaler-tls-values.yaml"),
			check: func(t *testing.T, r *Rendered) {
				p, _ := r.Process("scaler")
				want := map[string]string{
					"LOBBY_TLS_CERT_FILE":      "/etc/lobby/tls/tls.crt",
					"LOBBY_TLS_KEY_FILE":       "/etc/lobby/tls/tls.key",
					"LOBBY_TLS_CLIENT_CA_FILE": "/etc/lobby/tls/ca.crt",
				}
				for k, v := range want {
					if p.Env[k] != v {
						t.Errorf("%s = %q, want %q", k, p.Env[k], v)
					}
				}
				if !reflect.DeepEqual(p.Mounts, []Mount{{Path: "/etc/lobby/tls", Secret: "lobby-scaler-tls"}}) {
					t.Errorf("mounts %v", p.Mounts)
				}
				if p.Replicas != 3 {
					t.Errorf("scaler replicas %d, want 3", p.Replicas)
				}
				// The operator's triggers reach it: TLS, and the authentication KEDA takes the CA
				// and its client key pair from.
				op, _ := r.Process("operator")
				for k, v := range map[string]string{
					"LOBBY_SCALER_TLS":          "true",
					"LOBBY_SCALER_TRIGGER_AUTH": "ClusterTriggerAuthentication/lobby-scaler-client",
				} {
					if op.Env[k] != v {
						t.Errorf("operator %s = %q, want %q", k, op.Env[k], v)
					}
				}
			},
		},
		{
			name:  "interceptor TLS mounts each Secret, names their folders and opens the https port",
			files: ci("interceptor-tls-values.yaml"),
			check: func(t *testing.T, r *Rendered) {
				p, _ := r.Process("interceptor")
				for k, v := range map[string]string{
					"LOBBY_PROXY_TLS_ADDR":        ":8443",
					"LOBBY_PROXY_TLS_CERT_DIRS":   "/etc/lobby/tls/lobby-tls,/etc/lobby/tls/shop-example-com-tls",
					"LOBBY_PROXY_TLS_MIN_VERSION": "1.3",
					"LOBBY_UPSTREAM_CA_FILE":      "/etc/lobby/upstream-ca/ca.crt",
					"LOBBY_CLUSTER_DOMAIN":        "corp.example",
				} {
					if p.Env[k] != v {
						t.Errorf("%s = %q, want %q", k, p.Env[k], v)
					}
				}
				want := []Mount{{Path: "/etc/lobby/tls/lobby-tls", Secret: "lobby-tls"}, {Path: "/etc/lobby/tls/shop-example-com-tls", Secret: "shop-example-com-tls"}}
				if !reflect.DeepEqual(p.Mounts, want) {
					t.Errorf("mounts %v, want %v", p.Mounts, want)
				}
				d := convert[appsv1.Deployment](t, r.Find("Deployment", testRelease+"-interceptor"))
				pod := d.Spec.Template.Spec
				var ca *corev1.Volume
				for i := range pod.Volumes {
					if pod.Volumes[i].Name == "upstream-ca" {
						ca = &pod.Volumes[i]
					}
				}
				if ca == nil || ca.ConfigMap == nil || ca.ConfigMap.Name != "cluster-ca-bundle" {
					t.Errorf("volumes %+v lack the extra ConfigMap volume", pod.Volumes)
				}
				mounts := pod.Containers[0].VolumeMounts
				if n := len(mounts); n != 3 || mounts[2].Name != "upstream-ca" || mounts[2].MountPath != "/etc/lobby/upstream-ca" {
					t.Errorf("volume mounts %+v, want the two Secrets and the extra mount", mounts)
				}
				svc := convert[corev1.Service](t, r.Find("Service", testRelease+"-interceptor-proxy"))
				if len(svc.Spec.Ports) != 2 || svc.Spec.Ports[1].Name != "https" || svc.Spec.Ports[1].Port != 8443 ||
					svc.Spec.Ports[1].TargetPort.StrVal != "https" {
					t.Errorf("proxy Service ports %+v, want http and https", svc.Spec.Ports)
				}
			},
		},
		{
			name: "the default values serve no TLS and trust the system roots for HTTPS apps",
			check: func(t *testing.T, r *Rendered) {
				p, _ := r.Process("interceptor")
				if v, ok := p.Env["LOBBY_PROXY_TLS_ADDR"]; ok || len(p.Mounts) != 0 || p.Env["LOBBY_UPSTREAM_CA_FILE"] != "" ||
					p.Env["LOBBY_CLUSTER_DOMAIN"] != "cluster.local" {
					t.Errorf("LOBBY_PROXY_TLS_ADDR %q (set: %v), mounts %v, env %v", v, ok, p.Mounts, p.Env)
				}
				svc := convert[corev1.Service](t, r.Find("Service", testRelease+"-interceptor-proxy"))
				if len(svc.Spec.Ports) != 1 {
					t.Errorf("proxy Service ports %+v, want http alone", svc.Spec.Ports)
				}
			},
		},
		{
			name: "scaler TLS without an authentication has the operator turn TLS on only",
			set:  map[string]string{"scaler.tls.enabled": "true", "scaler.tls.secretName": "lobby-scaler-tls"},
			check: func(t *testing.T, r *Rendered) {
				op, _ := r.Process("operator")
				if op.Env["LOBBY_SCALER_TLS"] != "true" {
					t.Errorf("operator LOBBY_SCALER_TLS = %q, want true", op.Env["LOBBY_SCALER_TLS"])
				}
				if v, ok := op.Env["LOBBY_SCALER_TRIGGER_AUTH"]; ok {
					t.Errorf("operator LOBBY_SCALER_TRIGGER_AUTH = %q, want it unset when no authentication is named", v)
				}
			},
		},
		{
			name: "a per-namespace TriggerAuthentication is named with its kind",
			set: map[string]string{"scaler.tls.enabled": "true", "scaler.tls.secretName": "lobby-scaler-tls",
				"scaler.tls.triggerAuthentication.kind": "TriggerAuthentication", "scaler.tls.triggerAuthentication.name": "scaler-client"},
			check: func(t *testing.T, r *Rendered) {
				op, _ := r.Process("operator")
				if got := op.Env["LOBBY_SCALER_TRIGGER_AUTH"]; got != "TriggerAuthentication/scaler-client" {
					t.Errorf("operator LOBBY_SCALER_TRIGGER_AUTH = %q, want TriggerAuthentication/scaler-client", got)
				}
			},
		},
		{
			name:  "extra operator env comes after the TLS settings, so it can override them",
			files: ci("scaler-tls-values.yaml"),
			set:   map[string]string{"operator.env[0].name": "LOBBY_SCALER_TRIGGER_AUTH", "operator.env[0].value": "TriggerAuthentication/own"},
			check: func(t *testing.T, r *Rendered) {
				op, _ := r.Process("operator")
				if got := op.Env["LOBBY_SCALER_TRIGGER_AUTH"]; got != "TriggerAuthentication/own" {
					t.Errorf("operator LOBBY_SCALER_TRIGGER_AUTH = %q, want operator.env's TriggerAuthentication/own", got)
				}
			},
		},
		{
			name: "fullnameOverride renames every object and the names the binaries are given",
			set:  map[string]string{"fullnameOverride": "edge"},
			check: func(t *testing.T, r *Rendered) {
				if r.Find("Service", "edge-interceptor-proxy") == nil {
					t.Error("no Service edge-interceptor-proxy")
				}
				if p, _ := r.Process("scaler"); p.Env["LOBBY_INTERCEPTOR_SERVICE"] != "edge-interceptor-admin" {
					t.Errorf("scaler LOBBY_INTERCEPTOR_SERVICE %q", p.Env["LOBBY_INTERCEPTOR_SERVICE"])
				}
				if p, _ := r.Process("operator"); p.Env["LOBBY_SCALER_ADDRESS"] != "edge-scaler.lobby-system.svc.cluster.local:9090" {
					t.Errorf("operator LOBBY_SCALER_ADDRESS %q", p.Env["LOBBY_SCALER_ADDRESS"])
				}
			},
		},
		{
			name: "every binary gets its container's memory limit from the downward API",
			check: func(t *testing.T, r *Rendered) {
				for _, c := range Components {
					d := convert[appsv1.Deployment](t, r.Find("Deployment", testRelease+"-"+c))
					var ref *corev1.ResourceFieldSelector
					for _, e := range d.Spec.Template.Spec.Containers[0].Env {
						if e.Name == "LOBBY_MEMORY_LIMIT" && e.ValueFrom != nil {
							ref = e.ValueFrom.ResourceFieldRef
						}
					}
					if ref == nil || ref.Resource != "limits.memory" || ref.ContainerName != c || !ref.Divisor.IsZero() {
						t.Errorf("%s: LOBBY_MEMORY_LIMIT from %+v, want resourceFieldRef limits.memory of container %s in bytes", c, ref, c)
					}
				}
			},
		},
		{
			name: "a container without a memory limit gets no LOBBY_MEMORY_LIMIT",
			set:  map[string]string{"scaler.resources.limits": "null", "interceptor.resources.limits": "null"},
			check: func(t *testing.T, r *Rendered) {
				for _, c := range []string{"scaler", "interceptor"} {
					if p, _ := r.Process(c); p.Env["LOBBY_MEMORY_LIMIT"] != "" {
						t.Errorf("%s: LOBBY_MEMORY_LIMIT = %q without a memory limit, want it unset", c, p.Env["LOBBY_MEMORY_LIMIT"])
					}
				}
				if p, _ := r.Process("operator"); p.Env["LOBBY_MEMORY_LIMIT"] != "268435456" {
					t.Errorf("operator: LOBBY_MEMORY_LIMIT = %q, want its own limit still", p.Env["LOBBY_MEMORY_LIMIT"])
				}
			},
		},
		{
			name: "a larger memory limit reaches the interceptor in bytes",
			set:  map[string]string{"interceptor.resources.limits.memory": "2Gi"},
			check: func(t *testing.T, r *Rendered) {
				if p, _ := r.Process("interceptor"); p.Env["LOBBY_MEMORY_LIMIT"] != "2147483648" {
					t.Errorf("LOBBY_MEMORY_LIMIT = %q, want 2147483648", p.Env["LOBBY_MEMORY_LIMIT"])
				}
			},
		},
		{
			name: "an explicit connection cap is passed on",
			set:  map[string]string{"interceptor.maxConnections": "20000"},
			check: func(t *testing.T, r *Rendered) {
				if p, _ := r.Process("interceptor"); p.Env["LOBBY_MAX_CONNECTIONS"] != "20000" {
					t.Errorf("LOBBY_MAX_CONNECTIONS = %q, want 20000", p.Env["LOBBY_MAX_CONNECTIONS"])
				}
			},
		},
		{
			name: "a connection cap of zero is passed on as zero, which turns the cap off",
			set:  map[string]string{"interceptor.maxConnections": "0"},
			check: func(t *testing.T, r *Rendered) {
				p, _ := r.Process("interceptor")
				if v, ok := p.Env["LOBBY_MAX_CONNECTIONS"]; !ok || v != "0" {
					t.Errorf("LOBBY_MAX_CONNECTIONS = %q (set %t), want 0", v, ok)
				}
			},
		},
		{
			name: "an image digest wins over the tag",
			set:  map[string]string{"interceptor.image.digest": "sha256:" + strings.Repeat("ab", 32), "interceptor.image.tag": "v9"},
			check: func(t *testing.T, r *Rendered) {
				if p, _ := r.Process("interceptor"); p.Image != "ghcr.io/lobby-http/interceptor@sha256:"+strings.Repeat("ab", 32) {
					t.Errorf("image %q", p.Image)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.check(t, render(t, tc.files, tc.set))
		})
	}
}

func TestResourceValue(t *testing.T) {
	c := &corev1.Container{Name: "interceptor", Resources: corev1.ResourceRequirements{
		Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("512Mi"), corev1.ResourceCPU: resource.MustParse("1500m")},
		Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")},
	}}
	tests := []struct {
		name    string
		ref     corev1.ResourceFieldSelector
		want    string
		wantErr string
	}{
		{name: "A memory limit without a divisor is in bytes.", ref: corev1.ResourceFieldSelector{Resource: "limits.memory"}, want: "536870912"},
		{name: "The container may name itself.", ref: corev1.ResourceFieldSelector{ContainerName: "interceptor", Resource: "requests.memory"}, want: "134217728"},
		{name: "A divisor divides, rounding up.", ref: corev1.ResourceFieldSelector{Resource: "limits.memory", Divisor: resource.MustParse("100Mi")}, want: "6"},
		{name: "Cpu rounds up to whole cores.", ref: corev1.ResourceFieldSelector{Resource: "limits.cpu"}, want: "2"},
		{name: "Cpu divides in millicores.", ref: corev1.ResourceFieldSelector{Resource: "limits.cpu", Divisor: resource.MustParse("1m")}, want: "1500"},
		{name: "A resource the container does not declare is an error.", ref: corev1.ResourceFieldSelector{Resource: "requests.cpu"}, wantErr: "declares none"},
		{name: "Another container's resources are an error.", ref: corev1.ResourceFieldSelector{ContainerName: "sidecar", Resource: "limits.memory"}, wantErr: "sidecar"},
		{name: "A resource that is neither a limit nor a request is an error.", ref: corev1.ResourceFieldSelector{Resource: "memory"}, wantErr: "limits.<name>"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := resourceValue(c, &tt.ref)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("resourceValue() = %q, %v; want an error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("resourceValue() = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func isSubset(sub, super map[string]string) bool {
	for k, v := range sub {
		if super[k] != v {
			return false
		}
	}
	return true
}

func TestTemplateRefusesBadValues(t *testing.T) {
	if testing.Short() {
		t.Skip("rendering runs Helm; skipped in short mode")
	}
	tests := []struct {
		name string
		set  map[string]string
		want string
	}{
		{"an unknown log level is refused by the schema", map[string]string{"logging.level": "verbose"}, "logging.level"},
		{"a misspelt value is refused by the schema", map[string]string{"interceptor.replica": "2"}, "replica"},
		{"a duration that is not a Go duration is refused", map[string]string{"interceptor.coldStartTimeout": "30 seconds"}, "coldStartTimeout"},
		{"a grace period shorter than the drain is refused", map[string]string{"interceptor.terminationGracePeriodSeconds": "20"}, "at least drainDelaySeconds + drainTimeoutSeconds + 5 = 50"},
		{"three operators are refused", map[string]string{"operator.replicas": "3"}, "operator.replicas"},
		{"two operators without leader election are refused", map[string]string{"operator.replicas": "2", "operator.leaderElect": "false"}, "operator.leaderElect"},
		{"scaler TLS without a Secret is refused", map[string]string{"scaler.tls.enabled": "true"}, "scaler.tls.secretName"},
		{"interceptor TLS without a Secret is refused", map[string]string{"interceptor.tls.enabled": "true"}, "interceptor.tls.secretNames is empty"},
		{"interceptor Secrets without TLS are refused", map[string]string{"interceptor.tls.secretNames[0]": "s"}, "interceptor.tls.enabled is false"},
		{"interceptor TLS 1.1 is refused by the schema", map[string]string{"interceptor.tls.minVersion": "1.1"}, "interceptor/tls/minVersion"},
		{"cipher suites with TLS 1.3 are refused", map[string]string{"interceptor.tls.enabled": "true", "interceptor.tls.secretNames[0]": "s",
			"interceptor.tls.minVersion": "1.3", "interceptor.tls.cipherSuites[0]": "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"}, "cipher suites are not configurable"},
		{"a relative upstream CA file is refused by the schema", map[string]string{"interceptor.upstreamTLS.caFile": "ca.crt"}, "caFile"},
		{"a trigger authentication without scaler TLS is refused", map[string]string{"scaler.tls.triggerAuthentication.name": "lobby"},
			"scaler.tls.triggerAuthentication.name needs scaler.tls.enabled"},
		{"a trigger authentication of another kind is refused by the schema", map[string]string{
			"scaler.tls.enabled": "true", "scaler.tls.secretName": "s", "scaler.tls.triggerAuthentication.kind": "Secret",
			"scaler.tls.triggerAuthentication.name": "lobby"}, "scaler.tls.triggerAuthentication.kind"},
		{"a trigger authentication name Kubernetes would refuse is refused by the schema", map[string]string{
			"scaler.tls.enabled": "true", "scaler.tls.secretName": "s", "scaler.tls.triggerAuthentication.name": "Lobby_TLS"},
			"scaler.tls.triggerAuthentication.name"},
		{"a negative connection cap is refused by the schema", map[string]string{"interceptor.maxConnections": "-1"}, "maxConnections"},
		{"an invalid watch namespace is refused", map[string]string{"watchNamespace": "Not_A_Namespace"}, "watchNamespace"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Render(t.Context(), testRelease, testNamespace, nil, tc.set)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got error %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}

func TestReadmeValuesTableIsCurrent(t *testing.T) {
	src, err := os.ReadFile(filepath.Join(Dir(), "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	values, err := Values(src)
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(Dir(), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	want, err := UpdateReadme(readme, Table(values))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readme, want) {
		t.Fatal("charts/lobby/README.md's values table is stale: run `go run ./hack/valuesdoc`")
	}
}

func TestValues(t *testing.T) {
	tests := []struct {
		name    string
		src     string
		want    []Value
		wantErr string
	}{
		{
			name: "documented leaves and documented maps become rows, undocumented maps are descended",
			src: "# -- The name.\nname: x\nimage:\n  # -- Its tag;\n  # empty is latest.\n  tag: \"\"\n" +
				"# -- Extra labels.\nlabels:\n  a: b\n",
			want: []Value{
				{Key: "name", Type: "string", Default: `"x"`, Description: "The name."},
				{Key: "image.tag", Type: "string", Default: `""`, Description: "Its tag; empty is latest."},
				{Key: "labels", Type: "map", Default: `{"a":"b"}`, Description: "Extra labels."},
			},
		},
		{
			name:    "an undocumented leaf is an error naming it",
			src:     "# -- Documented.\na: 1\nb:\n  c: true\n",
			wantErr: "b.c has no \"# --\" comment",
		},
		{
			name:    "a plain comment is not documentation",
			src:     "# just a note\na: 1\n",
			wantErr: "a has no",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Values([]byte(tc.src))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestDashboardQueries(t *testing.T) {
	qs, err := Dashboard()
	if err != nil {
		t.Fatal(err)
	}
	// Each series the dashboard must show, with the panel that shows it.
	want := map[string]string{
		"In-flight requests":          "lobby_interceptor_in_flight_requests",
		"Held requests":               "lobby_interceptor_held_requests",
		"Request rate":                "rate(lobby_interceptor_requests_total",
		"Cold-start wait":             "lobby_interceptor_cold_start_wait_seconds_bucket",
		"Responses by status code":    "code",
		"Queue rejections":            "lobby_interceptor_queue_rejections_total",
		"Activations":                 "lobby_scaler_activations_total",
		"RPC latency":                 "lobby_scaler_rpc_duration_seconds_bucket",
		"Client connections":          "lobby_interceptor_proxy_max_connections",
		"Connection waits at the cap": "lobby_interceptor_proxy_connection_waits_total",
		"variable route":              "label_values(lobby_interceptor_in_flight_requests, route)",
	}
	seen := map[string]bool{}
	for _, q := range qs {
		if w, ok := want[q.Panel]; ok && strings.Contains(q.Expr, w) {
			seen[q.Panel] = true
		}
		if strings.HasPrefix(q.Panel, "variable ") {
			continue
		}
		expr := q.PromQL(".*")
		if strings.Contains(expr, "$") {
			t.Errorf("panel %s query %s keeps a Grafana variable after expansion: %s", q.Panel, q.RefID, expr)
		}
		// The interceptor's per-route series are filtered by the route variable; the scalers' and
		// the proxy port's (lobby_interceptor_proxy_*) have no route label.
		if !strings.Contains(q.Expr, "lobby_interceptor_") || strings.Contains(q.Expr, "lobby_interceptor_proxy_") {
			continue
		}
		if !strings.Contains(q.Expr, `route=~"$route"`) {
			t.Errorf("panel %s query %s is not filtered by the route variable: %s", q.Panel, q.RefID, q.Expr)
		}
	}
	for panel := range want {
		if !seen[panel] {
			t.Errorf("no query in panel %q uses %q", panel, want[panel])
		}
	}
	var quantiles []string
	for _, q := range qs {
		if strings.HasPrefix(q.Expr, "histogram_quantile(") {
			quantiles = append(quantiles, q.Panel+" "+q.Expr[len("histogram_quantile("):strings.Index(q.Expr, ",")])
		}
	}
	sort.Strings(quantiles)
	if w := []string{"Cold-start wait 0.5", "Cold-start wait 0.99", "RPC latency 0.5", "RPC latency 0.99"}; !reflect.DeepEqual(quantiles, w) {
		t.Errorf("quantiles %v, want %v", quantiles, w)
	}
}

// TestAlertRules checks the shipped rule file with promtool (from the Debian package prometheus,
// which make deps installs) and runs its unit tests, testdata/alerts_test.yaml: every alert fires
// for the series that should make it fire, after its "for", and not for those beside them.
func TestAlertRules(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if testing.Short() {
			t.Skip("promtool not found (make deps installs it)")
		}
		t.Fatal("promtool not found: install the Debian package prometheus (make deps)")
	}
	unitTests := filepath.Join("testdata", "alerts_test.yaml")
	for _, args := range [][]string{
		{"check", "rules", AlertRulesPath()},
		{"test", "rules", unitTests},
	} {
		out, err := exec.CommandContext(t.Context(), promtool, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}

	rules, err := AlertRules()
	if err != nil {
		t.Fatal(err)
	}
	tests, err := os.ReadFile(unitTests)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile(filepath.Join(repoRoot(), "docs", "chart.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rules {
		if len(r.Metrics()) == 0 {
			t.Errorf("alert %s reads none of lobby's metrics: %s", r.Alert, r.Expr)
		}
		if !bytes.Contains(tests, []byte("alertname: "+r.Alert+"\n")) {
			t.Errorf("alert %s has no unit test in testdata/alerts_test.yaml", r.Alert)
		}
		if !bytes.Contains(doc, []byte("`"+r.Alert+"`")) {
			t.Errorf("alert %s is not explained in docs/chart.md", r.Alert)
		}
	}
}

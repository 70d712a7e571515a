//go:build e2e

package system

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/lobby-http/lobby/e2e/framework/poll"
	"github.com/lobby-http/lobby/internal/httpso"
	"github.com/lobby-http/lobby/operator/api/v1alpha1"
)

// victimHost is the host the victim's namespace claims first; the attacker's namespace tries every
// shape that could take its requests.
const victimHost = "victim.owner.example.com"

// TestHostOwnership puts a victim's HTTPScaledObject for victimHost in one namespace, and in a
// second namespace every shape that could take its requests: a longer path prefix, a header rule
// that matches any value, an InterceptorRoute rule, a wildcard over the host and the catch-all.
// Counted requests for the host, through an nginx that does not retry, all reach the victim's app;
// each attacker object says on its status why; then the victim allows the attacker's namespace
// and the allowed claims serve the host.
func TestHostOwnership(t *testing.T) {
	victimNS, attackerNS := testNamespace(t), testNamespace(t)
	ctx := t.Context()
	c := suite.cluster
	deployApp(t, victimNS, appSpec{name: "victim", replicas: 1, hso: v1alpha1.HTTPScaledObjectSpec{
		Hosts: []string{victimHost}, PathPrefixes: []string{"/api"}}})
	deployApp(t, attackerNS, appSpec{name: "attacker", replicas: 1, plain: true})
	// Creation times have a resolution of one second, and a tie goes to the first namespace/name:
	// the attacker's objects come in a later second than the victim's, as they would in a cluster.
	victimKey := types.NamespacedName{Namespace: victimNS, Name: "victim"}
	victimObj := httpObject(t, "HTTPScaledObject", victimKey)
	time.Sleep(time.Until(victimObj.GetCreationTimestamp().Add(1100 * time.Millisecond)))

	fromYAML(t, attackerNS, `
apiVersion: http.keda.sh/v1beta1
kind: InterceptorRoute
metadata: {name: route}
spec:
  target: {service: attacker, port: 80}
  rules:
  - hosts: [`+victimHost+`]
    paths: [{value: /api/v2}]
  scalingMetric:
    concurrency: {targetValue: 10}
`)
	attackers := map[string]string{
		"longer": `hosts: [` + victimHost + `]
  pathPrefixes: [/api/v1]`,
		"header": `hosts: [` + victimHost + `]
  pathPrefixes: [/api]
  headers: [{name: User-Agent}]`,
		"wild": `hosts: ["*.owner.example.com"]`,
		"all":  `hosts: ["*"]`,
	}
	for name, routing := range attackers {
		// Copied as a user of the add-on writes it; no ScaledObject, since all share one app.
		fromYAML(t, attackerNS, `
apiVersion: http.keda.sh/v1alpha1
kind: HTTPScaledObject
metadata:
  name: `+name+`
  annotations: {`+v1alpha1.SkipScaledObjectCreationAnnotation+`: "true"}
spec:
  `+routing+`
  scaleTargetRef: {name: attacker, service: attacker, port: 80}
  replicas: {min: 1, max: 1}
`)
	}
	// The wildcard and the catch-all are routed, for the hosts nobody else owns.
	waitRouting(t, attackerNS+"/wild", 30*time.Second)
	waitRouting(t, attackerNS+"/all", 30*time.Second)

	t.Run("every attacker object says why it does not serve the victim's host", func(t *testing.T) {
		owned := []string{`namespace "` + victimNS + `"`, httpso.AllowNamespacesAnnotation, attackerNS}
		owned = append(owned, victimHost)
		for _, tc := range []struct {
			kind, name, condition, status string
			fragments                     []string
		}{
			{"HTTPScaledObject", "longer", "Ready", "False", owned},
			{"HTTPScaledObject", "header", "Ready", "False", owned},
			{"InterceptorRoute", "route", "Ready", "False", owned},
			{"HTTPScaledObject", "wild", "HostsShadowed", "True", owned},
			// The catch-all's message names the first few hosts it does not serve, which may be
			// those of other tests' namespaces still being deleted.
			{"HTTPScaledObject", "all", "HostsShadowed", "True", []string{httpso.AllowNamespacesAnnotation, attackerNS}},
		} {
			key := types.NamespacedName{Namespace: attackerNS, Name: tc.name}
			if err := poll.Until(t.Context(), 30*time.Second, tc.kind+" "+key.String()+" "+tc.condition+" condition", func() error {
				return conditionHolds(httpObject(t, tc.kind, key), tc.condition, tc.status, "HostOwned", tc.fragments...)
			}); err != nil {
				t.Fatal(err)
			}
		}
	})

	in, err := startNginx(ctx, c, "nginx.conf.tmpl", func() []string { return proxyAddrs(suite.lobby.Instances("interceptor"), "http") },
		map[string]any{"NoRetry": true})
	if err != nil {
		t.Fatalf("start nginx: %v", err)
	}
	t.Cleanup(func() { _ = in.proc.Stop() })

	// KEDA may have scaled the victim's app to zero meanwhile: wake it before counting.
	if err := poll.Until(t.Context(), 90*time.Second, "the victim's app to answer", func() error {
		r := send(ctx, http.MethodGet, in.URL+"/api", victimHost, nil)
		if r.err != nil || r.code != http.StatusOK {
			return fmt.Errorf("got %d %q %v", r.code, r.body, r.err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	t.Run("counted requests for the victim's host never reach the attacker", func(t *testing.T) {
		countOwnedHostAnswers(t, in.URL, []ownershipRequest{
			{"/api", nil, "victim-"},
			{"/api/v1/x", nil, "victim-"},
			{"/api", http.Header{"User-Agent": {"curl/8.5.0"}}, "victim-"},
			{"/api/v2/x", nil, "victim-"},
			// The victim routes nothing else: its host is answered 404, not by the wildcard or
			// the catch-all of another namespace.
			{"/other", nil, ""},
		}, victimHost)
		// The attacker's wildcard and catch-all still serve what nobody else owns.
		countOwnedHostAnswers(t, in.URL, []ownershipRequest{{"/", nil, "attacker-"}}, "other.owner.example.com")
		countOwnedHostAnswers(t, in.URL, []ownershipRequest{{"/", nil, "attacker-"}}, "unclaimed.owner-test.invalid")
	})

	t.Run("once the victim allows the attacker's namespace, the allowed claims serve the host", func(t *testing.T) {
		victimObj := httpObject(t, "HTTPScaledObject", victimKey)
		patch := client.MergeFrom(victimObj.DeepCopy())
		victimObj.SetAnnotations(map[string]string{httpso.AllowNamespacesAnnotation: attackerNS})
		if err := c.Client.Patch(ctx, victimObj, patch); err != nil {
			t.Fatal(err)
		}
		waitRouting(t, attackerNS+"/longer", 30*time.Second)
		waitRouting(t, attackerNS+"/header", 30*time.Second)
		if err := poll.Until(t.Context(), 30*time.Second, "the longer prefix's Ready condition", func() error {
			return conditionHolds(httpObject(t, "HTTPScaledObject", types.NamespacedName{Namespace: attackerNS, Name: "longer"}), "Ready", "True", "")
		}); err != nil {
			t.Fatal(err)
		}
		if err := poll.Until(t.Context(), 30*time.Second, "the wildcard's HostsShadowed condition to go", func() error {
			u := httpObject(t, "HTTPScaledObject", types.NamespacedName{Namespace: attackerNS, Name: "wild"})
			if err := conditionHolds(u, "HostsShadowed", "True", ""); err == nil {
				return fmt.Errorf("still shadowed")
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		countOwnedHostAnswers(t, in.URL, []ownershipRequest{
			{"/api/v1/x", http.Header{"User-Agent": {"curl/8.5.0"}}, "attacker-"},
			{"/other", nil, "attacker-"},
		}, victimHost)
	})
}

// ownershipRequest is a request for one takeover shape, and the pod name prefix that must answer it
// ("" for a 404 from the interceptor).
type ownershipRequest struct {
	path   string
	header http.Header
	want   string
}

// countOwnedHostAnswers sends 20 requests of each shape for host through the ingress at url, and checks that
// every one is answered, each by the app it must reach.
func countOwnedHostAnswers(t *testing.T, url string, shapes []ownershipRequest, host string) {
	t.Helper()
	const each = 20
	sent, answered := 0, 0
	wrong := map[string]int{}
	for _, s := range shapes {
		for range each {
			sent++
			r := send(t.Context(), http.MethodGet, url+s.path, host, s.header)
			if r.err != nil {
				wrong[fmt.Sprintf("%s: %v", s.path, r.err)]++
				continue
			}
			answered++
			var e echoed
			isApp := r.code == http.StatusOK && json.Unmarshal([]byte(r.body), &e) == nil && e.PodName != ""
			switch {
			case s.want == "" && r.code == http.StatusNotFound && !isApp:
			case s.want != "" && isApp && strings.HasPrefix(e.PodName, s.want):
			default:
				wrong[fmt.Sprintf("%s %v: %d from %q, want %q", s.path, s.header, r.code, e.PodName, s.want)]++
			}
		}
	}
	t.Logf("%s: %d requests sent, %d answered", host, sent, answered)
	if answered != sent || len(wrong) > 0 {
		t.Errorf("%s: %d of %d requests answered; wrong answers: %v", host, answered, sent, wrong)
	}
}

// httpObject reads the http.keda.sh object kind (HTTPScaledObject or InterceptorRoute) key.
func httpObject(t *testing.T, kind string, key types.NamespacedName) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	version := "v1alpha1"
	if kind == "InterceptorRoute" {
		version = "v1beta1"
	}
	u.SetGroupVersionKind(schema.GroupVersionKind{Group: "http.keda.sh", Version: version, Kind: kind})
	if err := suite.cluster.Client.Get(t.Context(), key, u); err != nil {
		t.Fatalf("get %s %s: %v", kind, key, err)
	}
	return u
}

// conditionHolds returns nil when u's condition typ has status (and reason, unless empty) and a
// message holding every fragment, else what differs.
func conditionHolds(u *unstructured.Unstructured, typ, status, reason string, fragments ...string) error {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, raw := range conds {
		cond, _ := raw.(map[string]any)
		if cond["type"] != typ {
			continue
		}
		msg, _ := cond["message"].(string)
		if cond["status"] != status || (reason != "" && cond["reason"] != reason) {
			return fmt.Errorf("%s/%s %s = %v/%v %q, want %s/%s", u.GetNamespace(), u.GetName(), typ, cond["status"], cond["reason"], msg, status, reason)
		}
		for _, f := range fragments {
			if !strings.Contains(msg, f) {
				return fmt.Errorf("%s/%s %s message %q lacks %q", u.GetNamespace(), u.GetName(), typ, msg, f)
			}
		}
		return nil
	}
	return fmt.Errorf("%s/%s has no %s condition", u.GetNamespace(), u.GetName(), typ)
}

package chart

import (
	"path/filepath"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// peer is a pod that may send traffic: its namespace's labels and its own.
type peer struct {
	name      string
	namespace string
	nsLabels  labels.Set
	podLabels labels.Set
}

// admits reports whether the rendered policies let p reach a pod of the given labels in the
// release namespace on the named container port, by NetworkPolicy's rules: a pod no policy
// selects takes anything; a selected pod takes what any rule of any selecting policy allows.
func admits(t *testing.T, policies []*networkingv1.NetworkPolicy, target labels.Set, port string, p peer) bool {
	t.Helper()
	selected := false
	for _, np := range policies {
		if !matches(t, &np.Spec.PodSelector, target) {
			continue
		}
		selected = true
		for _, rule := range np.Spec.Ingress {
			if !portListed(rule.Ports, port) {
				continue
			}
			if len(rule.From) == 0 {
				return true
			}
			for _, from := range rule.From {
				if peerMatches(t, np.Namespace, from, p) {
					return true
				}
			}
		}
	}
	return !selected
}

func portListed(ports []networkingv1.NetworkPolicyPort, name string) bool {
	if len(ports) == 0 {
		return true
	}
	for _, p := range ports {
		if p.Port != nil && p.Port.StrVal == name {
			return true
		}
	}
	return false
}

// peerMatches applies a NetworkPolicyPeer: a pod selector alone means the policy's namespace; a
// namespace selector alone means every pod of the namespaces it selects; both, the pods of those
// namespaces that the pod selector selects.
func peerMatches(t *testing.T, policyNS string, from networkingv1.NetworkPolicyPeer, p peer) bool {
	if from.IPBlock != nil {
		return false
	}
	if from.NamespaceSelector == nil {
		if p.namespace != policyNS {
			return false
		}
	} else if !matches(t, from.NamespaceSelector, p.nsLabels) {
		return false
	}
	return from.PodSelector == nil || matches(t, from.PodSelector, p.podLabels)
}

func matches(t *testing.T, sel *metav1.LabelSelector, set labels.Set) bool {
	t.Helper()
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Fatalf("selector %+v: %v", sel, err)
	}
	return s.Matches(set)
}

// podLabels returns the pod template labels of the component's Deployment, and its container
// port names.
func podLabels(t *testing.T, r *Rendered, component string) (labels.Set, map[string]bool) {
	t.Helper()
	for _, o := range r.OfKind("Deployment") {
		if o.GetLabels()["app.kubernetes.io/component"] != component {
			continue
		}
		d := convert[appsv1.Deployment](t, o)
		ports := map[string]bool{}
		for _, c := range d.Spec.Template.Spec.Containers {
			for _, p := range c.Ports {
				ports[p.Name] = true
			}
		}
		return d.Spec.Template.Labels, ports
	}
	t.Fatalf("no Deployment of %s", component)
	return nil, nil
}

func TestNetworkPolicies(t *testing.T) {
	if testing.Short() {
		t.Skip("rendering runs Helm; skipped in short mode")
	}
	nsLabels := func(ns string) labels.Set { return labels.Set{"kubernetes.io/metadata.name": ns} }
	r := render(t, []string{filepath.Join(Dir(), "ci", "interceptor-tls-values.yaml")}, nil)
	var policies []*networkingv1.NetworkPolicy
	for _, o := range r.OfKind("NetworkPolicy") {
		policies = append(policies, convert[networkingv1.NetworkPolicy](t, o))
	}
	if len(policies) != 3 {
		t.Fatalf("%d NetworkPolicies rendered by default, want one per component", len(policies))
	}
	interceptor, interceptorPorts := podLabels(t, r, "interceptor")
	scaler, scalerPorts := podLabels(t, r, "scaler")
	operator, operatorPorts := podLabels(t, r, "operator")

	// Every port a policy names is a container port of the pods it selects: a misspelt name
	// would silently admit nothing.
	for _, np := range policies {
		for _, c := range []struct {
			pod   labels.Set
			ports map[string]bool
		}{{interceptor, interceptorPorts}, {scaler, scalerPorts}, {operator, operatorPorts}} {
			if !matches(t, &np.Spec.PodSelector, c.pod) {
				continue
			}
			for _, rule := range np.Spec.Ingress {
				for _, p := range rule.Ports {
					if p.Port == nil || !c.ports[p.Port.StrVal] {
						t.Errorf("NetworkPolicy %s names port %v, which the pods it selects do not have", np.Name, p.Port)
					}
				}
			}
		}
		if len(np.Spec.PolicyTypes) != 1 || np.Spec.PolicyTypes[0] != networkingv1.PolicyTypeIngress {
			t.Errorf("NetworkPolicy %s policy types %v, want Ingress only", np.Name, np.Spec.PolicyTypes)
		}
	}

	ingressNginx := peer{"the ingress-nginx controller", "ingress-nginx", nsLabels("ingress-nginx"),
		labels.Set{"app.kubernetes.io/name": "ingress-nginx", "app.kubernetes.io/component": "controller"}}
	nginxElsewhere := peer{"a pod labelled as ingress-nginx in another namespace", "shop", nsLabels("shop"), ingressNginx.podLabels}
	prometheus := peer{"Prometheus", "monitoring", nsLabels("monitoring"), labels.Set{"app.kubernetes.io/name": "prometheus"}}
	scalerPod := peer{"a scaler", testNamespace, nsLabels(testNamespace), scaler}
	foreignScaler := peer{"a scaler-labelled pod in another namespace", "shop", nsLabels("shop"), scaler}
	keda := peer{"KEDA's operator", "keda", nsLabels("keda"), labels.Set{"app.kubernetes.io/name": "keda-operator"}}
	app := peer{"an app pod", "shop", nsLabels("shop"), labels.Set{"app": "shop"}}
	neighbour := peer{"the release's operator", testNamespace, nsLabels(testNamespace), operator}

	tests := []struct {
		target  string
		pod     labels.Set
		port    string
		allowed []peer
		refused []peer
	}{
		{"interceptor", interceptor, "http", []peer{ingressNginx}, []peer{nginxElsewhere, prometheus, scalerPod, keda, app, neighbour}},
		{"interceptor", interceptor, "https", []peer{ingressNginx}, []peer{nginxElsewhere, prometheus, scalerPod, app}},
		{"interceptor", interceptor, "admin", []peer{scalerPod, prometheus}, []peer{foreignScaler, ingressNginx, keda, app, neighbour}},
		{"scaler", scaler, "grpc", []peer{keda}, []peer{prometheus, ingressNginx, app, neighbour}},
		{"scaler", scaler, "admin", []peer{prometheus}, []peer{keda, app, neighbour}},
		{"operator", operator, "metrics", []peer{prometheus}, []peer{app, scalerPod, keda}},
		{"operator", operator, "health", nil, []peer{app, prometheus}},
	}
	for _, tt := range tests {
		for _, p := range tt.allowed {
			if !admits(t, policies, tt.pod, tt.port, p) {
				t.Errorf("%s cannot reach the %s port %s, want it allowed", p.name, tt.target, tt.port)
			}
		}
		for _, p := range tt.refused {
			if admits(t, policies, tt.pod, tt.port, p) {
				t.Errorf("%s can reach the %s port %s, want it refused", p.name, tt.target, tt.port)
			}
		}
	}

	t.Run("the selectors and extra peers are configurable", func(t *testing.T) {
		r := render(t, nil, map[string]string{
			"networkPolicy.ingressController.namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name": "edge",
			"networkPolicy.extraProxyPeers[0].ipBlock.cidr":                                                 "10.0.0.0/8",
			"networkPolicy.extraAdminPeers[0].podSelector.matchLabels.app":                                  "probe",
		})
		var ps []*networkingv1.NetworkPolicy
		for _, o := range r.OfKind("NetworkPolicy") {
			ps = append(ps, convert[networkingv1.NetworkPolicy](t, o))
		}
		edge := peer{"ingress-nginx in namespace edge", "edge", labels.Set{"kubernetes.io/metadata.name": "edge"}, ingressNginx.podLabels}
		probe := peer{"the probe", testNamespace, nsLabels(testNamespace), labels.Set{"app": "probe"}}
		if !admits(t, ps, interceptor, "http", edge) || admits(t, ps, interceptor, "http", ingressNginx) {
			t.Error("the ingress controller's namespace selector is not the one set")
		}
		if !admits(t, ps, interceptor, "admin", probe) || admits(t, ps, interceptor, "http", probe) {
			t.Error("the extra admin peer does not reach the admin port alone")
		}
		found := false
		for _, np := range ps {
			for _, rule := range np.Spec.Ingress {
				for _, from := range rule.From {
					found = found || (from.IPBlock != nil && from.IPBlock.CIDR == "10.0.0.0/8" && portListed(rule.Ports, "http") && !portListed(rule.Ports, "admin"))
				}
			}
		}
		if !found {
			t.Error("the extra proxy peer is not in the proxy rule")
		}
	})

	t.Run("networkPolicy.enabled=false renders none", func(t *testing.T) {
		r := render(t, nil, map[string]string{"networkPolicy.enabled": "false"})
		if n := len(r.OfKind("NetworkPolicy")); n != 0 {
			t.Errorf("%d NetworkPolicies rendered when opted out", n)
		}
	})
}

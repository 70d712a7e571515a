//go:build e2e

package node_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"text/template"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/lobby-http/lobby/e2e/apps"
	"github.com/lobby-http/lobby/e2e/framework"
	"github.com/lobby-http/lobby/e2e/framework/poll"
	"github.com/lobby-http/lobby/e2e/node"
	"github.com/lobby-http/lobby/operator/api/v1alpha1"
)

// deployEcho deploys the echo app at zero replicas on the real node, from its image, behind an
// HTTPScaledObject for host, and waits for lobby to report the object Ready.
func deployEcho(t *testing.T, c *framework.Cluster, n *node.Node, ns, name, host string) {
	t.Helper()
	ctx := t.Context()
	if _, err := c.Kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.Kube.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
	})
	dep, svc := apps.Echo{Namespace: ns, Name: name, Env: map[string]string{"STARTUP_DELAY": "1s"}}.Objects()
	pod := &dep.Spec.Template.Spec
	pod.NodeSelector = map[string]string{corev1.LabelHostname: n.Name}
	pod.Containers[0].Image = node.EchoImage
	pod.Containers[0].ImagePullPolicy = corev1.PullNever
	pod.SecurityContext = &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true)}
	hso := &v1alpha1.HTTPScaledObject{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1alpha1.HTTPScaledObjectSpec{
			Hosts:          []string{host},
			ScaleTargetRef: v1alpha1.ScaleTargetRef{Name: name, Kind: "Deployment", APIVersion: "apps/v1", Service: name, Port: 80},
			Replicas:       &v1alpha1.ReplicaStruct{Min: ptr.To[int32](0), Max: ptr.To[int32](1)},
			CooldownPeriod: ptr.To[int32](10),
		},
	}
	for _, o := range []client.Object{dep, svc, hso} {
		if err := c.Client.Create(ctx, o); err != nil {
			t.Fatalf("create %T %s: %v", o, o.GetName(), err)
		}
	}
	err := poll.Until(ctx, time.Minute, "HTTPScaledObject "+ns+"/"+name+" Ready", func() error {
		var got v1alpha1.HTTPScaledObject
		if err := c.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &got); err != nil {
			return err
		}
		for _, cond := range got.Status.Conditions {
			if cond.Type == "Ready" && cond.Status == metav1.ConditionTrue {
				return nil
			}
		}
		return fmt.Errorf("conditions %+v", got.Status.Conditions)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// readyReplicas returns the ready replicas of a Deployment.
func readyReplicas(t *testing.T, c *framework.Cluster, ns, name string) int32 {
	t.Helper()
	dep, err := c.Kube.AppsV1().Deployments(ns).Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return dep.Status.ReadyReplicas
}

// endpointAddrs returns the ready addresses and port of a Service's EndpointSlices, as
// ingress-nginx lists a Service's endpoints as its upstreams.
func endpointAddrs(t *testing.T, c *framework.Cluster, ns, svc string) []string {
	t.Helper()
	var addrs []string
	err := poll.Until(t.Context(), time.Minute, "ready endpoints of "+ns+"/"+svc, func() error {
		list, err := c.Kube.DiscoveryV1().EndpointSlices(ns).List(t.Context(), metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + svc})
		if err != nil {
			return err
		}
		addrs = nil
		for _, s := range list.Items {
			if len(s.Ports) == 0 || s.Ports[0].Port == nil {
				continue
			}
			for _, ep := range s.Endpoints {
				if ep.Conditions.Ready != nil && *ep.Conditions.Ready && len(ep.Addresses) > 0 {
					addrs = append(addrs, netip.AddrPortFrom(netip.MustParseAddr(ep.Addresses[0]), uint16(*s.Ports[0].Port)).String())
				}
			}
		}
		if len(addrs) == 0 {
			return fmt.Errorf("none in %d slices", len(list.Items))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return addrs
}

// waitRouting waits until every interceptor pod's admin /queue lists the route key.
func waitRouting(t *testing.T, c *framework.Cluster, pods []corev1.Pod, key string) {
	t.Helper()
	// The chart allows its scaler's ServiceAccount on the admin API; the test reads as that one.
	admin, err := c.AdminFor(t.Context(), releaseNS+"/"+release+"-scaler", framework.AdminAudience)
	if err != nil {
		t.Fatal(err)
	}
	err = poll.Until(t.Context(), time.Minute, "every interceptor to route "+key, func() error {
		for _, p := range pods {
			if p.Labels["app.kubernetes.io/component"] != "interceptor" {
				continue
			}
			q, err := admin.Queue(t.Context(), "http://"+netip.AddrPortFrom(netip.MustParseAddr(p.Status.PodIP), 9090).String())
			if err != nil {
				return fmt.Errorf("read /queue of %s: %w", p.Name, err)
			}
			if _, ok := q[key]; !ok {
				return fmt.Errorf("%s does not route %s yet", p.Name, key)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// startNginx runs nginx configured as ingress-nginx configures an Ingress to the interceptor's
// proxy Service (the e2e suite's configuration, e2e/system/testdata/nginx.conf.tmpl), with the
// interceptor pods as upstreams, and returns its URL.
func startNginx(t *testing.T, c *framework.Cluster, root string, upstreams []string) string {
	t.Helper()
	bin, err := exec.LookPath("nginx")
	if err != nil {
		if bin, err = exec.LookPath("/usr/sbin/nginx"); err != nil {
			t.Fatalf("find nginx (install the Debian package nginx: make deps): %v", err)
		}
	}
	addr, err := c.AllocAddr()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp(c.Dir, "nginx-")
	if err != nil {
		t.Fatal(err)
	}
	listen := netip.AddrPortFrom(addr, 8080).String()
	tmpl, err := template.ParseFiles(filepath.Join(root, "e2e", "system", "testdata", "nginx.conf.tmpl"))
	if err != nil {
		t.Fatal(err)
	}
	var conf bytes.Buffer
	if err := tmpl.Execute(&conf, map[string]any{"Dir": dir, "Listen": listen, "Upstreams": upstreams}); err != nil {
		t.Fatal(err)
	}
	confFile := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confFile, conf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := c.RunBinary(t.Context(), framework.ProcessSpec{Name: "nginx", Path: bin, Args: []string{"-p", dir, "-c", confFile}, Addr: addr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Stop() })
	url := "http://" + listen
	err = poll.Until(t.Context(), 10*time.Second, "nginx to listen on "+listen, func() error {
		resp, err := http.Get(url + "/")
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return url
}

//go:build e2e

package system

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/lobby-http/lobby/e2e/deploy"
	"github.com/lobby-http/lobby/e2e/framework/poll"
	"github.com/lobby-http/lobby/internal/testpki"
	"github.com/lobby-http/lobby/operator/api/v1alpha1"
)

// createTLSSecret creates a Secret of type kubernetes.io/tls holding leaf, deleted with the test.
func createTLSSecret(t *testing.T, ns, name string, leaf testpki.Leaf) {
	t.Helper()
	createSecret(t, ns, name, corev1.SecretTypeTLS, map[string][]byte{"tls.crt": leaf.CertPEM, "tls.key": leaf.KeyPEM})
}

func createSecret(t *testing.T, ns, name string, typ corev1.SecretType, data map[string][]byte) {
	t.Helper()
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Type: typ, Data: data}
	if err := suite.cluster.Client.Create(t.Context(), s); err != nil {
		t.Fatalf("create Secret %s/%s: %v", ns, name, err)
	}
	t.Cleanup(func() { _ = suite.cluster.Client.Delete(context.Background(), s) })
}

// TestHTTPSFromTheIngressToAnHTTPSApp runs an interceptor with TLS on, installed from the chart's
// TLS values, behind nginx that speaks HTTPS to it and verifies its certificate (proxy_ssl_verify
// on, against a CA the test made, for the proxy Service's name, which only the second of the
// interceptor's two key pairs carries: SNI must pick it). The app serves HTTPS with a certificate
// for its Service's name from the same CA, which the interceptor trusts through a CA bundle
// mounted with extraVolumes. A request wakes the app from zero through that path, a second one
// finds it warm; an app whose certificate names another Service gets 502 until its
// HTTPScaledObject opts out of verification.
func TestHTTPSFromTheIngressToAnHTTPSApp(t *testing.T) {
	ns := testNamespace(t)
	ctx := t.Context()
	rel := suite.lobby
	sfx := randomSuffix()
	ca := testpki.NewCA(t, "e2e cluster CA")
	proxyName := rel.Release + "-interceptor-proxy." + rel.Namespace + ".svc"

	createTLSSecret(t, rel.Namespace, "proxy-default-"+sfx, ca.Issue(t, "default.invalid"))
	createTLSSecret(t, rel.Namespace, "proxy-tls-"+sfx, ca.Issue(t, proxyName, proxyName+".cluster.local"))
	createSecret(t, rel.Namespace, "upstream-ca-"+sfx, corev1.SecretTypeOpaque, map[string][]byte{"ca.crt": ca.PEM})
	createTLSSecret(t, ns, "secure-tls", ca.Issue(t, "secure."+ns+".svc", "secure."+ns+".svc.cluster.local"))
	createTLSSecret(t, ns, "wrong-tls", ca.Issue(t, "someone-else."+ns+".svc"))

	in, err := rel.StartVariant(ctx, "interceptor", deploy.VariantOptions{
		Name:        "tls-" + sfx,
		ValuesFiles: []string{filepath.Join("testdata", "values.yaml")},
		Set: map[string]string{
			"interceptor.tls.enabled":                       "true",
			"interceptor.tls.secretNames[0]":                "proxy-default-" + sfx,
			"interceptor.tls.secretNames[1]":                "proxy-tls-" + sfx,
			"interceptor.upstreamTLS.caFile":                "/etc/lobby/upstream-ca/ca.crt",
			"interceptor.extraVolumes[0].name":              "upstream-ca",
			"interceptor.extraVolumes[0].secret.secretName": "upstream-ca-" + sfx,
			"interceptor.extraVolumeMounts[0].name":         "upstream-ca",
			"interceptor.extraVolumeMounts[0].mountPath":    "/etc/lobby/upstream-ca",
		},
		// The scalers subscribe to it, so the requests it holds wake the app.
		Publish: true,
	})
	if err != nil {
		t.Fatalf("start an interceptor with TLS: %v", err)
	}
	t.Cleanup(func() {
		if err := rel.Stop(context.Background(), in); err != nil {
			t.Errorf("stop the TLS interceptor: %v", err)
		}
	})

	secureHost, wrongHost := "secure."+ns+".example.com", "wrong."+ns+".example.com"
	secure := deployApp(t, ns, appSpec{name: "secure", tlsSecret: "secure-tls", hso: v1alpha1.HTTPScaledObjectSpec{
		Hosts: []string{secureHost}, Replicas: &v1alpha1.ReplicaStruct{Min: ptr.To[int32](0), Max: ptr.To[int32](1)},
	}})
	wrong := deployApp(t, ns, appSpec{name: "wrong", tlsSecret: "wrong-tls", replicas: 1, hso: v1alpha1.HTTPScaledObjectSpec{
		Hosts: []string{wrongHost}, Replicas: &v1alpha1.ReplicaStruct{Min: ptr.To[int32](1), Max: ptr.To[int32](1)},
	}})
	waitRoutingOn(t, []*deploy.Instance{in}, secure.key(), 30*time.Second)
	waitRoutingOn(t, []*deploy.Instance{in}, wrong.key(), 30*time.Second)

	caFile := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(caFile, ca.PEM, 0o644); err != nil {
		t.Fatal(err)
	}
	nginx, err := startNginx(ctx, suite.cluster, "nginx-tls.conf.tmpl",
		func() []string { return proxyAddrs([]*deploy.Instance{in}, "https") },
		map[string]any{"CAFile": caFile, "ServerName": proxyName})
	if err != nil {
		t.Fatalf("start nginx with TLS to the interceptor: %v", err)
	}
	t.Cleanup(func() { _ = nginx.proc.Stop() })

	if d, _, err := secure.replicas(ctx); err != nil || d != 0 {
		t.Fatalf("the app has %d replicas (%v) before the first request, want 0", d, err)
	}
	check := func(what string, r response, wantHeld bool) {
		t.Helper()
		if r.err != nil || r.code != http.StatusOK {
			t.Fatalf("%s: status %d, %v: %s", what, r.code, r.err, r.body)
		}
		var e struct {
			Proto         string `json:"proto"`
			TLSServerName string `json:"tlsServerName"`
		}
		if err := json.Unmarshal([]byte(r.body), &e); err != nil {
			t.Fatalf("%s: the app's answer %q: %v", what, r.body, err)
		}
		if e.Proto != "HTTP/2.0" || e.TLSServerName != "secure."+ns+".svc" {
			t.Errorf("%s: the app saw %s with server name %q, want HTTP/2.0 over TLS for secure.%s.svc", what, e.Proto, e.TLSServerName, ns)
		}
		if held := r.header.Get("X-Lobby-Cold-Start") != ""; held != wantHeld {
			t.Errorf("%s: held %v (X-Lobby-Cold-Start %q), want %v", what, held, r.header.Get("X-Lobby-Cold-Start"), wantHeld)
		}
	}
	start := time.Now()
	check("the cold request", send(ctx, http.MethodGet, nginx.URL+"/", secureHost, nil), true)
	t.Logf("cold start through nginx → TLS interceptor → HTTPS app: %v", time.Since(start).Round(time.Millisecond))
	check("the warm request", send(ctx, http.MethodGet, nginx.URL+"/", secureHost, nil), false)

	// A certificate for another Service's name is refused by the interceptor: 502 through nginx.
	if r := send(ctx, http.MethodGet, nginx.URL+"/", wrongHost, nil); r.err != nil || r.code != http.StatusBadGateway {
		t.Fatalf("an app whose certificate names another Service: status %d, %v, want 502", r.code, r.err)
	}
	if v, err := scrapeSample(in.URL("admin")+"/metrics", "lobby_interceptor_upstream_errors_total",
		map[string]string{"route": wrong.key(), "reason": "certificate"}); err != nil || v < 1 {
		t.Errorf("certificate errors of %s counted %v (%v), want at least 1", wrong.key(), v, err)
	}
	// The route opts out: the same app is served.
	patch := []byte(`{"metadata":{"annotations":{"` + v1alpha1.UpstreamTLSInsecureSkipVerifyAnnotation + `":"true"}}}`)
	hso := &v1alpha1.HTTPScaledObject{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "wrong"}}
	if err := suite.cluster.Client.Patch(ctx, hso, client.RawPatch(types.MergePatchType, patch)); err != nil {
		t.Fatalf("annotate the HTTPScaledObject: %v", err)
	}
	if err := poll.Until(t.Context(), 30*time.Second, "the opted-out app to be served", func() error {
		r := send(ctx, http.MethodGet, nginx.URL+"/", wrongHost, nil)
		if r.err != nil || r.code != http.StatusOK || !strings.Contains(r.body, `"tlsServerName":"wrong.`+ns+`.svc"`) {
			return fmt.Errorf("status %d, %v: %.200s", r.code, r.err, r.body)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

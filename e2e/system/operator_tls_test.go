//go:build e2e

package system

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/lobby-http/lobby/e2e/apps"
	"github.com/lobby-http/lobby/e2e/deploy"
	"github.com/lobby-http/lobby/e2e/framework/poll"
	"github.com/lobby-http/lobby/operator/api/v1alpha1"
)

// kedaClusterObjectNamespace is where the cluster's KEDA reads the Secrets a
// ClusterTriggerAuthentication names (its KEDA_CLUSTER_OBJECT_NAMESPACE), as in KEDA's own
// manifests.
const kedaClusterObjectNamespace = "keda"

// TestOperatorTLSTriggerWithKEDA has the cluster's KEDA scale an app from zero through a scaler
// that requires mutual TLS, with the ScaledObject written by lobby's operator, configured from
// the chart's scaler.tls values: the trigger carries enableTLS and names a
// ClusterTriggerAuthentication whose Secret, in KEDA's namespace, holds the scaler's CA and
// KEDA's client key pair. No ScaledObject is written by hand.
//
// The operator under test runs beside the release's, rendered from the same chart with TLS on,
// pointed at a TLS scaler of its own and limited to the test's namespace. Two operators would
// write the same ScaledObject two ways, so the release's operator is stopped for the test and
// started again where it stood when the test ends.
func TestOperatorTLSTriggerWithKEDA(t *testing.T) {
	ns := testNamespace(t)
	ctx := t.Context()
	c := suite.cluster
	rel := suite.lobby
	const name, host = "tls", "operator-tls.test"

	addr, err := c.AllocAddr()
	if err != nil {
		t.Fatal(err)
	}
	ca := newTestCA(t, "lobby scaler CA")
	serverCert, serverKey := ca.issue(t, "lobby-scaler", x509.ExtKeyUsageServerAuth, addr)
	clientCert, clientKey := ca.issue(t, "keda-operator", x509.ExtKeyUsageClientAuth, netip.Addr{})
	suffix := randomSuffix()

	// The scaler's Secret, as cert-manager writes it, in the release namespace; KEDA's, as the
	// chart's documentation tells users to write it, in KEDA's namespace.
	scalerSecret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: rel.Release + "-scaler-tls-" + suffix, Namespace: rel.Namespace},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{"tls.crt": serverCert, "tls.key": serverKey, "ca.crt": ca.certPEM},
	}
	kedaSecret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "lobby-scaler-client-" + suffix, Namespace: kedaClusterObjectNamespace},
		Data:       map[string][]byte{"ca.crt": ca.certPEM, "tls.crt": clientCert, "tls.key": clientKey},
	}
	authName := "lobby-scaler-tls-" + suffix
	auth := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "keda.sh/v1alpha1", "kind": "ClusterTriggerAuthentication",
		"metadata": map[string]any{"name": authName},
		"spec": map[string]any{"secretTargetRef": []any{
			map[string]any{"parameter": "caCert", "name": kedaSecret.Name, "key": "ca.crt"},
			map[string]any{"parameter": "tlsClientCert", "name": kedaSecret.Name, "key": "tls.crt"},
			map[string]any{"parameter": "tlsClientKey", "name": kedaSecret.Name, "key": "tls.key"},
		}},
	}}
	for _, o := range []client.Object{scalerSecret, kedaSecret, auth} {
		if err := c.Client.Create(ctx, o); err != nil {
			t.Fatalf("create %s %s: %v", o.GetObjectKind().GroupVersionKind().Kind, o.GetName(), err)
		}
		// t.Context() is already canceled when cleanups run; these objects outlive the namespace.
		t.Cleanup(func() { _ = c.Client.Delete(context.Background(), o) })
	}

	tlsValues := map[string]string{
		"scaler.tls.enabled": "true", "scaler.tls.secretName": scalerSecret.Name, "scaler.tls.verifyClients": "true",
		"scaler.tls.triggerAuthentication.kind": "ClusterTriggerAuthentication",
		"scaler.tls.triggerAuthentication.name": authName,
	}
	values := []string{filepath.Join("testdata", "values.yaml")}
	scaler, err := rel.StartVariant(ctx, "scaler", deploy.VariantOptions{Name: "tls-" + suffix, ValuesFiles: values, Set: tlsValues, Addr: addr})
	if err != nil {
		t.Fatalf("start the TLS scaler: %v", err)
	}
	t.Cleanup(func() { _ = scaler.Process.Stop() })
	scalerAddr := netip.AddrPortFrom(scaler.Addr, uint16(scaler.Ports["grpc"])).String()

	ops := rel.Instances("operator")
	if len(ops) != 1 {
		t.Fatalf("the release runs %d operators, want 1", len(ops))
	}
	if err := rel.StopInPlace(ops[0]); err != nil {
		t.Fatalf("stop the release's operator: %v", err)
	}
	t.Cleanup(func() {
		if _, err := rel.StartInPlace(context.Background(), ops[0]); err != nil {
			t.Errorf("start the release's operator again: %v", err)
		}
	})
	opValues := map[string]string{
		// The release's election Lease is not this operator's business, and its Services' name
		// for the scaler leads to the release's plain-text scalers.
		"watchNamespace": ns, "operator.leaderElect": "false",
		"operator.env[0].name": "LOBBY_SCALER_ADDRESS", "operator.env[0].value": scalerAddr,
	}
	for k, v := range tlsValues {
		opValues[k] = v
	}
	op, err := rel.StartVariant(ctx, "operator", deploy.VariantOptions{Name: "tls-" + suffix, ValuesFiles: values, Set: opValues})
	if err != nil {
		t.Fatalf("start the operator with the TLS values: %v", err)
	}
	// Registered after the release operator's restart, so it runs first: the two never overlap.
	t.Cleanup(func() { _ = op.Process.Stop() })

	// The app, scaled to zero, routed by an HTTPScaledObject the operator turns into a ScaledObject.
	dep, svc := apps.Echo{Namespace: ns, Name: name}.Objects()
	hso := &v1alpha1.HTTPScaledObject{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1alpha1.HTTPScaledObjectSpec{
			Hosts:          []string{host},
			ScaleTargetRef: v1alpha1.ScaleTargetRef{Name: name, Kind: "Deployment", APIVersion: "apps/v1", Service: name, Port: 80},
			Replicas:       &v1alpha1.ReplicaStruct{Min: ptr.To[int32](0), Max: ptr.To[int32](1)},
		},
	}
	for _, o := range []client.Object{dep, svc, hso} {
		if err := c.Client.Create(ctx, o); err != nil {
			t.Fatalf("create %s %s: %v", o.GetObjectKind().GroupVersionKind().Kind, o.GetName(), err)
		}
	}

	wantTrigger := map[string]any{
		"type":              "external-push",
		"metadata":          map[string]any{"scalerAddress": scalerAddr, "httpScaledObject": name, "enableTLS": "true"},
		"authenticationRef": map[string]any{"kind": "ClusterTriggerAuthentication", "name": authName},
	}
	if err := poll.Until(t.Context(), 60*time.Second, "the operator to write the ScaledObject with the TLS trigger", func() error {
		var so unstructured.Unstructured
		so.SetGroupVersionKind(scaledObjectGVK)
		if err := c.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &so); err != nil {
			return err
		}
		if ref := metav1.GetControllerOf(&so); ref == nil || ref.Kind != "HTTPScaledObject" || ref.Name != name {
			return fmt.Errorf("ScaledObject controller reference %+v, want the HTTPScaledObject", ref)
		}
		triggers, _, _ := unstructured.NestedSlice(so.Object, "spec", "triggers")
		if len(triggers) != 1 || fmt.Sprint(triggers[0]) != fmt.Sprint(wantTrigger) {
			return fmt.Errorf("triggers %v, want [%v]", triggers, wantTrigger)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	waitRouting(t, ns+"/"+name, 60*time.Second)
	waitTLSStream(t, scaler, ns, name)
	// The operator mirrors KEDA's verdict onto the HTTPScaledObject, where users look.
	if err := poll.Until(t.Context(), 60*time.Second, "the HTTPScaledObject to be Ready with KEDA's ScaledObjectReady mirrored", func() error {
		var got v1alpha1.HTTPScaledObject
		if err := c.Client.Get(ctx, client.ObjectKeyFromObject(hso), &got); err != nil {
			return err
		}
		for _, typ := range []string{v1alpha1.ConditionReady, v1alpha1.ConditionScaledObjectReady} {
			if cond := meta.FindStatusCondition(got.Status.Conditions, typ); cond == nil || cond.Status != metav1.ConditionTrue {
				return fmt.Errorf("%s = %+v", typ, cond)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	a := &app{ns: ns, name: name}
	if desired, _, err := a.replicas(ctx); err != nil || desired != 0 {
		t.Fatalf("the Deployment wants %d replicas (%v) before any request; want 0", desired, err)
	}
	resp := send(ctx, http.MethodGet, suite.ingress.URL+"/", host, nil)
	var e echoed
	if resp.err != nil || resp.code != http.StatusOK || json.Unmarshal([]byte(resp.body), &e) != nil || e.PodName == "" {
		t.Fatalf("request while scaled to zero: %d %q %v; want the echo app's answer after KEDA scaled it up", resp.code, excerpt(resp.body), resp.err)
	}
	if desired, _, err := a.replicas(ctx); err != nil || desired < 1 {
		t.Errorf("the Deployment wants %d replicas (%v); want KEDA to have scaled it to 1", desired, err)
	}
	// KEDA's operator asked the TLS scaler for the metric too, with its client certificate: the
	// scaler refuses connections without one.
	waitTLSCalls(t, scaler)
}

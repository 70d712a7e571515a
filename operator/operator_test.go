package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/lobby-http/lobby/operator/api/v1alpha1"
	"github.com/lobby-http/lobby/operator/internal/resources"
	"github.com/lobby-http/lobby/operator/internal/testenv"
)

// repeatable lets a test build the manager more than once in a process (go test -count).
func repeatable(o *manager.Options) {
	o.Controller.SkipNameValidation = ptr.To(true)
}

// freeAddr returns a loopback address with a port nothing listens on right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 30s for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestOperatorRunsAsMainWiresIt(t *testing.T) {
	kube := testenv.Start(t, testenv.Options{KEDA: true})
	cfg, err := loadConfig(env(map[string]string{
		"LOBBY_SCALER_ADDRESS":  "lobby-scaler.lobby.svc.cluster.local:9090",
		"LOBBY_METRICS_ADDR":    freeAddr(t),
		"LOBBY_HEALTH_ADDR":     freeAddr(t),
		"POD_NAMESPACE":         "default",
		"LOBBY_WATCH_NAMESPACE": "default",
	}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	mgr, err := build(ctx, cfg, testr.New(t), kube, repeatable)
	if err != nil {
		cancel()
		t.Fatalf("build: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("manager stopped with %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("manager did not stop within 30s of its signal")
		}
	})

	eventually(t, "/healthz and /readyz to succeed", func() bool {
		h, _ := get(t, "http://"+cfg.HealthAddr+"/healthz")
		r, _ := get(t, "http://"+cfg.HealthAddr+"/readyz")
		return h == http.StatusOK && r == http.StatusOK
	})

	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(kube, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the leader election Lease in POD_NAMESPACE", func() bool {
		var lease coordinationv1.Lease
		err := c.Get(t.Context(), types.NamespacedName{Namespace: "default", Name: leaderElectionID}, &lease)
		return err == nil && lease.Spec.HolderIdentity != nil && *lease.Spec.HolderIdentity != ""
	})

	// Objects in the watched namespace are reconciled; objects elsewhere are not.
	for _, ns := range []string{"default", "elsewhere"} {
		if ns != "default" {
			if err := c.Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
				t.Fatal(err)
			}
		}
		hso := &v1alpha1.HTTPScaledObject{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "app"},
			Spec: v1alpha1.HTTPScaledObjectSpec{
				Hosts:          []string{ns + ".example.com"},
				ScaleTargetRef: v1alpha1.ScaleTargetRef{Name: "app", Service: "app", Port: 80},
			},
		}
		if err := c.Create(t.Context(), hso); err != nil {
			t.Fatal(err)
		}
	}
	so := &unstructured.Unstructured{}
	so.SetGroupVersionKind(resources.ScaledObjectGVK)
	eventually(t, "the ScaledObject of the watched namespace's object", func() bool {
		return c.Get(t.Context(), types.NamespacedName{Namespace: "default", Name: "app"}, so) == nil
	})
	triggers, _, _ := unstructured.NestedSlice(so.Object, "spec", "triggers")
	if len(triggers) != 1 || scalerAddress(triggers[0]) != cfg.ScalerAddress {
		t.Errorf("triggers = %v, want one naming LOBBY_SCALER_ADDRESS %s", triggers, cfg.ScalerAddress)
	}
	var hso v1alpha1.HTTPScaledObject
	if err := c.Get(t.Context(), types.NamespacedName{Namespace: "elsewhere", Name: "app"}, &hso); err != nil {
		t.Fatal(err)
	}
	if len(hso.Status.Conditions) != 0 {
		t.Errorf("object outside LOBBY_WATCH_NAMESPACE has conditions %v, want it left alone", hso.Status.Conditions)
	}
	if err := c.Get(t.Context(), types.NamespacedName{Namespace: "elsewhere", Name: "app"}, so); client.IgnoreNotFound(err) != nil || err == nil {
		t.Errorf("ScaledObject outside LOBBY_WATCH_NAMESPACE: err = %v, want not found", err)
	}

	code, body := get(t, "http://"+cfg.MetricsAddr+"/metrics")
	if code != http.StatusOK || !strings.Contains(body, `controller_runtime_reconcile_total{controller="httpscaledobject"`) {
		t.Errorf("/metrics = %d, want 200 with the controller's reconcile counts; got:\n%.2000s", code, body)
	}
}

// scalerAddress returns the scalerAddress metadata of an unstructured trigger.
func scalerAddress(v any) string {
	m, _ := v.(map[string]any)
	md, _ := m["metadata"].(map[string]any)
	s, _ := md["scalerAddress"].(string)
	return s
}

func TestOperatorRefusesToStartWithoutKEDA(t *testing.T) {
	kube := testenv.Start(t, testenv.Options{})
	cfg, err := loadConfig(env(map[string]string{"LOBBY_SCALER_ADDRESS": "s:9090", "LOBBY_LEADER_ELECT": "false",
		"LOBBY_METRICS_ADDR": freeAddr(t), "LOBBY_HEALTH_ADDR": freeAddr(t)}))
	if err != nil {
		t.Fatal(err)
	}
	_, err = build(t.Context(), cfg, testr.New(t), kube, repeatable)
	if err == nil || !strings.Contains(err.Error(), "install KEDA before lobby") {
		t.Errorf("build() without KEDA's CRDs = %v, want an error saying to install KEDA", err)
	}
}

// Package testenv starts the control plane the operator's tests run against: kube-apiserver and
// etcd from KUBEBUILDER_ASSETS (controller-runtime's envtest), with lobby's generated CRDs and,
// when a test asks, KEDA's.
package testenv

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/go-logr/logr"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// AssetsEnv names the folder with kube-apiserver and etcd, as controller-runtime's envtest reads
// it.
const AssetsEnv = "KUBEBUILDER_ASSETS"

// Options choose what Start installs besides lobby's CRDs.
type Options struct {
	// KEDA installs KEDA's CRDs too (ScaledObject and the others), from the keda-crds folder the
	// tools build writes next to the binaries folder AssetsEnv names.
	KEDA bool
}

// Start starts kube-apiserver and etcd with lobby's CRDs (config/crd), and KEDA's when o says so,
// stops them when t ends, and returns a REST config of the API server. It skips t in -short mode
// or when AssetsEnv is unset: the binaries come from `bash e2e/tools/build.sh .cache/tools`
// (`make test` sets it).
func Start(t testing.TB, o Options) *rest.Config {
	t.Helper()
	assets := os.Getenv(AssetsEnv)
	if assets == "" {
		t.Skip(AssetsEnv + " is unset: this test needs kube-apiserver and etcd; run `make test`, " +
			"or set it to the folder printed by `bash e2e/tools/build.sh .cache/tools`")
	}
	if testing.Short() {
		t.Skip("skipping the control-plane test in short mode")
	}
	dirs, err := crdDirs(assets, o)
	if err != nil {
		t.Fatal(err)
	}
	// envtest and the managers tests build log through controller-runtime's process-wide logger,
	// which outlives each test; tests give their managers loggers of their own.
	ctrl.SetLogger(logr.Discard())
	env := &envtest.Environment{CRDDirectoryPaths: dirs, ErrorIfCRDPathMissing: true}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("start control plane: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stop control plane: %v", err)
		}
	})
	return cfg
}

// crdDirs returns the folders of the CRDs to install: lobby's, found from this file's place in
// the source tree (so that every test package finds them whatever its folder), and KEDA's.
func crdDirs(assets string, o Options) ([]string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return nil, errors.New("find lobby's CRDs: no caller information")
	}
	lobby := filepath.Join(filepath.Dir(file), "..", "..", "..", "config", "crd")
	if _, err := os.Stat(lobby); err != nil {
		return nil, fmt.Errorf("find lobby's CRDs: %w (generate them with `make manifests`)", err)
	}
	dirs := []string{lobby}
	if o.KEDA {
		keda := filepath.Join(assets, "..", "keda-crds")
		if _, err := os.Stat(keda); err != nil {
			return nil, fmt.Errorf("find KEDA's CRDs next to %s: %w (build them with `make tools`)", AssetsEnv, err)
		}
		dirs = append(dirs, keda)
	}
	return dirs, nil
}

// Client returns a client of cfg that reads straight from the API server (so assertions never see
// a stale cache), with a scheme holding the types that adds add, and that scheme.
func Client(t testing.TB, cfg *rest.Config, adds ...func(*k8sruntime.Scheme) error) (client.Client, *k8sruntime.Scheme) {
	t.Helper()
	scheme := k8sruntime.NewScheme()
	for _, add := range adds {
		if err := add(scheme); err != nil {
			t.Fatalf("build the test client's scheme: %v", err)
		}
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatalf("build the test client: %v", err)
	}
	return c, scheme
}

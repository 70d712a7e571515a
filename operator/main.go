// Command operator reconciles each HTTPScaledObject into a KEDA ScaledObject that scales its
// workload through lobby's scaler, and keeps the object's status conditions true. Configuration is
// by environment variables; see docs/operator.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/lobby-http/lobby/internal/kube"
	"github.com/lobby-http/lobby/internal/logging"
	"github.com/lobby-http/lobby/internal/memlimit"
	"github.com/lobby-http/lobby/operator/api/v1alpha1"
	"github.com/lobby-http/lobby/operator/api/v1beta1"
	"github.com/lobby-http/lobby/operator/internal/controller"
	"github.com/lobby-http/lobby/operator/internal/resources"
)

// leaderElectionID names the Lease the replicas elect a leader with.
const leaderElectionID = "lobby-operator"

func main() {
	signals, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	err := run(signals)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "operator: %v\n", err)
		os.Exit(1)
	}
}

// run loads the configuration, wires the operator and runs it until signals ends.
func run(signals context.Context) error {
	cfg, err := loadConfig(os.LookupEnv)
	if err != nil {
		return err
	}
	log := logging.New(logging.Options{Level: cfg.LogLevel, Format: cfg.LogFormat})
	klog.SetLogger(log.WithName("client-go"))
	memlimit.Configure(cfg.MemoryLimit, os.Getenv(memlimit.GoVariable) != "", log)
	ctrl.SetLogger(log)
	restCfg, err := kube.RESTConfig(cfg.Kubeconfig)
	if err != nil {
		return err
	}
	mgr, err := build(signals, cfg, log, restCfg, nil)
	if err != nil {
		return err
	}
	log.Info("starting", "scalerAddress", cfg.ScalerAddress, "scalerTLS", cfg.ScalerTLS,
		"scalerTriggerAuth", cfg.ScalerTriggerAuth.String(), "namespace", cfg.WatchNamespace,
		"leaderElect", cfg.LeaderElect, "metricsAddr", cfg.MetricsAddr, "healthAddr", cfg.HealthAddr)
	if err := mgr.Start(signals); err != nil {
		return fmt.Errorf("run manager: %w", err)
	}
	log.Info("stopped")
	return nil
}

// build constructs the manager with the reconciler registered, without starting it. It fails
// early, with what to do, when KEDA's ScaledObject CRD is not installed. tweak, when not nil,
// adjusts the manager's options; tests use it to run several managers in one process.
func build(ctx context.Context, cfg Config, log logr.Logger, kube *rest.Config, tweak func(*manager.Options)) (manager.Manager, error) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("register Kubernetes types: %w", err)
	}
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("register HTTPScaledObject types: %w", err)
	}
	if err := v1beta1.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("register InterceptorRoute types: %w", err)
	}
	opts := manager.Options{
		Scheme:                        scheme,
		Logger:                        log,
		Metrics:                       metricsserver.Options{BindAddress: cfg.MetricsAddr},
		HealthProbeBindAddress:        cfg.HealthAddr,
		LeaderElection:                cfg.LeaderElect,
		LeaderElectionID:              leaderElectionID,
		LeaderElectionNamespace:       cfg.LeaderElectionNamespace,
		LeaderElectionReleaseOnCancel: true,
		// ScaledObjects are read as unstructured objects; serve those reads from the cache too.
		Client: client.Options{Cache: &client.CacheOptions{Unstructured: true}},
	}
	if cfg.WatchNamespace != "" {
		opts.Cache = cache.Options{DefaultNamespaces: map[string]cache.Config{cfg.WatchNamespace: {}}}
	}
	if tweak != nil {
		tweak(&opts)
	}
	mgr, err := ctrl.NewManager(kube, opts)
	if err != nil {
		return nil, fmt.Errorf("create manager: %w", err)
	}
	gvk := resources.ScaledObjectGVK
	if _, err := mgr.GetRESTMapper().RESTMapping(gvk.GroupKind(), gvk.Version); err != nil {
		return nil, fmt.Errorf("find KEDA's ScaledObject API (%s): install KEDA before lobby: %w", gvk.GroupVersion(), err)
	}
	irGVK := v1beta1.GroupVersion.WithKind(v1beta1.Kind)
	_, irErr := mgr.GetRESTMapper().RESTMapping(irGVK.GroupKind(), irGVK.Version)
	r := &controller.Reconciler{
		Routes:  irErr == nil,
		Client:  mgr.GetClient(),
		Events:  mgr.GetEventRecorder(controller.FieldManager),
		Trigger: cfg.trigger(),
		Log:     log.WithName("controller"),
		Reader:  mgr.GetAPIReader(),
	}
	if err := r.SetupWithManager(ctx, mgr); err != nil {
		return nil, fmt.Errorf("set up controller: %w", err)
	}
	if irErr != nil {
		// helm upgrade does not install new CRDs: keep serving HTTPScaledObjects.
		log.Info("InterceptorRoutes are not served: apply the chart's CRDs to reconcile them", "error", irErr.Error())
	} else {
		rr := &controller.RouteReconciler{Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), Log: log.WithName("routes")}
		if err := rr.SetupWithManager(mgr); err != nil {
			return nil, fmt.Errorf("set up InterceptorRoute controller: %w", err)
		}
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return nil, fmt.Errorf("add health check: %w", err)
	}
	if err := mgr.AddReadyzCheck("caches", func(req *http.Request) error {
		ctx, cancel := context.WithTimeout(req.Context(), time.Second)
		defer cancel()
		if !mgr.GetCache().WaitForCacheSync(ctx) {
			return errors.New("caches have not synced")
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("add readiness check: %w", err)
	}
	return mgr, nil
}

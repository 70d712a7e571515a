// Command scaler is lobby's KEDA external-push scaler. It subscribes to the push stream of every
// interceptor pod, sums their counts per HTTPScaledObject, and serves KEDA's ExternalScaler gRPC
// API from the sums. It keeps no state of its own, so any replica gives the same answers.
// Configuration is by environment variables; see docs/scaler.md.
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
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/lobby-http/lobby/internal/httpso"
	"github.com/lobby-http/lobby/internal/kube"
	"github.com/lobby-http/lobby/internal/logging"
	"github.com/lobby-http/lobby/internal/memlimit"
	"github.com/lobby-http/lobby/internal/server"
	"github.com/lobby-http/lobby/scaler/internal/fleet"
	"github.com/lobby-http/lobby/scaler/internal/service"
)

func main() {
	signals, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	err := run(signals)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "scaler: %v\n", err)
		os.Exit(1)
	}
}

// run loads the configuration, wires the scaler and runs it until ctx ends.
func run(ctx context.Context) error {
	cfg, err := loadConfig(os.LookupEnv)
	if err != nil {
		return err
	}
	log := logging.New(logging.Options{Level: cfg.LogLevel, Format: cfg.LogFormat})
	klog.SetLogger(log.WithName("client-go"))
	memlimit.Configure(cfg.MemoryLimit, os.Getenv(memlimit.GoVariable) != "", log)
	restCfg, err := kube.RESTConfig(cfg.Kubeconfig)
	if err != nil {
		return err
	}
	kubeClient, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return fmt.Errorf("create Kubernetes client: %w", err)
	}
	hsoClient, err := httpso.NewClient(restCfg)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	var routes cache.SharedIndexInformer
	served, err := httpso.RoutesServed(kubeClient.Discovery())
	if err != nil {
		return err
	}
	if served {
		irClient, err := httpso.NewRouteClient(restCfg)
		if err != nil {
			return err
		}
		routes = httpso.NewRouteInformer(irClient, cfg.WatchNamespace, 0)
	} else {
		// helm upgrade does not install new CRDs: keep serving HTTPScaledObjects.
		log.Info("InterceptorRoutes are not served: apply the chart's CRDs to scale on them")
	}
	s, err := build(cfg, log, kubeClient, httpso.NewInformer(hsoClient, cfg.WatchNamespace, 0), routes, reg)
	if err != nil {
		return err
	}
	log.Info("starting", "grpcAddr", cfg.GRPCAddr, "adminAddr", cfg.AdminAddr, "interceptorService",
		cfg.InterceptorNamespace+"/"+cfg.InterceptorService, "watchNamespace", cfg.WatchNamespace, "tls", cfg.TLSCertFile != "")
	return s.run(ctx)
}

// scaler is the wired scaler, ready to run.
type scaler struct {
	log       logr.Logger
	fleet     *fleet.Fleet
	discovery *fleet.Discovery
	objects   *service.InformerObjects
	health    *service.Health
	grpc      *service.GRPC
	admin     *server.Server
}

// build constructs every component from the configuration, without starting any.
func build(cfg Config, log logr.Logger, kube kubernetes.Interface, objectsInformer, routesInformer cache.SharedIndexInformer,
	reg *prometheus.Registry) (*scaler, error) {
	fl, err := fleet.New(fleet.Options{Grace: cfg.StreamGrace, TokenFile: cfg.InterceptorTokenFile, Registerer: reg, Log: log.WithName("fleet")})
	if err != nil {
		return nil, err
	}
	disc, err := fleet.NewDiscovery(kube, cfg.InterceptorNamespace, cfg.InterceptorService, cfg.InterceptorPortName, fl, log.WithName("discovery"))
	if err != nil {
		return nil, err
	}
	objects := service.NewInformerObjects(objectsInformer, routesInformer)
	if err := reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "lobby_scaler_objects",
		Help: "HTTPScaledObjects and InterceptorRoutes the scaler knows.",
	}, func() float64 { return float64(objects.Len()) })); err != nil {
		return nil, fmt.Errorf("register object metrics: %w", err)
	}

	ready := func() error {
		var errs []error
		if !objects.HasSynced() {
			errs = append(errs, errors.New("HTTPScaledObjects and InterceptorRoutes not synced"))
		}
		if !disc.HasSynced() {
			errs = append(errs, errors.New("interceptor EndpointSlices not synced"))
		}
		if !fl.HasSnapshot() {
			errs = append(errs, errors.New("no interceptor stream has delivered a snapshot"))
		}
		return errors.Join(errs...)
	}
	health := service.NewHealth(func() bool { return ready() == nil }, nil)

	rpcMetrics, err := service.NewRPCMetrics(reg)
	if err != nil {
		return nil, err
	}
	opts := append(rpcMetrics.ServerOptions(),
		// KEDA keeps StreamIsActive open for as long as the ScaledObject exists; keepalives find
		// dead peers.
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}))
	if cfg.TLSCertFile != "" {
		tc, err := service.TLSConfig(cfg.TLSCertFile, cfg.TLSKeyFile, cfg.TLSClientCAFile)
		if err != nil {
			return nil, err
		}
		opts = append(opts, grpc.Creds(credentials.NewTLS(tc)))
	}
	gs := grpc.NewServer(opts...)
	svc := service.New(objects, fl, log.WithName("service"))
	service.Register(gs, svc, health)

	mux := http.NewServeMux()
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, _ *http.Request) { writeText(w, http.StatusOK, "ok\n") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := ready(); err != nil {
			writeText(w, http.StatusServiceUnavailable, err.Error()+"\n")
			return
		}
		writeText(w, http.StatusOK, "ok\n")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))

	return &scaler{
		log:       log,
		fleet:     fl,
		discovery: disc,
		objects:   objects,
		health:    health,
		grpc: &service.GRPC{Server: gs, Addr: cfg.GRPCAddr, ShutdownTimeout: 5 * time.Second, BeforeStop: svc.Stop,
			Log: log.WithName("grpc")},
		admin: &server.Server{
			HTTP: &http.Server{Addr: cfg.AdminAddr, Handler: mux, ReadHeaderTimeout: 10 * time.Second,
				IdleTimeout: 90 * time.Second, ErrorLog: server.ErrorLog(log.WithName("admin"))},
			ShutdownTimeout: 5 * time.Second,
			Log:             log.WithName("admin"),
		},
	}, nil
}

// run starts every component and returns when ctx has ended and they have all stopped.
func (s *scaler) run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.objects.Start(ctx) })
	g.Go(func() error { return s.discovery.Start(ctx) })
	g.Go(func() error { return s.fleet.Start(ctx) })
	g.Go(func() error { return s.health.Start(ctx) })
	g.Go(func() error { return s.grpc.Start(ctx) })
	g.Go(func() error { return s.admin.Start(ctx) })
	if err := g.Wait(); err != nil {
		return err
	}
	s.log.Info("stopped")
	return nil
}

func writeText(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(body))
}

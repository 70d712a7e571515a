// Command interceptor is lobby's data plane: it routes each request to its HTTPScaledObject,
// counts it, holds it while the app has no ready endpoint, and forwards it to a ready pod. Its
// admin server pushes the counts to the scalers. Configuration is by environment variables; see
// docs/configuration.md.
package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/lobby-http/lobby/interceptor/internal/admin"
	"github.com/lobby-http/lobby/interceptor/internal/certs"
	"github.com/lobby-http/lobby/interceptor/internal/counts"
	"github.com/lobby-http/lobby/interceptor/internal/endpointslices"
	"github.com/lobby-http/lobby/interceptor/internal/proxy"
	"github.com/lobby-http/lobby/interceptor/internal/routing"
	"github.com/lobby-http/lobby/internal/httpso"
	"github.com/lobby-http/lobby/internal/kube"
	"github.com/lobby-http/lobby/internal/logging"
	"github.com/lobby-http/lobby/internal/memlimit"
	"github.com/lobby-http/lobby/internal/server"
	"github.com/lobby-http/lobby/internal/tracing"
)

func main() {
	signals, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	err := run(signals)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "interceptor: %v\n", err)
		os.Exit(1)
	}
}

// run loads the configuration, wires the interceptor and runs it until signals ends and it has
// drained.
func run(signals context.Context) error {
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
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	ic, err := build(cfg, log, restCfg, reg, (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext)
	if err != nil {
		return err
	}
	log.Info("starting", "proxyAddr", cfg.ProxyAddr, "proxyTLSAddr", cfg.ProxyTLSAddr, "adminAddr", cfg.AdminAddr, "namespace", cfg.WatchNamespace, "pod", cfg.PodName,
		"maxConnections", cfg.MaxConnections, "maxHeldRequests", cfg.MaxHeldRequests, "tracing", cfg.Tracing.Enabled,
		"adminAllowedServiceAccounts", cfg.AdminAllowedServiceAccounts, "adminTokenAudience", cfg.AdminTokenAudience)
	return ic.run(signals)
}

// dialFunc opens connections to app pods. Production uses a net.Dialer; the test against a real
// API server maps the pod addresses of its EndpointSlices to loopback backends.
type dialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// interceptor is the wired interceptor, ready to run.
type interceptor struct {
	log        logr.Logger
	drainDelay time.Duration

	endpoints *endpointslices.Informer
	routes    *routing.Watcher
	admin     *admin.Server
	proxy     *server.Server
	// tlsProxy serves the same handler over TLS with the key pairs of certs; both are nil when
	// the interceptor serves no TLS.
	tlsProxy *server.Server
	certs    *certs.Store
	// upstreamCAs is the CA bundle HTTPS apps are verified with, read again when it changes;
	// nil when the system's roots are used.
	upstreamCAs *certs.Bundle
	// traces exports the proxy's spans; nil when tracing is off.
	traces *tracing.Provider
	// adminServer is the admin's HTTP server runner, exposed so tests can give it a listener.
	adminServer *server.Server
}

// build constructs every component from the configuration, without starting any.
func build(cfg Config, log logr.Logger, kube *rest.Config, reg *prometheus.Registry, dial dialFunc) (*interceptor, error) {
	clk := clock.RealClock{}
	kubeClient, err := kubernetes.NewForConfig(kube)
	if err != nil {
		return nil, fmt.Errorf("create Kubernetes client: %w", err)
	}
	hsoClient, err := httpso.NewClient(kube)
	if err != nil {
		return nil, err
	}

	store := endpointslices.NewStore(log.WithName("endpoints"))
	slices := endpointslices.NewInformer(store, kubeClient, cfg.WatchNamespace, log.WithName("endpoints"))

	activations, err := admin.NewActivations(reg)
	if err != nil {
		return nil, err
	}
	registry := counts.NewRegistry(func(r *counts.Route) { activations.Notify(r) }, clk.Now)
	// Held requests take slots of the connection cap; this keeps half of them for the others.
	registry.LimitHeld(int64(cfg.MaxHeldRequests))
	if err := reg.Register(heldCollector(registry)); err != nil {
		return nil, fmt.Errorf("register held request metrics: %w", err)
	}
	if err := reg.Register(admin.NewCollector(registry, clk)); err != nil {
		return nil, fmt.Errorf("register count metrics: %w", err)
	}

	router := routing.NewRouter()
	defaults := routing.Defaults{
		ColdStartTimeout:      cfg.ColdStartTimeout,
		ResponseHeaderTimeout: cfg.ResponseHeaderTimeout,
		RequestTimeout:        cfg.RequestTimeout,
		MaxPending:            cfg.MaxPendingRequests,
		ColdStartMode:         cfg.ColdStartMode,
	}
	metrics, err := proxy.NewMetrics(reg)
	if err != nil {
		return nil, err
	}
	irClient, err := httpso.NewRouteClient(kube)
	if err != nil {
		return nil, err
	}
	sources := routing.Sources{
		HTTPScaledObjects: httpso.NewInformer(hsoClient, cfg.WatchNamespace, 0),
		InterceptorRoutes: httpso.NewRouteInformer(irClient, cfg.WatchNamespace, 0),
		ConfigMaps:        routing.NewConfigMapWatcher(kubeClient),
		RoutesServed:      func() (bool, error) { return httpso.RoutesServed(kubeClient.Discovery()) },
	}
	watcher, err := routing.NewWatcher(sources, router, store, routeCounters{registry, metrics},
		defaults, reg, log.WithName("routing"))
	if err != nil {
		return nil, err
	}

	upstreamTLS := proxy.UpstreamTLS{ClusterDomain: cfg.ClusterDomain}
	var upstreamCAs *certs.Bundle
	if cfg.UpstreamCAFile != "" {
		if upstreamCAs, err = certs.NewBundle(cfg.UpstreamCAFile, cfg.TLSReloadInterval, log.WithName("upstream-ca")); err != nil {
			return nil, fmt.Errorf("load upstream CA bundle: %w", err)
		}
		upstreamTLS.Roots = upstreamCAs.Pool
	}
	traces, err := tracing.New(context.Background(), cfg.Tracing)
	if err != nil {
		return nil, err
	}
	var tracer trace.Tracer
	if traces != nil {
		tracer = traces.Tracer("github.com/lobby-http/lobby/interceptor")
	}
	handler, err := newProxyHandler(router, metrics, log.WithName("proxy"), dial, upstreamTLS, tracer, cfg.AddOnColdStartHeader)
	if err != nil {
		return nil, err
	}
	// The cap keeps a connection flood from growing the interceptor past its memory limit; the
	// connections over it wait in the listen backlog (see server.ConnLimit).
	conns := server.NewConnLimit(cfg.MaxConnections)
	conns.WriteIdleTimeout = cfg.WriteIdleTimeout
	if err := reg.Register(server.NewConnLimitCollector("lobby_interceptor_proxy", conns)); err != nil {
		return nil, fmt.Errorf("register connection metrics: %w", err)
	}
	// Every HTTP/2 stream takes a slot of the cap beside its connection's; a request body that
	// stops arriving is cut. Chunked requests lose keep-alive: see CloseAfterChunked for the
	// smuggling it prevents. None of them wraps the ResponseWriter. HTTP/1.x requests without a
	// body, which none of them changes, skip them (see ByBody: held requests' stacks).
	handler = server.ByBody(handler, conns.Streams(server.IdleBody(server.CloseAfterChunked(handler), cfg.BodyIdleTimeout)))
	proxy := &server.Server{
		HTTP:            newHTTPServer(cfg, cfg.ProxyAddr, handler, log.WithName("proxy")),
		Limit:           conns,
		ShutdownTimeout: cfg.DrainTimeout,
		Log:             log.WithName("proxy"),
	}

	var tlsProxy *server.Server
	var pairs *certs.Store
	if cfg.ProxyTLSAddr != "" {
		if pairs, err = certs.New(certs.Options{Dirs: cfg.ProxyTLSCertDirs, Interval: cfg.TLSReloadInterval, Log: log.WithName("certs")}); err != nil {
			return nil, err
		}
		httpServer := newHTTPServer(cfg, cfg.ProxyTLSAddr, handler, log.WithName("proxy-tls"))
		httpServer.Protocols = new(http.Protocols)
		httpServer.Protocols.SetHTTP1(true)
		httpServer.Protocols.SetHTTP2(true)
		httpServer.TLSConfig = pairs.TLSConfig(cfg.ProxyTLSMinVersion, cfg.ProxyTLSCipherSuites)
		tlsProxy = &server.Server{
			HTTP: httpServer,
			// One cap for both listeners: it bounds the memory of the connections, whichever
			// port they came in on.
			Limit:           conns,
			ShutdownTimeout: cfg.DrainTimeout,
			Log:             log.WithName("proxy-tls"),
		}
	}

	status := admin.NewStatus(admin.StatusOptions{
		Apps:        statusApps{router},
		Interceptor: cfg.PodName,
		Clock:       clk,
		Log:         log.WithName("status"),
	})
	st, err := admin.NewStream(admin.StreamOptions{
		Source:         registry,
		Activations:    activations,
		Interval:       cfg.StreamInterval,
		WriteTimeout:   cfg.StreamWriteTimeout,
		MaxSubscribers: cfg.StreamMaxSubscribers,
		Interceptor:    cfg.PodName,
		Clock:          clk,
		Registerer:     reg,
		Log:            log.WithName("stream"),
		Observe:        status.Observe,
	})
	if err != nil {
		return nil, err
	}
	auth, err := admin.NewAuthenticator(admin.AuthOptions{
		Reviewer:    admin.KubeReviewer{Client: kubeClient.AuthenticationV1().TokenReviews()},
		Audience:    cfg.AdminTokenAudience,
		Allowed:     cfg.AdminAllowedServiceAccounts,
		TTL:         cfg.AdminAuthCacheTTL,
		NegativeTTL: cfg.AdminAuthNegativeTTL,
		Clock:       clk,
		Registerer:  reg,
		Log:         log.WithName("admin-auth"),
	})
	if err != nil {
		return nil, err
	}
	if len(cfg.AdminAllowedServiceAccounts) == 0 {
		log.Info("no ServiceAccount may read the push stream or /queue: set LOBBY_ADMIN_ALLOWED_SERVICE_ACCOUNTS to the scaler's")
	}
	adminServer := &server.Server{
		HTTP: newHTTPServer(cfg, cfg.AdminAddr, nil, log.WithName("admin")),
		// Streams end when the admin server stops; the rest are short requests.
		ShutdownTimeout: 5 * time.Second,
		Log:             log.WithName("admin"),
	}
	adm := admin.New(admin.Options{
		Source:   registry,
		Stream:   st,
		Status:   status,
		Gatherer: reg,
		Checks: []admin.Check{
			admin.Synced("HTTPScaledObjects", watcher.HasSynced),
			admin.Synced("Services and EndpointSlices", slices.HasSynced),
		},
		Auth:   auth,
		Clock:  clk,
		Server: adminServer,
	})

	return &interceptor{
		log:         log,
		drainDelay:  cfg.DrainDelay,
		endpoints:   slices,
		routes:      watcher,
		admin:       adm,
		proxy:       proxy,
		tlsProxy:    tlsProxy,
		certs:       pairs,
		traces:      traces,
		upstreamCAs: upstreamCAs,
		adminServer: adminServer,
	}, nil
}

// newHTTPServer returns a server with the configured limits. It speaks HTTP/1.1 and HTTP/2 over
// clear text (h2c), as ingresses and gRPC clients reach the interceptor without TLS.
func newHTTPServer(cfg Config, addr string, h http.Handler, log logr.Logger) *http.Server {
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		Protocols:         &protocols,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		ErrorLog:          server.ErrorLog(log),
		HTTP2:             &http.HTTP2Config{MaxConcurrentStreams: cfg.MaxConcurrentStreams},
	}
}

// heldCollector exposes the cap on requests held over all routes; the held requests themselves
// are counted per route by the admin collector.
func heldCollector(registry *counts.Registry) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "lobby_interceptor_max_held_requests",
		Help: "Most requests held at once over all routes (LOBBY_MAX_HELD_REQUESTS); more are refused as a full hold queue refuses them. 0 is no cap.",
	}, func() float64 { return float64(registry.MaxHeld()) })
}

// run starts every component and returns when they have all stopped. When signals ends, /readyz
// fails at once, the proxy keeps serving for the drain delay, then drains (within the drain
// timeout); only then do the admin server (and so the push stream) and the informers stop.
func (ic *interceptor) run(signals context.Context) error {
	ctx, stopAll := context.WithCancel(context.Background())
	defer stopAll()
	g, ctx := errgroup.WithContext(ctx)
	proxyCtx, stopProxy := context.WithCancel(ctx)
	defer stopProxy()

	g.Go(func() error { return ic.endpoints.Start(ctx) })
	g.Go(func() error { return ic.routes.Start(ctx) })
	g.Go(func() error { return ic.admin.Start(ctx) })
	g.Go(func() error {
		defer stopAll() // The proxy has drained, or failed: nothing else is needed.
		return ic.proxy.Start(proxyCtx)
	})
	if ic.traces != nil {
		g.Go(func() error { return ic.traces.Start(ctx) })
	}
	if ic.upstreamCAs != nil {
		g.Go(func() error { return ic.upstreamCAs.Start(ctx) })
	}
	if ic.tlsProxy != nil {
		g.Go(func() error { return ic.certs.Start(ctx) })
		g.Go(func() error {
			defer stopAll()
			return ic.tlsProxy.Start(proxyCtx)
		})
	}
	g.Go(func() error {
		select {
		case <-ctx.Done():
			return nil
		case <-signals.Done():
		}
		ic.log.Info("draining", "delay", ic.drainDelay)
		ic.admin.Drain()
		select {
		case <-ctx.Done():
		case <-time.After(ic.drainDelay):
		}
		stopProxy()
		return nil
	})
	if err := g.Wait(); err != nil {
		return err
	}
	ic.log.Info("stopped")
	return nil
}

package service

import (
	"context"
	"fmt"
	"net"
	"path"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"k8s.io/utils/clock"

	"github.com/lobby-http/lobby/internal/externalscaler"
)

// RPCMetrics are the gRPC server's Prometheus metrics, recorded by its interceptors.
type RPCMetrics struct {
	duration *prometheus.HistogramVec
	streams  *prometheus.GaugeVec
}

// NewRPCMetrics returns RPCMetrics registered with reg.
func NewRPCMetrics(reg prometheus.Registerer) (*RPCMetrics, error) {
	m := &RPCMetrics{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "lobby_scaler_rpc_duration_seconds",
			Help:    "Duration of unary gRPC calls to the scaler, by method and status code.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1},
		}, []string{"method", "code"}),
		streams: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "lobby_scaler_streams",
			Help: "Open gRPC server streams (StreamIsActive), by method.",
		}, []string{"method"}),
	}
	for _, c := range []prometheus.Collector{m.duration, m.streams} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register gRPC metrics: %w", err)
		}
	}
	return m, nil
}

// ServerOptions returns the interceptors that record m.
func (m *RPCMetrics) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			start := time.Now()
			resp, err := h(ctx, req)
			m.duration.WithLabelValues(path.Base(info.FullMethod), status.Code(err).String()).Observe(time.Since(start).Seconds())
			return resp, err
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			g := m.streams.WithLabelValues(path.Base(info.FullMethod))
			g.Inc()
			defer g.Dec()
			return h(srv, ss)
		}),
	}
}

// Register registers the ExternalScaler service and the health service on s.
func Register(s *grpc.Server, scaler *Server, h *Health) {
	externalscaler.RegisterExternalScalerServer(s, scaler)
	healthpb.RegisterHealthServer(s, h.server)
}

// Health is the gRPC health service (grpc.health.v1): NOT_SERVING until Ready first reports
// true, SERVING after, for the whole server ("") and for the ExternalScaler service.
type Health struct {
	server *health.Server
	ready  func() bool
	clock  clock.WithTicker
}

// NewHealth returns a Health that polls ready until it reports true. A nil clock is the real one.
func NewHealth(ready func() bool, clk clock.WithTicker) *Health {
	if clk == nil {
		clk = clock.RealClock{}
	}
	h := &Health{server: health.NewServer(), ready: ready, clock: clk}
	h.set(healthpb.HealthCheckResponse_NOT_SERVING)
	return h
}

func (h *Health) set(s healthpb.HealthCheckResponse_ServingStatus) {
	h.server.SetServingStatus("", s)
	h.server.SetServingStatus(externalscaler.ExternalScaler_ServiceDesc.ServiceName, s)
}

// Start turns the status to SERVING once ready reports true, and to NOT_SERVING for good when
// ctx ends, so health watchers see the scaler going away.
func (h *Health) Start(ctx context.Context) error {
	t := h.clock.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for !h.ready() {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C():
		}
	}
	h.set(healthpb.HealthCheckResponse_SERVING)
	<-ctx.Done()
	h.server.Shutdown()
	return nil
}

// GRPC runs a gRPC server until its context ends, then stops it gracefully within a bound.
type GRPC struct {
	// Server is the server to run.
	Server *grpc.Server
	// Addr is where Start listens unless Listener is set.
	Addr string
	// Listener, when not nil, is served instead of listening on Addr.
	Listener net.Listener
	// ShutdownTimeout bounds the graceful stop; streams still open after it are cut.
	ShutdownTimeout time.Duration
	// BeforeStop, when set, is called as the graceful stop begins, to end long-lived streams.
	BeforeStop func()
	// Log receives lifecycle messages.
	Log logr.Logger
}

// Start serves until ctx ends, then stops gracefully within ShutdownTimeout.
func (g *GRPC) Start(ctx context.Context) error {
	ln := g.Listener
	if ln == nil {
		var err error
		if ln, err = (&net.ListenConfig{}).Listen(ctx, "tcp", g.Addr); err != nil {
			return fmt.Errorf("listen on %s: %w", g.Addr, err)
		}
	}
	g.Log.Info("serving gRPC", "addr", ln.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- g.Server.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve gRPC on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	if g.BeforeStop != nil {
		g.BeforeStop()
	}
	stopped := make(chan struct{})
	go func() { g.Server.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(g.ShutdownTimeout):
		// StreamIsActive streams last as long as KEDA keeps them: cut them.
		g.Log.Info("graceful stop timed out, closing remaining streams")
		g.Server.Stop()
		<-stopped
	}
	<-errc
	g.Log.Info("stopped gRPC")
	return nil
}

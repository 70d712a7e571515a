// Package admin is the interceptor's admin server, on its own port and never behind the proxy
// Service: liveness and readiness probes, Prometheus metrics, a JSON view of the per-route counts
// (/queue), the push stream the scaler subscribes to (see docs/stream.md), and the operators' live
// status page (see docs/status-page.md). /queue and the stream answer only the ServiceAccounts
// allowed (auth.go); the status page, like /metrics, needs no token.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
	"k8s.io/utils/clock"

	"github.com/lobby-http/lobby/internal/server"
	"github.com/lobby-http/lobby/internal/stream"
)

// Check is one readiness condition: it returns nil when ready, else an error saying why not.
type Check func() error

// Synced returns a Check that fails, naming what, until hasSynced reports true. It adapts an
// informer's HasSynced.
func Synced(what string, hasSynced func() bool) Check {
	return func() error {
		if !hasSynced() {
			return fmt.Errorf("%s not synced", what)
		}
		return nil
	}
}

// Options configure a Server.
type Options struct {
	// Source gives the counts served on /queue.
	Source Source
	// Stream serves the push stream on stream.Path.
	Stream *Stream
	// Status, when not nil, serves the status page on StatusPath, StatusJSONPath and
	// StatusEventsPath.
	Status *Status
	// Gatherer gives the metrics served on /metrics.
	Gatherer prometheus.Gatherer
	// Checks must all pass for /readyz to succeed.
	Checks []Check
	// Auth guards /queue and the stream, the endpoints that reveal every route's counts (see
	// auth.go); the probes and /metrics stay open (the chart's NetworkPolicy guards /metrics).
	// nil serves them to anyone, which only tests do.
	Auth *Authenticator
	// Clock gives the time of /queue snapshots.
	Clock clock.PassiveClock
	// Server runs the admin HTTP server; its HTTP field's Handler is set by New.
	Server *server.Server
}

// Server is the admin server.
type Server struct {
	opts     Options
	mux      *http.ServeMux
	draining atomic.Bool
}

// New returns a Server configured by o.
func New(o Options) *Server {
	s := &Server{opts: o, mux: http.NewServeMux()}
	s.mux.HandleFunc("GET /livez", s.livez)
	s.mux.HandleFunc("GET /readyz", s.readyz)
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(o.Gatherer, promhttp.HandlerOpts{}))
	s.mux.Handle("GET /queue", s.guard(http.HandlerFunc(s.queue)))
	s.mux.Handle(stream.Path, s.guard(o.Stream))
	if o.Status != nil {
		s.mux.HandleFunc("GET "+StatusPath, o.Status.ServePage)
		s.mux.HandleFunc("GET "+StatusJSONPath, o.Status.ServeJSON)
		s.mux.HandleFunc("GET "+StatusEventsPath, o.Status.ServeEvents)
	}
	if o.Server != nil {
		o.Server.HTTP.Handler = s.mux
	}
	return s
}

// guard puts h behind the authenticator, when there is one.
func (s *Server) guard(h http.Handler) http.Handler {
	if s.opts.Auth == nil {
		return h
	}
	return s.opts.Auth.Guard(h)
}

// Handler returns the admin server's routes, for tests.
func (s *Server) Handler() http.Handler { return s.mux }

// Drain makes /readyz fail from now on, so that the interceptor is taken out of its Services
// before it shuts down.
func (s *Server) Drain() { s.draining.Store(true) }

// Start runs the stream's dispatcher, the status page's producer and the HTTP server until ctx
// ends.
func (s *Server) Start(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.opts.Stream.Start(ctx) })
	if s.opts.Status != nil {
		g.Go(func() error { return s.opts.Status.Start(ctx) })
	}
	g.Go(func() error { return s.opts.Server.Start(ctx) })
	if err := g.Wait(); err != nil {
		return fmt.Errorf("run admin server: %w", err)
	}
	return nil
}

func (s *Server) livez(w http.ResponseWriter, _ *http.Request) {
	writeText(w, http.StatusOK, "ok\n")
}

// readyz succeeds when every check passes and the interceptor is not draining. A failure lists
// every reason, one a line.
func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	var errs []error
	if s.draining.Load() {
		errs = append(errs, errors.New("draining"))
	}
	for _, c := range s.opts.Checks {
		if err := c(); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		var b strings.Builder
		for _, err := range errs {
			b.WriteString(err.Error())
			b.WriteByte('\n')
		}
		writeText(w, http.StatusServiceUnavailable, b.String())
		return
	}
	writeText(w, http.StatusOK, "ok\n")
}

// QueueCounts is one route's entry in the /queue response.
type QueueCounts struct {
	// InFlight is the number of requests forwarded and not yet answered.
	InFlight int64 `json:"inFlight"`
	// Held is the number of requests waiting for a ready endpoint.
	Held int64 `json:"held"`
	// Open is the number of upgraded connections open.
	Open int64 `json:"open"`
	// Requests is the number of requests received since the interceptor started.
	Requests uint64 `json:"requests"`
	// Rate is requests per second over the route's window.
	Rate float64 `json:"rate"`
}

// queue answers a JSON object of the counts of every route, keyed "namespace/name".
func (s *Server) queue(w http.ResponseWriter, _ *http.Request) {
	snap := s.opts.Source.Snapshot(s.opts.Clock.Now())
	out := make(map[string]QueueCounts, len(snap))
	for _, c := range snap {
		out[c.Key] = QueueCounts{InFlight: c.InFlight, Held: c.Held, Open: c.Open, Requests: c.Requests, Rate: c.Rate}
	}
	b, err := json.Marshal(out)
	if err != nil {
		http.Error(w, "encode counts", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(append(b, '\n'))
}

func writeText(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(body))
}

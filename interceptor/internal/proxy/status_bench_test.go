package proxy_test

import (
	"bufio"
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/utils/clock"

	"github.com/lobby-http/lobby/interceptor/internal/admin"
	"github.com/lobby-http/lobby/interceptor/internal/counts"
	"github.com/lobby-http/lobby/interceptor/internal/routing"
)

// statusApps lists the env's routes for the status page.
type statusApps struct{ routes []*routing.Route }

func (a statusApps) Apps() []admin.App {
	out := make([]admin.App, 0, len(a.routes))
	for _, r := range a.routes {
		out = append(out, admin.App{Key: r.Key, Target: statusTarget{r}, Counts: r.Counts})
	}
	return out
}

type statusTarget struct{ r *routing.Route }

func (t statusTarget) Ready() int { return len(t.r.Target.Snapshot().Endpoints) }
func (t statusTarget) Wait(ctx context.Context) error {
	_, err := t.r.Target.Wait(ctx)
	return err
}

// BenchmarkProxyStatusViewer measures the warm chain of BenchmarkProxy wired as the interceptor
// wires it — the routes' counters feeding the push stream's dispatcher, which feeds the status
// page's producer — without a status page viewer (no-viewer) and with one following the page's
// events (viewer). The page must cost the request path nothing: the two differ by noise only.
func BenchmarkProxyStatusViewer(b *testing.B) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("hello, world\n"))
	}))
	defer backend.Close()
	backendURL, _ := url.Parse(backend.URL)

	run := func(viewer bool) func(b *testing.B) {
		return func(b *testing.B) {
			e := newEnv(b, logr.Discard())
			reg := prometheus.NewRegistry()
			acts, err := admin.NewActivations(reg)
			if err != nil {
				b.Fatal(err)
			}
			// The routes' counters as main wires them: every idle→busy edge goes to the stream.
			e.counts = counts.NewRegistry(func(r *counts.Route) { acts.Notify(r) }, nil)
			e.mapPod("10.0.0.1", backendURL.Host)
			route := e.route("app.test", "app", nil)
			e.ready("app", "10.0.0.1")

			clk := clock.RealClock{}
			status := admin.NewStatus(admin.StatusOptions{Apps: statusApps{[]*routing.Route{route}}, Interceptor: "bench", Clock: clk, Log: logr.Discard()})
			st, err := admin.NewStream(admin.StreamOptions{Source: e.counts, Activations: acts, Interval: time.Second,
				Clock: clk, Registerer: reg, Log: logr.Discard(), Observe: status.Observe})
			if err != nil {
				b.Fatal(err)
			}
			adm := admin.New(admin.Options{Source: e.counts, Stream: st, Status: status, Gatherer: reg, Clock: clk})
			ctx, cancel := context.WithCancel(b.Context())
			defer cancel()
			go func() { _ = st.Start(ctx) }()
			go func() { _ = status.Start(ctx) }()
			srv := httptest.NewServer(adm.Handler())
			defer srv.Close()

			var events atomic.Int64
			if viewer {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+admin.StatusEventsPath, nil)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				defer resp.Body.Close()
				go func() {
					sc := bufio.NewScanner(resp.Body)
					sc.Buffer(nil, 1<<20)
					for sc.Scan() {
						if strings.HasPrefix(sc.Text(), "data: ") {
							events.Add(1)
						}
					}
				}()
				for events.Load() == 0 {
					time.Sleep(time.Millisecond)
				}
			}
			runParallel(b, benchClient(), e.proxy.URL, "app.test")
			b.StopTimer()
			if viewer && events.Load() == 0 {
				b.Fatal("the viewer got no event")
			}
		}
	}
	b.Run("no-viewer", run(false))
	b.Run("viewer", run(true))
}

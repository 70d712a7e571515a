package proxy_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/lobby-http/lobby/interceptor/internal/routing"
)

// benchClients is the number of concurrent clients of the throughput benchmarks.
const benchClients = 64

// benchClient returns a client that keeps a warm connection per concurrent client.
func benchClient() *http.Client {
	return &http.Client{Transport: &http.Transport{MaxIdleConns: 2 * benchClients, MaxIdleConnsPerHost: 2 * benchClients}}
}

// runParallel sends GETs for host to url from benchClients goroutines for b.N requests in all.
func runParallel(b *testing.B, client *http.Client, target, host string) {
	b.Helper()
	b.SetParallelism((benchClients + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest(http.MethodGet, target, nil)
			req.Host = host
			resp, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
}

// BenchmarkProxy compares the whole chain with a bare httputil.ReverseProxy in front of the same
// backend, with the same client and the same transport tuning, warm, from 64 goroutines.
func BenchmarkProxy(b *testing.B) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("hello, world\n"))
	}))
	defer backend.Close()
	backendURL, _ := url.Parse(backend.URL)

	bare := func(pool httputil.BufferPool) func(b *testing.B) {
		return func(b *testing.B) {
			rp := &httputil.ReverseProxy{
				Rewrite: func(pr *httputil.ProxyRequest) {
					pr.SetURL(backendURL)
					pr.Out.Host = pr.In.Host
					pr.SetXForwarded()
				},
				Transport:  &http.Transport{MaxIdleConnsPerHost: 256, IdleConnTimeout: 90 * time.Second, DisableCompression: true},
				BufferPool: pool,
			}
			srv := httptest.NewServer(rp)
			defer srv.Close()
			runParallel(b, benchClient(), srv.URL, "app.test")
		}
	}
	b.Run("bare", bare(nil))
	// A bare proxy with pooled buffers too, to tell the chain's own cost from the pool's gain.
	b.Run("bare-pooled", bare(&slicePool{}))

	b.Run("chain", func(b *testing.B) {
		e := newEnv(b, logr.Discard())
		e.mapPod("10.0.0.1", backendURL.Host)
		e.route("app.test", "app", nil)
		e.ready("app", "10.0.0.1")
		runParallel(b, benchClient(), e.proxy.URL, "app.test")
	})
}

// BenchmarkWake measures the time from an EndpointSlice turning ready (fed to the Store as the
// informer feeds it) to the answers of the requests held for it, through the whole chain. Each
// iteration is a new Service with a new pod address, so, as with a pod that just started, every
// connection to it is new. It reports the p50 and p99 of that time over every request of every
// iteration, the time until the last request of an iteration was answered (all-ms, worst over
// the iterations), and until the last one left the hold queue to be forwarded (released-ms).
//
// The "burst" cases are the floor to compare with: as many requests, parked on a channel in the
// client and released at once, through a bare httputil.ReverseProxy whose idle connections are
// closed before each iteration, timed from the release.
func BenchmarkWake(b *testing.B) {
	for _, held := range []int{1, 1000} {
		b.Run(fmt.Sprintf("held=%d", held), func(b *testing.B) {
			e := newEnv(b, logr.Discard())
			backend := httptest.NewServer(hello("app"))
			defer backend.Close()
			e.client = &http.Client{Transport: &http.Transport{MaxIdleConns: 2 * held, MaxIdleConnsPerHost: 2 * held}}
			var all []time.Duration
			var worst, released time.Duration
			b.ResetTimer()
			for i := range b.N {
				svc := fmt.Sprintf("app%d", i)
				pod := fmt.Sprintf("10.%d.%d.%d", 1+i>>16&0xff, i>>8&0xff, i&0xff)
				e.mapPod(pod, backend.Listener.Addr().String())
				route := e.route(svc+".test", svc, func(r *routing.Route) {
					r.MaxPending = int64(held)
					r.ColdStartTimeout = time.Minute
				})
				done := make([]time.Time, held)
				var wg sync.WaitGroup
				for j := range held {
					wg.Go(func() {
						resp, err := e.get(b.Context(), svc+".test", "/")
						if err != nil {
							b.Error(err)
							return
						}
						_, _ = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						done[j] = time.Now()
						if resp.StatusCode != http.StatusOK {
							b.Errorf("status %d", resp.StatusCode)
						}
					})
				}
				eventually(b, "every request is held", func() bool { h, _, _ := countsOf(route); return h == int64(held) })
				start := time.Now()
				e.ready(svc, pod)
				for {
					if h, _, _ := countsOf(route); h == 0 {
						break
					}
					runtime.Gosched()
				}
				released = max(released, time.Since(start))
				wg.Wait()
				all, worst = record(all, worst, start, done)
			}
			b.StopTimer()
			report(b, all, worst)
			b.ReportMetric(float64(released.Microseconds())/1000, "released-ms")
		})
		b.Run(fmt.Sprintf("burst=%d", held), func(b *testing.B) {
			backend := httptest.NewServer(hello("app"))
			defer backend.Close()
			backendURL, _ := url.Parse(backend.URL)
			transport := &http.Transport{MaxIdleConnsPerHost: 256, IdleConnTimeout: 90 * time.Second, DisableCompression: true}
			srv := httptest.NewServer(&httputil.ReverseProxy{
				Rewrite: func(pr *httputil.ProxyRequest) {
					pr.SetURL(backendURL)
					pr.Out.Host = pr.In.Host
					pr.SetXForwarded()
				},
				Transport: transport,
			})
			defer srv.Close()
			client := &http.Client{Transport: &http.Transport{MaxIdleConns: 2 * held, MaxIdleConnsPerHost: 2 * held}}
			var all []time.Duration
			var worst time.Duration
			b.ResetTimer()
			for range b.N {
				transport.CloseIdleConnections()
				gate := make(chan struct{})
				done := make([]time.Time, held)
				var parked, wg sync.WaitGroup
				parked.Add(held)
				for j := range held {
					wg.Go(func() {
						req, _ := http.NewRequestWithContext(b.Context(), http.MethodGet, srv.URL, nil)
						req.Host = "app.test"
						parked.Done()
						<-gate
						resp, err := client.Do(req)
						if err != nil {
							b.Error(err)
							return
						}
						_, _ = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						done[j] = time.Now()
					})
				}
				parked.Wait()
				start := time.Now()
				close(gate)
				wg.Wait()
				all, worst = record(all, worst, start, done)
			}
			b.StopTimer()
			report(b, all, worst)
		})
	}
}

// record adds the times from start to each of done to all, and returns the worst last one.
func record(all []time.Duration, worst time.Duration, start time.Time, done []time.Time) ([]time.Duration, time.Duration) {
	var last time.Duration
	for _, d := range done {
		all = append(all, d.Sub(start))
		last = max(last, d.Sub(start))
	}
	return all, max(worst, last)
}

// report reports the p50 and p99 of all and the worst time until every request was answered.
func report(b *testing.B, all []time.Duration, worst time.Duration) {
	slices.Sort(all)
	b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(all[(len(all)*99)/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(worst.Microseconds())/1000, "all-ms")
}

// slicePool is a plain httputil.BufferPool over sync.Pool, as a bare proxy would write one.
type slicePool struct{ p sync.Pool }

func (s *slicePool) Get() []byte {
	if b, ok := s.p.Get().(*[]byte); ok {
		return *b
	}
	return make([]byte, 32*1024)
}

func (s *slicePool) Put(b []byte) { s.p.Put(&b) }

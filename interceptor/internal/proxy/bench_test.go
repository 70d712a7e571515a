package proxy_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
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
	// The chain traced at 100% sampling, its spans batched to an exporter that drops them: the
	// cost of tracing on, without a collector's.
	b.Run("chain-traced", func(b *testing.B) {
		exp := &discardExporter{}
		tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithSampler(sdktrace.AlwaysSample()))
		defer func() { _ = tp.Shutdown(context.Background()) }()
		e := newTracedEnv(b, logr.Discard(), tp.Tracer("bench"))
		e.mapPod("10.0.0.1", backendURL.Host)
		e.route("app.test", "app", nil)
		e.ready("app", "10.0.0.1")
		runParallel(b, benchClient(), e.proxy.URL, "app.test")
		b.StopTimer()
		_ = tp.ForceFlush(context.Background())
		if exp.spans.Load() == 0 {
			b.Fatal("no span was exported")
		}
	})
}

// discardExporter counts the spans it is given and drops them.
type discardExporter struct{ spans atomic.Int64 }

func (d *discardExporter) ExportSpans(_ context.Context, spans []sdktrace.ReadOnlySpan) error {
	d.spans.Add(int64(len(spans)))
	return nil
}

func (d *discardExporter) Shutdown(context.Context) error { return nil }

// slicePool is a plain httputil.BufferPool over sync.Pool, as a bare proxy would write one.
type slicePool struct{ p sync.Pool }

func (s *slicePool) Get() []byte {
	if b, ok := s.p.Get().(*[]byte); ok {
		return *b
	}
	return make([]byte, 32*1024)
}

func (s *slicePool) Put(b []byte) { s.p.Put(&b) }

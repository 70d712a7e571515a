package bench

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const (
	// routeCount HTTPScaledObjects, each with its Service and EndpointSlice.
	routeCount = 1000
	// unrelatedSlices EndpointSlices of Services no route names, three endpoints each.
	unrelatedSlices = 5000
	// creators bounds the objects being created at once.
	creators = 32
	// settle is how long the interceptor runs after routing everything before its RSS is read.
	settle = 10 * time.Second
	// rssTarget is DESIGN.md's bound on the interceptor's RSS with that many objects.
	rssTarget = 48 << 20
)

// BenchmarkRoutesMemory creates 1,000 HTTPScaledObjects (each with a Service and an
// EndpointSlice with one ready endpoint) and 5,000 unrelated EndpointSlices (three endpoints
// each, in another namespace) in the API server, then starts the interceptor binary watching the
// whole cluster, waits until its /queue lists all 1,000 routes, lets it run for 10 s and reads
// its VmRSS (rss-MiB; rss-peak-MiB is VmHWM, the most it was resident at once). The target is
// rss-MiB ≤ 48 (rss/target ≤ 1). rss-anon-MiB and rss-file-MiB split it into anonymous memory
// and mapped files (the executable's pages), and heap-inuse-MiB and heap-alloc-MiB are the Go runtime's own
// figures from the interceptor's /metrics at the same moment, to tell the heap from the rest. The objects are created once per run of the test binary.
func BenchmarkRoutesMemory(b *testing.B) {
	need(b)
	ctx := b.Context()
	routes, err := routesOnce(ctx)
	if err != nil {
		b.Fatal(err)
	}
	var sum, peak, anonSum, fileSum int64
	var heap, alloc float64
	for b.Loop() {
		p, _, admin := startInterceptor(ctx, b, next("interceptor"), false, nil, func(q map[string]queueCounts) bool {
			n := 0
			for k := range q {
				if strings.HasPrefix(k, routes+"/") {
					n++
				}
			}
			return n == routeCount
		})
		time.Sleep(settle)
		r, err := rss(p.PID())
		if err != nil {
			b.Fatal(err)
		}
		h, err := procStatus(p.PID(), "VmHWM:")
		if err != nil {
			b.Fatal(err)
		}
		anon, err := procStatus(p.PID(), "RssAnon:")
		if err != nil {
			b.Fatal(err)
		}
		file, err := procStatus(p.PID(), "RssFile:")
		if err != nil {
			b.Fatal(err)
		}
		m, err := goMemstats(ctx, admin+"/metrics")
		if err != nil {
			b.Fatal(err)
		}
		sum += r
		anonSum += anon
		fileSum += file
		peak = max(peak, h)
		heap += m["go_memstats_heap_inuse_bytes"]
		alloc += m["go_memstats_heap_alloc_bytes"]
		_ = p.Stop()
	}
	b.StopTimer()
	mib := float64(sum) / float64(b.N) / (1 << 20)
	b.ReportMetric(mib, "rss-MiB")
	b.ReportMetric(float64(peak)/(1<<20), "rss-peak-MiB")
	b.ReportMetric(mib*(1<<20)/rssTarget, "rss/target")
	b.ReportMetric(float64(anonSum)/float64(b.N)/(1<<20), "rss-anon-MiB")
	b.ReportMetric(float64(fileSum)/float64(b.N)/(1<<20), "rss-file-MiB")
	b.ReportMetric(heap/float64(b.N)/(1<<20), "heap-inuse-MiB")
	b.ReportMetric(alloc/float64(b.N)/(1<<20), "heap-alloc-MiB")
}

var (
	routesMu   sync.Mutex
	routesNS   string
	routesDone bool
)

// routesOnce creates the routes benchmark's objects the first time and returns the namespace
// of the routes.
func routesOnce(ctx context.Context) (string, error) {
	routesMu.Lock()
	defer routesMu.Unlock()
	if routesDone {
		return routesNS, nil
	}
	ns, other := next("routes"), next("unrelated")
	for _, n := range []string{ns, other} {
		if err := namespace(ctx, n); err != nil {
			return "", err
		}
	}
	start := time.Now()
	err := parallel(ctx, routeCount+unrelatedSlices, func(i int) error {
		if i < routeCount {
			return route(ctx, shared.kube, ns, "app-"+strconv.Itoa(i), true)
		}
		name := "svc-" + strconv.Itoa(i-routeCount)
		// Addresses 10.245.x.y: nothing needs to listen on them.
		addrs := make([]string, 3)
		for j := range addrs {
			k := 3*(i-routeCount) + j
			addrs[j] = fmt.Sprintf("10.245.%d.%d", k/250, 1+k%250)
		}
		_, err := shared.kube.DiscoveryV1().EndpointSlices(other).Create(ctx, slice(other, name+"-x", name, true, addrs...), metav1.CreateOptions{})
		return err
	})
	if err != nil {
		return "", fmt.Errorf("create the routes benchmark's objects: %w", err)
	}
	fmt.Printf("created %d routes (HTTPScaledObject, Service, EndpointSlice) and %d unrelated EndpointSlices in %s\n",
		routeCount, unrelatedSlices, time.Since(start).Round(time.Second))
	routesNS, routesDone = ns, true
	return ns, nil
}

// parallel runs f(0) … f(n-1), at most creators at once, and returns the first error.
func parallel(ctx context.Context, n int, f func(int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	work := make(chan int)
	var wg sync.WaitGroup
	for range creators {
		wg.Go(func() {
			for i := range work {
				if err := f(i); err != nil {
					cancel(err)
				}
			}
		})
	}
	for i := range n {
		select {
		case work <- i:
		case <-ctx.Done():
		}
	}
	close(work)
	wg.Wait()
	return context.Cause(ctx)
}

// goMemstats returns the go_memstats_* gauges of a Prometheus text exposition at url.
func goMemstats(ctx context.Context, url string) (map[string]float64, error) {
	m, err := scrapeSamples(ctx, url, func(name string) bool { return strings.HasPrefix(name, "go_memstats_") })
	if err != nil {
		return nil, err
	}
	if _, ok := m["go_memstats_heap_inuse_bytes"]; !ok {
		return nil, fmt.Errorf("GET %s: no go_memstats_heap_inuse_bytes", url)
	}
	return m, nil
}

package bench

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const (
	// connections is the number of client connections, each with one request in flight.
	connections = 64
	// warmRequests warm each proxy up (connections, buffers, heap) before anything is measured.
	warmRequests = 5000
	// rounds and roundRequests: per iteration, each target gets rounds rounds of roundRequests,
	// interleaved, so that a change of load on the machine falls on all of them alike.
	rounds        = 4
	roundRequests = 5000
)

// target is one thing the latency benchmark sends requests to.
type target struct {
	name string
	url  string // http://addr/
	host string // the Host header
	lat  []time.Duration
}

// BenchmarkWarmLatency compares the warm latency of requests through the interceptor binary
// with the same requests through a bare httputil.ReverseProxy process (`bare`, and `pooled`
// with a sync.Pool of copy buffers) in front of the same backend, and straight to the backend
// (`direct`, for scale). Both proxies run pinned to core 1 (taskset) with GOMAXPROCS following;
// the client and the backend run in this process on core 0. 64 connections, one request in
// flight on each. Each iteration sends every target 4 interleaved rounds of 5,000 requests
// after a warm-up of 5,000; p50 and p99 are over every request of every iteration. The target
// is lobby's p99 ≤ 1.2× the bare proxy's (p99-ratio).
func BenchmarkWarmLatency(b *testing.B) {
	need(b)
	ctx := b.Context()
	ns := next("latency")
	if err := namespace(ctx, ns); err != nil {
		b.Fatal(err)
	}
	if err := route(ctx, shared.kube, ns, "app", true); err != nil {
		b.Fatal(err)
	}
	_, lobbyAddr, _ := startInterceptor(ctx, b, next("interceptor"), true, []string{"LOBBY_WATCH_NAMESPACE=" + ns},
		func(q map[string]queueCounts) bool { _, ok := q[ns+"/app"]; return ok })
	backendURL := "http://" + netip.AddrPortFrom(shared.backend, appPort).String()
	_, bareAddr := startBare(ctx, b, next("bare-proxy"), true, "-mode", "proxy", "-addr", "$(POD_IP):8080", "-target", backendURL)
	_, pooledAddr := startBare(ctx, b, next("bare-pooled"), true, "-mode", "proxy", "-pool", "-addr", "$(POD_IP):8080", "-target", backendURL)
	targets := []*target{
		{name: "direct", url: backendURL + "/", host: "app.test"},
		{name: "bare", url: "http://" + netip.AddrPortFrom(bareAddr, 8080).String() + "/", host: "app.test"},
		{name: "pooled", url: "http://" + netip.AddrPortFrom(pooledAddr, 8080).String() + "/", host: "app.test"},
		{name: "lobby", url: "http://" + lobbyAddr + "/", host: "app.test"},
	}
	for _, t := range targets {
		u, _ := netip.ParseAddrPort(t.url[len("http://") : len(t.url)-1])
		waitListening(ctx, b, u.String())
	}
	if _, _, ok := pinned(1, ""); ok {
		if err := pinSelf("0"); err != nil {
			b.Fatal(err)
		}
		defer func() {
			if err := pinSelf("0,1"); err != nil {
				b.Error(err)
			}
		}()
	} else {
		b.Log("taskset is missing: the proxies and the client share both cores")
	}
	client := &http.Client{Transport: &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConnsPerHost: connections,
		MaxConnsPerHost:     connections,
		DisableCompression:  true,
	}}
	for _, t := range targets {
		if _, err := load(ctx, client, t, warmRequests); err != nil {
			b.Fatalf("warm up %s: %v", t.name, err)
		}
	}
	b.ResetTimer()
	for b.Loop() {
		for range rounds {
			for _, t := range targets {
				lat, err := load(ctx, client, t, roundRequests)
				if err != nil {
					b.Fatalf("%s: %v", t.name, err)
				}
				t.lat = append(t.lat, lat...)
			}
		}
	}
	b.StopTimer()
	p99 := map[string]float64{}
	for _, t := range targets {
		s := sorted(t.lat)
		b.ReportMetric(percentile(s, 0.50), t.name+"-p50-ms")
		b.ReportMetric(percentile(s, 0.99), t.name+"-p99-ms")
		p99[t.name] = percentile(s, 0.99)
	}
	b.ReportMetric(p99["lobby"]/p99["bare"], "p99-ratio")
	b.ReportMetric(p99["lobby"]/p99["pooled"], "p99-ratio-pooled")
}

// load sends n GETs to t over the client's connections, one in flight per connection, and
// returns the latency of each. Any answer other than 200 is an error.
func load(ctx context.Context, client *http.Client, t *target, n int) ([]time.Duration, error) {
	var left atomic.Int64
	left.Store(int64(n))
	per := make([][]time.Duration, connections)
	errs := make([]error, connections)
	var wg sync.WaitGroup
	for w := range connections {
		wg.Go(func() {
			for left.Add(-1) >= 0 {
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.url, nil)
				if err != nil {
					errs[w] = err
					return
				}
				req.Host = t.host
				start := time.Now()
				resp, err := client.Do(req)
				if err != nil {
					errs[w] = err
					return
				}
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				per[w] = append(per[w], time.Since(start))
				if err != nil {
					errs[w] = err
					return
				}
				if resp.StatusCode != http.StatusOK {
					errs[w] = &statusError{resp.Status}
					return
				}
			}
		})
	}
	wg.Wait()
	var all []time.Duration
	for w := range connections {
		if errs[w] != nil {
			return nil, errs[w]
		}
		all = append(all, per[w]...)
	}
	return all, nil
}

// statusError is an answer with an unexpected status.
type statusError struct{ status string }

func (e *statusError) Error() string { return "answer " + e.status + ", want 200 OK" }

package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lobby-http/lobby/e2e/framework"
)

const (
	// warmRounds is how many times each target is measured at each concurrency, the targets
	// taking turns within a round (in a rotating order) so that a change of load on the machine
	// falls on all of them alike; figures are medians over the rounds.
	warmRounds = 3
	// warmUp is the closed loop each target gets at each concurrency before anything is
	// measured: connections, buffers, heap, and the proxies' connections to the backend.
	warmUp = 500 * time.Millisecond
	// warmClosed is one throughput measurement (closed loop).
	warmClosed = time.Second
	// warmOpen is one latency measurement (open loop).
	warmOpen = 1500 * time.Millisecond
	// warmLoad is the open loop's rate as a fraction of the bare proxy's median throughput at
	// the same concurrency: a load every target should carry, so that latency is service and
	// queueing under load, not an overloaded target's ever-growing backlog.
	warmLoad = 0.5
	// warmScrapes is how many /metrics scrapes measure the allocations of one scrape, which
	// every allocation count of a measurement includes once and is corrected for. Go counts
	// allocations as its per-core caches of memory are refilled, so a single scrape's count
	// can be zero or a cache's worth; an average over many is steady.
	warmScrapes = 10
)

// warmConcurrencies are the numbers of client connections BenchmarkWarmLatency runs at.
var warmConcurrencies = []int{1, 16, 64, 256}

// warmTarget is one thing BenchmarkWarmLatency sends requests to.
type warmTarget struct {
	name    string
	addr    string // host:port of its proxy listener, or of the backend
	pid     int    // the proxy's process; 0 for the backend, which is in the test process
	metrics string // the proxy's /metrics URL
	// scrapeAllocs is how many allocations one /metrics scrape costs the proxy, once scraped.
	scrapeAllocs float64
	scraped      bool
	conns        []*genConn
}

// warmFigures are the measurements of one target at one concurrency. The per-round slices
// are in round order, so that entry i of two targets was measured in the same round.
type warmFigures struct {
	rps            []float64 // closed loop: requests per second
	util           []float64 // closed loop: the proxy's CPU seconds per second
	clientUtil     []float64 // closed loop: this process's CPU seconds per second
	p50, p99, p999 []float64 // open loop: latency quantiles in milliseconds
	rates          []float64 // the open loop's rate, per iteration
	// openCPU is the proxy's CPU time over openRequests requests of the open loops.
	openCPU      time.Duration
	openRequests int
	// allocs is the proxy's allocations over allocRequests requests of every measurement.
	allocs        float64
	allocRequests int
	// process is whether the target is a process of its own, whose CPU and allocations count.
	process bool
}

// BenchmarkWarmLatency measures the warm path at several fixed concurrencies through three
// processes in front of the same backend — the interceptor binary (`lobby`), a bare
// httputil.ReverseProxy (`bare`) and the same with a sync.Pool of copy buffers (`pooled`), both
// from internal/bare — and straight to the backend (`direct`, for scale). Every proxy runs
// pinned to core 1 (taskset) with GOMAXPROCS=1, checked on each one's /metrics; the load
// generator and the backend run in this process, pinned to core 0 with GOMAXPROCS=1.
//
// At each concurrency C (1, 16, 64, 256 connections, kept open throughout), after a warm-up of
// 0.5 s per target, the targets take turns in three rounds of a closed loop (each connection
// with one request in flight, back to back, for 1 s) and then in three rounds of an open loop:
// requests on a timetable fixed in advance, at half the bare proxy's median closed-loop
// throughput at C (the same rate for every target), for 1.5 s over the C connections, each
// latency measured from the request's intended send time (see openLoop), so that a stall counts
// against every request it delayed (a target that cannot keep up with the rate shows its
// growing backlog). Every answer must be a 200. Each figure is the median over
// the rounds; each lobby/bare ratio is the median of the per-round ratios (the two were
// measured in the same round).
//
// Metrics, for each concurrency C and target T (direct, bare, pooled, lobby):
//   - cC-T-rps: requests per second in the closed loop;
//   - cC-T-p50-ms, cC-T-p99-ms, cC-T-p99.9-ms: latency quantiles in the open loop;
//   - cC-T-client-util: this process's (load generator and backend) CPU seconds per second in
//     the closed loop; near 1 (its one core) the client's core limited the throughput;
//
// for each proxy T (bare, pooled, lobby):
//   - cC-T-cpu-s/10k: CPU seconds the proxy's process used per 10,000 requests in the open
//     loop (sum of its threads' run time in /proc/<pid>/task/*/schedstat, over all rounds);
//   - cC-T-allocs/req: heap allocations of the proxy's process per request, closed and open
//     loops together (go_memstats_mallocs_total on its /metrics before and after each
//     measurement, less one scrape's own allocations);
//   - cC-T-util: the proxy's CPU seconds per second in the closed loop; near 1 (its one core)
//     the proxy limited the throughput, as it should for rps-ratio to compare proxies;
//
// and for each concurrency C:
//   - cC-rate: the open loop's rate, requests per second;
//   - cC-rps-ratio: lobby/bare throughput (target ≥ 0.95);
//   - cC-p99-ratio: lobby/bare open-loop p99 (target ≤ 1.2);
//   - cC-allocs-delta: lobby − bare allocations per request (target ≤ +4);
//   - cC-cpu-ratio: lobby/bare CPU per request in the open loop;
//   - cC-rps-ratio-pooled, cC-p99-ratio-pooled, cC-allocs-delta-pooled, cC-cpu-ratio-pooled:
//     the same against `pooled`.
//
// One iteration takes about two and a half minutes.
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
	ip, lobbyAddr, lobbyAdmin := startInterceptor(ctx, b, next("interceptor"), true, []string{"LOBBY_WATCH_NAMESPACE=" + ns, "GOMAXPROCS=1"},
		func(q map[string]queueCounts) bool { _, ok := q[ns+"/app"]; return ok })
	backend := netip.AddrPortFrom(shared.backend, appPort).String()
	targets := []*warmTarget{
		{name: "direct", addr: backend},
		startBareProxy(ctx, b, "bare", false, "http://"+backend),
		startBareProxy(ctx, b, "pooled", true, "http://"+backend),
		{name: "lobby", addr: lobbyAddr, pid: ip.PID(), metrics: lobbyAdmin + "/metrics"},
	}
	procs := map[string]float64{}
	for _, t := range targets {
		waitListening(ctx, b, t.addr)
		if t.pid == 0 {
			continue
		}
		v, err := scrapeValues(ctx, t.metrics, "go_sched_gomaxprocs_threads")
		if err != nil {
			b.Fatalf("%s: %v", t.name, err)
		}
		procs[t.name] = v[0]
	}
	if procs["lobby"] != procs["bare"] || procs["lobby"] != procs["pooled"] {
		b.Fatalf("the proxies run with different GOMAXPROCS: %v", procs)
	}
	defer pinClient(b, "the client")()

	figures := map[int]map[string]*warmFigures{}
	for _, c := range warmConcurrencies {
		figures[c] = map[string]*warmFigures{}
		for _, t := range targets {
			figures[c][t.name] = &warmFigures{process: t.pid != 0}
		}
	}
	b.ResetTimer()
	for b.Loop() {
		for _, c := range warmConcurrencies {
			if err := warmLevel(ctx, c, targets, figures[c]); err != nil {
				b.Fatalf("%d connections: %v", c, err)
			}
		}
	}
	b.StopTimer()
	for _, t := range targets {
		if t.pid != 0 {
			b.Logf("%s: one /metrics scrape costs %.0f allocations, taken off each measurement", t.name, t.scrapeAllocs)
		}
	}
	for _, c := range warmConcurrencies {
		reportWarm(b, c, figures[c])
	}
}

// startBareProxy starts the bare proxy (with pooled buffers if pool) in front of backendURL,
// pinned to core 1 like the interceptor, with GOMAXPROCS=1, and its /metrics on port 9090.
func startBareProxy(ctx context.Context, tb testing.TB, name string, pool bool, backendURL string) *warmTarget {
	tb.Helper()
	addr, err := shared.cluster.AllocAddr()
	if err != nil {
		tb.Fatal(err)
	}
	args := []string{"-mode", "proxy", "-addr", "$(POD_IP):8080", "-admin", "$(POD_IP):9090", "-target", backendURL}
	if pool {
		args = append(args, "-pool")
	}
	path, args, _ := pinned(1, shared.bare, args...)
	p, err := shared.cluster.RunBinary(ctx, framework.ProcessSpec{Name: next("bare-" + name), Path: path, Args: args, Addr: addr, Env: []string{"GOMAXPROCS=1"}})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = p.Stop() })
	waitListening(ctx, tb, netip.AddrPortFrom(addr, 9090).String())
	return &warmTarget{name: name, addr: netip.AddrPortFrom(addr, 8080).String(), pid: p.PID(),
		metrics: "http://" + netip.AddrPortFrom(addr, 9090).String() + "/metrics"}
}

// warmLevel runs the rounds of one concurrency over fresh connections and appends to figs.
func warmLevel(ctx context.Context, c int, targets []*warmTarget, figs map[string]*warmFigures) error {
	for _, t := range targets {
		conns, err := dialGens(ctx, c, t.addr, "app.test")
		if err != nil {
			return fmt.Errorf("%s: %w", t.name, err)
		}
		t.conns = conns
		defer closeGens(conns)
	}
	for _, t := range targets {
		if _, _, err := closedLoop(t.conns, warmUp); err != nil {
			return fmt.Errorf("warm up %s: %w", t.name, err)
		}
		if t.pid != 0 && !t.scraped {
			if err := t.measureScrape(ctx); err != nil {
				return err
			}
		}
	}
	for r := range warmRounds {
		for _, t := range rotated(targets, r) {
			f := figs[t.name]
			var n int
			var elapsed, client time.Duration
			u, err := t.measure(ctx, func() error {
				c0, err := procCPU(os.Getpid())
				if err != nil {
					return err
				}
				if n, elapsed, err = closedLoop(t.conns, warmClosed); err != nil {
					return err
				}
				c1, err := procCPU(os.Getpid())
				client = c1 - c0
				return err
			})
			if err != nil {
				return fmt.Errorf("%s, closed loop: %w", t.name, err)
			}
			f.rps = append(f.rps, float64(n)/elapsed.Seconds())
			f.clientUtil = append(f.clientUtil, client.Seconds()/elapsed.Seconds())
			if t.pid != 0 {
				f.util = append(f.util, u.cpu.Seconds()/elapsed.Seconds())
				f.allocs += u.allocs
				f.allocRequests += n
			}
		}
	}
	bare := figs["bare"].rps
	rate := warmLoad * medianOf(bare[len(bare)-warmRounds:])
	for _, f := range figs {
		f.rates = append(f.rates, rate)
	}
	for r := range warmRounds {
		for _, t := range rotated(targets, r) {
			f := figs[t.name]
			var lat []time.Duration
			u, err := t.measure(ctx, func() error {
				var err error
				lat, err = openLoop(t.conns, rate, warmOpen)
				return err
			})
			if err != nil {
				return fmt.Errorf("%s, open loop at %.0f requests/s: %w", t.name, rate, err)
			}
			s := sorted(lat)
			f.p50 = append(f.p50, percentile(s, 0.50))
			f.p99 = append(f.p99, percentile(s, 0.99))
			f.p999 = append(f.p999, percentile(s, 0.999))
			if t.pid != 0 {
				f.openCPU += u.cpu
				f.openRequests += len(lat)
				f.allocs += u.allocs
				f.allocRequests += len(lat)
			}
		}
	}
	return nil
}

// usage is what a proxy process used during one measurement.
type usage struct {
	cpu    time.Duration
	allocs float64
}

// measure runs run and returns the CPU time and the allocations of the target's process over
// it; nothing for the backend.
func (t *warmTarget) measure(ctx context.Context, run func() error) (usage, error) {
	if t.pid == 0 {
		return usage{}, run()
	}
	m0, err := scrapeValues(ctx, t.metrics, "go_memstats_mallocs_total")
	if err != nil {
		return usage{}, err
	}
	c0, err := procCPU(t.pid)
	if err != nil {
		return usage{}, err
	}
	if err := run(); err != nil {
		return usage{}, err
	}
	c1, err := procCPU(t.pid)
	if err != nil {
		return usage{}, err
	}
	m1, err := scrapeValues(ctx, t.metrics, "go_memstats_mallocs_total")
	if err != nil {
		return usage{}, err
	}
	return usage{cpu: c1 - c0, allocs: m1[0] - m0[0] - t.scrapeAllocs}, nil
}

// measureScrape sets scrapeAllocs from back-to-back scrapes of the idle proxy.
func (t *warmTarget) measureScrape(ctx context.Context) error {
	first, err := scrapeValues(ctx, t.metrics, "go_memstats_mallocs_total")
	if err != nil {
		return err
	}
	last := first
	for range warmScrapes {
		if last, err = scrapeValues(ctx, t.metrics, "go_memstats_mallocs_total"); err != nil {
			return err
		}
	}
	t.scrapeAllocs, t.scraped = (last[0]-first[0])/warmScrapes, true
	return nil
}

// reportWarm reports the figures of concurrency c.
func reportWarm(b *testing.B, c int, figs map[string]*warmFigures) {
	pre := "c" + strconv.Itoa(c) + "-"
	for _, name := range []string{"direct", "bare", "pooled", "lobby"} {
		f := figs[name]
		b.ReportMetric(medianOf(f.rps), pre+name+"-rps")
		b.ReportMetric(medianOf(f.p50), pre+name+"-p50-ms")
		b.ReportMetric(medianOf(f.p99), pre+name+"-p99-ms")
		b.ReportMetric(medianOf(f.p999), pre+name+"-p99.9-ms")
		b.ReportMetric(medianOf(f.clientUtil), pre+name+"-client-util")
		if f.process {
			b.ReportMetric(f.cpuPer10k(), pre+name+"-cpu-s/10k")
			b.ReportMetric(f.allocsPerRequest(), pre+name+"-allocs/req")
			b.ReportMetric(medianOf(f.util), pre+name+"-util")
		}
	}
	b.ReportMetric(medianOf(figs["bare"].rates), pre+"rate")
	lobby := figs["lobby"]
	for _, base := range []string{"bare", "pooled"} {
		f := figs[base]
		suffix := ""
		if base != "bare" {
			suffix = "-" + base
		}
		b.ReportMetric(medianOf(ratios(lobby.rps, f.rps)), pre+"rps-ratio"+suffix)
		b.ReportMetric(medianOf(ratios(lobby.p99, f.p99)), pre+"p99-ratio"+suffix)
		b.ReportMetric(lobby.allocsPerRequest()-f.allocsPerRequest(), pre+"allocs-delta"+suffix)
		b.ReportMetric(lobby.cpuPer10k()/f.cpuPer10k(), pre+"cpu-ratio"+suffix)
	}
}

func (f *warmFigures) cpuPer10k() float64 {
	return f.openCPU.Seconds() / float64(f.openRequests) * 10000
}

func (f *warmFigures) allocsPerRequest() float64 { return f.allocs / float64(f.allocRequests) }

// ratios returns a[i]/b[i] for each i.
func ratios(a, b []float64) []float64 {
	r := make([]float64, len(a))
	for i := range a {
		r[i] = a[i] / b[i]
	}
	return r
}

// medianOf returns the median of xs (the mean of the middle two for an even count).
func medianOf(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if n := len(s); n%2 == 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	return s[len(s)/2]
}

// rotated returns targets starting at the r-th, so that each round runs them in another order.
func rotated(targets []*warmTarget, r int) []*warmTarget {
	k := r % len(targets)
	return append(slices.Clone(targets[k:]), targets[:k]...)
}

// procCPU returns the CPU time process pid has used: the sum of its threads' run time, in
// nanoseconds in /proc/<pid>/task/<tid>/schedstat, where /proc/<pid>/stat counts in 10 ms
// ticks. A thread that exits takes its time with it; Go keeps its threads.
func procCPU(pid int) (time.Duration, error) {
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("read CPU time of process %d: %w", pid, err)
	}
	var sum int64
	for _, task := range tasks {
		b, err := os.ReadFile(dir + "/" + task.Name() + "/schedstat")
		if errors.Is(err, fs.ErrNotExist) {
			continue // the thread has just exited
		}
		if err != nil {
			return 0, fmt.Errorf("read CPU time of process %d: %w", pid, err)
		}
		run, _, _ := strings.Cut(string(b), " ")
		ns, err := strconv.ParseInt(run, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("read CPU time of process %d: schedstat %q", pid, b)
		}
		sum += ns
	}
	return time.Duration(sum), nil
}

// scrapeValues returns the values of the unlabelled samples names in the Prometheus text
// exposition at url, in the order of names; a missing one is an error.
func scrapeValues(ctx context.Context, url string, names ...string) ([]float64, error) {
	found, err := scrapeSamples(ctx, url, func(name string) bool { return slices.Contains(names, name) })
	if err != nil {
		return nil, err
	}
	vals := make([]float64, len(names))
	for i, name := range names {
		v, ok := found[name]
		if !ok {
			return nil, fmt.Errorf("GET %s: no %s", url, name)
		}
		vals[i] = v
	}
	return vals, nil
}

// scrapeSamples returns the unlabelled samples of the Prometheus text exposition at url whose
// names keep accepts, by name.
func scrapeSamples(ctx context.Context, url string, keep func(name string) bool) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	found := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, v, ok := strings.Cut(sc.Text(), " ")
		if !ok || !keep(name) {
			continue
		}
		if found[name], err = strconv.ParseFloat(strings.TrimSpace(v), 64); err != nil {
			return nil, fmt.Errorf("GET %s: %s %q: %w", url, name, v, err)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	return found, nil
}

// statusError is an answer with an unexpected status.
type statusError struct{ status string }

func (e *statusError) Error() string { return "answer " + e.status + ", want 200 OK" }

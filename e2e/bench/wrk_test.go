package bench

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	// wrkRounds is how many times each proxy is measured at each concurrency, the two taking
	// turns (A/B, B/A, ...) so that a change of load on the machine falls on both alike.
	wrkRounds = 3
	// wrkDuration is one wrk run; wrkWarmUp is the unmeasured run each proxy gets first at
	// each concurrency.
	wrkDuration = 3 * time.Second
	wrkWarmUp   = time.Second
)

// wrkConcurrencies are the numbers of connections BenchmarkWrk runs wrk at.
var wrkConcurrencies = []int{1, 64, 256}

// BenchmarkWrk measures the warm path the way users measure a proxy: wrk (Debian's package, one
// thread) sends GETs through the interceptor process (`lobby`) and through a bare
// httputil.ReverseProxy process (`bare`, internal/bare) to the same backend. Each proxy runs
// pinned to core 1 with GOMAXPROCS=1; wrk and the backend (this process, GOMAXPROCS=1) are pinned to
// core 0.
// At 1, 64 and 256 connections, after a 1 s warm-up each, the proxies take turns for three
// rounds of a 3 s wrk run; figures are medians over the rounds, ratios medians of the per-round
// lobby/bare ratios.
//
// Metrics, for each concurrency C and proxy T (bare, lobby):
//   - cC-T-rps: wrk's requests per second;
//   - cC-T-p99-ms: wrk's 99th percentile latency;
//
// and for each concurrency C:
//   - cC-rps-ratio: lobby/bare throughput (target ≥ 0.95);
//   - cC-p99-ratio: lobby/bare p99 (target ≤ 1.2).
//
// Every response must be a 200 (wrk's "Non-2xx or 3xx responses" and socket errors fail the
// benchmark). One iteration takes about 45 s.
func BenchmarkWrk(b *testing.B) {
	need(b)
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		b.Fatal("wrk is missing: run `make deps`")
	}
	ctx := b.Context()
	ns := next("wrk")
	if err := namespace(ctx, ns); err != nil {
		b.Fatal(err)
	}
	if err := route(ctx, shared.kube, ns, "app", true); err != nil {
		b.Fatal(err)
	}
	_, lobbyAddr, _ := startInterceptor(ctx, b, next("interceptor"), true, []string{"LOBBY_WATCH_NAMESPACE=" + ns, "GOMAXPROCS=1"},
		func(q map[string]queueCounts) bool { _, ok := q[ns+"/app"]; return ok })
	backend := netip.AddrPortFrom(shared.backend, appPort).String()
	targets := []*warmTarget{
		startBareProxy(ctx, b, "bare", false, "http://"+backend),
		{name: "lobby", addr: lobbyAddr},
	}
	for _, t := range targets {
		waitListening(ctx, b, t.addr)
	}
	defer pinClient(b, "wrk")()

	type figs struct{ rps, p99 map[string][]float64 }
	all := map[int]*figs{}
	for _, c := range wrkConcurrencies {
		all[c] = &figs{rps: map[string][]float64{}, p99: map[string][]float64{}}
	}
	b.ResetTimer()
	for b.Loop() {
		for _, c := range wrkConcurrencies {
			for _, t := range targets {
				if _, err := runWrk(ctx, wrk, t.addr, c, wrkWarmUp); err != nil {
					b.Fatalf("warm up %s at %d connections: %v", t.name, c, err)
				}
			}
			for r := range wrkRounds {
				for _, t := range rotated(targets, r) {
					res, err := runWrk(ctx, wrk, t.addr, c, wrkDuration)
					if err != nil {
						b.Fatalf("%s at %d connections: %v", t.name, c, err)
					}
					all[c].rps[t.name] = append(all[c].rps[t.name], res.rps)
					all[c].p99[t.name] = append(all[c].p99[t.name], res.p99.Seconds()*1e3)
				}
			}
		}
	}
	b.StopTimer()
	for _, c := range wrkConcurrencies {
		f := all[c]
		var rpsRatio, p99Ratio []float64
		for i := range f.rps["bare"] {
			rpsRatio = append(rpsRatio, f.rps["lobby"][i]/f.rps["bare"][i])
			p99Ratio = append(p99Ratio, f.p99["lobby"][i]/f.p99["bare"][i])
		}
		for _, t := range targets {
			b.ReportMetric(medianOf(f.rps[t.name]), fmt.Sprintf("c%d-%s-rps", c, t.name))
			b.ReportMetric(medianOf(f.p99[t.name]), fmt.Sprintf("c%d-%s-p99-ms", c, t.name))
		}
		b.ReportMetric(medianOf(rpsRatio), fmt.Sprintf("c%d-rps-ratio", c))
		b.ReportMetric(medianOf(p99Ratio), fmt.Sprintf("c%d-p99-ratio", c))
	}
}

// wrkResult is what one wrk run measured.
type wrkResult struct {
	rps float64
	p99 time.Duration
}

// runWrk runs wrk with one thread and c connections against addr for d, pinned to core 0 when
// taskset is there, and parses its report.
func runWrk(ctx context.Context, wrk, addr string, c int, d time.Duration) (wrkResult, error) {
	path, args, _ := pinned(0, wrk, "-t1", "-c"+strconv.Itoa(c), "-d"+strconv.Itoa(int(d.Seconds()))+"s",
		"--latency", "--timeout", "5s", "-H", "Host: app.test", "http://"+addr+"/")
	ctx, cancel := context.WithTimeout(ctx, d+phaseSlack)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return wrkResult{}, fmt.Errorf("wrk: %w: %s", err, out.String())
	}
	return parseWrk(out.String())
}

var (
	wrkRPS    = regexp.MustCompile(`(?m)^Requests/sec:\s+([0-9.]+)`)
	wrkP99    = regexp.MustCompile(`(?m)^\s+99%\s+([0-9.]+)(us|ms|s)\s*$`)
	wrkErrors = regexp.MustCompile(`(?m)^\s+(Non-2xx or 3xx responses|Socket errors):.*$`)
)

// parseWrk reads requests per second and the 99th percentile from wrk's --latency report. A
// report of non-2xx answers or socket errors is an error: every request must be answered 200.
func parseWrk(report string) (wrkResult, error) {
	if m := wrkErrors.FindString(report); m != "" {
		return wrkResult{}, fmt.Errorf("wrk reports %s", strings.TrimSpace(m))
	}
	m := wrkRPS.FindStringSubmatch(report)
	p := wrkP99.FindStringSubmatch(report)
	if m == nil || p == nil {
		return wrkResult{}, fmt.Errorf("unexpected wrk report: %q", report)
	}
	rps, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return wrkResult{}, fmt.Errorf("wrk requests/sec %q: %w", m[1], err)
	}
	v, err := strconv.ParseFloat(p[1], 64)
	if err != nil {
		return wrkResult{}, fmt.Errorf("wrk p99 %q: %w", p[1], err)
	}
	unit := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second}[p[2]]
	return wrkResult{rps: rps, p99: time.Duration(v * float64(unit))}, nil
}

func TestParseWrk(t *testing.T) {
	const report = `Running 3s test @ http://10.244.0.9:8080/
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.61ms  502.11us  12.03ms   88.12%
    Req/Sec    24.61k     1.02k   25.90k    80.00%
  Latency Distribution
     50%    2.55ms
     75%    2.71ms
     90%    2.95ms
     99%    4.90ms
  73473 requests in 3.00s, 10.65MB read
Requests/sec:  24488.18
Transfer/sec:      3.55MB
`
	tests := []struct {
		name    string
		report  string
		want    wrkResult
		wantErr bool
	}{
		{name: "A clean report gives its throughput and p99.", report: report, want: wrkResult{rps: 24488.18, p99: 4900 * time.Microsecond}},
		{name: "A p99 in microseconds is read as such.", report: strings.Replace(report, "4.90ms", "812.00us", 1), want: wrkResult{rps: 24488.18, p99: 812 * time.Microsecond}},
		{name: "Non-2xx answers fail the run.", report: report + "  Non-2xx or 3xx responses: 12\n", wantErr: true},
		{name: "Socket errors fail the run.", report: report + "  Socket errors: connect 0, read 3, write 0, timeout 0\n", wantErr: true},
		{name: "A report without figures is an error.", report: "unable to connect\n", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseWrk(tc.report)
			if (err != nil) != tc.wantErr || (!tc.wantErr && got != tc.want) {
				t.Errorf("parseWrk() = %+v, %v; want %+v, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

package main

import (
	"fmt"
	"slices"
	"strings"
)

// Target is one row of the design's table of targets, as measured by a run.
type Target struct {
	What     string `json:"what"`
	Target   string `json:"target"`
	Value    string `json:"measured"`
	Measured bool   `json:"is_measured"`
	Met      bool   `json:"met"`
}

// figures looks figures up in a run's results.
type figures []Result

// get returns the median over the runs of benchmark name (without the -GOMAXPROCS suffix) in the
// package whose import path ends with pkg, of the figure with the given unit.
func (f figures) get(pkg, name, unit string) (float64, bool) {
	var vs []float64
	for _, r := range f {
		if strings.HasSuffix(r.Package, pkg) && r.Name == name {
			if v, ok := r.Metrics[unit]; ok {
				vs = append(vs, v)
			}
		}
	}
	if len(vs) == 0 {
		return 0, false
	}
	slices.Sort(vs)
	if len(vs)%2 == 1 {
		return vs[len(vs)/2], true
	}
	return (vs[len(vs)/2-1] + vs[len(vs)/2]) / 2, true
}

// all returns the figures of every unit named, or false when one is missing.
func (f figures) all(pkg, name string, units ...string) ([]float64, bool) {
	out := make([]float64, len(units))
	for i, u := range units {
		v, ok := f.get(pkg, name, u)
		if !ok {
			return nil, false
		}
		out[i] = v
	}
	return out, true
}

// rule is how one target is measured from the figures: the value as text and whether it meets
// the target, or false when the run has no figure for it.
type rule struct {
	what, target string
	measure      func(figures) (value string, met, ok bool)
}

// rules follow the table of targets in DESIGN.md, in its order. Where a target is measured two
// ways (in process and through the process and API server), both rows appear.
var rules = []rule{
	{"warm throughput vs a bare `httputil.ReverseProxy`, measured with wrk (`BenchmarkWrk`)", "≥ 0.95×",
		func(f figures) (string, bool, bool) {
			return perConcurrency(f, "BenchmarkWrk", wrkConcurrencies, "rps-ratio", "%.2f×", func(v float64) bool { return v >= 0.95 })
		}},
	{"warm p99 vs that baseline, measured with wrk (`BenchmarkWrk`)", "≤ 1.2×",
		func(f figures) (string, bool, bool) {
			return perConcurrency(f, "BenchmarkWrk", wrkConcurrencies, "p99-ratio", "%.2f×", func(v float64) bool { return v <= 1.2 })
		}},
	{"warm throughput vs a bare `httputil.ReverseProxy`, interceptor process (`BenchmarkWarmLatency`, closed loop)", "≥ 0.95×",
		func(f figures) (string, bool, bool) {
			return perConcurrency(f, "BenchmarkWarmLatency", concurrencies, "rps-ratio", "%.2f×", func(v float64) bool { return v >= 0.95 })
		}},
	{"warm throughput vs a bare `httputil.ReverseProxy`, in process (`BenchmarkProxy`)", "≥ 0.95×",
		func(f figures) (string, bool, bool) {
			bare, ok1 := f.get("interceptor/internal/proxy", "BenchmarkProxy/bare", "ns/op")
			chain, ok2 := f.get("interceptor/internal/proxy", "BenchmarkProxy/chain", "ns/op")
			r := bare / chain
			return fmt.Sprintf("%.2f× (%.0f against %.0f µs/op)", r, chain/1e3, bare/1e3), r >= 0.95, ok1 && ok2
		}},
	{"warm p99 vs that baseline, interceptor process (`BenchmarkWarmLatency`, open loop at half the baseline's throughput)", "≤ 1.2×",
		func(f figures) (string, bool, bool) {
			return perConcurrency(f, "BenchmarkWarmLatency", concurrencies, "p99-ratio", "%.2f×", func(v float64) bool { return v <= 1.2 })
		}},
	{"allocations per proxied request vs that baseline, interceptor process (`BenchmarkWarmLatency`)", "≤ +4",
		func(f figures) (string, bool, bool) {
			return perConcurrency(f, "BenchmarkWarmLatency", concurrencies, "allocs-delta", "%+.1f", func(v float64) bool { return v <= 4 })
		}},
	{"allocations per proxied request vs that baseline (`BenchmarkProxy`)", "≤ +4",
		func(f figures) (string, bool, bool) {
			bare, ok1 := f.get("interceptor/internal/proxy", "BenchmarkProxy/bare", "allocs/op")
			chain, ok2 := f.get("interceptor/internal/proxy", "BenchmarkProxy/chain", "allocs/op")
			d := chain - bare
			return fmt.Sprintf("%+.0f (%.0f against %.0f)", d, chain, bare), d <= 4, ok1 && ok2
		}},
	{"tracing on at 100 % sampling vs off, in process (`BenchmarkProxy/chain-traced` against `BenchmarkProxy/chain`, whose rows are above)", "cost reported; no target",
		func(f figures) (string, bool, bool) {
			off, ok1 := f.get("interceptor/internal/proxy", "BenchmarkProxy/chain", "ns/op")
			on, ok2 := f.get("interceptor/internal/proxy", "BenchmarkProxy/chain-traced", "ns/op")
			offAllocs, ok3 := f.get("interceptor/internal/proxy", "BenchmarkProxy/chain", "allocs/op")
			onAllocs, ok4 := f.get("interceptor/internal/proxy", "BenchmarkProxy/chain-traced", "allocs/op")
			return fmt.Sprintf("%.2f× the time per request (%.0f against %.0f µs/op), %+.0f allocations", on/off, on/1e3, off/1e3, onAllocs-offAllocs),
				true, ok1 && ok2 && ok3 && ok4
		}},
	{"status page viewer connected vs none, in process (`BenchmarkProxyStatusViewer/viewer` against `/no-viewer`)", "unchanged within noise: ≥ 0.95× throughput, allocations ±1",
		func(f figures) (string, bool, bool) {
			off, ok1 := f.get("interceptor/internal/proxy", "BenchmarkProxyStatusViewer/no-viewer", "ns/op")
			on, ok2 := f.get("interceptor/internal/proxy", "BenchmarkProxyStatusViewer/viewer", "ns/op")
			offAllocs, ok3 := f.get("interceptor/internal/proxy", "BenchmarkProxyStatusViewer/no-viewer", "allocs/op")
			onAllocs, ok4 := f.get("interceptor/internal/proxy", "BenchmarkProxyStatusViewer/viewer", "allocs/op")
			ratio, d := off/on, onAllocs-offAllocs
			return fmt.Sprintf("%.2f× the throughput (%.1f against %.1f µs/op), %+.0f allocations", ratio, on/1e3, off/1e3, d),
				ratio >= 0.95 && d <= 1 && d >= -1, ok1 && ok2 && ok3 && ok4
		}},
	{"route lookup, 10,000 routes", "≤ 150 ns, 0 allocs",
		func(f figures) (string, bool, bool) {
			v, ok := f.all("interceptor/internal/routing", "BenchmarkLookup", "ns/op", "allocs/op")
			if !ok {
				return "", false, false
			}
			return fmt.Sprintf("%.0f ns, %.0f allocs", v[0], v[1]), v[0] <= 150 && v[1] == 0, true
		}},
	{"first request → `StreamIsActive(true)` at a KEDA-side client", "p99 ≤ 20 ms",
		func(f figures) (string, bool, bool) {
			v, ok := f.all("e2e/activation", "BenchmarkActivationLatency", "p50-ms", "p99-ms")
			if !ok {
				return "", false, false
			}
			return fmt.Sprintf("p99 %.1f ms (p50 %.2f ms)", v[1], v[0]), v[1] <= 20, true
		}},
	{"EndpointSlice ready → one held request answered, in process (`BenchmarkWake`, proxy pinned)", "p99 ≤ 5 ms",
		func(f figures) (string, bool, bool) {
			v, ok := f.get("interceptor/internal/proxy", "BenchmarkWake/pinned/lobby/held=1", "p99-ms")
			return fmt.Sprintf("p99 %.2f ms", v), v <= 5, ok
		}},
	{"EndpointSlice ready in the API server → one held request answered (`BenchmarkHandoff`)", "p99 ≤ 5 ms",
		func(f figures) (string, bool, bool) {
			v, ok := f.all("e2e/bench", "BenchmarkHandoff", "handoff-response-p50-ms", "handoff-response-p99-ms")
			if !ok {
				return "", false, false
			}
			return fmt.Sprintf("p99 %.1f ms (p50 %.1f ms)", v[1], v[0]), v[1] <= 5, true
		}},
	{"the interceptor's share of that: the EndpointSlice event on a watch → the held request answered (`BenchmarkHandoff`)", "p99 ≤ 5 ms",
		func(f figures) (string, bool, bool) {
			v, ok := f.all("e2e/bench", "BenchmarkHandoff", "handoff-interceptor-p50-ms", "handoff-interceptor-p99-ms", "handoff-watch-p99-ms")
			if !ok {
				return "", false, false
			}
			return fmt.Sprintf("p99 %.1f ms (p50 %.1f ms; the API server's write and watch delivery: p99 %.1f ms)", v[1], v[0], v[2]), v[1] <= 5, true
		}},
	{"EndpointSlice ready → 1,000 held requests all answered, in process (`BenchmarkWake`, proxy pinned)", "≤ 50 ms, or ≤ 1.2× direct",
		func(f figures) (string, bool, bool) {
			v, ok := f.get("interceptor/internal/proxy", "BenchmarkWake/pinned/lobby/held=1000", "all-ms")
			bare, okb := f.get("interceptor/internal/proxy", "BenchmarkWake/pinned/bare/held=1000", "all-ms")
			direct, okd := f.get("interceptor/internal/proxy", "BenchmarkWake/pinned/direct/held=1000", "all-ms")
			h2c, okh := f.get("interceptor/internal/proxy", "BenchmarkWake/pinned/lobby-h2c/held=1000", "all-ms")
			// The target is 50 ms, or 1.2× 1,000 clients opening fresh connections to the pod at
			// once when that is slower.
			bound := max(50, 1.2*direct)
			return fmt.Sprintf("%.0f ms, %.2f× direct (direct: %.0f ms; to an h2c pod: %.0f ms; bare proxy releasing as many: %.0f ms)",
				v, v/direct, direct, h2c, bare), v <= bound, ok && okb && okd && okh
		}},
	{"EndpointSlice ready in the API server → 1,000 held requests all answered (`BenchmarkHandoff1000`)", "≤ 50 ms",
		func(f figures) (string, bool, bool) {
			v, ok := f.get("e2e/bench", "BenchmarkHandoff1000", "handoff1000-all-ms")
			return fmt.Sprintf("%.0f ms", v), v <= 50, ok
		}},
	{"10,000 held requests: RSS per held request vs a bare `net/http` server holding as many", "≤ 1.15×, all served",
		func(f figures) (string, bool, bool) {
			v, ok := f.all("e2e/bench", "BenchmarkHeldMemory", "rss-ratio", "lobby-KiB/held", "bare-KiB/held")
			if !ok {
				return "", false, false
			}
			// The benchmark fails unless every request is answered 200, so a figure means all served.
			return fmt.Sprintf("%.2f× (%.1f against %.1f KiB), all served", v[0], v[1], v[2]), v[0] <= 1.15, true
		}},
	{"1,000 routes + 5,000 unrelated EndpointSlices: interceptor RSS", "≤ 48 MiB",
		func(f figures) (string, bool, bool) {
			v, ok := f.all("e2e/bench", "BenchmarkRoutesMemory", "rss-MiB", "rss-peak-MiB")
			if !ok {
				return "", false, false
			}
			return fmt.Sprintf("%.1f MiB (peak while listing %.1f MiB)", v[0], v[1]), v[0] <= 48, true
		}},
	{"cold start in the local cluster: lobby's own share", "≤ 50 ms",
		func(f figures) (string, bool, bool) {
			v, ok := f.all("e2e/coldstart", "BenchmarkColdStart", "coldstart-lobby-p50-ms", "coldstart-lobby-p99-ms")
			if !ok {
				return "", false, false
			}
			return fmt.Sprintf("p99 %.0f ms (p50 %.0f ms)", v[1], v[0]), v[1] <= 50, true
		}},
}

// concurrencies are the connection counts BenchmarkWarmLatency measures at, wrkConcurrencies
// those of BenchmarkWrk.
var (
	concurrencies    = []int{1, 16, 64, 256}
	wrkConcurrencies = []int{1, 64, 256}
)

// perConcurrency reports benchmark's figure cC-<unit> (of e2e/bench) at each concurrency of cs;
// the target is met only when it is met at each of them.
func perConcurrency(f figures, benchmark string, cs []int, unit, format string, meets func(float64) bool) (string, bool, bool) {
	parts := make([]string, 0, len(cs))
	met := true
	for _, c := range cs {
		v, ok := f.get("e2e/bench", benchmark, fmt.Sprintf("c%d-%s", c, unit))
		if !ok {
			return "", false, false
		}
		met = met && meets(v)
		parts = append(parts, fmt.Sprintf("%d conns "+format, c, v))
	}
	return strings.Join(parts, ", "), met, true
}

func evaluate(results []Result) []Target {
	f := figures(results)
	out := make([]Target, 0, len(rules))
	for _, r := range rules {
		t := Target{What: r.what, Target: r.target}
		t.Value, t.Met, t.Measured = r.measure(f)
		if !t.Measured {
			t.Value, t.Met = "—", false
		}
		out = append(out, t)
	}
	return out
}

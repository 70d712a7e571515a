package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const sample = `run-date: 2026-11-23 17:35 UTC
run-commit: 383e72fdb6de
goos: linux
goarch: amd64
pkg: github.com/lobby-http/lobby/interceptor/internal/routing
cpu: Intel(R) Xeon(R) Processor @ 2.80GHz
BenchmarkLookup-2   	22192878	       113.4 ns/op	       0 B/op	       0 allocs/op
BenchmarkLookup-2   	22631404	       163.0 ns/op	       0 B/op	       0 allocs/op
BenchmarkLookup-2   	22631404	       124.4 ns/op	       0 B/op	       0 allocs/op
PASS
pkg: github.com/lobby-http/lobby/e2e/activation
BenchmarkActivationLatency-2   	     200	    921903 ns/op	         0.7643 p50-ms	         4.320 p99-ms	         0.2160 p99/target
ok  	github.com/lobby-http/lobby/e2e/activation	30.1s
`

func TestParseAndEvaluate(t *testing.T) {
	results, header, err := parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	if run := describeRun(header); run.Date != "2026-11-23 17:35 UTC" || run.Commit != "383e72fdb6de" {
		t.Errorf("run = %+v, want the date and commit recorded before the benchmarks", run)
	}
	if len(results) != 4 || results[3].Package != "github.com/lobby-http/lobby/e2e/activation" || results[3].Name != "BenchmarkActivationLatency" {
		t.Fatalf("parsed %+v", results)
	}
	if v, ok := figures(results).get("interceptor/internal/routing", "BenchmarkLookup", "ns/op"); !ok || v != 124.4 {
		t.Fatalf("median ns/op = %v, %v; want 124.4 (the median of three runs)", v, ok)
	}
	byWhat := map[string]Target{}
	for _, tg := range evaluate(results) {
		byWhat[tg.What] = tg
	}
	if tg := byWhat["route lookup, 10,000 routes"]; !tg.Measured || !tg.Met || tg.Value != "124 ns, 0 allocs" {
		t.Errorf("lookup target = %+v", tg)
	}
	if tg := byWhat["first request → `StreamIsActive(true)` at a KEDA-side client"]; !tg.Measured || !tg.Met {
		t.Errorf("activation target = %+v", tg)
	}
	if tg := byWhat["1,000 routes + 5,000 unrelated EndpointSlices: interceptor RSS"]; tg.Measured || tg.Value != "—" {
		t.Errorf("a target without figures = %+v, want not measured", tg)
	}
}

func TestOddFieldsAreAnError(t *testing.T) {
	if _, _, err := parse(strings.NewReader("pkg: x\nBenchmarkX-2  10  5 ns/op 7\n")); err == nil {
		t.Fatal("a value without a unit parsed without error")
	}
}

func TestReplaceSummary(t *testing.T) {
	file := filepath.Join(t.TempDir(), "benchmarks.md")
	if err := os.WriteFile(file, []byte("# Benchmarks\n\nIntro.\n\n## Routing\n\nText.\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, text := range []string{"first table\n", "second table\n"} {
		if err := replaceSummary(file, text); err != nil {
			t.Fatal(err)
		}
	}
	b, _ := os.ReadFile(file)
	got := string(b)
	want := "# Benchmarks\n\nIntro.\n\n## Summary\n\n" + beginMarker + "\n\nsecond table\n\n" + endMarker + "\n\n## Routing\n\nText.\n"
	if got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
}

// Command benchreport turns the output of `go test -bench` into the record of a benchmark run:
// docs/benchmarks.json with every figure every benchmark reported, and the summary table at the
// top of docs/benchmarks.md with each target of the design, the value measured and whether it
// was met. `make bench` runs it on the output it has just produced:
//
//	go run ./hack/benchreport -in .cache/bench/bench.txt
//
// It exits non-zero when a target has no measurement, so a benchmark that stopped reporting a
// figure is noticed rather than dropped from the table.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"
)

func main() {
	in := flag.String("in", "", "output of go test -bench (default standard input)")
	jsonOut := flag.String("json", "docs/benchmarks.json", "where to write every figure as JSON")
	mdOut := flag.String("md", "docs/benchmarks.md", "markdown file whose summary section is replaced")
	flag.Parse()
	if err := run(*in, *jsonOut, *mdOut); err != nil {
		fmt.Fprintf(os.Stderr, "benchreport: %v\n", err)
		os.Exit(1)
	}
}

func run(in, jsonOut, mdOut string) error {
	var r io.Reader = os.Stdin
	if in != "" {
		f, err := os.Open(in)
		if err != nil {
			return err
		}
		defer f.Close()
		r = f
	}
	results, header, err := parse(r)
	if err != nil {
		return err
	}
	if len(results) == 0 {
		return errors.New("no benchmark results in the input")
	}
	rep := Report{Run: describeRun(header), Results: results}
	rep.Targets = evaluate(results)

	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(jsonOut, append(b, '\n'), 0o644); err != nil {
		return err
	}
	if err := replaceSummary(mdOut, summary(rep)); err != nil {
		return err
	}
	fmt.Print(summary(rep))
	var missing []string
	for _, t := range rep.Targets {
		if !t.Measured {
			missing = append(missing, t.What)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("targets without a measurement (did a benchmark fail or stop reporting?): %s", strings.Join(missing, "; "))
	}
	return nil
}

// Report is what docs/benchmarks.json holds.
type Report struct {
	Run     Run      `json:"run"`
	Targets []Target `json:"targets"`
	Results []Result `json:"results"`
}

// Run says when, where and on what the benchmarks ran.
type Run struct {
	Date    string `json:"date"`
	Commit  string `json:"commit"`
	Machine string `json:"machine"`
	Cores   int    `json:"cores"`
	Go      string `json:"go"`
}

// Result is one line of benchmark output: a benchmark of a package, its iterations, and every
// figure it reported by unit.
type Result struct {
	Package    string             `json:"package"`
	Name       string             `json:"name"`
	Iterations int64              `json:"iterations"`
	Metrics    map[string]float64 `json:"metrics"`
}

var benchLine = regexp.MustCompile(`^(Benchmark\S+?)(-\d+)?\s+(\d+)\s+(.*)$`)

// parse reads go test's benchmark lines, attributing each to the package named by the last
// "pkg:" line before it, and the "run-date:" and "run-commit:" lines make bench writes first.
func parse(r io.Reader) ([]Result, map[string]string, error) {
	var out []Result
	header := map[string]string{}
	pkg := ""
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if p, ok := strings.CutPrefix(line, "pkg: "); ok {
			pkg = p
			continue
		}
		if k, v, ok := strings.Cut(line, ": "); ok && (k == "run-date" || k == "run-commit") {
			header[k] = v
			continue
		}
		m := benchLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		n, err := strconv.ParseInt(m[3], 10, 64)
		if err != nil {
			continue
		}
		fields := strings.Fields(m[4])
		if len(fields)%2 != 0 {
			return nil, nil, fmt.Errorf("benchmark line with an odd number of value/unit fields: %q", line)
		}
		res := Result{Package: pkg, Name: m[1], Iterations: n, Metrics: map[string]float64{}}
		for i := 0; i < len(fields); i += 2 {
			v, err := strconv.ParseFloat(fields[i], 64)
			if err != nil {
				return nil, nil, fmt.Errorf("value %q in %q: %w", fields[i], line, err)
			}
			res.Metrics[fields[i+1]] = v
		}
		out = append(out, res)
	}
	return out, header, sc.Err()
}

// describeRun says where the run was: the date and commit make bench recorded before it started
// (the benchmarks take minutes, and the tree may change meanwhile), else the present ones.
func describeRun(header map[string]string) Run {
	run := Run{Date: header["run-date"], Commit: header["run-commit"], Cores: runtime.NumCPU(),
		Go: runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH, Machine: cpuModel()}
	if run.Date == "" {
		run.Date = time.Now().UTC().Format("2006-01-02 15:04 MST")
	}
	if run.Commit == "" {
		if b, err := exec.Command("git", "describe", "--always", "--dirty= (with uncommitted changes)", "--abbrev=12").Output(); err == nil {
			run.Commit = strings.TrimSpace(string(b))
		}
	}
	return run
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

// beginMarker and endMarker delimit the generated summary in docs/benchmarks.md.
const (
	beginMarker = "<!-- summary: written by `make bench` (hack/benchreport) from its last run; do not edit by hand -->"
	endMarker   = "<!-- end of summary -->"
)

func summary(rep Report) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Last `make bench`: %s, commit %s, %d cores, %s, %s. Every figure: [benchmarks.json](benchmarks.json).\n\n",
		rep.Run.Date, rep.Run.Commit, rep.Run.Cores, rep.Run.Machine, rep.Run.Go)
	b.WriteString("| what | target | measured | met |\n|---|---|---|---|\n")
	for _, t := range rep.Targets {
		met := "no"
		switch {
		case !t.Measured:
			met = "not measured"
		case t.Met:
			met = "yes"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", t.What, t.Target, t.Value, met)
	}
	return b.String()
}

// replaceSummary puts text between the markers in file, adding the markers after the first
// paragraph when they are not there yet.
func replaceSummary(file, text string) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	doc := string(b)
	block := beginMarker + "\n\n" + text + "\n" + endMarker
	if i := strings.Index(doc, beginMarker); i >= 0 {
		j := strings.Index(doc, endMarker)
		if j < i {
			return fmt.Errorf("%s: %q without %q after it", file, beginMarker, endMarker)
		}
		doc = doc[:i] + block + doc[j+len(endMarker):]
	} else {
		// After the title and the first paragraph.
		i := strings.Index(doc, "\n\n")
		if j := strings.Index(doc[i+2:], "\n\n"); i >= 0 && j >= 0 {
			i += 2 + j
		}
		if i < 0 {
			i = len(doc)
		}
		doc = doc[:i] + "\n\n## Summary\n\n" + block + doc[i:]
	}
	return os.WriteFile(file, []byte(doc), 0o644)
}

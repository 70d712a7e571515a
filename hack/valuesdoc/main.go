// Command valuesdoc regenerates the values table of charts/lobby/README.md from the "# --"
// comments in charts/lobby/values.yaml. Run it from the repository root:
//
//	go run ./hack/valuesdoc
//
// It fails, naming the key, when a value has no description.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/lobby-http/lobby/e2e/chart"
)

func main() {
	if err := run(chart.Dir()); err != nil {
		fmt.Fprintf(os.Stderr, "valuesdoc: %v\n", err)
		os.Exit(1)
	}
}

func run(dir string) error {
	src, err := os.ReadFile(filepath.Join(dir, "values.yaml"))
	if err != nil {
		return err
	}
	values, err := chart.Values(src)
	if err != nil {
		return err
	}
	path := filepath.Join(dir, "README.md")
	readme, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	out, err := chart.UpdateReadme(readme, chart.Table(values))
	if err != nil {
		return err
	}
	return os.WriteFile(path, out, 0o644)
}

package kubelet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
)

// ImagePrefix is the registry part of every sample app's image name: e2e/apps/echo runs as
// image lobby.test/echo.
const ImagePrefix = "lobby.test/"

// BuildApps builds every sample app in e2e/apps into outDir with `go build` and returns the
// images that run them, ImagePrefix+<name> → executable, ready for Options.Images. The go
// command's own cache makes a rebuild of unchanged apps a matter of seconds; an executable whose
// build ID is current is not rewritten.
func BuildApps(ctx context.Context, outDir string) (map[string]string, error) {
	_, self, _, ok := runtime.Caller(0)
	if !ok {
		return nil, errors.New("build apps: cannot locate the source tree")
	}
	appsDir := filepath.Join(filepath.Dir(self), "..", "apps")
	entries, err := os.ReadDir(appsDir)
	if err != nil {
		return nil, fmt.Errorf("build apps: %w (BuildApps needs the lobby source tree)", err)
	}
	var names []string
	for _, e := range entries {
		if e.IsDir() {
			if _, err := os.Stat(filepath.Join(appsDir, e.Name(), "main.go")); err == nil {
				names = append(names, e.Name())
			}
		}
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("build apps: no app (a folder with main.go) in %s", appsDir)
	}
	slices.Sort(names)
	outDir, err = filepath.Abs(outDir)
	if err != nil {
		return nil, fmt.Errorf("build apps: %w", err)
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return nil, fmt.Errorf("build apps: %w", err)
	}
	goTool, err := goCommand()
	if err != nil {
		return nil, fmt.Errorf("build apps: %w", err)
	}
	args := []string{"build", "-o", outDir + string(filepath.Separator)}
	for _, n := range names {
		args = append(args, "./"+n)
	}
	cmd := exec.CommandContext(ctx, goTool, args...)
	cmd.Dir = appsDir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("build apps: go %v: %w\n%s", args, err, out.Bytes())
	}
	images := make(map[string]string, len(names))
	for _, n := range names {
		images[ImagePrefix+n] = filepath.Join(outDir, n)
	}
	return images, nil
}

// goCommand finds the go command: on PATH, else in the GOROOT this binary was built with.
func goCommand() (string, error) {
	if p, err := exec.LookPath("go"); err == nil {
		return p, nil
	}
	p := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("no go command on PATH or in %s", filepath.Dir(p))
	}
	return p, nil
}

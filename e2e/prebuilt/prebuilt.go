// Package prebuilt builds every program the end-to-end suite and the demo run — lobby's three
// binaries, the sample apps, the test helpers and Helm — before they enter their private network
// namespace, and finds the built executables from inside it.
//
// Nothing inside the namespace can reach the network, so nothing there may need it: a `go build`
// run inside would download any module missing from the module cache and fail on a fresh
// machine. Prepare runs on the machine's own network, once per process that enters a namespace
// (or once per `make test`, which sets DirEnv for all of its test binaries), and passes the
// folder to the namespace through the environment; Path and Apps only look executables up.
package prebuilt

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
	"strings"
)

// DirEnv names the folder holding the built executables. Prepare sets it for the processes it
// starts; `make test` sets it once for every test binary so they share one build.
const DirEnv = "LOBBY_E2E_BIN"

// stampFile, in a folder named by DirEnv, says that Build completed there.
const stampFile = ".built"

// helmEnv is the variable e2e/chart reads the Helm binary's path from.
const helmEnv = "HELM"

// Packages lists every main package the end-to-end suite and the demo run, relative to the module
// root. Each executable is named after the last element of its package path, so the names must
// be distinct. A package missing here fails loudly inside the namespace (see Path).
var Packages = []string{
	"./interceptor",
	"./scaler",
	"./operator",
	"./e2e/apps/...",
	"./e2e/bench/internal/bare",
	"./e2e/framework/internal/whoami",
	"./e2e/system/internal/loadgen",
}

// ErrNotBuilt reports an executable that Prepare did not build.
var ErrNotBuilt = errors.New("not built before entering the network namespace")

// Root returns the folder of lobby's go.mod, from this source file's location.
func Root() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("find the source tree: no caller information")
	}
	root := filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		return "", fmt.Errorf("find the source tree: %w (run from lobby's repository)", err)
	}
	return root, nil
}

// Build compiles Packages into dir with one `go build`, which builds them in parallel and, with
// the go command's cache, relinks only what changed.
func Build(ctx context.Context, dir string) error {
	root, err := Root()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("build the e2e programs: %w", err)
	}
	args := append([]string{"build", "-o", filepath.Clean(dir) + string(filepath.Separator)}, Packages...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("build the e2e programs: go %s: %w\n%s", strings.Join(args, " "), err, out.Bytes())
	}
	return nil
}

// Prepare makes everything the namespace will run ready, on the machine's own network: when
// DirEnv names a folder it builds Packages there unless an earlier Prepare did; otherwise it
// builds them into a fresh temporary folder and sets DirEnv for the processes this one starts; unless HELM is set, it builds (or finds in the tools cache)
// the pinned Helm with hack/helm.sh and sets HELM. cleanup removes what Prepare created.
func Prepare(ctx context.Context) (cleanup func() error, err error) {
	cleanup = func() error { return nil }
	root, err := Root()
	if err != nil {
		return cleanup, err
	}
	if os.Getenv(helmEnv) == "" {
		var stdout, stderr bytes.Buffer
		cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, "hack", "helm.sh"))
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			return cleanup, fmt.Errorf("build helm with hack/helm.sh: %w: %s", err, strings.TrimSpace(stderr.String()))
		}
		if err := os.Setenv(helmEnv, strings.TrimSpace(stdout.String())); err != nil {
			return cleanup, err
		}
	}
	if dir := os.Getenv(DirEnv); dir != "" {
		// A shared folder is built once, by the first process that finds it without its stamp;
		// `make test` empties it before its test binaries run one package at a time.
		stamp := filepath.Join(dir, stampFile)
		if _, err := os.Stat(stamp); err == nil {
			return cleanup, nil
		}
		if err := Build(ctx, dir); err != nil {
			return cleanup, err
		}
		if err := os.WriteFile(stamp, nil, 0o644); err != nil {
			return cleanup, fmt.Errorf("build the e2e programs: %w", err)
		}
		return cleanup, nil
	}
	dir, err := os.MkdirTemp("", "lobby-e2e-bin-")
	if err != nil {
		return cleanup, fmt.Errorf("build the e2e programs: %w", err)
	}
	cleanup = func() error {
		os.Unsetenv(DirEnv)
		if err := os.RemoveAll(dir); err != nil {
			return fmt.Errorf("remove the e2e programs: %w", err)
		}
		return nil
	}
	if err := Build(ctx, dir); err != nil {
		return cleanup, errors.Join(err, cleanup())
	}
	if err := os.Setenv(DirEnv, dir); err != nil {
		return cleanup, errors.Join(err, cleanup())
	}
	return cleanup, nil
}

// Path returns the executable Prepare built for main package pkg, given as in Packages (for
// example "./interceptor" or "./e2e/system/internal/loadgen"). It never builds.
func Path(pkg string) (string, error) {
	dir := os.Getenv(DirEnv)
	if dir == "" {
		return "", fmt.Errorf("%s: %w: %s is unset (enter the namespace through netns, which calls prebuilt.Prepare)", pkg, ErrNotBuilt, DirEnv)
	}
	p := filepath.Join(dir, filepath.Base(pkg))
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%s: %w: add its package to prebuilt.Packages", pkg, ErrNotBuilt)
	}
	return p, nil
}

// ImagePrefix is the registry part of every sample app's image name: e2e/apps/echo runs as
// image lobby.test/echo.
const ImagePrefix = "lobby.test/"

// Apps returns the image of every sample app in e2e/apps (a folder with a main.go) mapped to the
// executable Prepare built for it.
func Apps() (map[string]string, error) {
	root, err := Root()
	if err != nil {
		return nil, err
	}
	appsDir := filepath.Join(root, "e2e", "apps")
	entries, err := os.ReadDir(appsDir)
	if err != nil {
		return nil, fmt.Errorf("list the sample apps: %w", err)
	}
	var names []string
	for _, e := range entries {
		if _, err := os.Stat(filepath.Join(appsDir, e.Name(), "main.go")); e.IsDir() && err == nil {
			names = append(names, e.Name())
		}
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("list the sample apps: no app (a folder with main.go) in %s", appsDir)
	}
	slices.Sort(names)
	images := make(map[string]string, len(names))
	for _, n := range names {
		p, err := Path("./e2e/apps/" + n)
		if err != nil {
			return nil, err
		}
		images[ImagePrefix+n] = p
	}
	return images, nil
}

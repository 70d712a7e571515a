package node

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/lobby-http/lobby/e2e/prebuilt"
)

// ImagesEnv names the folder holding the image tarballs BuildImages wrote, for the test binary
// that runs inside the network namespace.
const ImagesEnv = "LOBBY_E2E_IMAGES"

// Images the node runs besides lobby's, as hack/images names them (-registry lobby.test -version
// e2e).
const (
	// SandboxImage is the pod sandbox image (e2e/node/internal/pause).
	SandboxImage = "lobby.test/pause:e2e"
	// EchoImage is the sample app e2e/apps/echo.
	EchoImage = "lobby.test/echo:e2e"
)

// BuildImages writes the image tarballs of lobby's three binaries (as `make images` does, with
// the chart's references) and of the pause and echo images into dir, with hack/images. It needs
// the network on a fresh machine, so it runs before the namespace is entered.
func BuildImages(ctx context.Context, dir string) error {
	root, err := prebuilt.Root()
	if err != nil {
		return err
	}
	for _, args := range [][]string{
		{"-out", dir, "-binaries", "interceptor,scaler,operator"},
		{"-out", dir, "-binaries", "pause,echo", "-registry", "lobby.test", "-version", "e2e"},
	} {
		cmd := exec.CommandContext(ctx, "go", append([]string{"-C", filepath.Join(root, "hack", "images"), "run", "."}, args...)...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("build images with hack/images %s: %w\n%s", strings.Join(args, " "), err, indent(out.String()))
		}
	}
	return nil
}

// Tarballs returns the image tarballs in the folder ImagesEnv names.
func Tarballs() ([]string, error) {
	dir := os.Getenv(ImagesEnv)
	if dir == "" {
		return nil, fmt.Errorf("%s is unset: build the images with BuildImages before entering the network namespace", ImagesEnv)
	}
	tars, err := filepath.Glob(filepath.Join(dir, "*.tar"))
	if err != nil || len(tars) == 0 {
		return nil, fmt.Errorf("no image tarballs in %s (%v)", dir, err)
	}
	return tars, nil
}

package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// TestImages builds the image of each binary that exists in this checkout for the machine's own
// architecture, unpacks the tarball as a registry would receive it, and runs the entrypoint the
// image declares, with an invalid environment: a binary that starts validates its environment
// and exits naming the variable, which proves the entrypoint is the binary and that it runs
// without anything else from the image.
func TestImages(t *testing.T) {
	if testing.Short() {
		t.Skip("compiling the binaries takes minutes; skipped in short mode")
	}
	root, err := findRoot()
	if err != nil {
		t.Fatal(err)
	}
	var bins []string
	for _, b := range Binaries {
		if _, err := os.Stat(filepath.Join(root, b, "main.go")); err != nil {
			t.Logf("%s is not in this checkout yet (no %s/main.go); its image is not built", b, b)
			continue
		}
		bins = append(bins, b)
	}
	if len(bins) == 0 {
		t.Fatal("no binary to build: the checkout has none of interceptor, scaler, operator")
	}
	pl := v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
	out := t.TempDir()
	built, err := Build(Options{Root: root, Out: out, Binaries: bins, Platforms: []v1.Platform{pl},
		Registry: "ghcr.io/lobby-http", Version: "1.2.3-test", Revision: "abc123"})
	if err != nil {
		t.Fatal(err)
	}
	if len(built) != len(bins) {
		t.Fatalf("built %d images, want %d", len(built), len(bins))
	}
	for _, b := range built {
		t.Run("the "+b.Binary+" image runs its binary as user 65532", func(t *testing.T) {
			tag, err := name.NewTag(b.Ref)
			if err != nil {
				t.Fatal(err)
			}
			img, err := tarball.ImageFromPath(b.Tarball, &tag)
			if err != nil {
				t.Fatalf("read docker-save tarball %s: %v", b.Tarball, err)
			}
			cfg, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Config.User != "65532:65532" {
				t.Errorf("user %q, want 65532:65532", cfg.Config.User)
			}
			wantEntry := "/usr/local/bin/" + b.Binary
			if len(cfg.Config.Entrypoint) != 1 || cfg.Config.Entrypoint[0] != wantEntry || len(cfg.Config.Cmd) != 0 {
				t.Errorf("entrypoint %q cmd %q, want [%s] and no cmd", cfg.Config.Entrypoint, cfg.Config.Cmd, wantEntry)
			}
			if cfg.OS != "linux" || cfg.Architecture != runtime.GOARCH {
				t.Errorf("platform %s/%s", cfg.OS, cfg.Architecture)
			}
			for k, v := range map[string]string{
				"org.opencontainers.image.version":  "1.2.3-test",
				"org.opencontainers.image.revision": "abc123",
				"org.opencontainers.image.source":   "https://github.com/lobby-http/lobby",
				"org.opencontainers.image.title":    "lobby " + b.Binary,
			} {
				if cfg.Config.Labels[k] != v {
					t.Errorf("label %s = %q, want %q", k, cfg.Config.Labels[k], v)
				}
			}
			files := unpack(t, img)
			if !strings.Contains(string(files["etc/passwd"].data), ":65532:65532:") {
				t.Errorf("/etc/passwd has no entry for 65532: %q", files["etc/passwd"].data)
			}
			entry, ok := files[strings.TrimPrefix(wantEntry, "/")]
			if !ok {
				t.Fatalf("the image has no %s", wantEntry)
			}
			if entry.mode&0o111 == 0 || entry.uid != 0 {
				t.Errorf("%s has mode %o owner %d; want executable and owned by root (not writable by the user)", wantEntry, entry.mode, entry.uid)
			}
			exe := filepath.Join(t.TempDir(), b.Binary)
			if err := os.WriteFile(exe, entry.data, 0o755); err != nil {
				t.Fatal(err)
			}
			var stderr bytes.Buffer
			cmd := exec.CommandContext(t.Context(), exe)
			// Nothing from the host: a clean environment with one invalid variable.
			cmd.Env = []string{"LOBBY_LOG_LEVEL=verbose"}
			cmd.Stderr = &stderr
			err = cmd.Run()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 1 {
				t.Fatalf("running the entrypoint with an invalid LOBBY_LOG_LEVEL: got %v, want exit status 1; stderr: %s", err, stderr.String())
			}
			if !strings.Contains(stderr.String(), "LOBBY_LOG_LEVEL") {
				t.Errorf("the binary's error does not name LOBBY_LOG_LEVEL: %s", stderr.String())
			}
		})
	}
	t.Run("the OCI layout holds one index per binary, tagged", func(t *testing.T) {
		idx, err := layout.ImageIndexFromPath(filepath.Join(out, "oci"))
		if err != nil {
			t.Fatal(err)
		}
		m, err := idx.IndexManifest()
		if err != nil {
			t.Fatal(err)
		}
		if len(m.Manifests) != len(bins) {
			t.Fatalf("the layout holds %d entries, want %d", len(m.Manifests), len(bins))
		}
		for i, d := range m.Manifests {
			want := "ghcr.io/lobby-http/" + bins[i] + ":1.2.3-test"
			if d.Annotations["org.opencontainers.image.ref.name"] != want {
				t.Errorf("entry %d is named %q, want %q", i, d.Annotations["org.opencontainers.image.ref.name"], want)
			}
			child, err := idx.ImageIndex(d.Digest)
			if err != nil {
				t.Fatal(err)
			}
			cm, err := child.IndexManifest()
			if err != nil {
				t.Fatal(err)
			}
			if len(cm.Manifests) != 1 || cm.Manifests[0].Platform == nil || cm.Manifests[0].Platform.Architecture != runtime.GOARCH {
				t.Errorf("index %s has manifests %+v, want one for linux/%s", want, cm.Manifests, runtime.GOARCH)
			}
		}
	})
}

type file struct {
	data     []byte
	mode     int64
	uid, gid int
}

// unpack returns the regular files of the image's flattened filesystem.
func unpack(t *testing.T, img v1.Image) map[string]file {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	files := map[string]file{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files
		}
		if err != nil {
			t.Fatalf("read the image's filesystem: %v", err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[strings.TrimPrefix(h.Name, "/")] = file{data: data, mode: h.Mode, uid: h.Uid, gid: h.Gid}
	}
}

func TestParsePlatform(t *testing.T) {
	tests := []struct {
		name, in string
		ok       bool
	}{
		{"linux/amd64 is accepted", "linux/amd64", true},
		{"linux/arm64 is accepted", "linux/arm64", true},
		{"another OS is refused", "darwin/arm64", false},
		{"a missing architecture is refused", "linux", false},
		{"a variant is refused", "linux/arm/v7", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParsePlatform(tc.in)
			if (err == nil) != tc.ok {
				t.Fatalf("ParsePlatform(%q) error %v, want ok=%t", tc.in, err, tc.ok)
			}
		})
	}
}

func TestPackagePath(t *testing.T) {
	tests := []struct {
		name, bin, want string
	}{
		{"a binary of lobby is built from the package of its name", "interceptor", "./interceptor"},
		{"the pause image is built from the real node's pause program", "pause", "./e2e/node/internal/pause"},
		{"the echo image is built from the sample app", "echo", "./e2e/apps/echo"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := packagePath(tt.bin); got != tt.want {
				t.Errorf("packagePath(%q) = %q; want %q", tt.bin, got, tt.want)
			}
		})
	}
	if _, err := Build(Options{Out: t.TempDir(), Binaries: []string{"nginx"}, Platforms: []v1.Platform{{OS: "linux", Architecture: "amd64"}}}); err == nil ||
		!strings.Contains(err.Error(), `unknown binary "nginx"`) {
		t.Errorf("Build with an unknown binary: err = %v; want one naming it", err)
	}
}

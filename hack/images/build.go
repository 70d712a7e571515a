package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Binaries are lobby's binaries, each built from the package of the same name at the
// repository root.
var Binaries = []string{"interceptor", "scaler", "operator"}

// NodeImages are the images the local cluster's real node runs besides lobby's (see
// docs/local-cluster.md), by name, with the package each is built from: the pod sandbox image,
// which containerd cannot pull there, and a sample app. They are built only when asked for by
// name (`-binaries pause,echo -registry lobby.test`), never by `make images`.
var NodeImages = map[string]string{
	"pause": "./e2e/node/internal/pause",
	"echo":  "./e2e/apps/echo",
}

// packagePath returns the package the image of bin is built from.
func packagePath(bin string) string {
	if p, ok := NodeImages[bin]; ok {
		return p
	}
	return "./" + bin
}

// User is the numeric user and group every image runs as; the chart's securityContext says the
// same.
const User = "65532:65532"

// BinDir is where the binary lands in the image.
const BinDir = "/usr/local/bin"

// epoch is the time stamped on files and images, so that the same sources give the same image.
var epoch = time.Unix(0, 0).UTC()

// Options say what to build.
type Options struct {
	// Root is the repository root.
	Root string
	// Out is the output folder.
	Out string
	// Binaries are the binaries to build, a subset of Binaries.
	Binaries []string
	// Platforms are the platforms to build for (linux only).
	Platforms []v1.Platform
	// Registry is the prefix of the image references, such as ghcr.io/lobby-http.
	Registry string
	// Version is the tag and the version label; empty reads the chart's appVersion.
	Version string
	// Revision is the source revision label; empty omits it.
	Revision string
}

// Built is one image written as a tarball.
type Built struct {
	// Binary is the binary it runs.
	Binary string
	// Platform is its platform, os/arch.
	Platform string
	// Ref is its reference, such as ghcr.io/lobby-http/interceptor:0.1.0.
	Ref string
	// Tarball is the docker-save tarball's path.
	Tarball string
}

// ParsePlatform parses "os/arch"; only linux is supported because the images are for Kubernetes
// nodes.
func ParsePlatform(s string) (v1.Platform, error) {
	os, arch, ok := strings.Cut(s, "/")
	if !ok || os != "linux" || arch == "" || strings.Contains(arch, "/") {
		return v1.Platform{}, fmt.Errorf("parse platform %q: want linux/<arch>, such as linux/amd64", s)
	}
	return v1.Platform{OS: os, Architecture: arch}, nil
}

var appVersion = regexp.MustCompile(`(?m)^appVersion:\s*"?([^"\s]+)"?\s*$`)

// chartVersion reads appVersion from the chart, so that the default tag is the one the chart
// deploys.
func chartVersion(root string) (string, error) {
	b, err := os.ReadFile(filepath.Join(root, "charts", "lobby", "Chart.yaml"))
	if err != nil {
		return "", fmt.Errorf("read the chart's appVersion (or pass -version): %w", err)
	}
	m := appVersion.FindSubmatch(b)
	if m == nil {
		return "", errors.New("read the chart's appVersion: charts/lobby/Chart.yaml has no appVersion line; pass -version")
	}
	return string(m[1]), nil
}

// Build compiles and packages every binary for every platform, writing the tarballs and the OCI
// layout into opts.Out.
func Build(opts Options) ([]Built, error) {
	if len(opts.Binaries) == 0 || len(opts.Platforms) == 0 {
		return nil, errors.New("build images: no binaries or no platforms")
	}
	for _, b := range opts.Binaries {
		if _, test := NodeImages[b]; !contains(Binaries, b) && !test {
			return nil, fmt.Errorf("build images: unknown binary %q; want some of %v, or a test image (pause, echo)", b, Binaries)
		}
	}
	if opts.Version == "" {
		v, err := chartVersion(opts.Root)
		if err != nil {
			return nil, err
		}
		opts.Version = v
	}
	if err := os.MkdirAll(opts.Out, 0o755); err != nil {
		return nil, fmt.Errorf("create output folder: %w", err)
	}
	work, err := os.MkdirTemp("", "lobby-images-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)

	ociDir := filepath.Join(opts.Out, "oci")
	if err := os.RemoveAll(ociDir); err != nil {
		return nil, err
	}
	lp, err := layout.Write(ociDir, empty.Index)
	if err != nil {
		return nil, fmt.Errorf("create OCI layout: %w", err)
	}

	var built []Built
	for _, bin := range opts.Binaries {
		ref, err := name.NewTag(fmt.Sprintf("%s/%s:%s", opts.Registry, bin, opts.Version))
		if err != nil {
			return nil, fmt.Errorf("build %s: image reference: %w", bin, err)
		}
		var index v1.ImageIndex = empty.Index
		index = mutate.IndexMediaType(index, types.OCIImageIndex)
		for _, pl := range opts.Platforms {
			exe := filepath.Join(work, pl.Architecture, bin)
			if err := compile(opts.Root, bin, pl, exe); err != nil {
				return nil, err
			}
			img, err := Image(bin, exe, pl, opts.Version, opts.Revision)
			if err != nil {
				return nil, err
			}
			out := filepath.Join(opts.Out, fmt.Sprintf("%s-%s-%s.tar", bin, pl.OS, pl.Architecture))
			if err := tarball.WriteToFile(out, ref, img); err != nil {
				return nil, fmt.Errorf("write %s: %w", out, err)
			}
			p := pl
			index = mutate.AppendManifests(index, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &p}})
			built = append(built, Built{Binary: bin, Platform: pl.OS + "/" + pl.Architecture, Ref: ref.String(), Tarball: out})
		}
		if err := lp.AppendIndex(index, layout.WithAnnotations(map[string]string{
			"org.opencontainers.image.ref.name": ref.String(),
		})); err != nil {
			return nil, fmt.Errorf("add %s to the OCI layout: %w", bin, err)
		}
	}
	return built, nil
}

// compile builds a static binary of the package bin for the platform.
func compile(root, bin string, pl v1.Platform, out string) error {
	cmd := exec.Command("go", "build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w", "-o", out, packagePath(bin))
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+pl.OS, "GOARCH="+pl.Architecture, "GOFLAGS=-mod=readonly")
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = io.Discard, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("compile %s for %s/%s: %w: %s", bin, pl.OS, pl.Architecture, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// Image returns the image of one binary: a single layer on an empty base, run as User.
func Image(bin, exe string, pl v1.Platform, version, revision string) (v1.Image, error) {
	layer, err := Layer(bin, exe)
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), layer)
	if err != nil {
		return nil, fmt.Errorf("build %s image: %w", bin, err)
	}
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture, cfg.Variant = pl.OS, pl.Architecture, pl.Variant
	cfg.Created = v1.Time{Time: epoch}
	cfg.Author = "lobby"
	labels := map[string]string{
		"org.opencontainers.image.title":       "lobby " + bin,
		"org.opencontainers.image.description": descriptions[bin],
		"org.opencontainers.image.source":      "https://github.com/lobby-http/lobby",
		"org.opencontainers.image.url":         "https://github.com/lobby-http/lobby",
		"org.opencontainers.image.version":     version,
		"org.opencontainers.image.created":     epoch.Format(time.RFC3339),
	}
	if revision != "" {
		labels["org.opencontainers.image.revision"] = revision
	}
	cfg.Config = v1.Config{
		User:       User,
		Entrypoint: []string{path.Join(BinDir, bin)},
		WorkingDir: "/",
		Env:        []string{"PATH=" + BinDir},
		Labels:     labels,
	}
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		return nil, fmt.Errorf("configure %s image: %w", bin, err)
	}
	return img, nil
}

var descriptions = map[string]string{
	"interceptor": "Lobby's HTTP proxy: holds requests while KEDA scales an app from zero, then forwards them.",
	"scaler":      "Lobby's KEDA external-push scaler: sums the interceptors' counts for KEDA.",
	"operator":    "Lobby's operator: turns HTTPScaledObjects into KEDA ScaledObjects.",
	"pause":       "The pod sandbox of lobby's local test cluster: waits for SIGTERM.",
	"echo":        "Lobby's sample app for end-to-end tests: echoes requests.",
}

// passwd and group name the image's only users: root, for tools that expect it, and nonroot,
// which the image runs as.
const (
	passwd = "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
	group  = "root:x:0:\nnonroot:x:65532:\n"
)

// Layer returns the image's only layer: /etc/passwd, /etc/group, the non-root user's home, an
// empty /tmp, and the binary at BinDir/<bin>.
func Layer(bin, exe string) (v1.Layer, error) {
	body, err := os.ReadFile(exe)
	if err != nil {
		return nil, fmt.Errorf("read binary: %w", err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	entries := []struct {
		name     string
		mode     int64
		uid, gid int
		dir      bool
		data     []byte
	}{
		{name: "etc/", mode: 0o755, dir: true},
		{name: "etc/passwd", mode: 0o644, data: []byte(passwd)},
		{name: "etc/group", mode: 0o644, data: []byte(group)},
		{name: "home/", mode: 0o755, dir: true},
		{name: "home/nonroot/", mode: 0o700, uid: 65532, gid: 65532, dir: true},
		{name: "tmp/", mode: 0o1777, dir: true},
		{name: "usr/", mode: 0o755, dir: true},
		{name: "usr/local/", mode: 0o755, dir: true},
		{name: "usr/local/bin/", mode: 0o755, dir: true},
		{name: strings.TrimPrefix(path.Join(BinDir, bin), "/"), mode: 0o755, data: body},
	}
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: e.mode, Uid: e.uid, Gid: e.gid, ModTime: epoch, Format: tar.FormatPAX}
		if e.dir {
			h.Typeflag = tar.TypeDir
		} else {
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(e.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("build %s layer: %w", bin, err)
	}
	return layer, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

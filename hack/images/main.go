// Command images builds lobby's container images without a container engine: for each binary
// (interceptor, scaler, operator) and platform it compiles a static binary and writes an image of
// one layer — the binary, and /etc/passwd and /etc/group naming the non-root user 65532 — that
// runs the binary as that user. Each image is written as a docker-save tarball
// (`<out>/<name>-<os>-<arch>.tar`, for `docker load`, `podman load`, `kind load image-archive` or
// `crane push`), and all of them together as an OCI image layout (`<out>/oci`) holding one
// multi-platform index per binary.
//
// It lives in its own module so that the main module does not depend on go-containerregistry.
// Run it from the repository root:
//
//	go -C hack/images run . -out bin/images [-platforms linux/amd64,linux/arm64]
//
// Relative paths are relative to the repository root. docs/images.md describes the images.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

func main() {
	var (
		opts      Options
		platforms string
		binaries  string
	)
	flag.StringVar(&opts.Root, "root", "", "repository root (default: the lobby module above the working directory)")
	flag.StringVar(&opts.Out, "out", "bin/images", "output folder, relative to the repository root unless absolute")
	flag.StringVar(&platforms, "platforms", "linux/amd64", "comma-separated os/arch pairs to build")
	flag.StringVar(&binaries, "binaries", strings.Join(Binaries, ","), "comma-separated binaries to build; also pause and echo, the local cluster's test images")
	flag.StringVar(&opts.Registry, "registry", "ghcr.io/lobby-http", "registry and path prefix of the image references")
	flag.StringVar(&opts.Version, "version", "", "image tag and version label (default: the chart's appVersion)")
	flag.StringVar(&opts.Revision, "revision", "", "source revision label, such as a commit hash")
	flag.Parse()

	if err := run(opts, platforms, binaries); err != nil {
		fmt.Fprintf(os.Stderr, "images: %v\n", err)
		os.Exit(1)
	}
}

func run(opts Options, platforms, binaries string) error {
	if opts.Root == "" {
		root, err := findRoot()
		if err != nil {
			return err
		}
		opts.Root = root
	}
	if !filepath.IsAbs(opts.Out) {
		opts.Out = filepath.Join(opts.Root, opts.Out)
	}
	for _, p := range strings.Split(platforms, ",") {
		pl, err := ParsePlatform(strings.TrimSpace(p))
		if err != nil {
			return err
		}
		opts.Platforms = append(opts.Platforms, pl)
	}
	for _, b := range strings.Split(binaries, ",") {
		opts.Binaries = append(opts.Binaries, strings.TrimSpace(b))
	}
	built, err := Build(opts)
	if err != nil {
		return err
	}
	for _, b := range built {
		fmt.Printf("%s\t%s\t%s\n", b.Ref, b.Platform, b.Tarball)
	}
	fmt.Printf("OCI layout\t%s\n", filepath.Join(opts.Out, "oci"))
	return nil
}

// findRoot walks up from the working directory to the folder whose go.mod declares the lobby
// module.
func findRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil &&
			strings.HasPrefix(string(b), "module github.com/lobby-http/lobby\n") {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("find repository root: no go.mod of module github.com/lobby-http/lobby above %s; pass -root", dir)
		}
	}
}

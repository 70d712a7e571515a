#!/usr/bin/env bash
# Builds the local cluster's binaries (kube-apiserver, kube-controller-manager, the KEDA operator
# and metrics adapter, and the kubelet of the real node) from the Go modules pinned in this
# folder's go.mod, and the e2e suite's trace backend (Jaeger) from jaeger/go.mod, into cache
# folders keyed by their versions. A second run with the binaries in place does nothing.
#
# Usage: build.sh <cache-root>   (prints the bin folder on stdout)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="${1:?usage: build.sh <cache-root>}"
mkdir -p "$root"
root="$(cd "$root" && pwd)"

k8s_version="$(cd "$here" && go list -m -f '{{.Version}}' k8s.io/kubernetes)"
keda_version="$(cd "$here" && go list -m -f '{{.Version}}' github.com/kedacore/keda/v2)"
bin="$root/k8s-${k8s_version}-keda-${keda_version}/bin"
mkdir -p "$bin"

minor="$(echo "$k8s_version" | cut -d. -f2)"
build_date="2026-01-01T00:00:00Z"
kver="k8s.io/component-base/version"
kldflags="-s -w -X ${kver}.gitVersion=${k8s_version} -X ${kver}.gitMajor=1 -X ${kver}.gitMinor=${minor} \
 -X ${kver}.gitTreeState=clean -X ${kver}.gitCommit=0000000000000000000000000000000000000000 -X ${kver}.buildDate=${build_date} \
 -X k8s.io/client-go/pkg/version.gitVersion=${k8s_version} -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=${minor}"
kedaldflags="-s -w -X github.com/kedacore/keda/v2/version.Version=${keda_version#v} -X github.com/kedacore/keda/v2/version.GitCommit=release"

build() { # name package ldflags
	local name="$1" pkg="$2" flags="$3"
	if [[ -x "$bin/$name" ]]; then return; fi
	echo "building $name from $pkg (first time only; about 15 minutes in all on 2 cores)" >&2
	local start=$SECONDS
	(cd "$here" && CGO_ENABLED=0 go build -trimpath -ldflags "$flags" -o "$bin/$name.tmp" "$pkg")
	mv "$bin/$name.tmp" "$bin/$name"
	echo "built $name in $((SECONDS - start))s" >&2
}

build kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver "$kldflags"
build kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager "$kldflags"
# The real node's kubelet (see docs/local-cluster.md); same version as the API server.
build kubelet k8s.io/kubernetes/cmd/kubelet "$kldflags"
build keda-operator github.com/kedacore/keda/v2/cmd/operator "$kedaldflags"
build keda-adapter github.com/kedacore/keda/v2/cmd/adapter "$kedaldflags"

# The e2e suite's trace backend, Jaeger v2, from its own module (jaeger/go.mod): its dependencies
# (the OpenTelemetry Collector's) must not meet the control plane's.
jaeger_version="$(cd "$here/jaeger" && go list -m -f '{{.Version}}' github.com/jaegertracing/jaeger)"
jaeger_bin="$root/jaeger-${jaeger_version}/jaeger"
if [[ ! -x "$jaeger_bin" ]]; then
	echo "building jaeger ${jaeger_version} (first time only; 7 minutes on 2 busy cores)" >&2
	start=$SECONDS
	mkdir -p "$(dirname "$jaeger_bin")"
	(cd "$here/jaeger" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$jaeger_bin.tmp" github.com/jaegertracing/jaeger/cmd/jaeger)
	mv "$jaeger_bin.tmp" "$jaeger_bin"
	echo "built jaeger in $((SECONDS - start))s" >&2
fi

# KEDA's CRDs come from the same module version.
crd_dir="$bin/../keda-crds"
if [[ ! -d "$crd_dir" ]]; then
	src="$(cd "$here" && go list -m -f '{{.Dir}}' github.com/kedacore/keda/v2)/config/crd/bases"
	mkdir -p "$crd_dir.tmp" && cp "$src"/*.yaml "$crd_dir.tmp"/ && chmod -R u+w "$crd_dir.tmp" && mv "$crd_dir.tmp" "$crd_dir"
fi
# envtest looks for etcd beside kube-apiserver: link the Debian package's binary (see `make deps`).
if etcd_path="$(command -v etcd)"; then ln -sf "$etcd_path" "$bin/etcd"; fi
echo "$bin"

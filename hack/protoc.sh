#!/usr/bin/env bash
# Regenerates the Go code of lobby's protobuf files (internal/externalscaler) with protoc from the
# Debian package protobuf-compiler and the Go plugins at the pinned versions below, built once
# into .cache/protoc/<version>/. Running it twice gives the same files.
#
# Usage: bash hack/protoc.sh   (from anywhere; it works from the repository root)
set -euo pipefail

PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${root}/.cache/protoc"
cd "${root}"

if ! command -v protoc >/dev/null 2>&1; then
	echo "protoc missing: installing the Debian package protobuf-compiler" >&2
	apt-get install -y protobuf-compiler >&2 || { apt-get update >&2 && apt-get install -y protobuf-compiler >&2; }
fi

# plugin NAME MODULE_PATH VERSION: builds the plugin at VERSION into its own cache folder once, and
# prints the binary's path. "go install pkg@version" builds exactly that version, whatever the
# main module requires.
plugin() {
	local name=$1 pkg=$2 version=$3
	local dir="${cache}/${name}-${version}"
	if [[ ! -x "${dir}/${name}" ]]; then
		mkdir -p "${dir}"
		GOBIN="${dir}" go install "${pkg}@${version}" >&2
	fi
	echo "${dir}/${name}"
}

gen_go=$(plugin protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go "${PROTOC_GEN_GO_VERSION}")
gen_go_grpc=$(plugin protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc "${PROTOC_GEN_GO_GRPC_VERSION}")

protoc \
	--plugin=protoc-gen-go="${gen_go}" \
	--plugin=protoc-gen-go-grpc="${gen_go_grpc}" \
	--proto_path=internal/externalscaler \
	--go_out=internal/externalscaler --go_opt=paths=source_relative \
	--go-grpc_out=internal/externalscaler --go-grpc_opt=paths=source_relative \
	internal/externalscaler/externalscaler.proto

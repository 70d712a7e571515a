#!/usr/bin/env bash
# Builds Helm from its Go module at a pinned version, once, into a git-ignored cache keyed by
# that version, and prints the path of the binary. Later runs print the cached path at once.
#
#   bash hack/helm.sh            # builds if needed, prints e.g. .cache/tools/helm-v4.3.1/helm
#   HELM_VERSION=v4.3.0 bash hack/helm.sh
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v4.3.1}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${TOOLS_CACHE:-$root/.cache/tools}/helm-$HELM_VERSION"
bin="$cache/helm"

if [[ ! -x "$bin" ]]; then
	major="${HELM_VERSION%%.*}"
	mkdir -p "$cache"
	echo "building helm $HELM_VERSION into $cache (first time only, a few minutes)" >&2
	# Build outside the lobby module so its go.mod is neither consulted nor changed. The version
	# variable makes `helm version` report the release instead of "main".
	(cd "$cache" && GOFLAGS=-buildvcs=false GOBIN="$cache" CGO_ENABLED=0 go install \
		-ldflags "-X helm.sh/helm/$major/internal/version.version=$HELM_VERSION" \
		"helm.sh/helm/$major/cmd/helm@$HELM_VERSION") >&2
fi
echo "$bin"

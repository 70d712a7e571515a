#!/usr/bin/env bash
# Runs `make demo` as a newcomer's first run would for lobby's own module: an empty Go module
# cache, -mod=readonly, no terminal, keeping only the tool binaries already cached under
# .cache/tools. Any step that needs to download a module after the demo entered its network
# namespace (where nothing can) fails here, even on a machine whose own module cache is warm.
set -euo pipefail
cd "$(dirname "$0")/.."

modcache="$(mktemp -d "${TMPDIR:-/tmp}/lobby-fresh-modcache-XXXXXX")"
# The module cache is read-only by design; make it writable to remove it.
trap 'chmod -R u+w "$modcache" && rm -rf "$modcache"' EXIT

start=$SECONDS
echo "fresh-demo: make demo with an empty module cache ($modcache) and -mod=readonly"
GOMODCACHE="$modcache" GOFLAGS="$(go env GOFLAGS) -mod=readonly" make --no-print-directory demo </dev/null
echo "fresh-demo: passed in $((SECONDS - start))s"

#!/usr/bin/env bash
# Copies the generated HTTPScaledObject CRD into the Helm chart, which installs it from crds/.
#
#   bash hack/sync-chart-crds.sh          # copy
#   bash hack/sync-chart-crds.sh --check  # fail when the chart's copy differs (for make verify)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
src="$root/config/crd/http.keda.sh_httpscaledobjects.yaml"
dst="$root/charts/lobby/crds/http.keda.sh_httpscaledobjects.yaml"

if [[ "${1:-}" == "--check" ]]; then
	if ! cmp -s "$src" "$dst"; then
		diff -u "$dst" "$src" >&2 || true
		echo "charts/lobby/crds is stale: run 'bash hack/sync-chart-crds.sh' and commit the result" >&2
		exit 1
	fi
	exit 0
fi
cp "$src" "$dst"

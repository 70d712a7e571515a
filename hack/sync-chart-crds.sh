#!/usr/bin/env bash
# Copies the generated CRDs (HTTPScaledObject, InterceptorRoute) into the Helm chart, which
# installs them from crds/.
#
#   bash hack/sync-chart-crds.sh          # copy
#   bash hack/sync-chart-crds.sh --check  # fail when a chart copy differs (for make verify)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
status=0
for name in http.keda.sh_httpscaledobjects.yaml http.keda.sh_interceptorroutes.yaml; do
	src="$root/config/crd/$name"
	dst="$root/charts/lobby/crds/$name"
	if [[ "${1:-}" == "--check" ]]; then
		if ! cmp -s "$src" "$dst"; then
			diff -u "$dst" "$src" >&2 || true
			echo "charts/lobby/crds/$name is stale: run 'bash hack/sync-chart-crds.sh' and commit the result" >&2
			status=1
		fi
		continue
	fi
	cp "$src" "$dst"
done
exit "$status"

#!/usr/bin/env bash
# Runs every fuzz target of the module for a bounded time each: FUZZTIME (default 10s) of
# fuzzing per target, one target at a time (go test -fuzz takes one target per package).
# Inputs that fail are written by go test to the package's testdata/fuzz/<target>/ folder, where
# plain `go test` runs them from then on: commit them with the fix as regression tests.
set -euo pipefail

cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-10s}
go=${GO:-go}

# Every `func FuzzX(f *testing.F)` in a test file, as "<package dir> <target>".
targets=$(git ls-files --cached --others --exclude-standard '*_test.go' | xargs grep -H -o '^func Fuzz[A-Za-z0-9_]*(f \*testing\.F)' |
	sed -E 's#^(.*)/[^/]*_test\.go:func (Fuzz[A-Za-z0-9_]*)\(.*#\1 \2#' | sort -u)
if [ -z "$targets" ]; then
	echo "no fuzz targets found" >&2
	exit 1
fi
while read -r dir target; do
	echo "fuzz ${dir} ${target} for ${fuzztime}"
	$go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "./${dir}"
done <<<"$targets"

#!/usr/bin/env bash
# Fails when the summary of docs/benchmarks.md no longer describes the hot path: when interceptor/
# or internal/ changed after the commit its last `make bench` ran on, or that run measured
# uncommitted changes. `make verify` runs it; `make bench` on a clean checkout of the current
# commit, then committing docs/benchmarks.md and docs/benchmarks.json, makes it pass again.
set -euo pipefail
cd "$(dirname "$0")/.."

line="$(grep -m1 '^Last `make bench`:' docs/benchmarks.md || true)"
if [[ -z $line ]]; then
	echo "bench-fresh: docs/benchmarks.md has no 'Last \`make bench\`:' line; run make bench" >&2
	exit 1
fi
commit="$(sed -n 's/.*, commit \([0-9a-f]\{7,40\}\).*/\1/p' <<<"$line")"
if [[ -z $commit ]]; then
	echo "bench-fresh: the summary names no commit: $line" >&2
	exit 1
fi
if [[ $line == *"with uncommitted changes"* ]]; then
	echo "bench-fresh: the summary was measured on commit $commit with uncommitted changes; commit, then run make bench on a clean tree" >&2
	exit 1
fi
if ! git cat-file -e "$commit^{commit}" 2>/dev/null; then
	echo "bench-fresh: the summary's commit $commit is not in this repository's history; run make bench" >&2
	exit 1
fi
if ! git merge-base --is-ancestor "$commit" HEAD; then
	echo "bench-fresh: the summary's commit $commit is not an ancestor of HEAD; run make bench" >&2
	exit 1
fi
changed="$(git log --format='%h %s' "$commit"..HEAD -- interceptor internal)"
if [[ -n $changed ]]; then
	echo "bench-fresh: the hot path changed after the benchmarked commit $commit; run make bench and commit its summary:" >&2
	echo "$changed" | head -20 >&2
	exit 1
fi
echo "bench-fresh: docs/benchmarks.md is from $commit, and the hot path has not changed since"

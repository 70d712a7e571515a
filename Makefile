# lobby — HTTP scale-to-zero for Kubernetes.
#
# Newcomers need two targets: `make demo` and `make test`. Everything else is for development.

SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c

GO ?= go
CONTROLLER_GEN_VERSION := v0.21.0
CONTROLLER_GEN := $(GO) run sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_GEN_VERSION)

# Built binaries of the local control plane are cached here, keyed by version (git-ignored).
TOOLS_CACHE ?= $(CURDIR)/.cache/tools
export TOOLS_CACHE
# The folder of kube-apiserver, etcd, kube-controller-manager and KEDA (built when missing).
ASSETS = $$(bash e2e/tools/build.sh $(TOOLS_CACHE))

# Packages that start a whole local cluster each; they run one at a time.
E2E_PKGS := ./e2e/...
# The control-plane fault tests stop the API server and etcd of the cluster they run in. make test
# gives them a cluster of their own: the back-off they leave client-go's watches with (up to a
# minute, for two minutes) would slow the tests after them.
CONTROL_PLANE_TESTS := ^(TestEtcdRestart|TestAPIServerDownFor30Seconds)$$

# Fuzzing time per fuzz target in `make test` and `make fuzz`.
FUZZTIME ?= 10s

.PHONY: all
all: build

## build: build lobby's three binaries into bin/.
.PHONY: build
build:
	$(GO) build -o bin/ ./interceptor ./scaler ./operator

## unit: fast tests (well under two minutes): everything that needs no control plane.
.PHONY: unit
unit:
	$(GO) test -short -count=1 ./...

## generate: regenerate deepcopy functions and the ExternalScaler gRPC code.
.PHONY: generate
generate:
	$(CONTROLLER_GEN) object paths=./operator/api/...
	bash hack/protoc.sh

## manifests: regenerate the HTTPScaledObject CRD, the operator's RBAC, and the chart's CRD copy.
.PHONY: manifests
manifests:
	$(CONTROLLER_GEN) crd paths=./operator/api/... output:crd:artifacts:config=config/crd
	$(CONTROLLER_GEN) rbac:roleName=lobby-operator paths=./operator/... output:rbac:artifacts:config=config/rbac
	bash hack/sync-chart-crds.sh

## verify: fail when generated files are stale, code is not gofmt/vet clean, or the benchmark
## summary in docs/benchmarks.md predates the last change to the hot path (interceptor/, internal/).
.PHONY: verify
verify: generate manifests
	@if [ -n "$$(git status --porcelain -- operator/api config internal/externalscaler charts/lobby/crds)" ]; then \
		git --no-pager diff -- operator/api config internal/externalscaler charts/lobby/crds; \
		git status --short -- operator/api config internal/externalscaler charts/lobby/crds; \
		echo "generated files are stale: run 'make generate manifests' and commit the result" >&2; exit 1; fi
	@if [ -n "$$(gofmt -l $$(git ls-files '*.go'))" ]; then gofmt -l $$(git ls-files '*.go'); \
		echo "files above are not gofmt-formatted: run 'gofmt -w'" >&2; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags e2e $(E2E_PKGS)
	cd hack/images && $(GO) vet ./...
	bash hack/bench-fresh.sh

## deps: install the Debian packages the local cluster and the e2e suite use (etcd, iproute2, nginx, prometheus;
## containerd, runc, containernetworking-plugins and iptables for the real node; wrk for make bench; chromium for
## the browser tests).
.PHONY: deps
deps:
	@bash hack/install-packages.sh

## tools: build kube-apiserver, kube-controller-manager, the kubelet, KEDA and Jaeger into $(TOOLS_CACHE) (first
## time ~25-30 min on 2 cores).
.PHONY: tools
tools: deps
	@bash e2e/tools/build.sh $(TOOLS_CACHE) >/dev/null
	@bash hack/helm.sh >/dev/null

# The programs the e2e test binaries run inside their network namespaces, built once per
# `make test` before any of them enters one (see e2e/prebuilt).
E2E_BIN := $(CURDIR)/.cache/e2e-bin

## test: every test: unit and against a real API server (both with the race detector), the
## end-to-end suite, and the newcomer's `make demo` on an empty module cache.
.PHONY: test
test: verify tools
	KUBEBUILDER_ASSETS="$(ASSETS)" $(GO) test -race -count=1 -timeout 30m $$($(GO) list ./... | grep -v /e2e/)
	rm -rf $(E2E_BIN)
	LOBBY_E2E_BIN=$(E2E_BIN) KUBEBUILDER_ASSETS="$(ASSETS)" $(GO) test -count=1 -timeout 60m -p 1 -tags e2e -skip '$(CONTROL_PLANE_TESTS)' $(E2E_PKGS)
	LOBBY_E2E_BIN=$(E2E_BIN) KUBEBUILDER_ASSETS="$(ASSETS)" $(GO) test -count=1 -timeout 20m -tags e2e -run '$(CONTROL_PLANE_TESTS)' ./e2e/system
	cd hack/images && $(GO) test -count=1 ./...
	$(MAKE) fuzz
	$(MAKE) fresh-demo

## fresh-demo: `make demo` as on a fresh machine (empty Go module cache, -mod=readonly, no
## terminal), keeping only the cached tool binaries; `make test` runs it last.
.PHONY: fresh-demo
fresh-demo:
	bash hack/fresh-demo.sh

## fuzz: every fuzz target for FUZZTIME each (default 10s); failing inputs land in testdata/fuzz/.
.PHONY: fuzz
fuzz:
	GO=$(GO) FUZZTIME=$(FUZZTIME) bash hack/fuzz.sh

## bench: every benchmark, as ratios against baselines measured in the same run, one package at a
## time so that no benchmark shares the cores with another; bounded to ten minutes. Writes
## docs/benchmarks.json (every figure) and the summary table of docs/benchmarks.md.
.PHONY: bench
bench: tools
	mkdir -p .cache/bench
	$(GO) test -count=1 -exec /bin/true ./... >/dev/null # compile first: the bound is for running
	echo "run-date: $$(date -u '+%Y-%m-%d %H:%M UTC')" > .cache/bench/bench.txt
	echo "run-commit: $$(git describe --always --dirty=' (with uncommitted changes)' --abbrev=12)" >> .cache/bench/bench.txt
	KUBEBUILDER_ASSETS="$(ASSETS)" timeout --signal=INT --kill-after=30s 10m \
		$(GO) test -p 1 -run '^$$' -bench . -benchmem -count=1 -timeout 10m ./... 2>&1 | tee -a .cache/bench/bench.txt
	$(GO) run ./hack/benchreport -in .cache/bench/bench.txt

## demo: a local control plane with lobby and a sample app at zero: a request held through a cold start.
.PHONY: demo
# Built, then run: `go run` exits 1 on Ctrl-C whatever the program's exit code, and Ctrl-C is how
# the demo ends when it runs in a terminal.
demo: tools
	$(GO) build -o .cache/demo ./e2e/demo
	KUBEBUILDER_ASSETS="$(ASSETS)" .cache/demo

## screenshots: regenerate the status page's and the waiting page's screenshots in docs/images from runs of
## TestStatusPage and TestWaitingPageInABrowser.
.PHONY: screenshots
screenshots: tools
	LOBBY_SCREENSHOTS=$(CURDIR)/docs/images KUBEBUILDER_ASSETS="$(ASSETS)" \
		$(GO) test -count=1 -tags e2e -timeout 20m -run '^(TestStatusPage|TestWaitingPageInABrowser)$$' ./e2e/system

## images: OCI image tarballs of the three binaries in bin/images, built without a container engine.
.PHONY: images
images:
	cd hack/images && $(GO) run . -out bin/images

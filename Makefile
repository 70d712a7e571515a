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

.PHONY: all
all: build

## build: build lobby's three binaries into bin/.
.PHONY: build
build:
	$(GO) build -o bin/ ./interceptor ./scaler ./operator

## unit: fast tests (seconds to a minute): everything that needs no control plane.
.PHONY: unit
unit:
	$(GO) test -short -count=1 ./...

## generate: regenerate deepcopy functions.
.PHONY: generate
generate:
	$(CONTROLLER_GEN) object paths=./operator/api/...

## manifests: regenerate the HTTPScaledObject CRD.
.PHONY: manifests
manifests:
	$(CONTROLLER_GEN) crd paths=./operator/api/... output:crd:artifacts:config=config/crd

## verify: fail when generated files are stale or code is not gofmt/vet clean.
.PHONY: verify
verify: generate manifests
	@if [ -n "$$(git status --porcelain -- operator/api config/crd)" ]; then \
		git --no-pager diff -- operator/api config/crd; \
		echo "generated files are stale: run 'make generate manifests' and commit the result" >&2; exit 1; fi
	@if [ -n "$$(gofmt -l $$(git ls-files '*.go'))" ]; then gofmt -l $$(git ls-files '*.go'); \
		echo "files above are not gofmt-formatted: run 'gofmt -w'" >&2; exit 1; fi
	$(GO) vet ./...

## deps: install the Debian packages the local control plane uses (etcd).
.PHONY: deps
deps:
	@command -v etcd >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null; }

## tools: build kube-apiserver, kube-controller-manager and KEDA into $(TOOLS_CACHE) (first time ~15 min).
.PHONY: tools
tools: deps
	@bash e2e/tools/build.sh $(TOOLS_CACHE) >/dev/null

## test: every test, the control-plane and end-to-end ones included.
.PHONY: test
test: verify tools
	KUBEBUILDER_ASSETS="$$(bash e2e/tools/build.sh $(TOOLS_CACHE))" $(GO) test -count=1 -timeout 40m ./...

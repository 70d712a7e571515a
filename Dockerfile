# syntax=docker/dockerfile:1
#
# Lobby's images for users with a container engine. One target per binary:
#
#   docker build --target interceptor -t ghcr.io/lobby-http/interceptor:dev .
#   docker build --target scaler      -t ghcr.io/lobby-http/scaler:dev .
#   docker build --target operator    -t ghcr.io/lobby-http/operator:dev .
#
# Add --platform linux/amd64,linux/arm64 with buildx for multi-platform images; the build stage
# runs on the build machine and cross-compiles. The images match what `go -C hack/images run .`
# writes without an engine (docs/images.md): an empty base, /etc/passwd naming user 65532, the
# static binary at /usr/local/bin/<name> as the entrypoint, run as 65532:65532.

ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS source
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
# The root filesystem every image shares: users, the non-root home and an empty /tmp.
RUN mkdir -p /rootfs/etc /rootfs/home/nonroot /rootfs/tmp /out \
 && printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > /rootfs/etc/passwd \
 && printf 'root:x:0:\nnonroot:x:65532:\n' > /rootfs/etc/group \
 && chown 65532:65532 /rootfs/home/nonroot && chmod 0700 /rootfs/home/nonroot && chmod 1777 /rootfs/tmp

FROM source AS build-interceptor
ARG TARGETOS TARGETARCH
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath -buildvcs=false -ldflags='-s -w' -o /out/interceptor ./interceptor

FROM source AS build-scaler
ARG TARGETOS TARGETARCH
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath -buildvcs=false -ldflags='-s -w' -o /out/scaler ./scaler

FROM source AS build-operator
ARG TARGETOS TARGETARCH
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath -buildvcs=false -ldflags='-s -w' -o /out/operator ./operator

FROM scratch AS base
COPY --from=source /rootfs/ /
USER 65532:65532
WORKDIR /
LABEL org.opencontainers.image.source="https://github.com/lobby-http/lobby" \
      org.opencontainers.image.url="https://github.com/lobby-http/lobby"

FROM base AS interceptor
COPY --from=build-interceptor /out/interceptor /usr/local/bin/interceptor
LABEL org.opencontainers.image.title="lobby interceptor" \
      org.opencontainers.image.description="Lobby's HTTP proxy: holds requests while KEDA scales an app from zero, then forwards them."
ENTRYPOINT ["/usr/local/bin/interceptor"]

FROM base AS scaler
COPY --from=build-scaler /out/scaler /usr/local/bin/scaler
LABEL org.opencontainers.image.title="lobby scaler" \
      org.opencontainers.image.description="Lobby's KEDA external-push scaler: sums the interceptors' counts for KEDA."
ENTRYPOINT ["/usr/local/bin/scaler"]

FROM base AS operator
COPY --from=build-operator /out/operator /usr/local/bin/operator
LABEL org.opencontainers.image.title="lobby operator" \
      org.opencontainers.image.description="Lobby's operator: turns HTTPScaledObjects into KEDA ScaledObjects."
ENTRYPOINT ["/usr/local/bin/operator"]

// The trace backend of the e2e suite: Jaeger (v2, built on the OpenTelemetry Collector), built from
// its Go module by build.sh into the tools cache. A module of its own: its dependencies must not
// meet lobby's or the control plane's.
module github.com/lobby-http/lobby/e2e/tools/jaeger

go 1.26.0

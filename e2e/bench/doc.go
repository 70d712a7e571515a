// Package bench benchmarks the interceptor as a process, against the targets in DESIGN.md that
// only a whole process can show: warm latency through the real binary against a bare
// httputil.ReverseProxy, the memory of 10,000 held requests against a bare net/http server
// holding as many, and the memory of the interceptor in a cluster with 1,000 routes and 5,000
// unrelated EndpointSlices.
//
// The interceptor is built with `go build` and run against a real kube-apiserver inside a
// private network namespace (see e2e/netns and e2e/framework); the baselines are the small
// program in internal/bare, run as processes the same way. The benchmarks need root and
// KUBEBUILDER_ASSETS (or `make tools`), and skip under -short. Each reports its figures with
// b.ReportMetric; results are recorded in docs/benchmarks.md.
package bench

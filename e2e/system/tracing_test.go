//go:build e2e

package system

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"k8s.io/utils/ptr"

	"github.com/lobby-http/lobby/e2e/deploy"
	"github.com/lobby-http/lobby/e2e/framework"
	"github.com/lobby-http/lobby/e2e/framework/poll"
	"github.com/lobby-http/lobby/operator/api/v1alpha1"
)

// jaegerBinary returns the Jaeger that e2e/tools/build.sh built into TOOLS_CACHE for the version
// e2e/tools/jaeger/go.mod pins. Nothing inside the test's network namespace can build it.
func jaegerBinary(t *testing.T) string {
	t.Helper()
	mod, err := os.ReadFile(filepath.Join("..", "tools", "jaeger", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`github\.com/jaegertracing/jaeger (v\S+)`).FindSubmatch(mod)
	if m == nil {
		t.Fatal("e2e/tools/jaeger/go.mod names no version of github.com/jaegertracing/jaeger")
	}
	cache := os.Getenv("TOOLS_CACHE")
	if cache == "" {
		cache = filepath.Join("..", "..", ".cache", "tools")
	}
	bin := filepath.Join(cache, "jaeger-"+string(m[1]), "jaeger")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("no Jaeger at %s (%v): run `make tools`, which builds it from e2e/tools/jaeger", bin, err)
	}
	return bin
}

// jaegerConfig is Jaeger v2's configuration: OTLP in over gRPC and HTTP, spans kept in memory,
// the query API on port 16686; every endpoint on the process's own address.
const jaegerConfig = `
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    traces:
      level: none
    logs:
      level: info
extensions:
  jaeger_query:
    # Otherwise the query API traces itself to localhost:4317, and Jaeger's shutdown waits out
    # that export's timeout.
    enable_tracing: false
    storage:
      traces: memstore
    http:
      endpoint: {{ADDR}}:16686
    grpc:
      endpoint: {{ADDR}}:16685
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 10000
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: {{ADDR}}:4317
      http:
        endpoint: {{ADDR}}:4318
processors:
  batch:
    timeout: 100ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
`

// startJaeger runs Jaeger in the cluster's network namespace and returns its address once its
// query API answers.
func startJaeger(t *testing.T, c *framework.Cluster) netip.Addr {
	t.Helper()
	addr, err := c.AllocAddr()
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(t.TempDir(), "jaeger.yaml")
	if err := os.WriteFile(conf, []byte(strings.ReplaceAll(jaegerConfig, "{{ADDR}}", addr.String())), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := c.RunBinary(t.Context(), framework.ProcessSpec{
		Name: "jaeger-" + randomSuffix(), Path: jaegerBinary(t), Args: []string{"--config", conf}, Addr: addr,
	})
	if err != nil {
		t.Fatalf("start jaeger: %v", err)
	}
	t.Cleanup(func() {
		if err := p.Stop(); err != nil {
			log, _ := os.ReadFile(p.LogFile)
			t.Logf("stop jaeger: %v\n%s", err, log)
		}
	})
	if err := poll.Until(t.Context(), 30*time.Second, "Jaeger's query API to answer", func() error {
		if exited, _ := p.Exited(); exited {
			log, _ := os.ReadFile(p.LogFile)
			t.Fatalf("jaeger exited:\n%s", log)
		}
		resp, err := http.Get("http://" + addr.String() + ":16686/api/services")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return addr
}

// jaegerSpan is a span as Jaeger's query API (/api/traces/<id>) gives it.
type jaegerSpan struct {
	TraceID       string `json:"traceID"`
	SpanID        string `json:"spanID"`
	OperationName string `json:"operationName"`
	References    []struct {
		RefType string `json:"refType"`
		TraceID string `json:"traceID"`
		SpanID  string `json:"spanID"`
	} `json:"references"`
	StartTime int64 `json:"startTime"` // µs
	Duration  int64 `json:"duration"`  // µs
	Tags      []struct {
		Key   string `json:"key"`
		Value any    `json:"value"`
	} `json:"tags"`
	ProcessID string `json:"processID"`
}

// tag returns the span's tag key, or nil.
func (s jaegerSpan) tag(key string) any {
	for _, t := range s.Tags {
		if t.Key == key {
			return t.Value
		}
	}
	return nil
}

// parent returns the span ID the span is a child of, or "".
func (s jaegerSpan) parent() string {
	for _, r := range s.References {
		if r.RefType == "CHILD_OF" {
			return r.SpanID
		}
	}
	return ""
}

// jaegerTrace reads a trace back from Jaeger's query API until it has want spans.
func jaegerTrace(t *testing.T, jaeger netip.Addr, traceID string, want int) (spans []jaegerSpan, services map[string]string) {
	t.Helper()
	if err := poll.Until(t.Context(), 30*time.Second, fmt.Sprintf("Jaeger to hold %d spans of trace %s", want, traceID), func() error {
		var got struct {
			Data []struct {
				Spans     []jaegerSpan `json:"spans"`
				Processes map[string]struct {
					ServiceName string `json:"serviceName"`
				} `json:"processes"`
			} `json:"data"`
		}
		resp, err := http.Get("http://" + jaeger.String() + ":16686/api/traces/" + traceID)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
			return err
		}
		if len(got.Data) != 1 || len(got.Data[0].Spans) < want {
			return fmt.Errorf("%d traces, want 1 with %d spans", len(got.Data), want)
		}
		spans, services = got.Data[0].Spans, map[string]string{}
		for id, p := range got.Data[0].Processes {
			services[id] = p.ServiceName
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return spans, services
}

// TestTraceFromTheIngressThroughLobbyToTheApp runs an interceptor that exports traces to Jaeger
// (built from its Go module, OTLP over HTTP) behind nginx that starts a trace for each request.
// A request that wakes the app from zero is one trace in Jaeger, read back through Jaeger's
// query API: lobby's span is the child of nginx's, with the hold as its child span and the
// route, endpoint and statuses as attributes, and the app received a traceparent naming lobby's
// span in that trace. A warm request is a trace without a hold.
func TestTraceFromTheIngressThroughLobbyToTheApp(t *testing.T) {
	ns := testNamespace(t)
	ctx := t.Context()
	rel := suite.lobby
	jaeger := startJaeger(t, suite.cluster)

	// OTLP over HTTP to Jaeger; batches leave every 100ms rather than every 5s.
	values := filepath.Join(t.TempDir(), "tracing.yaml")
	if err := os.WriteFile(values, []byte(`interceptor:
  env:
    - name: OTEL_EXPORTER_OTLP_ENDPOINT
      value: "http://`+jaeger.String()+`:4318"
    - name: OTEL_BSP_SCHEDULE_DELAY
      value: "100"
`), 0o644); err != nil {
		t.Fatal(err)
	}
	in, err := rel.StartVariant(ctx, "interceptor", deploy.VariantOptions{
		Name:        "traced-" + randomSuffix(),
		ValuesFiles: []string{filepath.Join("testdata", "values.yaml"), values},
		// The scalers subscribe to it, so the requests it holds wake the app.
		Publish: true,
	})
	if err != nil {
		t.Fatalf("start an interceptor that traces: %v", err)
	}
	t.Cleanup(func() {
		if err := rel.Stop(context.Background(), in); err != nil {
			t.Errorf("stop the tracing interceptor: %v", err)
		}
	})
	host := "traced." + ns + ".example.com"
	a := deployApp(t, ns, appSpec{name: "traced", hso: v1alpha1.HTTPScaledObjectSpec{
		Hosts: []string{host}, Replicas: &v1alpha1.ReplicaStruct{Min: ptr.To[int32](0), Max: ptr.To[int32](1)},
	}})
	waitRoutingOn(t, []*deploy.Instance{in}, a.key(), 30*time.Second)
	nginx, err := startNginx(ctx, suite.cluster, "nginx-trace.conf.tmpl",
		func() []string { return proxyAddrs([]*deploy.Instance{in}, "http") }, nil)
	if err != nil {
		t.Fatalf("start nginx: %v", err)
	}
	t.Cleanup(func() { _ = nginx.proc.Stop() })

	// request sends one request through nginx and returns the trace nginx started (from the
	// X-Request-ID the app got) and the traceparent the app got.
	request := func(what string) (traceID, nginxSpan, appParent string) {
		t.Helper()
		r := send(ctx, http.MethodGet, nginx.URL+"/", host, nil)
		if r.err != nil || r.code != http.StatusOK {
			t.Fatalf("%s: status %d, %v: %s", what, r.code, r.err, r.body)
		}
		var e echoed
		if err := json.Unmarshal([]byte(r.body), &e); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		id := strings.Join(e.Headers["X-Request-Id"], "")
		parts := strings.Split(strings.Join(e.Headers["Traceparent"], ""), "-")
		if len(id) != 32 || len(parts) != 4 || parts[1] != id {
			t.Fatalf("%s: the app got X-Request-ID %q and traceparent %q, want one trace ID in both", what, id, e.Headers["Traceparent"])
		}
		return id, id[:16], parts[2]
	}

	traceID, nginxSpan, appParent := request("the cold request")
	spans, services := jaegerTrace(t, jaeger, traceID, 2)
	var server, hold *jaegerSpan
	for i := range spans {
		switch spans[i].OperationName {
		case "GET " + a.key():
			server = &spans[i]
		case "hold":
			hold = &spans[i]
		}
	}
	if server == nil || hold == nil {
		t.Fatalf("trace %s has spans %+v, want lobby's and its hold", traceID, spans)
	}
	if server.parent() != nginxSpan {
		t.Errorf("lobby's span is a child of %q, want nginx's %s", server.parent(), nginxSpan)
	}
	if hold.parent() != server.SpanID || hold.Duration <= 0 {
		t.Errorf("the hold span is a child of %q and lasts %dµs, want a child of lobby's span %s that lasts", hold.parent(), hold.Duration, server.SpanID)
	}
	if appParent != server.SpanID {
		t.Errorf("the app's traceparent names span %s, want lobby's %s", appParent, server.SpanID)
	}
	if services[server.ProcessID] != "lobby-interceptor" {
		t.Errorf("lobby's span comes from service %q, want lobby-interceptor", services[server.ProcessID])
	}
	for key, want := range map[string]any{
		"lobby.route": a.key(), "lobby.held": true, "http.response.status_code": float64(200),
		"lobby.upstream.status_code": float64(200),
	} {
		if got := server.tag(key); got != want {
			t.Errorf("lobby's span: %s = %v, want %v", key, got, want)
		}
	}
	if got := hold.tag("lobby.hold.outcome"); got != "ready" {
		t.Errorf("the hold span's outcome is %v, want ready", got)
	}
	if ep, _ := server.tag("lobby.endpoint").(string); !strings.HasSuffix(ep, ":8080") {
		t.Errorf("lobby.endpoint = %q, want the pod's address", ep)
	}
	if s, _ := server.tag("lobby.hold.duration_seconds").(float64); s <= 0 || int64(s*1e6) > hold.Duration+1000 {
		t.Errorf("lobby.hold.duration_seconds = %v, want the hold span's %dµs", s, hold.Duration)
	}
	t.Logf("cold trace %s: lobby's span %dµs, held %dµs", traceID, server.Duration, hold.Duration)

	traceID, _, _ = request("the warm request")
	jaegerTrace(t, jaeger, traceID, 1)
	time.Sleep(300 * time.Millisecond) // Three batches: a hold span would have arrived by now.
	spans, _ = jaegerTrace(t, jaeger, traceID, 1)
	if len(spans) != 1 || spans[0].tag("lobby.held") != false {
		t.Errorf("the warm trace has spans %+v, want lobby's alone, not held", spans)
	}
}

package tracing

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// receiver is an OTLP trace receiver that records the spans' names and services.
type receiver struct {
	coltracepb.UnimplementedTraceServiceServer
	mu    sync.Mutex
	spans []string // "service/span"
}

func (r *receiver) record(req *coltracepb.ExportTraceServiceRequest) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		service := ""
		for _, a := range rs.GetResource().GetAttributes() {
			if a.GetKey() == "service.name" {
				service = a.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				r.spans = append(r.spans, service+"/"+s.GetName())
			}
		}
	}
}

func (r *receiver) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	r.record(req)
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

func (r *receiver) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.spans...)
}

// TestExportOverOTLP sends a span through New's exporter, configured by the standard variables
// alone, to an OTLP receiver over gRPC and over HTTP, and flushes it on stop.
func TestExportOverOTLP(t *testing.T) {
	cases := []struct {
		name  string
		start func(t *testing.T, r *receiver) (env map[string]string)
	}{
		{"OTLP over gRPC", func(t *testing.T, r *receiver) map[string]string {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			srv := grpc.NewServer()
			coltracepb.RegisterTraceServiceServer(srv, r)
			go func() { _ = srv.Serve(ln) }()
			t.Cleanup(srv.Stop)
			return map[string]string{
				"OTEL_EXPORTER_OTLP_ENDPOINT": "http://" + ln.Addr().String(),
				"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
			}
		}},
		{"OTLP over HTTP", func(t *testing.T, r *receiver) map[string]string {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
				body, _ := io.ReadAll(req.Body)
				var msg coltracepb.ExportTraceServiceRequest
				if req.URL.Path != "/v1/traces" || proto.Unmarshal(body, &msg) != nil {
					http.Error(w, "bad request", http.StatusBadRequest)
					return
				}
				r.record(&msg)
				w.Header().Set("Content-Type", "application/x-protobuf")
				b, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
				_, _ = w.Write(b)
			}))
			t.Cleanup(srv.Close)
			return map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": srv.URL}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := &receiver{}
			env := tc.start(t, r)
			env["OTEL_SERVICE_NAME"] = "checkout-lobby"
			for k, v := range env {
				t.Setenv(k, v)
			}
			var errs []error
			o := Load(func(k string) (string, bool) { v, ok := env[k]; return v, ok }, "lobby-interceptor",
				func(_ string, err error) { errs = append(errs, err) })
			if len(errs) > 0 || !o.Enabled {
				t.Fatalf("Load: %+v, %v", o, errs)
			}
			p, err := New(t.Context(), o)
			if err != nil {
				t.Fatal(err)
			}
			_, s := p.Tracer("test").Start(t.Context(), "GET ns/app")
			s.End()
			ctx, cancel := context.WithCancel(t.Context())
			cancel()
			if err := p.Start(ctx); err != nil {
				t.Fatal(err)
			}
			if got := r.got(); len(got) != 1 || got[0] != "checkout-lobby/GET ns/app" {
				t.Errorf("the receiver got %q, want the one span from service checkout-lobby", got)
			}
		})
	}
}

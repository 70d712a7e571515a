package tracing

import (
	"context"
	"reflect"
	"strings"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

func TestLoad(t *testing.T) {
	on := sdktrace.ParentBased(sdktrace.AlwaysSample())
	cases := []struct {
		name    string
		env     map[string]string
		want    Options
		wantErr []string
	}{
		{name: "Without an endpoint tracing is off.", want: Options{Protocol: HTTPProtobuf, Sampler: on, ServiceName: "svc"}},
		{name: "An endpoint turns tracing on, over HTTP by default.", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"},
			want: Options{Enabled: true, Protocol: HTTPProtobuf, Sampler: on, ServiceName: "svc"}},
		{name: "A traces endpoint turns it on too, and its protocol wins over the general one.", env: map[string]string{
			"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "c:4317", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
			want: Options{Enabled: true, Protocol: GRPC, Sampler: on, ServiceName: "svc"}},
		{name: "The SDK switch turns it off.", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"},
			want: Options{Protocol: HTTPProtobuf, Sampler: on, ServiceName: "svc"}},
		{name: "The none exporter turns it off.", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"},
			want: Options{Protocol: HTTPProtobuf, Sampler: on, ServiceName: "svc"}},
		{name: "A ratio sampler takes its argument.", env: map[string]string{"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25"},
			want: Options{Protocol: HTTPProtobuf, Sampler: sdktrace.ParentBased(sdktrace.TraceIDRatioBased(0.25)), ServiceName: "svc"}},
		{name: "An unknown sampler is refused.", env: map[string]string{"OTEL_TRACES_SAMPLER": "jaeger_remote"}, wantErr: []string{"OTEL_TRACES_SAMPLER", "jaeger_remote"}},
		{name: "A ratio above 1 is refused.", env: map[string]string{"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"}, wantErr: []string{"OTEL_TRACES_SAMPLER_ARG"}},
		{name: "OTLP over HTTP with JSON is refused.", env: map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, wantErr: []string{"OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"}},
		{name: "Another exporter is refused.", env: map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, wantErr: []string{"OTEL_TRACES_EXPORTER"}},
		{name: "A switch that is no boolean is refused.", env: map[string]string{"OTEL_SDK_DISABLED": "maybe"}, wantErr: []string{"OTEL_SDK_DISABLED"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var errs []string
			got := Load(func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok }, "svc",
				func(name string, err error) { errs = append(errs, name+": "+err.Error()) })
			all := strings.Join(errs, "; ")
			for _, w := range tc.wantErr {
				if !strings.Contains(all, w) {
					t.Errorf("errors %q do not say %q", all, w)
				}
			}
			if len(tc.wantErr) == 0 {
				if len(errs) > 0 {
					t.Fatalf("errors: %s", all)
				}
				if !reflect.DeepEqual(got, tc.want) {
					t.Errorf("Load = %+v, want %+v", got, tc.want)
				}
			}
		})
	}
}

func TestNewIsNilWhenOff(t *testing.T) {
	p, err := New(t.Context(), Options{})
	if p != nil || err != nil {
		t.Fatalf("New(off) = %v, %v; want nil, nil", p, err)
	}
}

// TestProviderFlushesOnStop records a span and stops the provider: the span reaches the exporter
// although the batch interval has not passed.
func TestProviderFlushesOnStop(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	p := NewWith(keepOnShutdown{exp}, sdktrace.AlwaysSample(), nil)
	_, s := p.Tracer("test").Start(t.Context(), "work")
	s.End()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if spans := exp.GetSpans(); len(spans) != 1 || spans[0].Name != "work" {
		t.Errorf("exported %v, want the one span", spans.Snapshots())
	}
}

// keepOnShutdown keeps the spans an in-memory exporter holds when the provider shuts it down
// (the exporter's own Shutdown forgets them).
type keepOnShutdown struct{ *tracetest.InMemoryExporter }

func (keepOnShutdown) Shutdown(context.Context) error { return nil }

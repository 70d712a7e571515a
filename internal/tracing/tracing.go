// Package tracing sets OpenTelemetry tracing up for a binary: spans batched to an OTLP exporter,
// over gRPC or HTTP, configured by OpenTelemetry's standard environment variables. Tracing is
// off unless an OTLP endpoint is configured; off, the binary gets no tracer at all, so that the
// code it would trace can tell with a nil check and do nothing.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Protocol is the OTLP transport (OTEL_EXPORTER_OTLP_PROTOCOL).
type Protocol string

const (
	// GRPC is OTLP over gRPC, usually port 4317.
	GRPC Protocol = "grpc"
	// HTTPProtobuf is OTLP over HTTP with protobuf bodies, usually port 4318; the specification's
	// default.
	HTTPProtobuf Protocol = "http/protobuf"
)

// Options say whether and how a binary traces. Load them with Load.
type Options struct {
	// Enabled turns tracing on.
	Enabled bool
	// Protocol is the OTLP transport.
	Protocol Protocol
	// Sampler decides which traces are recorded.
	Sampler sdktrace.Sampler
	// ServiceName is the service.name of the spans unless OTEL_SERVICE_NAME or
	// OTEL_RESOURCE_ATTRIBUTES say otherwise.
	ServiceName string
}

// Load reads the standard variables through lookup: tracing is on when
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT is set, unless
// OTEL_SDK_DISABLED is true or OTEL_TRACES_EXPORTER is none; OTEL_EXPORTER_OTLP_TRACES_PROTOCOL
// or OTEL_EXPORTER_OTLP_PROTOCOL choose the transport; OTEL_TRACES_SAMPLER and
// OTEL_TRACES_SAMPLER_ARG the sampler (parentbased_always_on by default). The exporter reads the
// other OTEL_EXPORTER_OTLP_* variables (headers, timeout, TLS, compression) itself, as the
// specification says. fail records an error against a variable.
func Load(lookup func(string) (string, bool), serviceName string, fail func(name string, err error)) Options {
	get := func(name string) string {
		v, _ := lookup(name)
		return strings.TrimSpace(v)
	}
	o := Options{ServiceName: serviceName, Protocol: HTTPProtobuf}
	disabled := false
	if v := get("OTEL_SDK_DISABLED"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			fail("OTEL_SDK_DISABLED", fmt.Errorf("parse boolean %q: want true or false", v))
		}
		disabled = b
	}
	exporter := strings.ToLower(get("OTEL_TRACES_EXPORTER"))
	switch exporter {
	case "", "otlp", "none":
	default:
		fail("OTEL_TRACES_EXPORTER", fmt.Errorf("unsupported exporter %q: want otlp or none", exporter))
	}
	endpoint := get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "" || get("OTEL_EXPORTER_OTLP_ENDPOINT") != ""
	o.Enabled = endpoint && !disabled && exporter != "none"

	name, p := "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if p == "" {
		name, p = "OTEL_EXPORTER_OTLP_PROTOCOL", get("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	switch Protocol(p) {
	case "":
	case GRPC, HTTPProtobuf:
		o.Protocol = Protocol(p)
	default:
		fail(name, fmt.Errorf("unsupported protocol %q: want grpc or http/protobuf", p))
	}

	s, err := sampler(get("OTEL_TRACES_SAMPLER"), get("OTEL_TRACES_SAMPLER_ARG"))
	if err != nil {
		fail("OTEL_TRACES_SAMPLER", err)
	}
	o.Sampler = s
	return o
}

// sampler returns the sampler the specification names name, with arg for the ratio samplers.
func sampler(name, arg string) (sdktrace.Sampler, error) {
	ratio := func() (float64, error) {
		if arg == "" {
			return 1, nil
		}
		r, err := strconv.ParseFloat(arg, 64)
		if err != nil || r < 0 || r > 1 {
			return 0, fmt.Errorf("OTEL_TRACES_SAMPLER_ARG %q: want a ratio from 0 to 1", arg)
		}
		return r, nil
	}
	switch strings.ToLower(name) {
	case "", "parentbased_always_on":
		return sdktrace.ParentBased(sdktrace.AlwaysSample()), nil
	case "parentbased_always_off":
		return sdktrace.ParentBased(sdktrace.NeverSample()), nil
	case "always_on":
		return sdktrace.AlwaysSample(), nil
	case "always_off":
		return sdktrace.NeverSample(), nil
	case "traceidratio":
		r, err := ratio()
		return sdktrace.TraceIDRatioBased(r), err
	case "parentbased_traceidratio":
		r, err := ratio()
		return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(r)), err
	}
	return nil, fmt.Errorf("unsupported sampler %q: want always_on, always_off, traceidratio or their parentbased_ forms", name)
}

// Provider records spans and exports them in batches. Start it to have it flush what is left
// when the binary stops.
type Provider struct {
	tp *sdktrace.TracerProvider
}

// New returns a Provider exporting as o says, or nil when o is not Enabled. The exporter
// connects lazily: an unreachable collector costs dropped spans, never a failed start.
func New(ctx context.Context, o Options) (*Provider, error) {
	if !o.Enabled {
		return nil, nil
	}
	var exp sdktrace.SpanExporter
	var err error
	switch o.Protocol {
	case GRPC:
		exp, err = otlptracegrpc.New(ctx)
	default:
		exp, err = otlptracehttp.New(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("create OTLP trace exporter: %w", err)
	}
	// The default name; OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win over it.
	res, err := resource.Merge(
		resource.NewSchemaless(attribute.String("service.name", o.ServiceName)),
		resource.Environment(),
	)
	if err != nil {
		return nil, fmt.Errorf("build trace resource: %w", err)
	}
	return NewWith(exp, o.Sampler, res), nil
}

// NewWith returns a Provider batching spans to exp; tests pass an in-memory exporter.
func NewWith(exp sdktrace.SpanExporter, s sdktrace.Sampler, res *resource.Resource) *Provider {
	return &Provider{tp: sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithSampler(s),
		sdktrace.WithResource(res),
	)}
}

// Tracer returns the tracer of the named instrumentation scope.
func (p *Provider) Tracer(name string) trace.Tracer { return p.tp.Tracer(name) }

// Start waits for ctx to end, then flushes the spans not yet exported, for at most 5s.
func (p *Provider) Start(ctx context.Context) error {
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := p.tp.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("flush traces: %w", err)
	}
	return nil
}

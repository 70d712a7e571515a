package proxy

import (
	"context"
	"net/http"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// traceContext reads the W3C traceparent and tracestate headers of requests and writes them on
// the requests forwarded to apps. It is stateless, so one value serves every request.
var traceContext propagation.TraceContext

// Attribute keys of the spans the chain records, beside OpenTelemetry's HTTP conventions.
const (
	// attrRoute is the route's "namespace/name".
	attrRoute = attribute.Key("lobby.route")
	// attrHeld says whether the request was held for a cold start.
	attrHeld = attribute.Key("lobby.held")
	// attrHoldSeconds is how long it was held in all, in seconds.
	attrHoldSeconds = attribute.Key("lobby.hold.duration_seconds")
	// attrHoldOutcome says how a hold ended: ready, failover, timeout or client_gone.
	attrHoldOutcome = attribute.Key("lobby.hold.outcome")
	// attrEndpoint is the pod address that answered, or the last one tried.
	attrEndpoint = attribute.Key("lobby.endpoint")
	// attrRetries counts the other endpoints tried after a connection was refused.
	attrRetries = attribute.Key("lobby.connect_retries")
	// attrRequeues counts the times the request was held again after losing every endpoint.
	attrRequeues = attribute.Key("lobby.requeues")
	// attrUpstreamStatus is the status code the app answered with.
	attrUpstreamStatus = attribute.Key("lobby.upstream.status_code")
)

// span is the tracing state of one request; its zero value (tracing off) records nothing. The
// chain checks span.on before any tracing work, so that with tracing off a request costs one
// pointer comparison more and no allocation.
type span struct {
	tracer trace.Tracer
	// s is the request's server span, and ctx a context carrying it, the parent of the hold
	// span and of the traceparent sent to the app.
	s   trace.Span
	ctx context.Context
}

// on reports whether the request is traced.
func (sp *span) on() bool { return sp.s != nil }

// start begins the server span of r, a child of the span the client's traceparent names, if any.
func (sp *span) start(tracer trace.Tracer, r *http.Request, at time.Time) {
	ctx := traceContext.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
	sp.tracer = tracer
	sp.ctx, sp.s = tracer.Start(ctx, r.Method,
		trace.WithSpanKind(trace.SpanKindServer),
		trace.WithTimestamp(at),
		trace.WithAttributes(
			attribute.String("http.request.method", r.Method),
			attribute.String("server.address", r.Host),
			attribute.String("url.path", r.URL.Path),
			attribute.String("network.protocol.version", protocolVersion(r)),
		))
}

// routed names the span after the request's method and route.
func (sp *span) routed(r *http.Request, key string) {
	sp.s.SetName(r.Method + " " + key)
	sp.s.SetAttributes(attrRoute.String(key))
}

// end records what happened to the request and ends the span.
func (sp *span) end(x *Exchange, at time.Time) {
	attrs := []attribute.KeyValue{
		attribute.Int("http.response.status_code", x.code),
		attrHeld.Bool(x.waited > 0),
		attrRetries.Int(x.retries),
		attrRequeues.Int(x.requeues),
	}
	if x.waited > 0 {
		attrs = append(attrs, attrHoldSeconds.Float64(x.waited.Seconds()))
	}
	if x.endpoint != nil {
		attrs = append(attrs, attrEndpoint.String(x.endpoint.Host))
	}
	if x.upstreamCode != 0 {
		attrs = append(attrs, attrUpstreamStatus.Int(x.upstreamCode))
	}
	sp.s.SetAttributes(attrs...)
	if x.code >= 500 && x.code != statusClientGone {
		sp.s.SetStatus(codes.Error, http.StatusText(x.code))
	}
	sp.s.End(trace.WithTimestamp(at))
}

// failed records the error a request was answered with by the chain itself.
func (sp *span) failed(err error) {
	sp.s.RecordError(err)
}

// hold begins the child span of one hold of the request; end it with endHold.
func (sp *span) hold(at time.Time) trace.Span {
	_, h := sp.tracer.Start(sp.ctx, "hold", trace.WithTimestamp(at))
	return h
}

// endHold ends a hold span with its outcome.
func endHold(h trace.Span, outcome string, at time.Time) {
	h.SetAttributes(attrHoldOutcome.String(outcome))
	if outcome == "timeout" {
		h.SetStatus(codes.Error, "no ready endpoint within the cold-start timeout")
	}
	h.End(trace.WithTimestamp(at))
}

// inject writes the span's traceparent (and tracestate) on the request to the app, replacing
// the client's: the app's spans are children of the interceptor's.
func (sp *span) inject(h http.Header) {
	traceContext.Inject(sp.ctx, propagation.HeaderCarrier(h))
}

// protocolVersion returns the HTTP version of r as OpenTelemetry writes it ("1.1", "2").
func protocolVersion(r *http.Request) string {
	switch r.ProtoMajor {
	case 2:
		return "2"
	case 3:
		return "3"
	}
	if r.ProtoMinor == 0 {
		return "1.0"
	}
	return "1.1"
}

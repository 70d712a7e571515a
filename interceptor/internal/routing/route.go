// Package routing maps a request's host, path and headers to its route through an immutable table
// that is rebuilt from HTTPScaledObjects and InterceptorRoutes and swapped atomically, so lookups take no lock.
package routing

import (
	"net/http"
	"sync/atomic"
	"time"

	"github.com/lobby-http/lobby/interceptor/internal/counts"
	"github.com/lobby-http/lobby/interceptor/internal/endpoints"
	"github.com/lobby-http/lobby/internal/httpso"
)

// Overflow says how a request that finds the hold queue full is answered.
type Overflow uint8

const (
	// OverflowReject answers 503 with Retry-After.
	OverflowReject Overflow = iota
	// OverflowPlaceholder answers with the route's placeholder.
	OverflowPlaceholder
)

// Placeholder is a static response, prepared once when the table is built.
type Placeholder struct {
	// StatusCode of the response.
	StatusCode int
	// Header of the response (canonical keys, Content-Length set).
	Header http.Header
	// Body of the response.
	Body []byte
	// byKey, when not nil, holds one response per key of a ConfigMap read without a key: the
	// request path picks one (see For). The Placeholder itself is the response of "/".
	byKey map[string]*Placeholder
	// notFound answers a path whose key the ConfigMap does not have.
	notFound *Placeholder
}

// For returns the response for a request path: p itself, or, when p's body comes from a ConfigMap
// read without a key, the response of the key named by the path without its leading "/".
func (p *Placeholder) For(path string) *Placeholder {
	if p.byKey == nil || path == "/" || path == "" {
		return p
	}
	if q := p.byKey[path[1:]]; q != nil {
		return q
	}
	return p.notFound
}

// Static is what a static route of an InterceptorRoute answers.
type Static struct {
	// Response given.
	Response *Placeholder
	// Always is set for responseMode Always; otherwise the response is given only while the
	// target has no ready endpoint, and requests are forwarded, uncounted, while it has one.
	Always bool
}

// Route is everything the proxy needs to serve the requests of one HTTPScaledObject or
// InterceptorRoute, or of one static route of an InterceptorRoute, resolved when the table is
// built. Routes are immutable; a change to the object yields a new Route.
type Route struct {
	// Key is the object's "namespace/name".
	Key string
	// Namespace and Name of the object.
	Namespace, Name string
	// Kind of the object.
	Kind httpso.Kind
	// Static, when not nil, makes this the route of a static route: its requests are answered
	// with a fixed response, or forwarded, but never counted, held, or allowed to wake the
	// target. Counts is nil.
	Static *Static
	// Immediate is set when the placeholder answers at once while the target has no ready
	// endpoint (an InterceptorRoute's coldStart.placeholder); such requests are counted, so
	// that they wake the target, but not held.
	Immediate bool
	// Target is where requests are forwarded.
	Target *endpoints.Target
	// Failover, when not nil, answers requests that waited longer than ColdStartTimeout.
	Failover *endpoints.Target
	// ColdStartTimeout bounds how long a request is held waiting for a ready endpoint: the failover
	// ref's timeoutSeconds when a failover is set, else timeouts.conditionWait, else the global
	// default.
	ColdStartTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for the target's response headers.
	ResponseHeaderTimeout time.Duration
	// RequestTimeout bounds the whole exchange with the target; zero means unbounded.
	RequestTimeout time.Duration
	// MaxPending is the most requests held at once for this route.
	MaxPending int64
	// Overflow says how requests beyond MaxPending are answered.
	Overflow Overflow
	// Placeholder, when not nil, answers timed-out requests without a failover, with
	// OverflowPlaceholder requests that find the queue full, and with Immediate requests that
	// find no ready endpoint.
	Placeholder *Placeholder
	// InsecureSkipVerify turns off the verification of the certificates of the route's targets
	// when they speak HTTPS (the object's v1alpha1.UpstreamTLSInsecureSkipVerifyAnnotation).
	InsecureSkipVerify bool
	// Counts are the route's counters (stable across table rebuilds); nil for a static route.
	Counts *counts.Route
	// Metrics is a slot that the proxy fills, on the route's first request, with its metric
	// children of the route, so that later requests find them with one atomic load instead of a
	// lookup by key. Routing never reads it; a rebuilt Route starts with it empty.
	Metrics atomic.Value
	// statics are the rules of the object's static routes, in list order: the first that
	// matches a request routed here picks the static route that serves it.
	statics []staticMatch
}

// Package routing maps a request's host, path and headers to its route through an immutable table
// that is rebuilt from HTTPScaledObjects and swapped atomically, so lookups take no lock.
package routing

import (
	"net/http"
	"time"

	"github.com/lobby-http/lobby/interceptor/internal/counts"
	"github.com/lobby-http/lobby/interceptor/internal/endpoints"
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
}

// Route is everything the proxy needs to serve the requests of one HTTPScaledObject, resolved
// when the table is built. Routes are immutable; a change to the object yields a new Route.
type Route struct {
	// Key is the object's "namespace/name".
	Key string
	// Namespace and Name of the HTTPScaledObject.
	Namespace, Name string
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
	// Placeholder, when not nil, answers timed-out requests without a failover and, with
	// OverflowPlaceholder, requests that find the queue full.
	Placeholder *Placeholder
	// InsecureSkipVerify turns off the verification of the certificates of the route's targets
	// when they speak HTTPS (the object's v1alpha1.UpstreamTLSInsecureSkipVerifyAnnotation).
	InsecureSkipVerify bool
	// Counts are the route's counters (stable across table rebuilds).
	Counts *counts.Route
}

package proxy

import (
	"errors"
	"net/http"
)

// Sentinel errors of the proxy chain. Every answer the lobby gives itself instead of the app's
// comes from one of them, through status.
var (
	// ErrNoRoute means no HTTPScaledObject matches the request's host, path and headers.
	ErrNoRoute = errors.New("no route matches the request")
	// ErrQueueFull means the route already holds as many requests as it may.
	ErrQueueFull = errors.New("hold queue of the route is full")
	// ErrHeldLimit means the interceptor already holds as many requests, over all routes, as it
	// may (counts.Registry.LimitHeld). The client gets what a full queue gives it.
	ErrHeldLimit = errors.New("interceptor holds its cap of requests over all routes")
	// ErrColdStartTimeout means the target had no ready endpoint within the route's cold-start
	// timeout (and the failover target, when there is one, had none either).
	ErrColdStartTimeout = errors.New("no ready endpoint within the cold-start timeout")
	// ErrUpstreamUnavailable means no connection could be opened to any endpoint tried (refused,
	// reset or unreachable before any byte of the request was sent).
	ErrUpstreamUnavailable = errors.New("connect to upstream")
	// ErrResponseHeaderTimeout means the upstream did not send its response headers within the
	// route's response-header timeout.
	ErrResponseHeaderTimeout = errors.New("upstream response headers timed out")
	// ErrRequestTimeout means the exchange with the upstream outlasted the route's request
	// timeout before the response headers arrived.
	ErrRequestTimeout = errors.New("upstream request timed out")
	// ErrUpstreamCertificate means the upstream speaks HTTPS and its certificate failed
	// verification (see UpstreamTLS).
	ErrUpstreamCertificate = errors.New("verify upstream certificate")
	// ErrUpstream is any other failure of the exchange with the upstream before its response
	// headers arrived.
	ErrUpstream = errors.New("forward to upstream")
	// ErrRequestBodyTimeout means the client stopped sending the request body while it was being
	// forwarded (server.ErrBodyIdle): the client timed out, not the app.
	ErrRequestBodyTimeout = errors.New("request body timed out")
	// ErrClientGone means the client went away; nothing is written back.
	ErrClientGone = errors.New("client went away")
)

// statusClientGone is the code recorded in metrics for requests whose client went away (the
// code nginx logs for them); it is never sent.
const statusClientGone = 499

// status maps an error of the chain to the HTTP status the client gets. It is the only place
// that does. ErrClientGone maps to statusClientGone, which callers record but do not send.
func status(err error) int {
	switch {
	case errors.Is(err, ErrNoRoute):
		return http.StatusNotFound
	case errors.Is(err, ErrQueueFull), errors.Is(err, ErrHeldLimit):
		return http.StatusServiceUnavailable
	case errors.Is(err, ErrColdStartTimeout),
		errors.Is(err, ErrResponseHeaderTimeout),
		errors.Is(err, ErrRequestTimeout):
		return http.StatusGatewayTimeout
	case errors.Is(err, ErrRequestBodyTimeout):
		return http.StatusRequestTimeout
	case errors.Is(err, ErrClientGone):
		return statusClientGone
	default:
		return http.StatusBadGateway
	}
}

// message is the plain-text body of a status the lobby answers itself. It names no internals.
func message(code int) string {
	switch code {
	case http.StatusNotFound:
		return "not found\n"
	case http.StatusServiceUnavailable:
		return "service unavailable: too many requests waiting, retry later\n"
	case http.StatusGatewayTimeout:
		return "gateway timeout\n"
	case http.StatusRequestTimeout:
		return "request timeout: the request body stopped arriving\n"
	default:
		return "bad gateway\n"
	}
}

// upstreamReason is the reason label of lobby_interceptor_upstream_errors_total for err, or ""
// when err is not an upstream error.
func upstreamReason(err error) string {
	switch {
	case errors.Is(err, ErrUpstreamUnavailable):
		return "connect"
	case errors.Is(err, ErrResponseHeaderTimeout):
		return "response_header_timeout"
	case errors.Is(err, ErrRequestTimeout):
		return "request_timeout"
	case errors.Is(err, ErrUpstreamCertificate):
		return "certificate"
	case errors.Is(err, ErrUpstream):
		return "other"
	default:
		return ""
	}
}

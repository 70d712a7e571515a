package proxy

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httputil"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"

	"github.com/lobby-http/lobby/interceptor/internal/endpoints"
	"github.com/lobby-http/lobby/internal/server"
)

// The forwarding stage is split by concern: this file holds the stage and its per-request state;
// pick.go chooses endpoints, transport.go dials and keeps the transports, preconnect.go opens
// connections ahead of requests released together, rewrite.go rewrites the outbound request and
// records the response, retry.go retries refused connections and maps the transport's errors to
// the package's, and clienttrace.go learns when a request was written.

// ForwarderOptions configure a Forwarder.
type ForwarderOptions struct {
	// Dial opens connections to endpoints; nil means a net.Dialer with a 5s timeout.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// UpstreamTLS says how targets whose port speaks HTTPS are verified.
	UpstreamTLS UpstreamTLS
	// MaxIdleConnsPerHost is the most idle connections kept per endpoint; 0 means 256.
	MaxIdleConnsPerHost int
	// IdleConnTimeout closes idle connections to endpoints after it; 0 means 90s.
	IdleConnTimeout time.Duration
	// MaxDialsPerHost is the most connections being opened to one endpoint at once; further
	// requests wait for one of those or for a connection another request frees, whichever comes
	// first. It paces the dial storm of requests released together, and does not bound the
	// connections to an endpoint. 0 means 16.
	MaxDialsPerHost int
	// MaxPreconnectsPerHost is the most connections opened to an endpoint ahead of the requests
	// released to it after a hold (see warm); 0 means 128, and a negative value opens none.
	MaxPreconnectsPerHost int
	// Log receives retries at V(1).
	Log logr.Logger
}

// Forwarder is the last stage of the chain: it forwards a request to the endpoint of its target
// that Wait (or, for a static route, serveStatic) picked, with one httputil.ReverseProxy and one
// transport per protocol (and response-header timeout) built once, never per request.
type Forwarder struct {
	opts  ForwarderOptions
	rp    *httputil.ReverseProxy
	gates dialGates
	pre   preconnects

	mu sync.Mutex
	// transports is copied on write; requests only load it.
	transports atomic.Pointer[map[transportKey]*http.Transport]
}

var _ ForwardHandler = (*Forwarder)(nil)

// NewForwarder returns a Forwarder.
func NewForwarder(opts ForwarderOptions) (*Forwarder, error) {
	if opts.Dial == nil {
		opts.Dial = (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	}
	if opts.MaxIdleConnsPerHost < 0 || opts.IdleConnTimeout < 0 || opts.MaxDialsPerHost < 0 {
		return nil, errors.New("create forwarder: MaxIdleConnsPerHost, IdleConnTimeout and MaxDialsPerHost must not be negative")
	}
	if opts.MaxDialsPerHost == 0 {
		opts.MaxDialsPerHost = 16
	}
	if opts.MaxIdleConnsPerHost == 0 {
		opts.MaxIdleConnsPerHost = 256
	}
	if opts.IdleConnTimeout == 0 {
		opts.IdleConnTimeout = 90 * time.Second
	}
	if opts.MaxPreconnectsPerHost == 0 {
		opts.MaxPreconnectsPerHost = 128
	}
	f := &Forwarder{
		opts:  opts,
		gates: dialGates{limit: opts.MaxDialsPerHost, gates: map[string]*dialGate{}},
		pre:   preconnects{warmUp: map[*endpoints.Endpoint]*warmUp{}, conns: map[string][]preconn{}},
	}
	f.transports.Store(&map[transportKey]*http.Transport{})
	f.rp = &httputil.ReverseProxy{
		Rewrite:        rewrite,
		Transport:      roundTripper{f},
		BufferPool:     newBufferPool(),
		ModifyResponse: modifyResponse,
		ErrorHandler:   f.errorHandler,
		// Responses of unknown length and event streams are flushed as they arrive; others are
		// flushed when the buffer fills, as a bare ReverseProxy does.
		FlushInterval: 0,
		ErrorLog:      server.ErrorLog(opts.Log),
	}
	return f, nil
}

// exchangeKey is the request-context key of the *forward, which carries what Rewrite,
// RoundTrip and the error handler of the one shared ReverseProxy need.
type exchangeKey struct{}

// forward is the per-request state of the Forwarder. It is the outbound request's context too
// (the request's own context, plus itself as the value of exchangeKey), which saves the
// allocation of a context.WithValue. It is not pooled: transport goroutines may outlive
// Forward.
type forward struct {
	context.Context
	x         *Exchange
	f         *Forwarder
	transport *http.Transport
	scheme    string
	ep        *endpoints.Endpoint
	tried     [maxAttempts]*endpoints.Endpoint
	attempts  int
	// client is the request's own context, to tell a client that went away from a timeout.
	client context.Context
	// deadline is the request-timeout context, nil when the route has none.
	deadline context.Context
	// body wraps the request body when there is one, so a failed connection does not close it
	// and the request can be retried.
	body *retryBody
	// settled is set when the request no longer waits for a connection, so that a dial still
	// waiting for a slot on its behalf is abandoned.
	settled atomic.Bool
	// lost is set, and nothing answered, when the connection to every endpoint tried failed
	// before any byte of the request was sent and no other endpoint is left (see Lost).
	lost error
	// failed is the error the Forwarder answered the request with, if it did.
	failed error
}

// Forward forwards the request to x's endpoint, trying others of its target when connections to
// it fail, and reports how that ended: Forwarded when the client got the upstream's response (or
// the request went out and the exchange failed after), Failed when the Forwarder answered with
// an error of its own, and Lost, answering nothing, when every endpoint tried refused the
// connection before any byte was sent.
func (f *Forwarder) Forward(w http.ResponseWriter, r *http.Request, x *Exchange) (Outcome, error) {
	key := transportKey{kind: kindHTTP1, responseHeaderTimeout: x.route.ResponseHeaderTimeout}
	switch x.snap.Protocol {
	case endpoints.H2C:
		if !x.upgrade { // Upgrades need HTTP/1.1; h2c servers accept it too.
			key.kind = kindH2C
		}
	case endpoints.HTTPS:
		key.kind = kindHTTPS
		if x.upgrade {
			key.kind = kindHTTPS1
		}
		key.namespace, key.service, key.insecure = x.target.Namespace(), x.target.Service(), x.route.InsecureSkipVerify
	}
	fw := &forward{
		x:         x,
		f:         f,
		transport: f.transport(key),
		scheme:    scheme(x.snap.Protocol),
		client:    r.Context(),
		ep:        x.ep,
		attempts:  1,
	}
	fw.tried[0] = fw.ep
	x.endpoint = fw.ep
	fw.ep.Acquire()
	defer func() { fw.ep.Release() }()

	ctx := r.Context()
	// An upgraded connection lives as long as the client keeps it: the request timeout bounds
	// ordinary exchanges only.
	if d := x.route.RequestTimeout; d > 0 && !x.upgrade {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
		fw.deadline = ctx
	}
	fw.Context = ctx
	if x.waited > 0 && f.opts.MaxPreconnectsPerHost > 0 {
		// Released from a hold, with every other request held for the endpoint: the first opens
		// connections ahead of them all.
		f.warm(ctx, x, key.kind == kindH2C)
	}
	f.rp.ServeHTTP(w, r.WithContext(fw))
	switch {
	case fw.lost != nil:
		return Lost, fw.lost
	case fw.failed != nil:
		return Failed, fw.failed
	}
	return Forwarded, nil
}

// Value returns the forward itself for exchangeKey, and asks the request's context otherwise.
func (fw *forward) Value(key any) any {
	if key == (exchangeKey{}) {
		return fw
	}
	return fw.Context.Value(key)
}

// scheme returns the URL scheme for a target protocol.
func scheme(p endpoints.Protocol) string {
	if p == endpoints.HTTPS {
		return "https"
	}
	return "http"
}

package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"

	"github.com/lobby-http/lobby/internal/server"
)

// roundTripper sends the request on the transport of its forward, and retries connection
// failures on other endpoints. When it has none left to try, and nothing of the request was
// sent anywhere, the forward is lost (forward.lost): the error handler answers nothing, and
// Forward hands the request back to its caller, which may hold it again.
type roundTripper struct{ f *Forwarder }

func (rt roundTripper) RoundTrip(r *http.Request) (*http.Response, error) {
	fw := r.Context().Value(exchangeKey{}).(*forward)
	defer fw.settled.Store(true)
	r = watchWrites(r, fw.x)
	for {
		resp, err := fw.transport.RoundTrip(r)
		if err == nil {
			fw.x.target.Responded(fw.ep)
			return resp, nil
		}
		var de *dialError
		if !errors.As(err, &de) || fw.Err() != nil || errors.Is(de.err, context.Canceled) {
			// Not a connection failure; or the client went away, or the request timed out, while
			// the transport waited for a connection; or the transport called the dial off: the
			// endpoint is not to blame.
			return nil, err
		}
		// The dial to the endpoint failed: it is gone or going, as far as this interceptor can
		// tell, whatever the EndpointSlice says yet.
		fw.ep.MarkSuspect(suspectFor)
		if fw.body != nil && fw.body.read.Load() {
			return nil, err
		}
		if fw.x.sent.Load() {
			// The request was written whole to a connection before this dial: the transport sends
			// an idempotent request again on a new connection when a reused one closed before the
			// response (the app crashed with it in hand, or closed an idle connection just then).
			// The upstream may have acted on it, so it is neither sent elsewhere nor held again.
			return nil, err
		}
		next := fw.another()
		if next == nil {
			fw.lost = fmt.Errorf("%w %s: %w", ErrUpstreamUnavailable, fw.ep.Host, de.err)
			return nil, err
		}
		fw.x.metrics.upstreamError("connect")
		fw.f.opts.Log.V(1).Info("retrying on another endpoint", "route", fw.x.metrics.key,
			"failed", fw.ep.Host, "next", next.Host, "error", err.Error())
		fw.ep.Release()
		next.Acquire()
		fw.ep = next
		fw.tried[fw.attempts] = next
		fw.attempts++
		fw.x.endpoint, fw.x.retries = next, fw.x.retries+1
		retry := *r
		u := *r.URL
		u.Host = next.Host
		retry.URL = &u
		r = &retry
	}
}

// errorHandler answers a request whose exchange with the upstream failed before its response
// headers arrived; a lost forward it leaves unanswered, for Forward's caller.
func (f *Forwarder) errorHandler(w http.ResponseWriter, r *http.Request, err error) {
	fw := r.Context().Value(exchangeKey{}).(*forward)
	if fw.lost != nil {
		return
	}
	fw.failed = fw.classify(err)
	fw.x.fail(w, fw.failed, false)
}

// classify maps an error of the transport to one of the package's sentinel errors.
func (fw *forward) classify(err error) error {
	var de *dialError
	var ne net.Error
	var ce *tls.CertificateVerificationError
	switch {
	case fw.body != nil && fw.body.stalled.Load():
		// Before the client's context: net/http ends it when the stalled read fails, and the
		// transport may then report the cancellation instead of the read.
		return fmt.Errorf("%w: %w", ErrRequestBodyTimeout, err)
	case fw.client.Err() != nil:
		return ErrClientGone
	case errors.As(err, &de):
		return fmt.Errorf("%w %s: %w", ErrUpstreamUnavailable, fw.ep.Host, de.err)
	case errors.As(err, &ce):
		return fmt.Errorf("%w of %s (Service %s/%s): %w", ErrUpstreamCertificate, fw.ep.Host, fw.x.target.Namespace(), fw.x.target.Service(), ce.Err)
	case fw.deadline != nil && fw.deadline.Err() != nil:
		return fmt.Errorf("%w after %s", ErrRequestTimeout, fw.x.route.RequestTimeout)
	case errors.As(err, &ne) && ne.Timeout():
		return fmt.Errorf("%w after %s: %w", ErrResponseHeaderTimeout, fw.x.route.ResponseHeaderTimeout, err)
	default:
		return fmt.Errorf("%w %s: %w", ErrUpstream, fw.ep.Host, err)
	}
}

// retryBody passes the request body through but ignores Close, which the transport calls when a
// connection fails, so that the body can be sent to another endpoint when none of it was read.
// The server closes the real body when the handler returns.
type retryBody struct {
	r    io.ReadCloser
	read atomic.Bool
	// stalled is set when the client stopped sending the body (server.ErrBodyIdle).
	stalled atomic.Bool
}

func (b *retryBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if n > 0 {
		b.read.Store(true)
	}
	if err != nil && err != io.EOF && errors.Is(err, server.ErrBodyIdle) {
		b.stalled.Store(true)
	}
	return n, err
}

func (b *retryBody) Close() error { return nil }

package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/http/httputil"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"

	"github.com/lobby-http/lobby/interceptor/internal/endpoints"
	"github.com/lobby-http/lobby/internal/server"
)

// maxAttempts bounds how many endpoints a request tries when connections fail, before it goes back
// to the wait step.
const maxAttempts = 3

// suspectFor is how long an endpoint that refused a connection is passed over when nothing else
// says it is back: the EndpointSlice usually drops a pod that is gone within a second or two, and
// when it does not (the pod refused one connection by accident, or the update is slow), one
// request tries it again after this long. So a healthy pod is passed over for at most this long,
// and a dead one costs a connection attempt this often while requests wait for it.
const suspectFor = time.Second

// dialSlotWait bounds how long a new connection waits for one of its endpoint's dial slots;
// past it the dial goes ahead without one, so that pacing never fails a request, and delays one
// by at most this much when dials to the endpoint are slow.
const dialSlotWait = time.Second

// errDialNotNeeded abandons a dial that waited for a slot while its request was served on a
// connection that another request had freed.
var errDialNotNeeded = errors.New("dial not needed: the request was served on another connection")

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
	// Log receives retries at V(1).
	Log logr.Logger
}

// Forwarder is the last stage of the chain: it forwards a request to a ready endpoint of the
// target chosen by Wait, with one httputil.ReverseProxy and one transport per protocol (and
// response-header timeout) built once, never per request.
type Forwarder struct {
	opts  ForwarderOptions
	rp    *httputil.ReverseProxy
	gates dialGates

	mu sync.Mutex
	// transports is copied on write; requests only load it.
	transports atomic.Pointer[map[transportKey]*http.Transport]
}

// transportKind is how the transport speaks to endpoints.
type transportKind uint8

const (
	kindHTTP1 transportKind = iota
	kindH2C
	kindHTTPS
	// kindHTTPS1 is HTTPS without HTTP/2, for upgrade requests.
	kindHTTPS1
)

// transportKey selects a transport. net/http applies the response-header timeout per transport,
// at no cost per request, so routes that set their own get their own transport. An HTTPS target
// gets a transport per Service too, since its TLS configuration names the Service; plain ones
// share theirs.
type transportKey struct {
	kind                  transportKind
	responseHeaderTimeout time.Duration
	// namespace and service name an HTTPS target's Service; empty for the other kinds.
	namespace, service string
	// insecure skips the verification of an HTTPS target's certificate.
	insecure bool
}

var _ Handler = (*Forwarder)(nil)

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
	f := &Forwarder{opts: opts, gates: dialGates{limit: opts.MaxDialsPerHost, gates: map[string]*dialGate{}}}
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
// ServeExchange.
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
}

// ServeExchange forwards the request to an endpoint of x's snapshot.
func (f *Forwarder) ServeExchange(w http.ResponseWriter, r *http.Request, x *Exchange) {
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
	}
	fw.ep = x.ep
	if fw.ep == nil {
		// Composed without Wait, which picks the endpoint.
		if fw.ep = pick(x.snap.Endpoints); fw.ep == nil {
			x.fail(w, fmt.Errorf("%w: every endpoint refused connections lately", ErrUpstreamUnavailable), false)
			return
		}
	}
	fw.tried[0] = fw.ep
	fw.attempts = 1
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
	f.rp.ServeHTTP(w, r.WithContext(fw))
}

// Value returns the forward itself for exchangeKey and the exchange's trace for httptrace's key,
// and asks the request's context otherwise.
func (fw *forward) Value(key any) any {
	switch key {
	case exchangeKey{}:
		return fw
	case clientTraceKey:
		return fw.x.trace
	}
	return fw.Context.Value(key)
}

// clientTraceKey is the key under which net/http/httptrace finds a request's ClientTrace in its
// context. The package does not export it; asking a context that records the key it is asked
// for learns it. A forward answers it itself: httptrace.WithClientTrace would allocate a
// context for every request.
var clientTraceKey = func() any {
	var p keyProbe
	httptrace.ContextClientTrace(&p)
	return p.key
}()

// keyProbe is a context that records the last key it was asked for.
type keyProbe struct {
	context.Context
	key any
}

func (p *keyProbe) Value(key any) any {
	p.key = key
	return nil
}

// pick chooses the endpoint with fewer requests in flight of two picked at random, passing
// suspect endpoints over. A suspect endpoint whose mark has run out is claimed and picked, so that
// this request tries it again (on another endpoint, if it still refuses); with every endpoint
// suspect and no mark run out, pick returns nil: the request must wait.
func pick(eps []*endpoints.Endpoint) *endpoints.Endpoint {
	n := len(eps)
	switch n {
	case 0:
		return nil
	case 1:
		if ok, _ := usable(eps[0]); ok {
			return eps[0]
		}
		return nil
	}
	i := rand.IntN(n)
	j := rand.IntN(n - 1)
	if j >= i {
		j++
	}
	a, b := eps[i], eps[j]
	okA, claimed := usable(a)
	if claimed {
		return a
	}
	okB, claimed := usable(b)
	if claimed {
		return b
	}
	switch {
	case okA && okB:
		if b.InFlight() < a.InFlight() {
			return b
		}
		return a
	case okA:
		return a
	case okB:
		return b
	}
	return pickAmong(eps, nil)
}

// usable reports whether e may be picked: it has no suspect mark, or its mark has run out and
// this caller claimed it (claimed), to try it again.
func usable(e *endpoints.Endpoint) (ok, claimed bool) {
	if !e.Suspect() {
		return true, false
	}
	claimed = e.Claim(suspectFor)
	return claimed, claimed
}

// pickAmong returns an endpoint of eps not in tried: one that is not suspect, starting at a random
// place, else one whose suspect mark it could claim, else nil.
func pickAmong(eps []*endpoints.Endpoint, tried []*endpoints.Endpoint) *endpoints.Endpoint {
	n := len(eps)
	if n == 0 {
		return nil
	}
	start := rand.IntN(n)
	for k := range n {
		if e := eps[(start+k)%n]; !e.Suspect() && !slices.Contains(tried, e) {
			return e
		}
	}
	for k := range n {
		if e := eps[(start+k)%n]; !slices.Contains(tried, e) && e.Claim(suspectFor) {
			return e
		}
	}
	return nil
}

// another returns an endpoint of the target that the request has not tried and that may be
// picked, or nil.
func (fw *forward) another() *endpoints.Endpoint {
	if fw.attempts >= maxAttempts {
		return nil
	}
	eps := fw.x.snap.Endpoints
	// The target may have gained endpoints since the request was admitted.
	if cur := fw.x.target.Snapshot(); len(cur.Endpoints) > 0 {
		eps = cur.Endpoints
	}
	return pickAmong(eps, fw.tried[:fw.attempts])
}

// transport returns the transport for key, building it the first time.
func (f *Forwarder) transport(key transportKey) *http.Transport {
	if t := (*f.transports.Load())[key]; t != nil {
		return t
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	cur := *f.transports.Load()
	if t := cur[key]; t != nil {
		return t
	}
	t := f.newTransport(key)
	next := make(map[transportKey]*http.Transport, len(cur)+1)
	for k, v := range cur {
		next[k] = v
	}
	next[key] = t
	f.transports.Store(&next)
	return t
}

func (f *Forwarder) newTransport(key transportKey) *http.Transport {
	t := &http.Transport{
		DialContext:           f.dial,
		MaxIdleConns:          0, // No limit across endpoints; MaxIdleConnsPerHost bounds each.
		MaxIdleConnsPerHost:   f.opts.MaxIdleConnsPerHost,
		IdleConnTimeout:       f.opts.IdleConnTimeout,
		ResponseHeaderTimeout: key.responseHeaderTimeout,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		// A proxy passes encodings through; it must not ask for gzip and decode it itself.
		DisableCompression: true,
	}
	var p http.Protocols
	switch key.kind {
	case kindH2C:
		p.SetUnencryptedHTTP2(true)
	case kindHTTPS:
		p.SetHTTP1(true)
		p.SetHTTP2(true)
		t.TLSClientConfig = f.opts.UpstreamTLS.clientConfig(key.namespace, key.service, key.insecure)
	case kindHTTPS1:
		p.SetHTTP1(true)
		t.TLSClientConfig = f.opts.UpstreamTLS.clientConfig(key.namespace, key.service, key.insecure)
	default:
		p.SetHTTP1(true)
	}
	t.Protocols = &p
	return t
}

// dial opens a connection to addr once one of the endpoint's dial slots is free. The transport
// dials on behalf of a request and, while the dial is on its way, also hands that request the
// first connection another request frees; so when a dial had to wait for its slot and its
// request has been served meanwhile, the dial is dropped instead of adding a connection nobody
// waits for.
func (f *Forwarder) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	g := f.gates.enter(addr)
	defer f.gates.leave(addr, g)
	slot := true
	select {
	case g.slots <- struct{}{}:
	default:
		timer := time.NewTimer(dialSlotWait)
		select {
		case g.slots <- struct{}{}:
			timer.Stop()
		case <-ctx.Done():
			timer.Stop()
			return nil, &dialError{err: ctx.Err()}
		case <-timer.C:
			slot = false
		}
		if fw, _ := ctx.Value(exchangeKey{}).(*forward); fw != nil && fw.settled.Load() {
			if slot {
				<-g.slots
			}
			return nil, &dialError{err: errDialNotNeeded}
		}
	}
	c, err := f.opts.Dial(ctx, network, addr)
	if slot {
		<-g.slots
	}
	if err != nil {
		return nil, &dialError{err: err}
	}
	return c, nil
}

// dialGates holds the dial slots of the endpoints being dialed; an endpoint's entry lives only
// while dials to it wait or run.
type dialGates struct {
	limit int

	mu    sync.Mutex
	gates map[string]*dialGate
}

// dialGate is one endpoint's dial slots: a token in slots for each dial in progress.
type dialGate struct {
	slots chan struct{}
	// users counts the dials holding or waiting for a slot; guarded by dialGates.mu.
	users int
}

// enter returns the gate of addr, counting the caller as its user.
func (d *dialGates) enter(addr string) *dialGate {
	d.mu.Lock()
	defer d.mu.Unlock()
	g := d.gates[addr]
	if g == nil {
		g = &dialGate{slots: make(chan struct{}, d.limit)}
		d.gates[addr] = g
	}
	g.users++
	return g
}

// leave ends the caller's use of g, forgetting it when nobody else uses it.
func (d *dialGates) leave(addr string, g *dialGate) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if g.users--; g.users == 0 {
		delete(d.gates, addr)
	}
}

// rewrite points the outbound request at the chosen endpoint. Host is preserved;
// X-Forwarded-For is appended to, and X-Forwarded-Host and -Proto are set unless an earlier
// proxy (the ingress) set them, since it saw the client's host and scheme.
func rewrite(pr *httputil.ProxyRequest) {
	fw := pr.In.Context().Value(exchangeKey{}).(*forward)
	out, in := pr.Out, pr.In
	out.URL.Scheme = fw.scheme
	out.URL.Host = fw.ep.Host
	out.Host = in.Host
	ip := clientIP(in.RemoteAddr)
	if prior := in.Header["X-Forwarded-For"]; len(prior) > 0 {
		v := prior[0]
		for _, p := range prior[1:] {
			v += ", " + p
		}
		out.Header["X-Forwarded-For"] = []string{v + ", " + ip}
	} else {
		out.Header["X-Forwarded-For"] = []string{ip}
	}
	if v := in.Header["X-Forwarded-Host"]; len(v) > 0 {
		out.Header["X-Forwarded-Host"] = v
	} else {
		out.Header["X-Forwarded-Host"] = []string{in.Host}
	}
	if v := in.Header["X-Forwarded-Proto"]; len(v) > 0 {
		out.Header["X-Forwarded-Proto"] = v
	} else if in.TLS != nil {
		out.Header["X-Forwarded-Proto"] = protoHTTPS
	} else {
		out.Header["X-Forwarded-Proto"] = protoHTTP
	}
	if out.Body != nil && out.Body != http.NoBody {
		fw.body = &retryBody{r: out.Body}
		out.Body = fw.body
	}
	if fw.x.span.on() {
		fw.x.span.inject(out.Header)
	}
}

var (
	protoHTTP  = []string{"http"}
	protoHTTPS = []string{"https"}
)

// roundTripper sends the request on the transport of its forward, and retries connection
// failures on other endpoints. When it has none left to try, a request to its route's own target
// goes back to the wait step (Exchange.lost) instead of failing.
type roundTripper struct{ f *Forwarder }

func (rt roundTripper) RoundTrip(r *http.Request) (*http.Response, error) {
	fw := r.Context().Value(exchangeKey{}).(*forward)
	defer fw.settled.Store(true)
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
			if !fw.x.waitAgain || fw.x.target != fw.x.route.Target {
				// Nothing to wait in, or the target is the failover, used once the cold-start
				// timeout is over: there is no wait left.
				return nil, err
			}
			fw.x.metrics.upstreamError("connect")
			fw.x.lost = fmt.Errorf("%w %s: %w", ErrUpstreamUnavailable, fw.ep.Host, de.err)
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

// modifyResponse records the upstream's status code.
func modifyResponse(resp *http.Response) error {
	fw := resp.Request.Context().Value(exchangeKey{}).(*forward)
	fw.x.code = resp.StatusCode
	fw.x.upstreamCode = resp.StatusCode
	return nil
}

// errorHandler answers a request whose exchange with the upstream failed before its response
// headers arrived.
func (f *Forwarder) errorHandler(w http.ResponseWriter, r *http.Request, err error) {
	fw := r.Context().Value(exchangeKey{}).(*forward)
	if fw.x.lost != nil {
		// Nothing was sent anywhere: Wait holds the request again.
		return
	}
	fw.x.fail(w, fw.classify(err), false)
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

// dialError marks a failure to open a connection, before any byte of the request was sent.
type dialError struct{ err error }

func (e *dialError) Error() string { return "dial: " + e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

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

// bufferPool is an httputil.BufferPool over a buffered channel: a sync.Pool of []byte would
// allocate on every Put to box the slice.
type bufferPool chan []byte

func newBufferPool() bufferPool { return make(bufferPool, 256) }

// Get returns a 32 KiB buffer.
func (p bufferPool) Get() []byte {
	select {
	case b := <-p:
		return b
	default:
		return make([]byte, 32*1024)
	}
}

// Put returns b to the pool, or drops it when the pool is full.
func (p bufferPool) Put(b []byte) {
	select {
	case p <- b[:cap(b)]:
	default:
	}
}

package proxy

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"
)

// dialSlotWait bounds how long a new connection waits for one of its endpoint's dial slots;
// past it the dial goes ahead without one, so that pacing never fails a request, and delays one
// by at most this much when dials to the endpoint are slow.
const dialSlotWait = time.Second

// errDialNotNeeded abandons a dial that waited for a slot while its request was served on a
// connection that another request had freed.
var errDialNotNeeded = errors.New("dial not needed: the request was served on another connection")

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

// dial returns a connection to addr opened ahead (see warm), else opens one once one of the
// endpoint's dial slots is free. The transport
// dials on behalf of a request and, while the dial is on its way, also hands that request the
// first connection another request frees; so when a dial had to wait for its slot and its
// request has been served meanwhile, the dial is dropped instead of adding a connection nobody
// waits for.
func (f *Forwarder) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if c := f.pre.take(addr); c != nil {
		return c, nil
	}
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

// dialError marks a failure to open a connection, before any byte of the request was sent.
type dialError struct{ err error }

func (e *dialError) Error() string { return "dial: " + e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

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

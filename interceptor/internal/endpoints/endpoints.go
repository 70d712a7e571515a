// Package endpoints keeps, per target Service and port, an immutable snapshot of the ready
// endpoints (pod IP:port) built from EndpointSlices, and wakes the requests waiting for that
// target alone when it gains a ready endpoint.
//
// The Store only keeps the Services that some Target refers to: objects of other Services are
// dropped as they arrive, so unrelated EndpointSlices cost a label lookup and nothing more.
package endpoints

import (
	"context"
	"net/netip"
	"strconv"
	"sync/atomic"
)

// Protocol is how the interceptor speaks to a target, resolved from the Service port's
// appProtocol (or, failing that, its name) when snapshots are built.
type Protocol uint8

const (
	// HTTP1 is plain HTTP/1.1 (the default).
	HTTP1 Protocol = iota
	// H2C is HTTP/2 over clear text (appProtocol kubernetes.io/h2c, or a port named h2c or grpc*).
	H2C
	// HTTPS is HTTP over TLS, with HTTP/2 negotiated by ALPN (appProtocol https, or port named https).
	HTTPS
)

// String returns the protocol's name as it appears in logs.
func (p Protocol) String() string {
	switch p {
	case H2C:
		return "h2c"
	case HTTPS:
		return "https"
	default:
		return "http"
	}
}

// Endpoint is one ready address of a target. It is stable across snapshots for the same address,
// so its in-flight counter survives EndpointSlice updates.
type Endpoint struct {
	// Addr is the pod IP and the resolved container port.
	Addr netip.AddrPort
	// Host is Addr as "ip:port", computed once.
	Host string

	inFlight atomic.Int64
}

// InFlight returns the number of requests the interceptor has forwarded to this endpoint and not
// yet finished (for least-in-flight balancing).
func (e *Endpoint) InFlight() int64 { return e.inFlight.Load() }

// Acquire counts one more forwarded request; Release undoes it.
func (e *Endpoint) Acquire() { e.inFlight.Add(1) }

// Release ends a request counted by Acquire.
func (e *Endpoint) Release() { e.inFlight.Add(-1) }

// Snapshot is an immutable view of one target's ready endpoints.
type Snapshot struct {
	// Endpoints are the ready endpoints, sorted by address; empty when the target has none.
	Endpoints []*Endpoint
	// Protocol is how to speak to them.
	Protocol Protocol
}

// emptySnapshot is what a Target holds before its Service and slices have been seen.
var emptySnapshot = &Snapshot{}

// Target is the stable handle of one Service port. Routes hold it; the informer updates it.
type Target struct {
	namespace, service string
	port               int32
	portName           string

	snap atomic.Pointer[Snapshot]
	// wake is closed when the target turns from empty to non-empty, and then replaced, so that
	// waiters of this target alone are released.
	wake atomic.Pointer[chan struct{}]
	// byAddr keeps the Endpoints of the current snapshot so the next one reuses them. Guarded by
	// the Store's mutex.
	byAddr map[netip.AddrPort]*Endpoint
}

func newTarget(namespace, service string, port int32, portName string) *Target {
	t := &Target{namespace: namespace, service: service, port: port, portName: portName}
	t.snap.Store(emptySnapshot)
	ch := make(chan struct{})
	t.wake.Store(&ch)
	return t
}

// Snapshot returns the current ready endpoints without blocking or locking.
func (t *Target) Snapshot() *Snapshot { return t.snap.Load() }

// Wait blocks until the target has at least one ready endpoint and returns that snapshot, or
// returns ctx's error. Waking is per target: an update to another Service never wakes it.
func (t *Target) Wait(ctx context.Context) (*Snapshot, error) {
	for {
		if s := t.snap.Load(); len(s.Endpoints) > 0 {
			return s, nil
		}
		ch := t.wake.Load()
		// The publisher stores the snapshot before it swaps the channel, so a channel loaded after
		// a swap is always paired with a snapshot check that sees the new endpoints.
		if s := t.snap.Load(); len(s.Endpoints) > 0 {
			return s, nil
		}
		select {
		case <-*ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// String returns the target as "namespace/service:port" for logs.
func (t *Target) String() string {
	p := t.portName
	if p == "" {
		p = strconv.Itoa(int(t.port))
	}
	return t.namespace + "/" + t.service + ":" + p
}

// publish makes s the target's snapshot and wakes its waiters when it is the first non-empty one.
// Callers hold the Store's mutex, so publishes of one target never interleave.
func (t *Target) publish(s *Snapshot) {
	old := t.snap.Swap(s)
	if len(s.Endpoints) == 0 || len(old.Endpoints) > 0 {
		return
	}
	ch := make(chan struct{})
	close(*t.wake.Swap(&ch))
}

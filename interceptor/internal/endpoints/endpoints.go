// Package endpoints keeps, per target Service and port, an immutable snapshot of the ready
// endpoints (pod IP:port) built from EndpointSlices, and wakes the requests waiting for that
// target alone when it gains a ready endpoint.
package endpoints

import (
	"context"
	"net/netip"
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

// Endpoint is one ready address of a target. It is stable across snapshots for the same address,
// so its in-flight counter survives EndpointSlice updates.
type Endpoint struct {
	// Addr is the pod IP and the resolved container port.
	Addr netip.AddrPort
	// Host is Addr as "ip:port", computed once.
	Host string
	// TODO(dataplane): inFlight atomic.
}

// InFlight returns the number of requests the interceptor has forwarded to this endpoint and not
// yet finished (for least-in-flight balancing).
func (e *Endpoint) InFlight() int64 { panic("unimplemented") }

// Acquire counts one more forwarded request; Release undoes it.
func (e *Endpoint) Acquire() { panic("unimplemented") }

// Release ends a request counted by Acquire.
func (e *Endpoint) Release() { panic("unimplemented") }

// Snapshot is an immutable view of one target's ready endpoints.
type Snapshot struct {
	// Endpoints are the ready endpoints; empty when the target has none.
	Endpoints []*Endpoint
	// Protocol is how to speak to them.
	Protocol Protocol
}

// Target is the stable handle of one Service port. Routes hold it; the informer updates it.
type Target struct{}

// Snapshot returns the current ready endpoints without blocking or locking.
func (t *Target) Snapshot() *Snapshot { panic("unimplemented") }

// Wait blocks until the target has at least one ready endpoint and returns that snapshot, or
// returns ctx's error. Waking is per target: an update to another Service never wakes it.
func (t *Target) Wait(ctx context.Context) (*Snapshot, error) { panic("unimplemented") }

// Store owns the Targets of one interceptor.
type Store struct{}

// Target returns the stable handle for a port of a Service, selected by number (port > 0) or by
// name. The store keeps EndpointSlices only for Services that some handle refers to.
func (s *Store) Target(namespace, service string, port int32, portName string) *Target {
	panic("unimplemented")
}

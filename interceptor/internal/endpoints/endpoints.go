// Package endpoints keeps, per target Service and port, an immutable snapshot of the ready
// endpoints (pod IP:port), and wakes the requests waiting for that target alone when it gains a
// ready endpoint. It knows nothing of Kubernetes: package endpointslices publishes the addresses
// it reads from EndpointSlices (Target.Publish), and tests publish their own.
package endpoints

import (
	"context"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Protocol is how the interceptor speaks to a target, resolved from the Service port's
// appProtocol (or, failing that, its name) by the publisher.
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
// so its in-flight counter and its suspect mark survive EndpointSlice updates that keep it ready.
//
// An endpoint that refused a connection is suspect (MarkSuspect): the EndpointSlice still lists it
// as ready, but this interceptor knows better, because the pod is usually gone or going (a crash, or
// the last pod of a scale to zero) and the EndpointSlice has not caught up yet. Pickers pass a
// suspect endpoint over, and a target whose endpoints are all suspect holds its requests as if it
// had none. The mark ends when the endpoint answers again (Target.Responded), when it leaves the
// target's ready endpoints (it comes back, if ever, as a new Endpoint without a mark), and, as a
// bound, when the time it was marked for runs out: then one request claims it (Claim) to try it
// again, so that a pod that refused one connection by accident is not passed over for longer.
type Endpoint struct {
	// Addr is the pod IP and the resolved container port.
	Addr netip.AddrPort
	// Host is Addr as "ip:port", computed once.
	Host string

	inFlight atomic.Int64
	// suspect is when the suspect mark runs out, in nanotime; 0 when the endpoint has none.
	suspect atomic.Int64
}

// epoch anchors nanotime.
var epoch = time.Now()

// nanotime is the clock of suspect marks: monotonic nanoseconds, always positive, so that 0 can
// mean "no mark".
func nanotime() int64 { return int64(time.Since(epoch)) + 1 }

// Suspect reports whether the endpoint carries a suspect mark, running or run out. It costs one
// atomic load, so pickers can call it on every request.
func (e *Endpoint) Suspect() bool { return e.suspect.Load() != 0 }

// MarkSuspect marks the endpoint as refusing connections for d from now (renewing a mark it has).
func (e *Endpoint) MarkSuspect(d time.Duration) { e.suspect.Store(nanotime() + int64(d)) }

// Claim lets one caller try a suspect endpoint again once its mark has run out: it renews the mark
// for d, so that other pickers keep passing the endpoint over while the caller tries it, and
// reports true. It reports false when the endpoint has no mark, when its mark still runs, or when
// another caller claimed it first.
func (e *Endpoint) Claim(d time.Duration) bool {
	until := e.suspect.Load()
	now := nanotime()
	if until == 0 || until > now {
		return false
	}
	return e.suspect.CompareAndSwap(until, now+int64(d))
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

// emptySnapshot is what a Target holds before its first publish.
var emptySnapshot = &Snapshot{}

// pickable reports whether some endpoint of s may be picked at now; when none may, it returns how
// long until the first suspect mark runs out (0 when s has no endpoints).
func (s *Snapshot) pickable(now int64) (bool, time.Duration) {
	first := int64(0)
	for _, e := range s.Endpoints {
		until := e.suspect.Load()
		if until == 0 || until <= now {
			return true, 0
		}
		if first == 0 || until < first {
			first = until
		}
	}
	if first == 0 {
		return false, 0
	}
	return false, time.Duration(first - now)
}

// Target is the stable handle of one Service port. Routes hold it; its publisher updates it.
type Target struct {
	namespace, service string
	port               int32
	portName           string

	snap atomic.Pointer[Snapshot]
	// wake is closed when the target turns from having no endpoint that may be picked to having
	// one, and then replaced, so that waiters of this target alone are released.
	wake atomic.Pointer[chan struct{}]

	// mu serialises publishes.
	mu sync.Mutex
	// byAddr keeps the Endpoints of the current snapshot so the next one reuses them.
	byAddr map[netip.AddrPort]*Endpoint
}

// NewTarget returns the handle of a port of a Service, selected by number (port > 0) or by name,
// with no ready endpoint until its first Publish.
func NewTarget(namespace, service string, port int32, portName string) *Target {
	t := &Target{namespace: namespace, service: service, port: port, portName: portName}
	t.snap.Store(emptySnapshot)
	ch := make(chan struct{})
	t.wake.Store(&ch)
	return t
}

// Namespace returns the namespace of the target's Service.
func (t *Target) Namespace() string { return t.namespace }

// Service returns the name of the target's Service.
func (t *Target) Service() string { return t.service }

// Snapshot returns the current ready endpoints without blocking or locking.
func (t *Target) Snapshot() *Snapshot { return t.snap.Load() }

// Wait blocks until the target has a ready endpoint that may be picked (one without a suspect
// mark, or whose mark has run out) and returns that snapshot, or returns ctx's error. Waking is per
// target: an update to another Service never wakes it. While every endpoint is suspect, Wait also
// returns when the first mark runs out, to all its callers: the one whose Endpoint.Claim succeeds
// tries the endpoint, and the others call Wait again, which then waits for the renewed mark.
func (t *Target) Wait(ctx context.Context) (*Snapshot, error) {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		// Publishers change the snapshot or a mark before they swap the channel, so a channel
		// loaded before the check below is closed by any change that the check missed.
		ch := t.wake.Load()
		s := t.snap.Load()
		ok, after := s.pickable(nanotime())
		if ok {
			return s, nil
		}
		var expired <-chan time.Time
		if after > 0 {
			if timer == nil {
				timer = time.NewTimer(after)
			} else {
				timer.Reset(after)
			}
			expired = timer.C
		}
		select {
		case <-*ch:
		case <-expired:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Responded records that e, an endpoint of this target, answered a request: it ends e's suspect
// mark, and wakes the target's waiters when there was one. Without a mark it costs one atomic
// load and takes no lock, so the forwarder calls it after every exchange.
func (t *Target) Responded(e *Endpoint) {
	if e.suspect.Load() == 0 || e.suspect.Swap(0) == 0 {
		return
	}
	t.wakeWaiters()
}

// wakeWaiters releases the target's current waiters. Concurrent callers each close a different
// channel, since each swaps out the one it closes.
func (t *Target) wakeWaiters() {
	ch := make(chan struct{})
	close(*t.wake.Swap(&ch))
}

// String returns the target as "namespace/service:port" for logs.
func (t *Target) String() string {
	p := t.portName
	if p == "" {
		p = strconv.Itoa(int(t.port))
	}
	return t.namespace + "/" + t.service + ":" + p
}

// Publish makes addrs the target's ready endpoints, spoken to with p, and wakes the target's
// waiters when it gains an endpoint that may be picked. An address it had already keeps its
// Endpoint, with its in-flight count and suspect mark; duplicate addresses count once. The
// snapshot lists the endpoints sorted by address. Publish does not keep addrs.
func (t *Target) Publish(p Protocol, addrs []netip.AddrPort) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(addrs) == 0 && p == HTTP1 {
		t.byAddr = nil
		t.publish(emptySnapshot)
		return
	}
	snap := &Snapshot{Protocol: p}
	if len(addrs) > 0 {
		snap.Endpoints = make([]*Endpoint, 0, len(addrs))
	}
	next := make(map[netip.AddrPort]*Endpoint, len(addrs))
	for _, ap := range addrs {
		if _, dup := next[ap]; dup {
			continue
		}
		e := t.byAddr[ap]
		if e == nil {
			e = &Endpoint{Addr: ap, Host: ap.String()}
		}
		next[ap] = e
		snap.Endpoints = append(snap.Endpoints, e)
	}
	slices.SortFunc(snap.Endpoints, func(a, b *Endpoint) int { return a.Addr.Compare(b.Addr) })
	t.byAddr = next
	t.publish(snap)
}

// publish makes s the target's snapshot and wakes its waiters when s has an endpoint that may be
// picked and the snapshot it replaces had none (it was empty, or all its endpoints were suspect).
// Callers hold t.mu, so publishes of one target never interleave.
func (t *Target) publish(s *Snapshot) {
	old := t.snap.Swap(s)
	now := nanotime()
	if ok, _ := s.pickable(now); !ok {
		return
	}
	if ok, _ := old.pickable(now); ok {
		return
	}
	t.wakeWaiters()
}

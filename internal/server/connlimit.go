package server

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// ConnLimit caps how many connections the listeners it wraps keep open at once. At the cap,
// Accept waits for an open connection to close before it takes the next one from the kernel, so
// new connections wait in the listen socket's backlog rather than being accepted and closed.
//
// Waiting is what a proxy in front of held requests wants. A connection accepted and closed at
// once is an error at the client and, behind an ingress, a 502 for a request that a moment later
// could have been served; the memory of one more connection is what the cap is there to refuse.
// A connection left in the backlog has completed its handshake in the kernel and costs the
// process nothing; it is served, in order, as soon as a slot frees. The kernel bounds the backlog
// (net.core.somaxconn, which Go uses as the listen backlog): beyond it, new handshakes are not
// completed and clients retry them with their own back-off, which is the back-pressure the cap
// means to apply. Connections already open are never touched.
//
// The count is per connection, not per request: a keep-alive connection holds its slot for as
// long as it is open, whatever it carries, so the cost on the request path is nothing. A slot is
// released exactly once, when the connection is first closed, including a connection that a
// handler hijacked (a WebSocket, an h2c upgrade): net/http hands out the connection Accept
// returned, so its Close is this package's. A zero or negative maximum counts connections
// without capping them.
type ConnLimit struct {
	max int
	// slots holds one token per open connection; nil when unlimited. Its element type has no
	// size, so a large cap costs no memory.
	slots chan struct{}
	open  atomic.Int64
	waits atomic.Uint64
}

// NewConnLimit returns a limit of n open connections; 0 or less counts them without a cap.
func NewConnLimit(n int) *ConnLimit {
	c := &ConnLimit{max: max(n, 0)}
	if c.max > 0 {
		c.slots = make(chan struct{}, c.max)
	}
	return c
}

// Max is the cap; 0 means none.
func (c *ConnLimit) Max() int { return c.max }

// Open is how many accepted connections are not closed yet.
func (c *ConnLimit) Open() int64 { return c.open.Load() }

// Waits is how many times Accept found every slot taken and waited for one.
func (c *ConnLimit) Waits() uint64 { return c.waits.Load() }

// Listener returns ln with the limit applied to the connections it accepts. Several listeners
// may share one limit. Closing the returned listener closes ln and ends a waiting Accept with
// net.ErrClosed.
func (c *ConnLimit) Listener(ln net.Listener) net.Listener {
	return &limitListener{Listener: ln, limit: c, closed: make(chan struct{})}
}

// acquire takes a slot, waiting for one while all are taken, unless closed ends first.
func (c *ConnLimit) acquire(closed <-chan struct{}) bool {
	if c.slots == nil {
		return true
	}
	select {
	case c.slots <- struct{}{}:
		return true
	default:
	}
	c.waits.Add(1)
	select {
	case c.slots <- struct{}{}:
		return true
	case <-closed:
		return false
	}
}

// release frees a slot that acquire took.
func (c *ConnLimit) release() {
	if c.slots != nil {
		<-c.slots
	}
}

type limitListener struct {
	net.Listener
	limit     *ConnLimit
	closed    chan struct{}
	closeOnce sync.Once
}

// Accept takes a slot, then the next connection. The slot is taken first so that, at the cap,
// connections stay in the kernel's backlog rather than in this process.
func (l *limitListener) Accept() (net.Conn, error) {
	if !l.limit.acquire(l.closed) {
		return nil, &net.OpError{Op: "accept", Net: l.Addr().Network(), Addr: l.Addr(), Err: net.ErrClosed}
	}
	conn, err := l.Listener.Accept()
	if err != nil {
		l.limit.release()
		return nil, err
	}
	l.limit.open.Add(1)
	return &limitConn{Conn: conn, limit: l.limit}, nil
}

// Close closes the listener and ends a waiting Accept.
func (l *limitListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

// limitConn is an accepted connection that gives its slot back when it is first closed. It keeps
// the optional methods of *net.TCPConn that net/http looks for: ReadFrom (a response copied from
// a file or socket) and CloseWrite (the graceful close after an error response).
type limitConn struct {
	net.Conn
	limit    *ConnLimit
	released atomic.Bool
}

var (
	_ io.ReaderFrom = (*limitConn)(nil)
	_ io.WriterTo   = (*limitConn)(nil)
)

// Close closes the connection and, the first time, frees its slot. The connection is closed
// first, so that the next connection is accepted only once this one's descriptor is gone.
func (c *limitConn) Close() error {
	err := c.Conn.Close()
	if c.released.CompareAndSwap(false, true) {
		c.limit.open.Add(-1)
		c.limit.release()
	}
	return err
}

// NetConn returns the accepted connection, as tls.Conn's NetConn does.
func (c *limitConn) NetConn() net.Conn { return c.Conn }

// ReadFrom lets the connection's own ReadFrom (splice or sendfile on a TCP connection) do the
// copy.
func (c *limitConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}

// WriteTo lets the connection's own WriteTo do the copy.
func (c *limitConn) WriteTo(w io.Writer) (int64, error) {
	if wt, ok := c.Conn.(io.WriterTo); ok {
		return wt.WriteTo(w)
	}
	return io.Copy(w, struct{ io.Reader }{c.Conn})
}

// errNoHalfClose is CloseWrite's error when the accepted connection cannot shut down one side.
var errNoHalfClose = errors.New("close write: connection does not support half-close")

// CloseWrite shuts down the writing side of the connection, when it supports that.
func (c *limitConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errNoHalfClose
}

// ConnLimitCollector exposes a ConnLimit to Prometheus at scrape time, so accepting and closing
// connections update no metric of their own.
type ConnLimitCollector struct {
	limit            *ConnLimit
	open, max, waits *prometheus.Desc
}

var _ prometheus.Collector = (*ConnLimitCollector)(nil)

// NewConnLimitCollector returns the collector of limit's metrics, whose names start with prefix
// (such as lobby_interceptor_proxy): <prefix>_open_connections, <prefix>_max_connections and
// <prefix>_connection_waits_total.
func NewConnLimitCollector(prefix string, limit *ConnLimit) *ConnLimitCollector {
	return &ConnLimitCollector{
		limit: limit,
		open: prometheus.NewDesc(prefix+"_open_connections",
			"Client connections accepted and not yet closed, hijacked ones (such as WebSockets) included.", nil, nil),
		max: prometheus.NewDesc(prefix+"_max_connections",
			"Most client connections kept open at once; more wait in the listen backlog. 0 is no cap.", nil, nil),
		waits: prometheus.NewDesc(prefix+"_connection_waits_total",
			"Times the accept loop found every connection slot taken and waited for one to free; connections arriving meanwhile wait in the listen backlog.", nil, nil),
	}
}

// Describe sends the descriptors of the metrics.
func (c *ConnLimitCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.open
	ch <- c.max
	ch <- c.waits
}

// Collect sends the metrics' current values.
func (c *ConnLimitCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(c.open, prometheus.GaugeValue, float64(c.limit.Open()))
	ch <- prometheus.MustNewConstMetric(c.max, prometheus.GaugeValue, float64(c.limit.Max()))
	ch <- prometheus.MustNewConstMetric(c.waits, prometheus.CounterValue, float64(c.limit.Waits()))
}

package server

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

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
	// WriteIdleTimeout, when positive, closes a connection whose client reads nothing of what is
	// written to it for that long (see limitConn.Write). Set it before Listener is called.
	WriteIdleTimeout time.Duration

	max int
	// slots holds one token per open connection; nil when unlimited. Its element type has no
	// size, so a large cap costs no memory.
	slots chan struct{}
	open  atomic.Int64
	waits atomic.Uint64
	// streams is how many HTTP/2 streams hold a slot; refused how many found none (see Streams).
	streams atomic.Int64
	refused atomic.Uint64
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

// OpenStreams is how many HTTP/2 streams hold a slot now.
func (c *ConnLimit) OpenStreams() int64 { return c.streams.Load() }

// RefusedStreams is how many HTTP/2 streams found no slot free and were answered 503.
func (c *ConnLimit) RefusedStreams() uint64 { return c.refused.Load() }

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

// tryAcquire takes a slot if one is free, without waiting.
func (c *ConnLimit) tryAcquire() bool {
	if c.slots == nil {
		return true
	}
	select {
	case c.slots <- struct{}{}:
		return true
	default:
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
	// armed is when the write deadline was last moved, in nanoseconds of the Unix epoch (see
	// Write); an atomic, as a hijacked connection may be written from two goroutines.
	armed atomic.Int64
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

// writeChunk is the most written under one write deadline: progress is seen at least this often,
// so a client that reads slowly but steadily is never taken for one that reads nothing.
const writeChunk = 16 << 10

// Write writes p. With a write idle timeout, each piece of at most writeChunk bytes must be taken
// by the client within the timeout; the deadline moves on with every piece, so a connection
// that makes progress is never cut, however long it lives (a download, SSE, a WebSocket), and
// one whose client stopped reading fails its write and is closed, freeing its slot. net/http
// itself sets no write deadline (the proxy has no WriteTimeout, which would bound whole
// responses), so nothing else moves it.
func (c *limitConn) Write(p []byte) (int, error) {
	d := c.limit.WriteIdleTimeout
	if d <= 0 {
		return c.Conn.Write(p)
	}
	var n int
	for len(p) > 0 {
		if err := c.arm(d); err != nil {
			return n, err
		}
		m, err := c.Conn.Write(p[:min(len(p), writeChunk)])
		n += m
		if err != nil {
			return n, err
		}
		p = p[m:]
	}
	return n, nil
}

// arm moves the write deadline to d from now, unless it was moved less than d/16 ago: a busy
// connection then pays a clock read per write, and a deadline update only every d/16, while the
// idle time allowed stays between 15/16 of d and d.
func (c *limitConn) arm(d time.Duration) error {
	now := time.Now()
	if last := c.armed.Load(); last != 0 && now.UnixNano()-last < int64(d/16) {
		return nil
	}
	c.armed.Store(now.UnixNano())
	return c.Conn.SetWriteDeadline(now.Add(d))
}

// copyBuffers are the buffers of ReadFrom's copy under a write idle timeout.
var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// NetConn returns the accepted connection, as tls.Conn's NetConn does.
func (c *limitConn) NetConn() net.Conn { return c.Conn }

// ReadFrom lets the connection's own ReadFrom (splice or sendfile on a TCP connection) do the
// copy. With a write idle timeout it copies through Write instead: a splice waits for the source
// and writes to the client in one call, so no deadline set before it could tell a source with
// nothing to send (an idle WebSocket) from a client that reads nothing.
func (c *limitConn) ReadFrom(r io.Reader) (int64, error) {
	if c.limit.WriteIdleTimeout > 0 {
		b := copyBuffers.Get().(*[]byte)
		defer copyBuffers.Put(b)
		// Plain wrappers, so that the copy neither comes back here nor hands over to r's WriteTo.
		return io.CopyBuffer(struct{ io.Writer }{c}, struct{ io.Reader }{r}, *b)
	}
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
	limit                              *ConnLimit
	open, max, waits, streams, refused *prometheus.Desc
}

var _ prometheus.Collector = (*ConnLimitCollector)(nil)

// NewConnLimitCollector returns the collector of limit's metrics, whose names start with prefix
// (such as lobby_interceptor_proxy): <prefix>_open_connections, <prefix>_max_connections,
// <prefix>_connection_waits_total, <prefix>_open_streams and <prefix>_refused_streams_total.
func NewConnLimitCollector(prefix string, limit *ConnLimit) *ConnLimitCollector {
	return &ConnLimitCollector{
		limit: limit,
		open: prometheus.NewDesc(prefix+"_open_connections",
			"Client connections accepted and not yet closed, hijacked ones (such as WebSockets) included.", nil, nil),
		max: prometheus.NewDesc(prefix+"_max_connections",
			"Most client connections kept open at once; more wait in the listen backlog. 0 is no cap.", nil, nil),
		waits: prometheus.NewDesc(prefix+"_connection_waits_total",
			"Times the accept loop found every connection slot taken and waited for one to free; connections arriving meanwhile wait in the listen backlog.", nil, nil),
		streams: prometheus.NewDesc(prefix+"_open_streams",
			"HTTP/2 streams running, each holding a slot of the connection cap beside its connection's.", nil, nil),
		refused: prometheus.NewDesc(prefix+"_refused_streams_total",
			"HTTP/2 streams answered 503 because every slot of the connection cap was taken.", nil, nil),
	}
}

// Describe sends the descriptors of the metrics.
func (c *ConnLimitCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.open
	ch <- c.max
	ch <- c.waits
	ch <- c.streams
	ch <- c.refused
}

// Collect sends the metrics' current values.
func (c *ConnLimitCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(c.open, prometheus.GaugeValue, float64(c.limit.Open()))
	ch <- prometheus.MustNewConstMetric(c.max, prometheus.GaugeValue, float64(c.limit.Max()))
	ch <- prometheus.MustNewConstMetric(c.waits, prometheus.CounterValue, float64(c.limit.Waits()))
	ch <- prometheus.MustNewConstMetric(c.streams, prometheus.GaugeValue, float64(c.limit.OpenStreams()))
	ch <- prometheus.MustNewConstMetric(c.refused, prometheus.CounterValue, float64(c.limit.RefusedStreams()))
}

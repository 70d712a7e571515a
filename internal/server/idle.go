package server

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"
)

// ErrBodyIdle is the error of a Read of a request body that got no byte from the client within
// the idle timeout of IdleBody. It is deliberately not a net.Error with Timeout: the client timed
// out, not the app, and a proxy tells the two apart.
var ErrBodyIdle = errors.New("request body made no progress")

// readDeadliner is the part of the ResponseWriters of net/http (HTTP/1.x and HTTP/2) that
// http.ResponseController uses to set a request's read deadline.
type readDeadliner interface {
	SetReadDeadline(deadline time.Time) error
}

// IdleBody returns h with the body of every request that has one cut when it makes no progress:
// a Read of the body that gets no byte from the client for d fails with ErrBodyIdle, and the
// request with it: h answers it, and an HTTP/1.x connection is closed after the answer, freeing
// its slot. The deadline is armed only while a Read waits for the client, and moves on with every
// Read, so a long upload that progresses and a body the app reads slowly are never cut; a client
// that sends headers and then trickles nothing is. gRPC calls are left alone (see isGRPC). d of
// zero or less returns h.
//
// Requests without a body (http.NoBody, as net/http gives for a GET) are passed on as they are,
// so that warm GETs pay nothing; a request with a body pays one small allocation and two
// deadline updates per Read. h must be given the ResponseWriter of net/http, unwrapped.
func IdleBody(h http.Handler, d time.Duration) http.Handler {
	if d <= 0 {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rd, ok := w.(readDeadliner)
		if !ok || r.Body == nil || r.Body == http.NoBody || isGRPC(r) {
			h.ServeHTTP(w, r)
			return
		}
		b := &idleBody{ReadCloser: r.Body, conn: rd, idle: d}
		if r.ProtoMajor == 1 && (r.ContentLength < 0 || r.ContentLength >= bigBody) {
			// Before writing a response, net/http reads what the handler left of a body, unless
			// it is this big (then it closes the connection instead). With the body wrapped it
			// can no longer tell the size and would read up to bigBody of it, under the feet of
			// a proxy still sending it on. Saying now that the connection closes skips that
			// read, as net/http would have; only keep-alive after such a large upload is lost.
			w.Header().Set("Connection", "close")
		}
		r.Body = b
		h.ServeHTTP(w, r)
		// net/http decides after the handler whether the connection can serve another request
		// from what the request's own body says (read to its end, closed early, failed).
		r.Body = b.ReadCloser
		if r.ProtoMajor == 1 && !b.done.Load() {
			// After the handler, net/http reads what is left of a small body to keep the
			// connection; bounded by the same deadline, a client that stopped sending cannot keep
			// it. (The next request's read sets deadlines of its own.)
			_ = rd.SetReadDeadline(time.Now().Add(d))
		}
	})
}

// bigBody is net/http's maxPostHandlerReadBytes: the most of a request body left unread by a
// handler that it reads to keep the connection.
const bigBody = 256 << 10

// isGRPC reports whether r is a gRPC call. Its request body is a stream of messages that a
// bidirectional call may leave silent for as long as the app keeps streaming back; gRPC keeps
// the connection alive with its own pings, and the stream holds one of the connection's streams
// and one slot like any other.
func isGRPC(r *http.Request) bool {
	return r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc")
}

// longAgo is a deadline that has passed: reads fail at once.
var longAgo = time.Unix(1, 0)

// idleBody is a request body whose Reads each get d to see a byte.
type idleBody struct {
	io.ReadCloser
	conn readDeadliner
	idle time.Duration
	// done is set once a Read has returned an error, io.EOF included: the body is over. The
	// reader may be a transport goroutine that outlives the handler, hence an atomic.
	done atomic.Bool
}

// Read reads from the body, with a read deadline of idle from now while it waits. The deadline
// is lifted after each Read: between Reads the app (or the request to it) may take its time, and
// on HTTP/1.x, once the body is read whole, net/http reads the connection in the background to
// notice a client that goes away, which must not time out. After a Read the deadline cut, it is
// left passed: what net/http reads of the connection afterwards fails at once, and it closes the
// connection after the answer instead of waiting for bytes that do not come.
func (b *idleBody) Read(p []byte) (int, error) {
	_ = b.conn.SetReadDeadline(time.Now().Add(b.idle))
	n, err := b.ReadCloser.Read(p)
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		b.done.Store(true)
		_ = b.conn.SetReadDeadline(longAgo)
		return n, fmt.Errorf("%w for %s", ErrBodyIdle, b.idle)
	}
	_ = b.conn.SetReadDeadline(time.Time{})
	if err != nil {
		b.done.Store(true)
	}
	return n, err
}

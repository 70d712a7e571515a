package server

import (
	"io"
	"net/http"
	"time"
)

// readDeadliner is the part of the ResponseWriters of net/http (HTTP/1.x and HTTP/2) that
// http.ResponseController uses to set a request's read deadline.
type readDeadliner interface {
	SetReadDeadline(deadline time.Time) error
}

// IdleBody returns h with the body of every request that has one cut when it makes no progress:
// a Read of the body that gets no byte from the client for d fails, and the request with it (its
// HTTP/1.x connection is closed, its HTTP/2 stream reset), freeing the connection's slot. The
// deadline is armed only while a Read waits for the client, and moves on with every Read, so a
// long upload that progresses, a gRPC client stream and a body the app reads slowly are never
// cut; a client that sends headers and then trickles nothing is. d of zero or less returns h.
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
		if !ok || r.Body == nil || r.Body == http.NoBody {
			h.ServeHTTP(w, r)
			return
		}
		b := &idleBody{ReadCloser: r.Body, conn: rd, idle: d}
		r.Body = b
		h.ServeHTTP(w, r)
		if r.ProtoMajor == 1 && !b.done {
			// After the handler, net/http reads what is left of a small body to keep the
			// connection; bounded by the same deadline, a client that stopped sending cannot keep
			// it. (The next request's read sets deadlines of its own.)
			_ = rd.SetReadDeadline(time.Now().Add(d))
		}
	})
}

// idleBody is a request body whose Reads each get d to see a byte.
type idleBody struct {
	io.ReadCloser
	conn readDeadliner
	idle time.Duration
	// done is set once a Read has returned an error, io.EOF included: the body is over.
	done bool
}

// Read reads from the body, with a read deadline of idle from now while it waits. The deadline
// is lifted after each Read: between Reads the app (or the request to it) may take its time, and
// on HTTP/1.x, once the body is read whole, net/http reads the connection in the background to
// notice a client that goes away, which must not time out.
func (b *idleBody) Read(p []byte) (int, error) {
	_ = b.conn.SetReadDeadline(time.Now().Add(b.idle))
	n, err := b.ReadCloser.Read(p)
	_ = b.conn.SetReadDeadline(time.Time{})
	if err != nil {
		b.done = true
	}
	return n, err
}

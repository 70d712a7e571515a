package server

import "net/http"

// Streams returns h with every HTTP/2 request taking a slot of the limit, beside its connection's,
// for as long as it runs. A stream that finds every slot taken is answered 503 with Retry-After at
// once, and counted (RefusedStreams): the answer a full hold queue gives, which clients and
// ingresses retry.
//
// The connection cap sizes memory by connections, each carrying one request at a time, as
// HTTP/1.1 does. An HTTP/2 connection carries up to its MaxConcurrentStreams requests at once,
// each with its own goroutine and buffers, so one client could hold thousands of requests on a
// single slot. Counting every stream in the same pool keeps connections and streams together
// within what the memory limit holds: streams take slots that new connections would otherwise
// get, and connections wait in the backlog while streams run. The connection's own slot covers
// its reader and writer goroutines and frame buffers, which cost more than an HTTP/1.1
// connection's. HTTP/1.x requests pass straight through; the cost on an HTTP/2 request is one
// non-blocking channel operation at its start and one at its end.
func (c *ConnLimit) Streams(h http.Handler) http.Handler {
	if c.slots == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor != 2 {
			h.ServeHTTP(w, r)
			return
		}
		if !c.tryAcquire() {
			c.refused.Add(1)
			hd := w.Header()
			hd.Set("Content-Type", "text/plain; charset=utf-8")
			hd.Set("X-Content-Type-Options", "nosniff")
			hd.Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("service unavailable: too many requests in progress\n"))
			return
		}
		c.streams.Add(1)
		defer func() {
			c.streams.Add(-1)
			c.release()
		}()
		h.ServeHTTP(w, r)
	})
}

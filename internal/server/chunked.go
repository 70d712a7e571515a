package server

import "net/http"

// CloseAfterChunked returns h, except that the connection of an HTTP/1.x request with a
// Transfer-Encoding is closed after its response.
//
// A request that carries both Content-Length and Transfer-Encoding is the classic request
// smuggling vector: a proxy in front that frames the body by Content-Length sends, inside what it
// takes for a body, bytes that a server framing by Transfer-Encoding reads as a second request
// on the same connection. net/http accepts such a request, frames it by Transfer-Encoding and
// drops the Content-Length, as RFC 9112 section 6.3 allows, but keeps the connection open,
// where the RFC says the server MUST close it after responding. The handler cannot tell the two
// cases apart (the Content-Length is gone by the time it runs), so every request with a chunked
// body gets its connection closed: the bytes after the body are never parsed as a request.
// Chunked request bodies are rare behind an ingress (nginx buffers bodies and sends a
// Content-Length), so the lost keep-alive costs little. HTTP/2 frames bodies itself and is left
// alone.
func CloseAfterChunked(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 1 && len(r.TransferEncoding) > 0 {
			// net/http closes the connection after a response that says so.
			w.Header().Set("Connection", "close")
		}
		h.ServeHTTP(w, r)
	})
}

// ByBody returns a handler that sends HTTP/1.x requests without a body straight to plain and
// every other request to guarded, which is plain behind the wrappers that only such requests need
// (Streams, IdleBody, CloseAfterChunked each pass a bodiless HTTP/1.x request on untouched).
//
// It keeps those wrappers' frames off the stack of nearly every request an interceptor holds (a
// GET from the ingress): a held request waits on its connection's goroutine, whose stack starts
// at 8 KiB and doubles, for as long as it is held, once the frames under the hold outgrow that.
// One small frame here instead of three keeps it on its first 8 KiB.
func ByBody(plain, guarded http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 1 && (r.Body == nil || r.Body == http.NoBody) {
			plain.ServeHTTP(w, r)
			return
		}
		guarded.ServeHTTP(w, r)
	})
}

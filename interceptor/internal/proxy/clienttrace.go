package proxy

import (
	"net/http"
	"net/http/httptrace"
)

// watchWrites has the transport tell x when r has been written whole to a connection
// (Exchange.sent, through the WroteRequest hook of x's pooled trace). httputil.ReverseProxy gives
// every outbound request a ClientTrace of its own (for 1xx responses), which the transport reads:
// setting that trace's WroteRequest costs no allocation, where httptrace.WithClientTrace would
// allocate a context and merge the two traces by reflection. A request without such a trace gets
// a context with one. TestWatchWrites fails if the reverse proxy stops giving one.
func watchWrites(r *http.Request, x *Exchange) *http.Request {
	if t := httptrace.ContextClientTrace(r.Context()); t != nil && t.WroteRequest == nil {
		t.WroteRequest = x.trace.WroteRequest
		return r
	}
	// A fresh trace: WithClientTrace merges the trace in the context into the one it is given,
	// which must not be the Exchange's pooled one.
	return r.WithContext(httptrace.WithClientTrace(r.Context(), &httptrace.ClientTrace{WroteRequest: x.trace.WroteRequest}))
}

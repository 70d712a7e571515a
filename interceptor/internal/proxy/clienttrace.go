package proxy

import (
	"context"
	"net/http/httptrace"
)

// clientTraceKey is the key under which net/http/httptrace finds a request's ClientTrace in its
// context. The package does not export it; asking a context that records the key it is asked
// for learns it. A forward answers it itself (forward.Value) with the Exchange's pooled trace,
// whose WroteRequest hook sets Exchange.sent: httptrace.WithClientTrace would allocate a context
// and more for every request. TestClientTraceKey fails if net/http/httptrace stops finding the
// trace this way.
var clientTraceKey = func() any {
	var p keyProbe
	httptrace.ContextClientTrace(&p)
	return p.key
}()

// keyProbe is a context that records the last key it was asked for.
type keyProbe struct {
	context.Context
	key any
}

func (p *keyProbe) Value(key any) any {
	p.key = key
	return nil
}

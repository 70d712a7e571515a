package proxy

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"testing"
)

// TestClientTraceKey checks what the forwarder assumes of net/http/httptrace, whose context key it
// learns by asking a context (clientTraceKey): that one key is asked for, that it is the key
// WithClientTrace stores the trace under, and that the transport, given a forward as the
// request's context, calls the Exchange's trace. If a Go release changes how httptrace finds a
// trace, this test fails, and Exchange.sent must be found some other way.
func TestClientTraceKey(t *testing.T) {
	if clientTraceKey == nil {
		t.Fatal("httptrace.ContextClientTrace asked its context for no key: the forwarder cannot answer it")
	}
	want := &httptrace.ClientTrace{}
	ctx := httptrace.WithClientTrace(context.Background(), want)
	if got, _ := ctx.Value(clientTraceKey).(*httptrace.ClientTrace); got != want {
		t.Fatalf("the context of httptrace.WithClientTrace holds %p under the learnt key %v, want its trace %p", got, clientTraceKey, want)
	}

	x := exchanges.Get().(*Exchange)
	defer exchanges.Put(x)
	fw := &forward{Context: context.Background(), x: x}
	if tr := httptrace.ContextClientTrace(fw); tr == nil || tr != x.trace {
		t.Fatalf("httptrace.ContextClientTrace(forward) = %p, want the exchange's trace %p", tr, x.trace)
	}

	tests := []struct {
		name     string
		info     httptrace.WroteRequestInfo
		wantSent bool
	}{
		{"a failed write does not mark the request sent", httptrace.WroteRequestInfo{Err: io.ErrClosedPipe}, false},
		{"a whole write marks the request sent", httptrace.WroteRequestInfo{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			x.sent.Store(false)
			x.trace.WroteRequest(tt.info)
			if got := x.sent.Load(); got != tt.wantSent {
				t.Errorf("sent = %v, want %v", got, tt.wantSent)
			}
		})
	}

	t.Run("the transport marks a request written to the upstream as sent", func(t *testing.T) {
		backend := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
		defer backend.Close()
		x.sent.Store(false)
		req, err := http.NewRequestWithContext(&forward{Context: t.Context(), x: x}, http.MethodGet, backend.URL, nil)
		if err != nil {
			t.Fatal(err)
		}
		tr := &http.Transport{}
		defer tr.CloseIdleConnections()
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if !x.sent.Load() {
			t.Error("the transport did not call the exchange's trace: Exchange.sent is never set")
		}
	})
}

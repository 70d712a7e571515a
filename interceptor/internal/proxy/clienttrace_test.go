package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/http/httputil"
	"net/url"
	"testing"
)

// roundTripFunc adapts a function to http.RoundTripper.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestWatchWrites checks that the transport marks a request written whole as sent, through the
// trace the reverse proxy gives the request (the cheap way), and through a context of its own
// when the request has none.
func TestWatchWrites(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer backend.Close()
	target, _ := url.Parse(backend.URL)
	transport := &http.Transport{}
	defer transport.CloseIdleConnections()

	x := exchanges.Get().(*Exchange)
	defer exchanges.Put(x)

	t.Run("a request of the reverse proxy carries a trace whose hook is set in place", func(t *testing.T) {
		x.sent.Store(false)
		var traced bool
		rp := &httputil.ReverseProxy{
			Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(target) },
			Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
				traced = httptrace.ContextClientTrace(r.Context()) != nil
				w := watchWrites(r, x)
				if w != r {
					t.Error("watchWrites made a new request for a request of the reverse proxy")
				}
				return transport.RoundTrip(w)
			}),
		}
		rec := httptest.NewRecorder()
		rp.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://app.test/", nil))
		if !traced {
			t.Error("httputil.ReverseProxy no longer gives its requests a ClientTrace: watchWrites allocates a context per request")
		}
		if !x.sent.Load() {
			t.Errorf("the request was answered %d but not marked sent", rec.Code)
		}
	})

	t.Run("a request without a trace gets one", func(t *testing.T) {
		x.sent.Store(false)
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, backend.URL, nil)
		resp, err := transport.RoundTrip(watchWrites(req, x))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if !x.sent.Load() {
			t.Error("the request was answered but not marked sent")
		}
		if x.trace.GotConn != nil || x.trace.Got1xxResponse != nil {
			t.Error("the pooled trace of the Exchange gained hooks")
		}
	})

	t.Run("a failed write does not mark the request sent", func(t *testing.T) {
		x.sent.Store(false)
		x.trace.WroteRequest(httptrace.WroteRequestInfo{Err: io.ErrClosedPipe})
		if x.sent.Load() {
			t.Error("a failed write marked the request sent")
		}
	})
}

package proxy_test

import (
	"context"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/go-logr/logr/testr"

	"github.com/lobby-http/lobby/interceptor/internal/proxy"
)

// TestReleasedRequestsFindConnectionsOpenedAhead releases held requests with one dial at a time
// allowed, so that without connections opened ahead the first request would reach the pod after
// a connection or two.
func TestReleasedRequestsFindConnectionsOpenedAhead(t *testing.T) {
	const n = 20
	var dials atomic.Int64
	e := newEnvWith(t, testr.New(t), proxy.ForwarderOptions{MaxDialsPerHost: 1, Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}})
	var once sync.Once
	var atFirst atomic.Int64
	e.backend("10.0.0.1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		once.Do(func() { atFirst.Store(dials.Load()) })
		_, _ = w.Write([]byte("ok"))
	}))
	route := e.route("app.test", "app", nil)

	var results []<-chan result
	for range n {
		results = append(results, e.fetchAsync(t.Context(), "app.test"))
	}
	eventually(t, "the requests are held", func() bool { h, _, _ := countsOf(route); return h == n })
	e.ready("app", "10.0.0.1")
	for _, ch := range results {
		if r := <-ch; r.err != nil || r.code != http.StatusOK {
			t.Fatalf("response = %d (%v), want 200", r.code, r.err)
		}
	}
	if got := atFirst.Load(); got < n {
		t.Errorf("the pod got its first request after %d connections were opened, want all %d opened ahead of the release", got, n)
	}
	if got := dials.Load(); got > n {
		t.Errorf("%d connections opened for %d requests, want no more than one each", got, n)
	}
}

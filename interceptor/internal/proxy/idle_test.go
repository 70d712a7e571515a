package proxy_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/lobby-http/lobby/interceptor/internal/proxy"
	"github.com/lobby-http/lobby/internal/server"
)

func TestStalledRequestBodyIsTheClientsTimeout(t *testing.T) {
	const idle = 200 * time.Millisecond
	// The stage applies the body idle deadline as main does in front of the chain; inside the
	// chain the ResponseWriter is still net/http's, which IdleBody needs.
	stage := func(next proxy.ForwardHandler) proxy.ForwardHandler {
		return proxy.ForwardFunc(func(w http.ResponseWriter, r *http.Request, x *proxy.Exchange) (outcome proxy.Outcome, err error) {
			server.IdleBody(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { outcome, err = next.Forward(w, r, x) }), idle).ServeHTTP(w, r)
			return outcome, err
		})
	}
	e := newEnvChain(t, testr.New(t), proxy.ForwarderOptions{}, stage)
	e.backend("10.0.0.1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
	}))
	e.route("app.test", "app", nil)
	e.ready("app", "10.0.0.1")

	pr, pw := io.Pipe()
	defer pw.Close()
	go func() { _, _ = pw.Write([]byte("abc")) }() // then nothing more
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, e.proxy.URL+"/", pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Host, req.ContentLength = "app.test", 10
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(b), "request body stopped arriving") {
		t.Fatalf("a stalled body got %d %q, want 408 saying the body stopped arriving", resp.StatusCode, b)
	}
	// The app did nothing wrong: no upstream error is counted.
	if n := testutil.CollectAndCount(e.prom, "lobby_interceptor_upstream_errors_total"); n != 0 {
		t.Errorf("%d upstream error series after a stalled client body, want none", n)
	}
}

package proxy

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/lobby-http/lobby/interceptor/internal/counts"
	"github.com/lobby-http/lobby/interceptor/internal/endpoints"
	"github.com/lobby-http/lobby/interceptor/internal/routing"
)

// oneRoute routes every request to its route.
type oneRoute struct{ r *routing.Route }

func (o oneRoute) Route(*http.Request) *routing.Route { return o.r }

// TestRefusedDialAfterTheBodyWasReadIsNotHeldAgain checks the rule that only a request whose body
// is untouched goes back to waiting. net/http's transport reads a request body only on a
// connection it has, so a failed dial leaves the body unread; the dialer here reads from it
// anyway, as a transport that did otherwise would, to show that such a request gets 502.
func TestRefusedDialAfterTheBodyWasReadIsNotHeldAgain(t *testing.T) {
	log := testr.New(t)
	target := endpoints.NewTarget("ns", "app", 80, "")
	target.Publish(endpoints.HTTP1, []netip.AddrPort{netip.MustParseAddrPort("10.0.0.1:8080")})
	reg := prometheus.NewPedanticRegistry()
	metrics, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	route := &routing.Route{
		Key: "ns/app", Namespace: "ns", Name: "app", Target: target,
		ColdStartTimeout: 10 * time.Second, ResponseHeaderTimeout: 10 * time.Second, MaxPending: 10,
		Counts: counts.NewRegistry(nil, nil).Route("ns/app", time.Minute, time.Second),
	}
	fwd, err := NewForwarder(ForwarderOptions{Log: log, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		if fw, _ := ctx.Value(exchangeKey{}).(*forward); fw != nil && fw.body != nil {
			_, _ = fw.body.Read(make([]byte, 1))
		}
		return nil, &net.OpError{Op: "dial", Net: network, Err: syscall.ECONNREFUSED}
	}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(Route(oneRoute{route}, metrics, log, nil, nil, fwd, Count(Wait(nil, fwd))))
	t.Cleanup(srv.Close)

	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL, strings.NewReader("payload"))
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway || string(b) != "bad gateway\n" {
		t.Fatalf("response = %d %q, want 502", resp.StatusCode, b)
	}
	if n := testutil.ToFloat64(metrics.requeues.WithLabelValues("ns/app")); n != 0 {
		t.Errorf("requeues = %v, want none", n)
	}
	if !target.Snapshot().Endpoints[0].Suspect() {
		t.Errorf("the refusing endpoint is not suspect")
	}
}

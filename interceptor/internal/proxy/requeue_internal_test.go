package proxy

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

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
	store := endpoints.NewStore(log)
	target := store.Target("ns", "app", 80, "")
	store.UpdateService(&corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "app"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP}}},
	})
	port, name := int32(8080), ""
	store.UpdateSlice(&discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "ns", Name: "app-1", Labels: map[string]string{discoveryv1.LabelServiceName: "app"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port}},
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.0.0.1"}}},
	})
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

//go:build e2e

package system

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/lobby-http/lobby/e2e/deploy"
	"github.com/lobby-http/lobby/e2e/framework/poll"
	"github.com/lobby-http/lobby/internal/externalscaler"
	"github.com/lobby-http/lobby/operator/api/v1alpha1"
)

func TestWebSocketAndGRPCFromZero(t *testing.T) {
	ns := testNamespace(t)
	deployApp(t, ns, appSpec{name: "ws", env: map[string]string{"STARTUP_DELAY": "500ms"},
		hso: v1alpha1.HTTPScaledObjectSpec{Hosts: []string{"ws.example.com"}}})
	deployApp(t, ns, appSpec{name: "grpc", env: map[string]string{"STARTUP_DELAY": "500ms", "GRPC_PORT": "9000"},
		portName: "grpc", targetPort: 9000, hso: v1alpha1.HTTPScaledObjectSpec{Hosts: []string{"grpc.example.com"}}})

	t.Run("A WebSocket handshake through nginx wakes its app and echoes messages.", func(t *testing.T) {
		u, _ := url.Parse(suite.ingress.URL)
		conn, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(60 * time.Second))
		cfg, err := websocket.NewConfig("ws://ws.example.com/ws", "http://ws.example.com/")
		if err != nil {
			t.Fatal(err)
		}
		ws, err := websocket.NewClient(cfg, conn)
		if err != nil {
			t.Fatalf("WebSocket handshake through nginx and the interceptor: %v", err)
		}
		for _, msg := range []string{"hello", "from", "zero"} {
			if err := websocket.Message.Send(ws, msg); err != nil {
				t.Fatal(err)
			}
			var got string
			if err := websocket.Message.Receive(ws, &got); err != nil {
				t.Fatal(err)
			}
			if got != msg {
				t.Fatalf("echo = %q, want %q", got, msg)
			}
		}
	})

	t.Run("A gRPC call over h2c wakes its app.", func(t *testing.T) {
		// ingress-nginx needs backend-protocol GRPC and an HTTP/2 listener for gRPC; the suite's
		// nginx speaks HTTP/1.1, so the call goes to an interceptor directly, as such an
		// ingress would send it.
		in := suite.lobby.Instances("interceptor")[0]
		cc, err := grpc.NewClient(in.Addr.String()+":"+fmt.Sprint(in.Ports["http"]),
			grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority("grpc.example.com"))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
		defer cancel()
		resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			t.Fatalf("gRPC health check through the interceptor: %v", err)
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("health = %v, want SERVING", resp.GetStatus())
		}
	})
}

// scalerConcurrency asks one scaler for the object's metric value.
func scalerConcurrency(ctx context.Context, in *deploy.Instance, ns, name string) (float64, error) {
	cc, err := grpc.NewClient(in.Addr.String()+":"+fmt.Sprint(in.Ports["grpc"]), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return 0, err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	sc := externalscaler.NewExternalScalerClient(cc)
	ref := &externalscaler.ScaledObjectRef{Name: name, Namespace: ns, ScalerMetadata: map[string]string{"httpScaledObject": name}}
	spec, err := sc.GetMetricSpec(ctx, ref)
	if err != nil {
		return 0, err
	}
	if len(spec.GetMetricSpecs()) != 1 {
		return 0, fmt.Errorf("GetMetricSpec gave %d metrics, want 1", len(spec.GetMetricSpecs()))
	}
	m, err := sc.GetMetrics(ctx, &externalscaler.GetMetricsRequest{ScaledObjectRef: ref, MetricName: spec.GetMetricSpecs()[0].GetMetricName()})
	if err != nil {
		return 0, err
	}
	if len(m.GetMetricValues()) != 1 {
		return 0, fmt.Errorf("GetMetrics gave %d values, want 1", len(m.GetMetricValues()))
	}
	return m.GetMetricValues()[0].GetMetricValueFloat(), nil
}

func TestTwoInterceptorsTwoScalers(t *testing.T) {
	ns := testNamespace(t)
	a := deployApp(t, ns, appSpec{name: "fleet", env: map[string]string{"STARTUP_DELAY": "8s"},
		hso: v1alpha1.HTTPScaledObjectSpec{Hosts: []string{"fleet.example.com"}}})
	ctx := t.Context()
	ins := suite.lobby.Instances("interceptor")
	if len(ins) < 2 {
		t.Fatalf("the suite runs %d interceptors, want 2", len(ins))
	}
	first, second := ins[0], ins[1]
	held := make(chan []response, 2)
	go func() { held <- sendMany(ctx, 3, first.URL("http")+"/", "fleet.example.com") }()
	go func() { held <- sendMany(ctx, 2, second.URL("http")+"/", "fleet.example.com") }()

	// Every scaler sees the sum over both interceptors.
	if err := poll.Until(t.Context(), 5*time.Second, "both scalers to report 5 held requests", func() error {
		for _, s := range suite.lobby.Instances("scaler") {
			v, err := scalerConcurrency(ctx, s, a.ns, a.name)
			if err != nil {
				return err
			}
			if v != 5 {
				return fmt.Errorf("%s reports %v", s.Process.Name, v)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// The second interceptor leaves while its requests are held: they keep their deadlines and
	// are answered during the drain; the first one's are untouched.
	stopped := make(chan error, 1)
	go func() { stopped <- suite.lobby.Stop(context.Background(), second) }()
	if err := poll.Until(t.Context(), 10*time.Second, "the scalers to drop the stopped interceptor's share", func() error {
		for _, s := range suite.lobby.Instances("scaler") {
			v, err := scalerConcurrency(ctx, s, a.ns, a.name)
			if err != nil {
				return err
			}
			if v != 3 {
				return fmt.Errorf("%s reports %v", s.Process.Name, v)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		checkAll(t, "requests held across the interceptor's exit", <-held, http.StatusOK)
	}
	if err := <-stopped; err != nil {
		t.Errorf("the stopped interceptor did not exit cleanly: %v", err)
	}

	// A replacement joins; the scalers pick it up and nginx sends to it.
	if _, err := suite.lobby.Start(ctx, "interceptor"); err != nil {
		t.Fatal(err)
	}
	if err := suite.ingress.reload(); err != nil {
		t.Fatal(err)
	}
	if err := poll.Until(t.Context(), 10*time.Second, "the scalers to answer for the new fleet", func() error {
		for _, s := range suite.lobby.Instances("scaler") {
			if _, err := scalerConcurrency(ctx, s, a.ns, a.name); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	checkAll(t, "requests after the replacement", sendMany(ctx, 10, suite.ingress.URL+"/", "fleet.example.com"), http.StatusOK)
}

// reload rewrites nginx's upstreams to the current interceptors and has nginx reload them.
func (in *ingress) reload() error {
	conf, err := in.render()
	if err != nil {
		return err
	}
	old, _ := os.ReadFile(in.conf)
	if bytes.Equal(old, conf) {
		return nil
	}
	if err := os.WriteFile(in.conf, conf, 0o644); err != nil {
		return err
	}
	return syscall.Kill(in.proc.PID(), syscall.SIGHUP)
}

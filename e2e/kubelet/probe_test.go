package kubelet

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/lobby-http/lobby/e2e/framework/poll"
)

func TestProbeCounter(t *testing.T) {
	tests := []struct {
		name             string
		kind             string
		success, failure int32
		outcomes         []bool
		want             []probeResult // result after each outcome
	}{
		{"readiness starts failed and passes on the first success", probeReadiness, 0, 0,
			[]bool{true, false, false, false, true},
			[]probeResult{resultSuccess, resultSuccess, resultSuccess, resultFailure, resultSuccess}},
		{"liveness fails only after failureThreshold consecutive failures", probeLiveness, 1, 2,
			[]bool{false, true, false, false},
			[]probeResult{resultSuccess, resultSuccess, resultSuccess, resultFailure}},
		{"successThreshold needs consecutive successes", probeReadiness, 2, 1,
			[]bool{true, false, true, true},
			[]probeResult{resultFailure, resultFailure, resultFailure, resultSuccess}},
		{"a startup probe is undecided until a threshold is reached", probeStartup, 1, 3,
			[]bool{false, false, false},
			[]probeResult{resultUnknown, resultUnknown, resultFailure}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newProbeCounter(&corev1.Probe{SuccessThreshold: tt.success, FailureThreshold: tt.failure}, initialResult(tt.kind))
			for i, ok := range tt.outcomes {
				if got, _ := c.observe(ok); got != tt.want[i] {
					t.Fatalf("after outcome %d (%v): result %v, want %v", i, ok, got, tt.want[i])
				}
			}
		})
	}
}

// waitForWaiter waits until the prober under test sleeps on the fake clock.
func waitForWaiter(t *testing.T, clk *clocktesting.FakeClock) {
	t.Helper()
	err := poll.Until(t.Context(), 5*time.Second, "the prober to wait on the clock", func() error {
		if !clk.HasWaiters() {
			return errors.New("no waiter on the fake clock")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestProberTiming(t *testing.T) {
	t.Run("the prober waits initialDelaySeconds, then probes once per periodSeconds", func(t *testing.T) {
		clk := clocktesting.NewFakeClock(time.Unix(1000, 0))
		var mu sync.Mutex
		calls := 0
		changes := make(chan bool, 10)
		p := &prober{
			kind:  probeReadiness,
			probe: &corev1.Probe{InitialDelaySeconds: 5, PeriodSeconds: 2, FailureThreshold: 1},
			clock: clk,
			check: func(context.Context) error {
				mu.Lock()
				defer mu.Unlock()
				calls++
				if calls == 2 {
					return errors.New("down")
				}
				return nil
			},
			onChange: func(ok bool, _ error) { changes <- ok },
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { p.run(ctx); close(done) }()
		count := func() int { mu.Lock(); defer mu.Unlock(); return calls }

		waitForWaiter(t, clk)
		clk.Step(4 * time.Second)
		if n := count(); n != 0 {
			t.Fatalf("probed %d times before initialDelaySeconds", n)
		}
		clk.Step(time.Second) // initial delay over: first probe, ready
		if got := <-changes; !got {
			t.Fatal("first change should be to ready")
		}
		waitForWaiter(t, clk)
		if n := count(); n != 1 {
			t.Fatalf("probed %d times after the initial delay, want 1", n)
		}
		clk.Step(2 * time.Second) // second probe fails; failureThreshold 1 → not ready
		if got := <-changes; got {
			t.Fatal("second change should be to not ready")
		}
		waitForWaiter(t, clk)
		clk.Step(2 * time.Second)
		if got := <-changes; !got {
			t.Fatal("third change should be to ready again")
		}
		waitForWaiter(t, clk)
		if n := count(); n != 3 {
			t.Fatalf("probed %d times after three periods, want 3", n)
		}
		cancel()
		<-done
	})
}

func TestProbeCheck(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			if r.Header.Get("X-Probe") != "yes" || r.Host != "app.example" {
				w.WriteHeader(http.StatusBadRequest)
			}
		case "/redirect":
			http.Redirect(w, r, "/ok", http.StatusFound)
		default:
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	host, portStr, _ := net.SplitHostPort(srv.Listener.Addr().String())
	port, _ := strconv.Atoi(portStr)
	target := probeTarget{podIP: host, ports: []corev1.ContainerPort{{Name: "http", ContainerPort: int32(port)}}}
	headers := []corev1.HTTPHeader{{Name: "X-Probe", Value: "yes"}, {Name: "Host", Value: "app.example"}}
	httpProbe := func(path string, p intstr.IntOrString) *corev1.Probe {
		return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: p, HTTPHeaders: headers}}}
	}
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	closedPort := closed.Addr().(*net.TCPAddr).Port
	_ = closed.Close()

	tests := []struct {
		name  string
		probe *corev1.Probe
		ok    bool
	}{
		{"an HTTP probe with a named port and headers succeeds on 200", httpProbe("/ok", intstr.FromString("http")), true},
		{"an HTTP probe counts 503 as a failure", httpProbe("/down", intstr.FromInt32(int32(port))), false},
		{"a TCP probe to a listening port succeeds", &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(int32(port))}}}, true},
		{"a TCP probe to a closed port fails", &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(int32(closedPort)), Host: "127.0.0.1"}}}, false},
		{"an exec probe succeeds when the command exits 0", &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"true"}}}}, true},
		{"an exec probe fails when the command exits non-zero", &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"false"}}}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			check, err := probeCheck(tt.probe, target)
			if err != nil {
				t.Fatal(err)
			}
			if err := check(t.Context()); (err == nil) != tt.ok {
				t.Errorf("check err = %v, want success %v", err, tt.ok)
			}
		})
	}
	t.Run("a port name the container lacks is an error", func(t *testing.T) {
		if _, err := probeCheck(httpProbe("/", intstr.FromString("metrics")), target); err == nil {
			t.Error("probeCheck accepted an unknown port name")
		}
	})
}

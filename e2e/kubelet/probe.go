package kubelet

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/clock"
)

// Probe kinds, as the kubelet names them in events and logs.
const (
	probeReadiness = "readiness"
	probeLiveness  = "liveness"
	probeStartup   = "startup"
)

// probeResult is a probe's result: unknown before a startup probe has decided anything.
type probeResult int8

// Probe results.
const (
	resultUnknown probeResult = iota
	resultSuccess
	resultFailure
)

// initialResult is the result of a probe of kind before its first run, as the kubelet has it:
// a container is not ready until its readiness probe passed, alive until its liveness probe
// failed, and neither started nor failed until its startup probe decided.
func initialResult(kind string) probeResult {
	switch kind {
	case probeReadiness:
		return resultFailure
	case probeLiveness:
		return resultSuccess
	default:
		return resultUnknown
	}
}

// probeCounter turns single probe outcomes into a result the way the kubelet does: the result
// becomes success after successThreshold consecutive successes and failure after
// failureThreshold consecutive failures.
type probeCounter struct {
	successThreshold, failureThreshold int
	successes, failures                int
	result                             probeResult
}

// newProbeCounter returns a counter for p starting at initial, with Kubernetes' defaults for
// thresholds left at zero.
func newProbeCounter(p *corev1.Probe, initial probeResult) *probeCounter {
	return &probeCounter{
		successThreshold: int(orDefault(p.SuccessThreshold, 1)),
		failureThreshold: int(orDefault(p.FailureThreshold, 3)),
		result:           initial,
	}
}

// observe records one outcome and reports the result and whether it changed.
func (c *probeCounter) observe(ok bool) (result probeResult, changed bool) {
	if ok {
		c.failures = 0
		c.successes++
		if c.result != resultSuccess && c.successes >= c.successThreshold {
			c.result = resultSuccess
			return c.result, true
		}
		return c.result, false
	}
	c.successes = 0
	c.failures++
	if c.result != resultFailure && c.failures >= c.failureThreshold {
		c.result = resultFailure
		return c.result, true
	}
	return c.result, false
}

// prober runs one probe of one container until its context ends.
type prober struct {
	kind  string
	probe *corev1.Probe
	clock clock.Clock
	// check performs one probe; a nil error is a success.
	check func(ctx context.Context) error
	// onChange is called from the prober's goroutine each time the result flips; err is the
	// last check's error (nil on success).
	onChange func(result bool, err error)
}

// run waits initialDelaySeconds, then probes every periodSeconds, each probe bounded by
// timeoutSeconds, until ctx ends. A startup probe stops once it has decided.
func (p *prober) run(ctx context.Context) {
	counter := newProbeCounter(p.probe, initialResult(p.kind))
	if d := seconds(p.probe.InitialDelaySeconds, 0); d > 0 {
		select {
		case <-ctx.Done():
			return
		case <-p.clock.After(d):
		}
	}
	period := seconds(p.probe.PeriodSeconds, 10)
	timeout := seconds(p.probe.TimeoutSeconds, 1)
	for {
		checkCtx, cancel := context.WithTimeout(ctx, timeout)
		err := p.check(checkCtx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if result, changed := counter.observe(err == nil); changed {
			p.onChange(result == resultSuccess, err)
			if p.kind == probeStartup {
				// A startup probe decides once: started, or failed and the container restarts.
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-p.clock.After(period):
		}
	}
}

// probeTarget is what a probe handler needs to know about the container it probes.
type probeTarget struct {
	podIP string
	ports []corev1.ContainerPort
	env   []string
}

// probeCheck returns the check function for the handler of p.
func probeCheck(p *corev1.Probe, target probeTarget) (func(ctx context.Context) error, error) {
	switch h := p.ProbeHandler; {
	case h.HTTPGet != nil:
		port, err := resolvePort(h.HTTPGet.Port, target.ports)
		if err != nil {
			return nil, err
		}
		return httpCheck(h.HTTPGet, target.podIP, port), nil
	case h.TCPSocket != nil:
		port, err := resolvePort(h.TCPSocket.Port, target.ports)
		if err != nil {
			return nil, err
		}
		host := h.TCPSocket.Host
		if host == "" {
			host = target.podIP
		}
		addr := net.JoinHostPort(host, strconv.Itoa(port))
		return func(ctx context.Context) error {
			var d net.Dialer
			conn, err := d.DialContext(ctx, "tcp", addr)
			if err != nil {
				return err
			}
			return conn.Close()
		}, nil
	case h.GRPC != nil:
		addr := net.JoinHostPort(target.podIP, strconv.Itoa(int(h.GRPC.Port)))
		service := ""
		if h.GRPC.Service != nil {
			service = *h.GRPC.Service
		}
		return func(ctx context.Context) error { return grpcCheck(ctx, addr, service) }, nil
	case h.Exec != nil:
		if len(h.Exec.Command) == 0 {
			return nil, errors.New("exec probe has an empty command")
		}
		command := h.Exec.Command
		return func(ctx context.Context) error {
			cmd := exec.CommandContext(ctx, command[0], command[1:]...)
			cmd.Env = target.env
			cmd.Dir = "/"
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("%w: %s", err, truncate(out, 200))
			}
			return nil
		}, nil
	}
	return nil, errors.New("probe names no handler (httpGet, tcpSocket, grpc or exec)")
}

// httpCheck probes like the kubelet: GET with its headers, success for statuses 200–399.
func httpCheck(g *corev1.HTTPGetAction, podIP string, port int) func(ctx context.Context) error {
	host := g.Host
	if host == "" {
		host = podIP
	}
	scheme := "http"
	if g.Scheme == corev1.URISchemeHTTPS {
		scheme = "https"
	}
	path := g.Path
	if path == "" || path[0] != '/' {
		path = "/" + path
	}
	url := scheme + "://" + net.JoinHostPort(host, strconv.Itoa(port)) + path
	client := &http.Client{Transport: &http.Transport{
		DisableKeepAlives: true,
		// The kubelet does not verify the certificates of HTTPS probes either.
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // as the kubelet does
	}}
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		req.Header.Set("User-Agent", "kube-probe/1.36")
		req.Header.Set("Accept", "*/*")
		for _, h := range g.HTTPHeaders {
			if http.CanonicalHeaderKey(h.Name) == "Host" {
				req.Host = h.Value
				continue
			}
			req.Header.Add(h.Name, h.Value)
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode >= 400 {
			return fmt.Errorf("HTTP probe failed with statuscode: %d", resp.StatusCode)
		}
		return nil
	}
}

// grpcCheck calls grpc.health.v1.Health/Check over plaintext HTTP/2.
func grpcCheck(ctx context.Context, addr, service string) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		return err
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("service unhealthy (responded with %q)", resp.GetStatus())
	}
	return nil
}

// resolvePort turns a probe port, a number or the name of a container port, into a number.
func resolvePort(port intstr.IntOrString, ports []corev1.ContainerPort) (int, error) {
	if port.Type == intstr.Int {
		if port.IntVal <= 0 || port.IntVal > 65535 {
			return 0, fmt.Errorf("probe port %d is out of range", port.IntVal)
		}
		return int(port.IntVal), nil
	}
	for _, p := range ports {
		if p.Name == port.StrVal {
			return int(p.ContainerPort), nil
		}
	}
	if n, err := strconv.Atoi(port.StrVal); err == nil && n > 0 && n <= 65535 {
		return n, nil
	}
	return 0, fmt.Errorf("probe port %q names no port of the container", port.StrVal)
}

func seconds(v int32, def int32) time.Duration {
	return time.Duration(orDefault(v, def)) * time.Second
}

func orDefault(v, def int32) int32 {
	if v <= 0 {
		return def
	}
	return v
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "…"
	}
	return string(b)
}

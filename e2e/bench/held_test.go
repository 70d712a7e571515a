package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/lobby-http/lobby/e2e/framework/poll"
)

const (
	// heldRequests is how many requests are held at once.
	heldRequests = 10000
	// sources is how many source addresses the held requests' connections are spread over, so
	// that no address pair runs short of ephemeral ports.
	sources = 4
	// dialing bounds the connections being opened at once, below the listen backlog.
	dialing = 256
)

// BenchmarkHeldMemory holds 10,000 requests, one per connection, in the interceptor binary (for
// a route whose app has no ready endpoint) and in a bare net/http server process whose handler
// blocks them on a channel, and compares the growth of each process's resident set (VmRSS
// before the requests, and while all are held) per held request. Then it makes the endpoint
// ready (an update of the EndpointSlice) and checks that the interceptor answers all 10,000
// with 200, as the bare server does once released. The target is lobby's RSS per held request
// ≤ 1.15× the bare server's (rss-ratio). wake-all-ms is from the EndpointSlice update to the
// last answer, for information.
func BenchmarkHeldMemory(b *testing.B) {
	need(b)
	if want := uint64(heldRequests + 2048); shared.nofile < want {
		b.Skipf("RLIMIT_NOFILE is %d; holding %d requests needs at least %d (raise the hard limit, e.g. ulimit -Hn)", shared.nofile, heldRequests, want)
	}
	ctx := b.Context()
	srcs := make([]netip.Addr, sources)
	for i := range srcs {
		var err error
		if srcs[i], err = shared.cluster.AllocAddr(); err != nil {
			b.Fatal(err)
		}
	}
	var bareGrowth, lobbyGrowth int64
	var wake time.Duration
	for b.Loop() {
		// The bare server.
		p, addr := startBare(ctx, b, next("bare-hold"), false, "-mode", "hold", "-addr", "$(POD_IP):8080", "-admin", "$(POD_IP):9090")
		dst := netip.AddrPortFrom(addr, 8080).String()
		waitListening(ctx, b, dst)
		admin := "http://" + netip.AddrPortFrom(addr, 9090).String()
		g, err := holdAndMeasure(ctx, p.PID(), dst, "app.test", srcs, func() (int64, error) {
			return getInt(ctx, admin+"/held")
		})
		if err != nil {
			b.Fatalf("bare server: %v", err)
		}
		bareGrowth += g.growth
		if err := post(ctx, admin+"/release"); err != nil {
			b.Fatal(err)
		}
		if err := g.wait(); err != nil {
			b.Fatalf("bare server, after the release: %v", err)
		}
		_ = p.Stop()

		// The interceptor, for a route with no ready endpoint.
		ns := next("held")
		if err := namespace(ctx, ns); err != nil {
			b.Fatal(err)
		}
		if err := route(ctx, shared.kube, ns, "app", false); err != nil {
			b.Fatal(err)
		}
		key := ns + "/app"
		ip, proxy, lobbyAdmin := startInterceptor(ctx, b, next("interceptor"), false,
			[]string{"LOBBY_WATCH_NAMESPACE=" + ns, "LOBBY_MAX_PENDING_REQUESTS=" + strconv.Itoa(2*heldRequests), "LOBBY_COLD_START_TIMEOUT=5m"},
			func(q map[string]queueCounts) bool { _, ok := q[key]; return ok })
		g, err = holdAndMeasure(ctx, ip.PID(), proxy, "app.test", srcs, func() (int64, error) {
			q, err := queue(ctx, lobbyAdmin)
			return q[key].Held, err
		})
		if err != nil {
			b.Fatalf("interceptor: %v (log: %s)", err, ip.LogFile)
		}
		lobbyGrowth += g.growth
		s, err := shared.kube.DiscoveryV1().EndpointSlices(ns).Get(ctx, "app", metav1.GetOptions{})
		if err != nil {
			b.Fatal(err)
		}
		*s.Endpoints[0].Conditions.Ready = true
		start := time.Now()
		if _, err := shared.kube.DiscoveryV1().EndpointSlices(ns).Update(ctx, s, metav1.UpdateOptions{}); err != nil {
			b.Fatal(err)
		}
		if err := g.wait(); err != nil {
			b.Fatalf("interceptor, after the endpoint turned ready: %v (log: %s)", err, ip.LogFile)
		}
		wake += time.Since(start)
		_ = ip.Stop()
	}
	b.StopTimer()
	per := func(growth int64) float64 { return float64(growth) / float64(b.N) / heldRequests / 1024 }
	b.ReportMetric(per(bareGrowth), "bare-KiB/held")
	b.ReportMetric(per(lobbyGrowth), "lobby-KiB/held")
	b.ReportMetric(float64(lobbyGrowth)/float64(bareGrowth), "rss-ratio")
	b.ReportMetric(float64(wake)/float64(b.N)/float64(time.Millisecond), "wake-all-ms")
}

// holding is a set of held requests being waited for.
type holding struct {
	growth int64 // VmRSS while all are held minus VmRSS before
	done   chan struct{}
	ok     atomic.Int64
	mu     sync.Mutex
	err    error
}

// holdAndMeasure reads the VmRSS of pid, sends heldRequests GETs to dst, one per connection,
// waits until held reports them all, lets the process settle for a second and reads its VmRSS
// again. The requests stay open; wait waits for their answers.
func holdAndMeasure(ctx context.Context, pid int, dst, host string, srcs []netip.Addr, held func() (int64, error)) (*holding, error) {
	before, err := rss(pid)
	if err != nil {
		return nil, err
	}
	h := &holding{done: make(chan struct{})}
	sem := make(chan struct{}, dialing)
	var wg sync.WaitGroup
	req := []byte("GET / HTTP/1.1\r\nHost: " + host + "\r\n\r\n")
	for i := range heldRequests {
		sem <- struct{}{}
		wg.Go(func() {
			if err := h.one(ctx, sem, srcs[i%len(srcs)], dst, req); err != nil {
				h.mu.Lock()
				h.err = errors.Join(h.err, err)
				h.mu.Unlock()
			}
		})
	}
	go func() { wg.Wait(); close(h.done) }()
	var n int64
	if err := poll.Until(ctx, time.Minute, fmt.Sprintf("%d requests to be held", heldRequests), func() error {
		n, err = held()
		if err == nil && n != heldRequests {
			err = fmt.Errorf("%d held", n)
		}
		return err
	}); err != nil {
		return nil, fmt.Errorf("%w (held: %d; client: %v)", err, n, h.firstErr())
	}
	time.Sleep(time.Second)
	during, err := rss(pid)
	if err != nil {
		return nil, err
	}
	h.growth = during - before
	return h, nil
}

// one sends req on a new connection from src to dst and reads the answer, which must be 200.
func (h *holding) one(ctx context.Context, sem chan struct{}, src netip.Addr, dst string, req []byte) error {
	d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0)), Timeout: 30 * time.Second}
	c, err := d.DialContext(ctx, "tcp", dst)
	if err != nil {
		<-sem
		return err
	}
	defer c.Close()
	_, err = c.Write(req)
	<-sem
	if err != nil {
		return err
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Minute))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return &statusError{resp.Status}
	}
	h.ok.Add(1)
	return nil
}

func (h *holding) firstErr() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.err
}

// wait waits for every held request's answer, for at most two minutes, and fails unless all
// were 200.
func (h *holding) wait() error {
	select {
	case <-h.done:
	case <-time.After(2 * time.Minute):
		return fmt.Errorf("after 2m, %d of %d requests answered 200", h.ok.Load(), heldRequests)
	}
	if n := h.ok.Load(); n != heldRequests {
		err := h.firstErr()
		if s := err.Error(); len(s) > 2000 {
			err = errors.New(s[:2000] + "…")
		}
		return fmt.Errorf("%d of %d requests answered 200: %w", n, heldRequests, err)
	}
	return nil
}

func getInt(ctx context.Context, url string) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

func post(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("POST %s: %s", url, resp.Status)
	}
	return nil
}

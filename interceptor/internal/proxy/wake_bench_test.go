package proxy_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/lobby-http/lobby/interceptor/internal/endpoints"
	"github.com/lobby-http/lobby/interceptor/internal/proxy"
	"github.com/lobby-http/lobby/interceptor/internal/routing"
)

// BenchmarkWake measures the time from the moment held requests may go (for the lobby: an
// EndpointSlice with a ready endpoint fed to the Store, as the informer feeds it) to their
// answers. Each round is a new Service with a new pod address, so, as with a pod that has just
// started, every connection to the backend is new; the client's connections and requests are
// all in the proxy before the round's clock starts. It reports the p50 and p99 over every request
// of every round, and the time until the last request of a round was answered (all-ms, worst
// round). ns/op includes sending and holding the requests and is not the figure to read.
//
// "lobby-no-preconnect" is the chain without connections opened ahead of the released requests
// (ForwarderOptions.MaxPreconnectsPerHost < 0); "lobby-unpaced" is the chain with dial pacing
// (ForwarderOptions.MaxDialsPerHost) off, so that every released request opens a connection of
// its own, as a bare proxy's do; "lobby-h2c" is the chain for a Service port that declares
// appProtocol kubernetes.io/h2c, so that the released requests share HTTP/2 connections to the
// pod. The "bare" proxy is the floor to compare with: an httputil.ReverseProxy behind a handler
// that holds each request on a channel, closed to release them, with the transport of
// BenchmarkProxy and its idle connections closed before each round.
// "direct" has no proxy: its held clients wait on a channel in this process and, released, each
// opens a fresh connection to the pod at once; it is the baseline of the design's target for
// 1,000 held requests (≤ 50 ms, or ≤ 1.2× direct when that is slower). The backend speaks HTTP/1.1
// and h2c for every side.
//
// "shared" runs client, proxy and backend in this process on every core. "pinned" runs the proxy
// in a child process on core 0 with GOMAXPROCS=1, and the client and backend here on core 1 (with
// taskset), which is how the design's scale figures were taken; it needs two cores and taskset.
// LOBBY_WAKE_PROFILE=<file> writes the pinned proxy's CPU profile there (the last case run wins).
func BenchmarkWake(b *testing.B) {
	for _, placement := range []string{"shared", "pinned"} {
		b.Run(placement, func(b *testing.B) {
			if placement == "pinned" {
				defer pinSelf(b, 1)()
			}
			for _, side := range []string{"lobby", "lobby-no-preconnect", "lobby-unpaced", "lobby-h2c", "bare", "direct"} {
				for _, held := range []int{1, 1000} {
					b.Run(fmt.Sprintf("%s/held=%d", side, held), func(b *testing.B) {
						backend := httptest.NewUnstartedServer(hello("app"))
						var p http.Protocols
						p.SetHTTP1(true)
						p.SetUnencryptedHTTP2(true)
						backend.Config.Protocols = &p
						backend.Start()
						defer backend.Close()
						if side == "direct" {
							runDirect(b, backend, held)
							return
						}
						addr := backend.Listener.Addr().String()
						var s wakeSide
						if placement == "pinned" {
							s = startWakeProcess(b, side, addr, held)
						} else {
							s = newWakeSide(b, side, addr, held)
						}
						runWake(b, s, backend, held)
					})
				}
			}
		})
	}
}

// wakeSide is the proxy side of BenchmarkWake: it holds the requests of round i until release,
// then forwards them to the backend as to a pod that has just started.
type wakeSide interface {
	// url is where the client sends its requests.
	url() string
	// prepare sets round i up: a new Service and pod address, or a new gate.
	prepare(i int) error
	// awaitHeld returns once n requests of round i are held.
	awaitHeld(i, n int) error
	// release lets the requests of round i go.
	release(i int) error
	// dials returns how many connections to the backend the proxy has opened so far.
	dials() (int64, error)
}

// runWake sends held requests per round through s and reports how long after release they were
// answered.
func runWake(b *testing.B, s wakeSide, backend *httptest.Server, held int) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConns: 2 * held, MaxIdleConnsPerHost: 2 * held}}
	defer client.CloseIdleConnections()
	var all []time.Duration
	var worst time.Duration
	dialled, err := s.dials()
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := range b.N {
		if err := s.prepare(i); err != nil {
			b.Fatal(err)
		}
		done := make([]time.Time, held)
		var wg sync.WaitGroup
		for j := range held {
			wg.Go(func() {
				req, _ := http.NewRequestWithContext(b.Context(), http.MethodGet, s.url(), nil)
				req.Host = wakeHost(i)
				done[j] = getTimed(b, client, req)
			})
		}
		if err := s.awaitHeld(i, held); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		if err := s.release(i); err != nil {
			b.Fatal(err)
		}
		wg.Wait()
		all, worst = record(all, worst, start, done)
		// The pod of this round is gone: drop its connections, so that rounds do not pile up idle
		// connections and their goroutines.
		backend.CloseClientConnections()
	}
	b.StopTimer()
	report(b, all, worst)
	n, err := s.dials()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(n-dialled)/float64(b.N), "conns/round")
}

// getTimed sends req, reads the whole answer and returns when it ended; an error or a status other
// than 200 fails b (and returns the zero time).
func getTimed(b *testing.B, client *http.Client, req *http.Request) time.Time {
	resp, err := client.Do(req)
	if err != nil {
		b.Error(err)
		return time.Time{}
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	end := time.Now()
	if resp.StatusCode != http.StatusOK {
		b.Errorf("status %d", resp.StatusCode)
	}
	return end
}

// runDirect holds clients on a channel, releases them at once, and reports how long after the
// release each was answered over a fresh connection of its own to the backend.
func runDirect(b *testing.B, backend *httptest.Server, held int) {
	var all []time.Duration
	var worst time.Duration
	b.ResetTimer()
	for range b.N {
		transport := &http.Transport{DisableKeepAlives: true, MaxConnsPerHost: 0}
		client := &http.Client{Transport: transport}
		gate := make(chan struct{})
		done := make([]time.Time, held)
		var ready, wg sync.WaitGroup
		ready.Add(held)
		for j := range held {
			wg.Go(func() {
				req, _ := http.NewRequestWithContext(b.Context(), http.MethodGet, backend.URL, nil)
				req.Host = "app.test"
				ready.Done()
				<-gate
				done[j] = getTimed(b, client, req)
			})
		}
		ready.Wait()
		start := time.Now()
		close(gate)
		wg.Wait()
		all, worst = record(all, worst, start, done)
		backend.CloseClientConnections()
	}
	b.StopTimer()
	report(b, all, worst)
	b.ReportMetric(float64(held), "conns/round")
}

func wakeHost(i int) string    { return fmt.Sprintf("app%d.test", i) }
func wakeService(i int) string { return fmt.Sprintf("app%d", i) }
func wakePod(i int) string     { return fmt.Sprintf("10.%d.%d.%d", 1+i>>16&0xff, i>>8&0xff, i&0xff) }

// newWakeSide returns the proxy side named side in front of the backend: "lobby" (the chain with
// its defaults), "lobby-unpaced" (the chain with dial pacing off) or "bare".
func newWakeSide(t testing.TB, side, backend string, held int) wakeSide {
	c := &dialCounter{}
	switch side {
	case "bare":
		return newBareWake(t, backend, c)
	case "lobby-unpaced":
		opts := proxy.ForwarderOptions{Dial: c.dial, MaxDialsPerHost: 1 << 20}
		return &lobbyWake{dialCounter: c, e: newEnvWith(t, logr.Discard(), opts), backend: backend, held: held}
	case "lobby-no-preconnect":
		opts := proxy.ForwarderOptions{Dial: c.dial, MaxPreconnectsPerHost: -1}
		return &lobbyWake{dialCounter: c, e: newEnvWith(t, logr.Discard(), opts), backend: backend, held: held}
	case "lobby-h2c":
		opts := proxy.ForwarderOptions{Dial: c.dial}
		return &lobbyWake{dialCounter: c, e: newEnvWith(t, logr.Discard(), opts), backend: backend, held: held, proto: endpoints.H2C}
	default:
		opts := proxy.ForwarderOptions{Dial: c.dial}
		return &lobbyWake{dialCounter: c, e: newEnvWith(t, logr.Discard(), opts), backend: backend, held: held}
	}
}

// dialCounter opens connections and counts them.
type dialCounter struct{ n atomic.Int64 }

func (c *dialCounter) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c.n.Add(1)
	return (&net.Dialer{}).DialContext(ctx, network, addr)
}

func (c *dialCounter) dials() (int64, error) { return c.n.Load(), nil }

// lobbyWake holds requests in the whole chain until the round's EndpointSlice turns ready.
type lobbyWake struct {
	*dialCounter
	e       *env
	backend string
	held    int
	// proto is how the round's Service port says its pod speaks.
	proto endpoints.Protocol
	route *routing.Route
}

func (l *lobbyWake) url() string { return l.e.proxy.URL }

func (l *lobbyWake) prepare(i int) error {
	l.e.mapPod(wakePod(i), l.backend)
	l.route = l.e.route(wakeHost(i), wakeService(i), func(r *routing.Route) {
		r.MaxPending = int64(l.held)
		r.ColdStartTimeout = time.Minute
	})
	l.e.target(wakeService(i), l.proto)
	return nil
}

func (l *lobbyWake) awaitHeld(_, n int) error {
	return poll(func() bool { h, _, _ := countsOf(l.route); return h == int64(n) })
}

func (l *lobbyWake) release(i int) error {
	l.e.ready(wakeService(i), wakePod(i))
	return nil
}

// bareWake is an httputil.ReverseProxy behind a handler that holds requests on a channel.
type bareWake struct {
	*dialCounter
	srv       *httptest.Server
	transport *http.Transport
	gate      atomic.Pointer[chan struct{}]
	arrived   atomic.Int64
}

func newBareWake(t testing.TB, backend string, c *dialCounter) *bareWake {
	w := &bareWake{dialCounter: c, transport: &http.Transport{DialContext: c.dial, MaxIdleConnsPerHost: 256, IdleConnTimeout: 90 * time.Second, DisableCompression: true}}
	target := &url.URL{Scheme: "http", Host: backend}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = pr.In.Host
			pr.SetXForwarded()
		},
		Transport: w.transport,
	}
	w.srv = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		gate := w.gate.Load()
		w.arrived.Add(1)
		<-*gate
		rp.ServeHTTP(rw, r)
	}))
	t.Cleanup(w.srv.Close)
	return w
}

func (w *bareWake) url() string { return w.srv.URL }

func (w *bareWake) prepare(int) error {
	w.transport.CloseIdleConnections()
	w.arrived.Store(0)
	gate := make(chan struct{})
	w.gate.Store(&gate)
	return nil
}

func (w *bareWake) awaitHeld(_, n int) error {
	return poll(func() bool { return w.arrived.Load() == int64(n) })
}

func (w *bareWake) release(int) error {
	close(*w.gate.Load())
	return nil
}

// poll waits until cond holds, for at most 30s.
func poll(cond func() bool) error {
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			return errors.New("requests not held within 30s")
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}

// record adds the times from start to each of done to all, and returns the worst last one.
func record(all []time.Duration, worst time.Duration, start time.Time, done []time.Time) ([]time.Duration, time.Duration) {
	var last time.Duration
	for _, d := range done {
		all = append(all, d.Sub(start))
		last = max(last, d.Sub(start))
	}
	return all, max(worst, last)
}

// report reports the p50 and p99 of all and the worst time until every request was answered.
func report(b *testing.B, all []time.Duration, worst time.Duration) {
	slices.Sort(all)
	b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(all[(len(all)*99)/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(worst.Microseconds())/1000, "all-ms")
}

// Environment of the pinned proxy process.
const (
	envWakeSide    = "LOBBY_WAKE_SIDE"
	envWakeBackend = "LOBBY_WAKE_BACKEND"
	envWakeHeld    = "LOBBY_WAKE_HELD"
	envWakeProfile = "LOBBY_WAKE_PROFILE"
)

// TestWakeProxyProcess is the proxy process of BenchmarkWake/pinned. It serves one wakeSide and
// takes its commands ("prepare i", "held i n", "release i") on stdin, answering "ok" or an error
// on stdout, until stdin closes.
func TestWakeProxyProcess(t *testing.T) {
	side := os.Getenv(envWakeSide)
	if side == "" {
		t.Skip("the proxy process of BenchmarkWake/pinned; it runs only when started by it")
	}
	held, err := strconv.Atoi(os.Getenv(envWakeHeld))
	if err != nil {
		t.Fatalf("%s: %v", envWakeHeld, err)
	}
	s := newWakeSide(t, side, os.Getenv(envWakeBackend), held)
	if path := os.Getenv(envWakeProfile); path != "" {
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			t.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	// Commands go through the network poller: a read of a blocking pipe would hold the one P in a
	// system call until the runtime hands it over, milliseconds later.
	for _, fd := range []int{0, 1} {
		if err := syscall.SetNonblock(fd, true); err != nil {
			t.Fatal(err)
		}
	}
	stdin, stdout := os.NewFile(0, "stdin"), os.NewFile(1, "stdout")
	fmt.Fprintln(stdout, s.url())
	in := bufio.NewScanner(stdin)
	for in.Scan() {
		var verb string
		var i, n int
		if _, err := fmt.Sscan(in.Text(), &verb, &i, &n); err != nil && !errors.Is(err, io.EOF) {
			fmt.Fprintln(stdout, "error:", err)
			continue
		}
		switch verb {
		case "prepare":
			err = s.prepare(i)
		case "held":
			err = s.awaitHeld(i, n)
		case "release":
			err = s.release(i)
		case "dials":
			var d int64
			if d, err = s.dials(); err == nil {
				fmt.Fprintln(stdout, "ok", d)
				continue
			}
		default:
			err = fmt.Errorf("unknown command %q", verb)
		}
		if err != nil {
			fmt.Fprintln(stdout, "error:", err)
			continue
		}
		fmt.Fprintln(stdout, "ok")
	}
}

// wakeProcess is a wakeSide in a child process pinned to core 0.
type wakeProcess struct {
	in    io.WriteCloser
	out   *bufio.Reader
	proxy string
}

// startWakeProcess starts this test binary again as TestWakeProxyProcess, on core 0 with
// GOMAXPROCS=1, and stops it when b ends.
func startWakeProcess(b *testing.B, side, backend string, held int) *wakeProcess {
	cmd := exec.Command("taskset", "-c", "0", os.Args[0], "-test.run=^TestWakeProxyProcess$")
	cmd.Env = append(os.Environ(), "GOMAXPROCS=1", envWakeSide+"="+side, envWakeBackend+"="+backend,
		envWakeHeld+"="+strconv.Itoa(held))
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	p := &wakeProcess{in: in, out: bufio.NewReader(out)}
	b.Cleanup(func() {
		in.Close()
		_, _ = io.Copy(io.Discard, p.out)
		if err := cmd.Wait(); err != nil {
			b.Errorf("proxy process: %v", err)
		}
	})
	line, err := p.out.ReadString('\n')
	if err != nil {
		b.Fatalf("proxy process: %v", err)
	}
	p.proxy = strings.TrimSpace(line)
	return p
}

// call sends a command and returns what follows the "ok" of its answer.
func (p *wakeProcess) call(format string, args ...any) (string, error) {
	if _, err := fmt.Fprintf(p.in, format+"\n", args...); err != nil {
		return "", err
	}
	line, err := p.out.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("proxy process: %w", err)
	}
	rest, ok := strings.CutPrefix(strings.TrimSpace(line), "ok")
	if !ok {
		return "", fmt.Errorf("proxy process: %s", strings.TrimSpace(line))
	}
	return strings.TrimSpace(rest), nil
}

func (p *wakeProcess) url() string { return p.proxy }

func (p *wakeProcess) prepare(i int) error {
	_, err := p.call("prepare %d", i)
	return err
}

func (p *wakeProcess) awaitHeld(i, n int) error {
	_, err := p.call("held %d %d", i, n)
	return err
}

func (p *wakeProcess) release(i int) error {
	_, err := p.call("release %d", i)
	return err
}

func (p *wakeProcess) dials() (int64, error) {
	n, err := p.call("dials")
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(n, 10, 64)
}

// pinSelf pins every thread of this process to cpu, with GOMAXPROCS=1, and returns the function
// that undoes it. It skips b when the machine has fewer than two cores or no taskset.
func pinSelf(b *testing.B, cpu int) func() {
	if runtime.NumCPU() < 2 {
		b.Skip("pinning the proxy to a core of its own needs two cores")
	}
	if _, err := exec.LookPath("taskset"); err != nil {
		b.Skip("pinning needs taskset (util-linux)")
	}
	pid := strconv.Itoa(os.Getpid())
	out, err := exec.Command("taskset", "-p", pid).Output()
	if err != nil {
		b.Fatalf("taskset -p %s: %v", pid, err)
	}
	f := strings.Fields(string(out))
	mask := f[len(f)-1]
	if err := exec.Command("taskset", "-a", "-p", "-c", strconv.Itoa(cpu), pid).Run(); err != nil {
		b.Fatalf("taskset -a -p -c %d %s: %v", cpu, pid, err)
	}
	procs := runtime.GOMAXPROCS(1)
	return func() {
		runtime.GOMAXPROCS(procs)
		if err := exec.Command("taskset", "-a", "-p", mask, pid).Run(); err != nil {
			b.Errorf("taskset -a -p %s %s: %v", mask, pid, err)
		}
	}
}

// Command loadgen holds many client connections open against one HTTP server, for the end-to-end
// overload test: a single process may open at most RLIMIT_NOFILE descriptors, so the test spreads
// its clients over several of these.
//
// It opens -conns connections to -target (from the -sources addresses in turn, so that no
// address pair runs short of ephemeral ports), at most -dialing being opened at once, and sends
// one GET for -host on each. A request that is held stays open until its answer; a 503 leaves its
// connection open and idle, as a client keeps a keep-alive connection. Each request gets exactly
// one outcome: a status code, or an error.
//
// The test drives it with one command per line on standard input, each answered by one line on
// standard output:
//
//	report     the counters so far, as JSON (see loadreport.Report)
//	retry on   every connection rejected with 503 sends its request again once the Retry-After
//	           it was given has passed, plus a random part of it, and again after every further
//	           503, as a polite client does (the jitter keeps clients rejected together from
//	           coming back together); answered "ok"
//	retry off  stops sending again, and answers "ok" only once every request sent again has been
//	           answered, so that no retried request is in flight afterwards
//	close      closes every connection, waits for the connections' goroutines, answers with the
//	           final report and exits
//
// It exits on its own, with status 2, after -deadline, and when standard input closes: no load
// outlives the test that started it.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/lobby-http/lobby/e2e/system/internal/loadreport"
)

// maxSamples bounds the error messages kept.
const maxSamples = 5

// gen is the state of the generator.
type gen struct {
	target, heldHeader string
	request            []byte
	deadline           time.Time

	conns, dialErrors, sent, rejectedNoRetryAfter, held, closed, errs, waiting atomic.Int64

	mu      sync.Mutex
	codes   map[int]int64
	samples []string
	// gate is closed while retrying is on; retry off replaces it with an open one.
	gate chan struct{}

	// retrying says whether rejected requests are sent again. A retry holds retries for reading
	// from deciding to send until its answer, so that retry off can wait for those in flight.
	retrying atomic.Bool
	retries  sync.RWMutex

	closing chan struct{}
	wg      sync.WaitGroup
}

func main() {
	target := flag.String("target", "", "server address, host:port")
	host := flag.String("host", "", "Host header of the requests")
	path := flag.String("path", "/", "path of the requests")
	conns := flag.Int("conns", 1000, "connections to open, one request each")
	sources := flag.String("sources", "", "comma-separated source addresses the connections are spread over (empty: the system's choice)")
	dialing := flag.Int("dialing", 256, "connections being opened at once, at most")
	heldHeader := flag.String("held-header", "", "response header that marks an answer to a held request")
	deadline := flag.Duration("deadline", 3*time.Minute, "exit with status 2 after this long, whatever happens")
	flag.Parse()
	if *target == "" || *host == "" || *conns < 1 || *dialing < 1 {
		fmt.Fprintln(os.Stderr, "loadgen: -target, -host, -conns ≥ 1 and -dialing ≥ 1 are required")
		os.Exit(1)
	}
	var srcs []netip.Addr
	for s := range strings.SplitSeq(*sources, ",") {
		if s == "" {
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			fmt.Fprintf(os.Stderr, "loadgen: -sources: %v\n", err)
			os.Exit(1)
		}
		srcs = append(srcs, a)
	}
	if err := raiseNoFile(uint64(*conns) + 64); err != nil {
		fmt.Fprintf(os.Stderr, "loadgen: %v\n", err)
		os.Exit(1)
	}
	// The deadline is a backstop for a test that died without closing standard input: a timer
	// outside everything else, so that no stuck goroutine can keep the load going.
	time.AfterFunc(*deadline, func() {
		fmt.Fprintf(os.Stderr, "loadgen: deadline of %v passed\n", *deadline)
		os.Exit(2)
	})
	g := &gen{
		target:     *target,
		heldHeader: *heldHeader,
		request:    []byte("GET " + *path + " HTTP/1.1\r\nHost: " + *host + "\r\nUser-Agent: lobby-e2e-loadgen\r\n\r\n"),
		deadline:   time.Now().Add(*deadline),
		codes:      map[int]int64{},
		gate:       make(chan struct{}),
		closing:    make(chan struct{}),
	}
	ctx, cancel := context.WithCancel(context.Background())
	go g.open(ctx, *conns, *dialing, srcs)
	os.Exit(g.serve(os.Stdin, os.Stdout, cancel))
}

// raiseNoFile raises the soft limit on open descriptors to the hard one, and fails when even that
// is below need.
func raiseNoFile(need uint64) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("read RLIMIT_NOFILE: %w", err)
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("raise RLIMIT_NOFILE to %d: %w", lim.Max, err)
	}
	if lim.Cur < need {
		return fmt.Errorf("RLIMIT_NOFILE is %d, %d connections need %d", lim.Cur, need-64, need)
	}
	return nil
}

// serve answers the commands read from in until close, or until in ends, and returns the exit
// status.
func (g *gen) serve(in io.Reader, out io.Writer, cancel context.CancelFunc) int {
	enc := json.NewEncoder(out)
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		switch cmd := strings.TrimSpace(sc.Text()); cmd {
		case "report":
			_ = enc.Encode(g.report())
		case "retry on":
			g.mu.Lock()
			if !g.retrying.Swap(true) {
				close(g.gate)
			}
			g.mu.Unlock()
			fmt.Fprintln(out, "ok")
		case "retry off":
			g.mu.Lock()
			if g.retrying.Swap(false) {
				g.gate = make(chan struct{})
			}
			g.mu.Unlock()
			// Every retry in flight holds the read lock until its answer: taking the write lock
			// waits for them all.
			g.retries.Lock()
			g.retries.Unlock()
			fmt.Fprintln(out, "ok")
		case "close":
			close(g.closing)
			cancel()
			g.wg.Wait()
			_ = enc.Encode(g.report())
			return 0
		default:
			fmt.Fprintf(out, "error: unknown command %q\n", cmd)
		}
	}
	fmt.Fprintln(os.Stderr, "loadgen: standard input closed before close")
	return 1
}

// report returns the counters.
func (g *gen) report() loadreport.Report {
	g.mu.Lock()
	defer g.mu.Unlock()
	r := loadreport.Report{
		Conns: g.conns.Load(), DialErrors: g.dialErrors.Load(), Sent: g.sent.Load(),
		Codes: make(map[int]int64, len(g.codes)), RejectedWithoutRetryAfter: g.rejectedNoRetryAfter.Load(),
		HeldAnswers: g.held.Load(), Closed: g.closed.Load(), Errors: g.errs.Load(),
		ErrorSamples: append([]string(nil), g.samples...), Waiting: g.waiting.Load(),
	}
	for k, v := range g.codes {
		r.Codes[k] = v
	}
	return r
}

// fail counts a request that got no answer.
func (g *gen) fail(err error) {
	g.errs.Add(1)
	g.mu.Lock()
	if len(g.samples) < maxSamples {
		g.samples = append(g.samples, err.Error())
	}
	g.mu.Unlock()
}

// open dials n connections, at most dialing at once, and starts each one's client.
func (g *gen) open(ctx context.Context, n, dialing int, srcs []netip.Addr) {
	sem := make(chan struct{}, dialing)
	for i := range n {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		var src netip.Addr
		if len(srcs) > 0 {
			src = srcs[i%len(srcs)]
		}
		g.wg.Go(func() { g.client(ctx, sem, src) })
	}
}

// client opens one connection, sends the first request on it, frees its dialing slot once the
// request is written, and then answers to what the server says until the generator closes.
func (g *gen) client(ctx context.Context, sem chan struct{}, src netip.Addr) {
	d := net.Dialer{Timeout: 30 * time.Second}
	if src.IsValid() {
		d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0))
	}
	c, err := d.DialContext(ctx, "tcp", g.target)
	if err != nil {
		<-sem
		if ctx.Err() == nil {
			g.dialErrors.Add(1)
			g.fail(fmt.Errorf("dial %s: %w", g.target, err))
		}
		return
	}
	g.conns.Add(1)
	// Closing the connection is how close ends a client blocked in a read.
	stop := context.AfterFunc(ctx, func() { _ = c.Close() })
	defer func() {
		stop()
		_ = c.Close()
	}()
	_ = c.SetDeadline(g.deadline)
	br := bufio.NewReader(c)
	resp, ok := g.exchange(c, br, sem)
	for ok && resp.StatusCode == http.StatusServiceUnavailable {
		resp, ok = g.again(ctx, c, br, retryAfter(resp))
	}
	if ok {
		// Answered and not rejected: keep the connection open, as the client it stands for would,
		// until the generator closes; notice when the server closes it first.
		g.idle(ctx, br)
	}
}

// exchange writes the request on c and reads the answer; sem, when not nil, is released once the
// request is written. It reports false when the request got no answer or the connection cannot
// carry another.
func (g *gen) exchange(c net.Conn, br *bufio.Reader, sem chan struct{}) (*http.Response, bool) {
	g.waiting.Add(1)
	_, err := c.Write(g.request)
	if sem != nil {
		<-sem
	}
	if err != nil {
		g.waiting.Add(-1)
		g.failUnlessClosing(fmt.Errorf("write request: %w", err))
		return nil, false
	}
	g.sent.Add(1)
	resp, err := http.ReadResponse(br, nil)
	if err == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	g.waiting.Add(-1)
	if err != nil {
		g.failUnlessClosing(fmt.Errorf("read answer: %w", err))
		return nil, false
	}
	g.mu.Lock()
	g.codes[resp.StatusCode]++
	g.mu.Unlock()
	if resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") == "" {
		g.rejectedNoRetryAfter.Add(1)
	}
	if g.heldHeader != "" && resp.Header.Get(g.heldHeader) != "" {
		g.held.Add(1)
	}
	if resp.Close {
		g.closed.Add(1)
	}
	return resp, !resp.Close
}

// failUnlessClosing counts err, unless the generator is closing the connections itself.
func (g *gen) failUnlessClosing(err error) {
	select {
	case <-g.closing:
	default:
		g.fail(err)
	}
}

// again waits until retrying is on and wait, and a random part of it, has passed, then sends the
// request again on c. It reports false when the generator closes first.
func (g *gen) again(ctx context.Context, c net.Conn, br *bufio.Reader, wait time.Duration) (*http.Response, bool) {
	for {
		g.mu.Lock()
		gate := g.gate
		g.mu.Unlock()
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, false
		}
		t := time.NewTimer(wait + rand.N(max(wait, time.Millisecond)))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, false
		}
		g.retries.RLock()
		if !g.retrying.Load() {
			g.retries.RUnlock()
			continue
		}
		resp, ok := g.exchange(c, br, nil)
		g.retries.RUnlock()
		return resp, ok
	}
}

// idle waits on an answered connection until the generator closes it, and counts it when the
// server closes it first (or sends anything unasked).
func (g *gen) idle(ctx context.Context, br *bufio.Reader) {
	_, err := br.ReadByte()
	if ctx.Err() != nil {
		return
	}
	if err == nil || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNRESET) {
		g.closed.Add(1)
		return
	}
	g.fail(fmt.Errorf("idle connection: %w", err))
}

// retryAfter is the wait a 503 asks for: its Retry-After in seconds, one second when it names
// none or a date.
func retryAfter(resp *http.Response) time.Duration {
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	return time.Second
}

package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// phaseSlack is how long a load phase may run past its planned end before every connection's
// deadline fails it: a target that stalls fails the benchmark instead of hanging it.
const phaseSlack = 30 * time.Second

// genConn is one keep-alive HTTP/1.1 connection of the load generator. It sends the same GET,
// built once, on every round trip and reads the answer with a minimal parser that allocates
// nothing: the generator shares a core with the backend, and what it spends per request there
// is taken from the backend, so net/http's client, which costs about as much per request as a
// server, would make the client core rather than the proxy's the limit.
type genConn struct {
	c   net.Conn
	r   *bufio.Reader
	req []byte
}

// dialGen opens a connection to addr for GETs of / with Host host.
func dialGen(ctx context.Context, addr, host string) (*genConn, error) {
	c, err := (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	return &genConn{c: c, r: bufio.NewReader(c), req: []byte("GET / HTTP/1.1\r\nHost: " + host + "\r\n\r\n")}, nil
}

// dialGens opens n connections to addr, or none.
func dialGens(ctx context.Context, n int, addr, host string) ([]*genConn, error) {
	conns := make([]*genConn, 0, n)
	for range n {
		g, err := dialGen(ctx, addr, host)
		if err != nil {
			closeGens(conns)
			return nil, err
		}
		conns = append(conns, g)
	}
	return conns, nil
}

func closeGens(conns []*genConn) {
	for _, g := range conns {
		_ = g.c.Close()
	}
}

var (
	status200        = []byte("HTTP/1.1 200 ")
	headerLength     = []byte("content-length")
	headerEncoding   = []byte("transfer-encoding")
	headerConnection = []byte("connection")
	tokenClose       = []byte("close")
)

// roundTrip sends the request and reads the whole answer, which must be a 200 with a
// Content-Length body on a connection that stays open; anything else is an error, which leaves
// the connection unusable.
func (g *genConn) roundTrip() error {
	if _, err := g.c.Write(g.req); err != nil {
		return fmt.Errorf("write request: %w", err)
	}
	line, err := g.r.ReadSlice('\n')
	if err != nil {
		return fmt.Errorf("read status line: %w", err)
	}
	if !bytes.HasPrefix(line, status200) {
		return &statusError{string(bytes.TrimPrefix(bytes.TrimSpace(line), []byte("HTTP/1.1 ")))}
	}
	length := -1
	for {
		if line, err = g.r.ReadSlice('\n'); err != nil {
			return fmt.Errorf("read header: %w", err)
		}
		if len(bytes.TrimSpace(line)) == 0 {
			break
		}
		name, value, ok := bytes.Cut(line, []byte{':'})
		if !ok {
			return fmt.Errorf("malformed header line %q", line)
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, headerLength):
			if length, ok = parseLength(value); !ok {
				return fmt.Errorf("malformed Content-Length %q", value)
			}
		case bytes.EqualFold(name, headerEncoding):
			return fmt.Errorf("answer with Transfer-Encoding %q: the load generator reads Content-Length bodies only", value)
		case bytes.EqualFold(name, headerConnection) && bytes.Contains(bytes.ToLower(value), tokenClose):
			return errors.New("answer with Connection: close: the load generator keeps its connections")
		}
	}
	if length < 0 {
		return errors.New("answer without Content-Length: the load generator reads Content-Length bodies only")
	}
	if _, err := g.r.Discard(length); err != nil {
		return fmt.Errorf("read body: %w", err)
	}
	return nil
}

// parseLength parses a Content-Length value without converting it to a string.
func parseLength(v []byte) (int, bool) {
	if len(v) == 0 || len(v) > 12 {
		return 0, false
	}
	n := 0
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

// setDeadline sets the deadline of every connection.
func setDeadline(conns []*genConn, t time.Time) {
	for _, g := range conns {
		_ = g.c.SetDeadline(t)
	}
}

// closedLoop runs one request at a time on each connection, back to back, for d, and returns
// how many requests were answered and the time from the start to the last answer. Requests
// still in flight at d are waited for and counted.
func closedLoop(conns []*genConn, d time.Duration) (int, time.Duration, error) {
	setDeadline(conns, time.Now().Add(d+phaseSlack))
	var stop atomic.Bool
	counts := make([]int, len(conns))
	errs := make([]error, len(conns))
	var wg sync.WaitGroup
	start := time.Now()
	timer := time.AfterFunc(d, func() { stop.Store(true) })
	defer timer.Stop()
	for i, g := range conns {
		wg.Go(func() {
			for !stop.Load() {
				if err := g.roundTrip(); err != nil {
					errs[i] = err
					stop.Store(true)
					return
				}
				counts[i]++
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	n := 0
	for _, c := range counts {
		n += c
	}
	return n, elapsed, errors.Join(errs...)
}

// openLoop sends requests on a timetable fixed in advance, rate per second for d, over the
// connections, and returns each request's latency measured from its intended send time, the
// way wrk2 does: a request whose time comes while every connection is busy waits for one, and
// that wait is part of its latency, so a stall of the target shows in every request it delayed
// and not only in the one it hit (the coordinated omission of a closed loop, where a slow answer
// also postpones the requests that would have measured it). Every request must be answered 200.
func openLoop(conns []*genConn, rate float64, d time.Duration) ([]time.Duration, error) {
	n := int(rate * d.Seconds())
	interval := time.Duration(float64(time.Second) / rate)
	if n < 1 || interval <= 0 {
		return nil, fmt.Errorf("open loop at %g requests/s for %s: no request to send", rate, d)
	}
	setDeadline(conns, time.Now().Add(d+phaseSlack))
	p, start, err := startPacer(interval)
	if err != nil {
		return nil, err
	}
	// Request k is due at start + (k+1)·interval, when the pacer's timer fires for the k+1st
	// time. The queue holds every request, so the pacer never waits for a connection.
	due := make(chan int, n)
	var failed atomic.Bool
	var pacerErr error
	go func() {
		defer close(due)
		defer p.close()
		for k := 0; k < n && !failed.Load(); {
			fired, err := p.wait()
			if err != nil {
				pacerErr = err
				failed.Store(true)
				return
			}
			for ; fired > 0 && k < n; fired-- {
				due <- k
				k++
			}
		}
	}()
	lat := make([]time.Duration, n)
	errs := make([]error, len(conns))
	var wg sync.WaitGroup
	for i, g := range conns {
		wg.Go(func() {
			for k := range due {
				if failed.Load() {
					continue
				}
				if err := g.roundTrip(); err != nil {
					errs[i] = err
					failed.Store(true)
					continue
				}
				lat[k] = time.Since(start.Add(time.Duration(k+1) * interval))
			}
		})
	}
	wg.Wait()
	if err := errors.Join(append(errs, pacerErr)...); err != nil {
		return nil, err
	}
	return lat, nil
}

// pacer fires at a fixed interval from a timerfd, which the kernel fires to within
// microseconds and Go's poller waits on as on a socket. The runtime's own timers are no good
// for this: a process with nothing else to do waits for them in epoll_wait, whose timeout is in
// whole milliseconds, so with one connection up to a millisecond of the generator's own lateness
// would be counted in every latency.
type pacer struct{ f *os.File }

// itimerspec is the kernel's struct itimerspec.
type itimerspec struct {
	interval syscall.Timespec
	value    syscall.Timespec
}

// clockMonotonic is CLOCK_MONOTONIC, the clock of Go's monotonic time readings.
const clockMonotonic = 1

// startPacer starts a pacer that fires every interval, first at the returned start time plus
// interval.
func startPacer(interval time.Duration) (*pacer, time.Time, error) {
	// TFD_NONBLOCK and TFD_CLOEXEC are O_NONBLOCK and O_CLOEXEC by definition; non-blocking,
	// os.NewFile hands the descriptor to the poller.
	fd, _, errno := syscall.Syscall(syscall.SYS_TIMERFD_CREATE, clockMonotonic, syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if errno != 0 {
		return nil, time.Time{}, fmt.Errorf("timerfd_create: %w", errno)
	}
	ts := syscall.NsecToTimespec(interval.Nanoseconds())
	spec := itimerspec{interval: ts, value: ts}
	start := time.Now()
	if _, _, errno := syscall.Syscall6(syscall.SYS_TIMERFD_SETTIME, fd, 0, uintptr(unsafe.Pointer(&spec)), 0, 0, 0); errno != 0 {
		_ = syscall.Close(int(fd))
		return nil, time.Time{}, fmt.Errorf("timerfd_settime: %w", errno)
	}
	return &pacer{f: os.NewFile(fd, "timerfd")}, start, nil
}

// wait waits for the timer to fire and returns how many times it fired since the last wait.
func (p *pacer) wait() (uint64, error) {
	var b [8]byte
	if _, err := io.ReadFull(p.f, b[:]); err != nil {
		return 0, fmt.Errorf("read timerfd: %w", err)
	}
	return binary.NativeEndian.Uint64(b[:]), nil
}

func (p *pacer) close() { _ = p.f.Close() }

func TestGenConnRoundTrip(t *testing.T) {
	tests := []struct {
		name   string
		answer string
		want   string // a part of the error, or "" for none
	}{
		{name: "a 200 with a Content-Length body is read whole and the connection serves the next request",
			answer: "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\ncontent-length: 13\r\n\r\nhello, world\n"},
		{name: "an answer other than 200 is an error",
			answer: "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n", want: "answer 503 Service Unavailable, want 200 OK"},
		{name: "a chunked answer is an error",
			answer: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", want: "Transfer-Encoding"},
		{name: "an answer that closes the connection is an error",
			answer: "HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 2\r\n\r\nok", want: "Connection: close"},
		{name: "an answer without Content-Length is an error",
			answer: "HTTP/1.1 200 OK\r\n\r\n", want: "without Content-Length"},
		{name: "a malformed Content-Length is an error",
			answer: "HTTP/1.1 200 OK\r\nContent-Length: 1e3\r\n\r\n", want: "malformed Content-Length"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			requests := make(chan string, 2)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				r := bufio.NewReader(c)
				for range 2 {
					var req strings.Builder
					for {
						line, err := r.ReadString('\n')
						if err != nil {
							return
						}
						req.WriteString(line)
						if line == "\r\n" {
							break
						}
					}
					requests <- req.String()
					if _, err := io.WriteString(c, tt.answer); err != nil {
						return
					}
				}
			}()
			g, err := dialGen(t.Context(), ln.Addr().String(), "app.test")
			if err != nil {
				t.Fatal(err)
			}
			defer closeGens([]*genConn{g})
			_ = g.c.SetDeadline(time.Now().Add(time.Minute))
			err = g.roundTrip()
			if tt.want != "" {
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("roundTrip() = %v, want an error with %q", err, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatalf("first roundTrip() = %v", err)
			}
			if err := g.roundTrip(); err != nil {
				t.Fatalf("second roundTrip() on the same connection = %v", err)
			}
			for range 2 {
				if got, want := <-requests, "GET / HTTP/1.1\r\nHost: app.test\r\n\r\n"; got != want {
					t.Fatalf("request %q, want %q", got, want)
				}
			}
		})
	}
}

// stallServer answers "ok" to every request, and holds the one numbered stallAt (from 1) for
// stall before answering it.
func stallServer(t *testing.T, stallAt int64, stall time.Duration) (*httptest.Server, *atomic.Int64) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if n.Add(1) == stallAt {
			time.Sleep(stall)
		}
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

func TestClosedLoopCountsEveryAnsweredRequest(t *testing.T) {
	srv, served := stallServer(t, 0, 0)
	conns, err := dialGens(t.Context(), 4, srv.Listener.Addr().String(), "app.test")
	if err != nil {
		t.Fatal(err)
	}
	defer closeGens(conns)
	n, elapsed, err := closedLoop(conns, 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 || int64(n) != served.Load() {
		t.Fatalf("closedLoop counted %d requests; the server answered %d", n, served.Load())
	}
	if elapsed < 200*time.Millisecond {
		t.Fatalf("closedLoop returned after %s, before its 200ms", elapsed)
	}
}

func TestOpenLoopCountsAStallInEveryRequestItDelays(t *testing.T) {
	// One connection, 1,000 requests/s for a second; request 200 is held for 300ms. The
	// requests due while it is held wait for the connection, and each of them counts that
	// wait: about 200 of them are due at least 100ms before the connection is free again. A
	// closed loop, or latencies measured from the actual send, would show one slow request.
	const (
		rate  = 1000
		d     = time.Second
		stall = 300 * time.Millisecond
	)
	srv, served := stallServer(t, 200, stall)
	conns, err := dialGens(t.Context(), 1, srv.Listener.Addr().String(), "app.test")
	if err != nil {
		t.Fatal(err)
	}
	defer closeGens(conns)
	start := time.Now()
	lat, err := openLoop(conns, rate, d)
	if err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	if len(lat) != rate || served.Load() != rate {
		t.Fatalf("%d latencies, %d requests served; want %d of each", len(lat), served.Load(), rate)
	}
	// The timetable is fixed: the last request is not sent before it is due.
	if elapsed < d {
		t.Fatalf("the open loop ended after %s, before the last request was due at %s", elapsed, d)
	}
	slow := 0
	for _, l := range lat {
		if l <= 0 {
			t.Fatalf("latency %s: every latency ends after its request was due", l)
		}
		if l >= 100*time.Millisecond {
			slow++
		}
	}
	if s := sorted(lat); slow < 150 || s[len(s)-1] < stall {
		t.Fatalf("%d requests took 100ms or more, the slowest %s; want at least 150, the slowest at least %s", slow, s[len(s)-1], stall)
	}
}

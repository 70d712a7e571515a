package server

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// deadline bounds every wait of these tests; they wait for conditions, never for time, so it is
// only reached when something is broken.
const deadline = 30 * time.Second

// waitFor polls cond until it holds, failing the test after the deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(deadline)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// limitFixture is a loopback listener wrapped by a ConnLimit, with helpers to dial it and accept
// from it.
type limitFixture struct {
	t     *testing.T
	limit *ConnLimit
	ln    net.Listener
}

func newLimitFixture(t *testing.T, n int) *limitFixture {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &limitFixture{t: t, limit: NewConnLimit(n)}
	f.ln = f.limit.Listener(inner)
	t.Cleanup(func() { _ = f.ln.Close() })
	return f
}

// dial opens a client connection. The kernel completes its handshake whether or not it is
// accepted: that is the backlog a capped listener leaves waiting connections in.
func (f *limitFixture) dial() net.Conn {
	f.t.Helper()
	c, err := net.Dial("tcp", f.ln.Addr().String())
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { _ = c.Close() })
	return c
}

type acceptResult struct {
	conn net.Conn
	err  error
}

// acceptAsync runs Accept in the background.
func (f *limitFixture) acceptAsync() <-chan acceptResult {
	res := make(chan acceptResult, 1)
	go func() {
		c, err := f.ln.Accept()
		if c != nil {
			f.t.Cleanup(func() { _ = c.Close() })
		}
		res <- acceptResult{c, err}
	}()
	return res
}

// accept accepts one connection, which must come.
func (f *limitFixture) accept() net.Conn {
	f.t.Helper()
	select {
	case r := <-f.acceptAsync():
		if r.err != nil {
			f.t.Fatalf("Accept() error = %v", r.err)
		}
		return r.conn
	case <-time.After(deadline):
		f.t.Fatal("Accept() did not return")
		return nil
	}
}

// waiting starts an Accept and returns once it waits for a slot: the limit counts the wait before
// it blocks, and nothing frees a slot meanwhile, so the Accept cannot have returned.
func (f *limitFixture) waiting() <-chan acceptResult {
	f.t.Helper()
	before := f.limit.Waits()
	res := f.acceptAsync()
	waitFor(f.t, "Accept to wait for a slot", func() bool { return f.limit.Waits() > before })
	select {
	case r := <-res:
		f.t.Fatalf("Accept() returned (%v, %v) at the cap of %d with %d open", r.conn, r.err, f.limit.Max(), f.limit.Open())
	default:
	}
	return res
}

func TestConnLimitListener(t *testing.T) {
	t.Run("No more connections than the cap are accepted; the next one waits.", func(t *testing.T) {
		f := newLimitFixture(t, 2)
		for range 3 {
			f.dial()
		}
		f.accept()
		f.accept()
		f.waiting()
		if got := f.limit.Open(); got != 2 {
			t.Errorf("Open() = %d, want 2", got)
		}
	})

	t.Run("A waiting Accept proceeds when an open connection closes.", func(t *testing.T) {
		f := newLimitFixture(t, 2)
		for range 3 {
			f.dial()
		}
		first := f.accept()
		f.accept()
		res := f.waiting()
		if err := first.Close(); err != nil {
			t.Fatal(err)
		}
		select {
		case r := <-res:
			if r.err != nil {
				t.Fatalf("Accept() error = %v, want the third connection", r.err)
			}
		case <-time.After(deadline):
			t.Fatal("Accept() still waits after a connection closed")
		}
		if got := f.limit.Open(); got != 2 {
			t.Errorf("Open() = %d, want 2", got)
		}
	})

	t.Run("Closing a connection twice frees one slot.", func(t *testing.T) {
		f := newLimitFixture(t, 1)
		for range 3 {
			f.dial()
		}
		c := f.accept()
		_ = c.Close()
		if err := c.Close(); err == nil {
			t.Error("second Close() = nil, want the connection's own error")
		}
		if got := f.limit.Open(); got != 0 {
			t.Errorf("Open() after two Closes = %d, want 0", got)
		}
		f.accept()
		// Were the slot freed twice, this Accept would take a phantom slot instead of waiting.
		f.waiting()
	})

	t.Run("Closes from many goroutines at once free one slot.", func(t *testing.T) {
		f := newLimitFixture(t, 1)
		f.dial()
		f.dial()
		c := f.accept()
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() { _ = c.Close() })
		}
		wg.Wait()
		f.accept()
		f.waiting()
		if got := f.limit.Open(); got != 1 {
			t.Errorf("Open() = %d, want 1", got)
		}
	})

	t.Run("Closing the listener ends a waiting Accept with net.ErrClosed.", func(t *testing.T) {
		f := newLimitFixture(t, 1)
		f.dial()
		f.dial()
		f.accept()
		res := f.waiting()
		if err := f.ln.Close(); err != nil {
			t.Fatal(err)
		}
		select {
		case r := <-res:
			if !errors.Is(r.err, net.ErrClosed) {
				t.Fatalf("Accept() = (%v, %v), want net.ErrClosed", r.conn, r.err)
			}
		case <-time.After(deadline):
			t.Fatal("Accept() still waits after the listener closed")
		}
		if _, err := f.ln.Accept(); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Accept() on a closed listener = %v, want net.ErrClosed", err)
		}
	})

	t.Run("A failed Accept gives its slot back.", func(t *testing.T) {
		limit := NewConnLimit(1)
		inner := &failingListener{Listener: nil, err: errors.New("accept: too many open files")}
		ln := limit.Listener(inner)
		for range 3 {
			if _, err := ln.Accept(); err != inner.err {
				t.Fatalf("Accept() error = %v, want %v", err, inner.err)
			}
		}
		if limit.Open() != 0 || limit.Waits() != 0 {
			t.Errorf("after failed Accepts: Open() = %d, Waits() = %d, want 0 and 0", limit.Open(), limit.Waits())
		}
	})

	t.Run("Without a cap, connections are counted and never wait.", func(t *testing.T) {
		f := newLimitFixture(t, 0)
		var conns []net.Conn
		for range 5 {
			f.dial()
			conns = append(conns, f.accept())
		}
		if f.limit.Open() != 5 || f.limit.Waits() != 0 || f.limit.Max() != 0 {
			t.Errorf("Open() = %d, Waits() = %d, Max() = %d, want 5, 0, 0", f.limit.Open(), f.limit.Waits(), f.limit.Max())
		}
		for _, c := range conns {
			_ = c.Close()
		}
		if got := f.limit.Open(); got != 0 {
			t.Errorf("Open() after closing all = %d, want 0", got)
		}
	})
}

// failingListener's Accept always fails.
type failingListener struct {
	net.Listener
	err error
}

func (l *failingListener) Accept() (net.Conn, error) { return nil, l.err }
func (l *failingListener) Close() error              { return nil }
func (l *failingListener) Addr() net.Addr            { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

func TestConnLimitConnKeepsTCPMethods(t *testing.T) {
	f := newLimitFixture(t, 1)
	client := f.dial()
	c := f.accept()
	if _, ok := c.(io.ReaderFrom); !ok {
		t.Error("the accepted connection is no io.ReaderFrom: net/http's response.ReadFrom loses sendfile")
	}
	if _, ok := c.(interface{ NetConn() net.Conn }).NetConn().(*net.TCPConn); !ok {
		t.Error("NetConn() is not the accepted *net.TCPConn")
	}
	cw, ok := c.(interface{ CloseWrite() error })
	if !ok {
		t.Fatal("the accepted connection has no CloseWrite: net/http cannot close gracefully after an error response")
	}
	if _, err := io.WriteString(c, "bye"); err != nil {
		t.Fatal(err)
	}
	if err := cw.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = client.SetReadDeadline(time.Now().Add(deadline))
	got, err := io.ReadAll(client)
	if err != nil || string(got) != "bye" {
		t.Errorf("client read %q, %v after CloseWrite; want \"bye\" and EOF", got, err)
	}
	if f.limit.Open() != 1 {
		t.Errorf("Open() after CloseWrite = %d, want 1: a half-closed connection keeps its slot", f.limit.Open())
	}
}

// TestServerConnLimit runs an HTTP server with a cap of one connection and checks that a
// hijacked connection (as a WebSocket is) holds its slot until the handler closes it, then
// frees it for the connection waiting in the backlog.
func TestServerConnLimit(t *testing.T) {
	hijacked := make(chan net.Conn, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/upgrade" {
			_, _ = io.WriteString(w, "ok")
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("Hijack() error = %v", err)
			return
		}
		_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: test\r\n\r\n")
		_ = brw.Flush()
		hijacked <- conn
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	limit := NewConnLimit(1)
	s := &Server{HTTP: &http.Server{Handler: h}, Listener: ln, Limit: limit, ShutdownTimeout: deadline, Log: logr.Discard()}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Start(ctx) }()

	up, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	_ = up.SetDeadline(time.Now().Add(deadline))
	if _, err := io.WriteString(up, "GET /upgrade HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: test\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(up), nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade answered %v, %v; want 101", resp, err)
	}
	var conn net.Conn
	select {
	case conn = <-hijacked:
	case <-time.After(deadline):
		t.Fatal("the handler did not hijack")
	}

	// The hijacked connection holds the one slot: the server's next Accept waits for it, so the
	// next client waits in the backlog.
	waitFor(t, "the server's Accept to wait for a slot", func() bool { return limit.Waits() > 0 })
	if got := limit.Open(); got != 1 {
		t.Errorf("Open() with the hijacked connection = %d, want 1", got)
	}
	// The kernel completes the next client's handshake and keeps its request in the socket
	// buffer; it is served once the slot frees.
	next, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer next.Close()
	_ = next.SetDeadline(time.Now().Add(deadline))
	if _, err := io.WriteString(next, "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}

	if err := conn.Close(); err != nil {
		t.Fatal(err)
	}
	resp, err = http.ReadResponse(bufio.NewReader(next), nil)
	if err != nil {
		t.Fatalf("the waiting client was not served after the hijacked connection closed: %v", err)
	}
	if body, err := io.ReadAll(resp.Body); err != nil || string(body) != "ok" {
		t.Fatalf("the waiting client got %q, %v; want ok", body, err)
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Start() = %v, want nil", err)
	}
	waitFor(t, "every connection to be closed after shutdown", func() bool { return limit.Open() == 0 })
}

func TestConnLimitCollector(t *testing.T) {
	f := newLimitFixture(t, 3)
	f.dial()
	f.dial()
	f.accept()
	f.accept()
	const want = `
# HELP lobby_interceptor_proxy_connection_waits_total Times the accept loop found every connection slot taken and waited for one to free; connections arriving meanwhile wait in the listen backlog.
# TYPE lobby_interceptor_proxy_connection_waits_total counter
lobby_interceptor_proxy_connection_waits_total 0
# HELP lobby_interceptor_proxy_max_connections Most client connections kept open at once; more wait in the listen backlog. 0 is no cap.
# TYPE lobby_interceptor_proxy_max_connections gauge
lobby_interceptor_proxy_max_connections 3
# HELP lobby_interceptor_proxy_open_connections Client connections accepted and not yet closed, hijacked ones (such as WebSockets) included.
# TYPE lobby_interceptor_proxy_open_connections gauge
lobby_interceptor_proxy_open_connections 2
# HELP lobby_interceptor_proxy_open_streams HTTP/2 streams running, each holding a slot of the connection cap beside its connection's.
# TYPE lobby_interceptor_proxy_open_streams gauge
lobby_interceptor_proxy_open_streams 0
# HELP lobby_interceptor_proxy_refused_streams_total HTTP/2 streams answered 503 because every slot of the connection cap was taken.
# TYPE lobby_interceptor_proxy_refused_streams_total counter
lobby_interceptor_proxy_refused_streams_total 0
`
	if err := testutil.CollectAndCompare(NewConnLimitCollector("lobby_interceptor_proxy", f.limit), strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}

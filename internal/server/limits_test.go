package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// serveLimited serves h on a loopback listener under limit, over HTTP/1.1 and h2c, and returns
// its address.
func serveLimited(t *testing.T, limit *ConnLimit, h http.Handler) string {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: h, Protocols: &p, ReadHeaderTimeout: deadline}
	ln := limit.Listener(inner)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

// h2cClient returns a client that speaks HTTP/2 with prior knowledge.
func h2cClient(t *testing.T) *http.Client {
	t.Helper()
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &p}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: deadline}
}

// rawH2 is one h2c connection driven frame by frame, so that a test opens exactly the streams it
// means to on exactly one connection.
type rawH2 struct {
	t  *testing.T
	c  net.Conn
	fr *http2.Framer
	// The connection's header compression state, which lasts as long as it.
	dec *hpack.Decoder
	enc *hpack.Encoder
	buf bytes.Buffer
}

func dialH2(t *testing.T, addr string) *rawH2 {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(deadline))
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	h := &rawH2{t: t, c: c, fr: fr, dec: hpack.NewDecoder(4096, nil)}
	h.enc = hpack.NewEncoder(&h.buf)
	return h
}

// get opens stream id with a GET of / and no body.
func (h *rawH2) get(id uint32) {
	h.t.Helper()
	h.buf.Reset()
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "test"}, {":path", "/"}} {
		_ = h.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: h.buf.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
		h.t.Fatal(err)
	}
}

// statuses reads frames until n streams have response headers, and returns the status of each.
func (h *rawH2) statuses(n int) map[uint32]string {
	h.t.Helper()
	got := map[uint32]string{}
	for len(got) < n {
		f, err := h.fr.ReadFrame()
		if err != nil {
			h.t.Fatalf("read a frame with %d of %d answers: %v", len(got), n, err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = h.fr.WriteSettingsAck()
			}
		case *http2.HeadersFrame:
			fields, err := h.dec.DecodeFull(f.HeaderBlockFragment())
			if err != nil {
				h.t.Fatal(err)
			}
			for _, hf := range fields {
				if hf.Name == ":status" {
					got[f.StreamID] = hf.Value
				}
			}
		case *http2.RSTStreamFrame:
			got[f.StreamID] = "reset " + f.ErrCode.String()
		}
	}
	return got
}

func TestStreamsTakeSlots(t *testing.T) {
	// Five slots: the accept loop waiting for the next connection takes one, the h2c connection
	// one, three streams the others; the rest are refused.
	limit := NewConnLimit(5)
	release := make(chan struct{})
	h := limit.Streams(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
	}))
	addr := serveLimited(t, limit, h)
	c := dialH2(t, addr)
	for i := range 3 {
		c.get(uint32(2*i + 1))
	}
	waitFor(t, "three streams running", func() bool { return limit.OpenStreams() == 3 })
	for i := 3; i < 10; i++ {
		c.get(uint32(2*i + 1))
	}
	got := c.statuses(7)
	for id, st := range got {
		if id <= 5 || st != "503" {
			t.Fatalf("stream %d got %s; want the seven streams over the slots answered 503 (all: %v)", id, st, got)
		}
	}
	if n := limit.RefusedStreams(); n != 7 {
		t.Fatalf("RefusedStreams = %d, want 7", n)
	}
	close(release)
	for id, st := range c.statuses(3) {
		if id > 5 || st != "200" {
			t.Fatalf("stream %d got %s; want the three streams within the slots answered 200", id, st)
		}
	}
	waitFor(t, "the streams' slots to be free", func() bool { return limit.OpenStreams() == 0 && len(limit.slots) == 2 })

	// HTTP/1.1 requests take no slot beside their connection's.
	resp, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK || limit.RefusedStreams() != 7 {
		t.Fatalf("an HTTP/1.1 request got %d, refused streams %d; want 200 and still 7", resp.StatusCode, limit.RefusedStreams())
	}
}

func TestStreamsWithoutCapPassThrough(t *testing.T) {
	limit := NewConnLimit(0)
	h := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
	if got := limit.Streams(h); fmt.Sprintf("%p", got) != fmt.Sprintf("%p", h) {
		t.Fatal("Streams of a limit without a cap wrapped the handler; want it returned as is")
	}
}

func TestWriteIdleTimeout(t *testing.T) {
	const idle = 300 * time.Millisecond
	tests := []struct {
		name string
		// handler writes the response; read reads it on the client's side.
		handler func(w http.ResponseWriter, r *http.Request) error
		read    func(body io.Reader) error
		wantCut bool
	}{{
		name: "a client that reads nothing of a large response is cut",
		handler: func(w http.ResponseWriter, r *http.Request) error {
			chunk := bytes.Repeat([]byte("x"), 64<<10)
			for range 4096 { // 256 MiB: far more than the socket buffers hold.
				if _, err := w.Write(chunk); err != nil {
					return err
				}
			}
			return nil
		},
		read: func(io.Reader) error {
			time.Sleep(5 * idle)
			return nil
		},
		wantCut: true,
	}, {
		name: "a client that reads slowly but steadily for far longer than the timeout is served",
		handler: func(w http.ResponseWriter, r *http.Request) error {
			chunk := bytes.Repeat([]byte("x"), 64<<10)
			for range 64 { // 4 MiB, more than the socket buffers hold.
				if _, err := w.Write(chunk); err != nil {
					return err
				}
			}
			return nil
		},
		read: func(body io.Reader) error {
			buf := make([]byte, 256<<10)
			var n int
			for {
				m, err := io.ReadFull(body, buf)
				n += m
				if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
					break
				}
				if err != nil {
					return err
				}
				time.Sleep(idle / 4)
			}
			if n != 64*64<<10 {
				return fmt.Errorf("read %d bytes, want %d", n, 64*64<<10)
			}
			return nil
		},
	}, {
		name: "an event stream silent for longer than the timeout between events is served",
		handler: func(w http.ResponseWriter, r *http.Request) error {
			w.Header().Set("Content-Type", "text/event-stream")
			for i := range 3 {
				if _, err := fmt.Fprintf(w, "data: %d\n\n", i); err != nil {
					return err
				}
				if err := http.NewResponseController(w).Flush(); err != nil {
					return err
				}
				time.Sleep(2 * idle)
			}
			return nil
		},
		read: func(body io.Reader) error {
			b, err := io.ReadAll(body)
			if err != nil {
				return err
			}
			if want := "data: 0\n\ndata: 1\n\ndata: 2\n\n"; string(b) != want {
				return fmt.Errorf("read %q, want %q", b, want)
			}
			return nil
		},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			limit := NewConnLimit(8)
			limit.WriteIdleTimeout = idle
			handlerErr := make(chan error, 1)
			addr := serveLimited(t, limit, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				handlerErr <- tc.handler(w, r)
			}))
			tr := &http.Transport{}
			t.Cleanup(tr.CloseIdleConnections)
			resp, err := (&http.Client{Transport: tr}).Get("http://" + addr + "/")
			if err != nil {
				t.Fatal(err)
			}
			readErr := tc.read(resp.Body)
			_ = resp.Body.Close()
			var herr error
			select {
			case herr = <-handlerErr:
			case <-time.After(deadline):
				t.Fatal("the handler did not return")
			}
			if tc.wantCut {
				if herr == nil {
					t.Fatal("the handler wrote its whole response to a client that read nothing; want its write cut")
				}
				waitFor(t, "the cut connection's slot to be free", func() bool { return limit.Open() == 0 })
				return
			}
			if herr != nil || readErr != nil {
				t.Fatalf("handler error %v, client error %v; want the response served whole", herr, readErr)
			}
		})
	}
}

func TestIdleBodyBoundsTheReadAfterTheHandler(t *testing.T) {
	// The handler answers without reading the body; net/http then reads what is left of a small
	// body to keep the connection alive. A client that stopped sending must not keep it.
	const idle = 300 * time.Millisecond
	limit := NewConnLimit(8)
	addr := serveLimited(t, limit, IdleBody(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "answered without reading\n")
	}), idle))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 1000\r\n\r\nx"); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(deadline))
	start := time.Now()
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read the answer: %v", err)
	}
	if !bytes.Contains(b, []byte("answered without reading")) {
		t.Fatalf("answer %q, want the handler's", b)
	}
	if took := time.Since(start); took > 10*idle {
		t.Errorf("the connection was closed %v after the answer, want about %v", took, idle)
	}
	waitFor(t, "the connection's slot to be free", func() bool { return limit.Open() == 0 })
}

func TestIdleBodyStalledClientGetsTheAnswer(t *testing.T) {
	// The handler reads the body, which the client stops sending, and answers the failure. The
	// answer must reach the client at once, whatever is left of the body: net/http must not try
	// to read the rest first.
	const idle = 300 * time.Millisecond
	for _, length := range []int{100, 1 << 20} {
		t.Run(fmt.Sprintf("a body of %d bytes of which 16 arrive", length), func(t *testing.T) {
			limit := NewConnLimit(8)
			addr := serveLimited(t, limit, IdleBody(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if _, err := io.Copy(io.Discard, r.Body); errors.Is(err, ErrBodyIdle) {
					http.Error(w, "request body stopped arriving", http.StatusRequestTimeout)
				}
			}), idle))
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := fmt.Fprintf(c, "POST / HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n0123456789abcdef", length); err != nil {
				t.Fatal(err)
			}
			_ = c.SetReadDeadline(time.Now().Add(10 * idle))
			b, err := io.ReadAll(c)
			if err != nil || !bytes.HasPrefix(b, []byte("HTTP/1.1 408 ")) {
				t.Fatalf("got %q, %v; want the handler's 408 and the connection closed", b, err)
			}
			waitFor(t, "the connection's slot to be free", func() bool { return limit.Open() == 0 })
		})
	}
}

func TestIdleBody(t *testing.T) {
	const idle = 300 * time.Millisecond
	tests := []struct {
		name  string
		h2    bool
		pause time.Duration
		// stall is set when the client stops sending after its first byte.
		stall   bool
		grpc    bool
		wantCut bool
	}{
		{name: "an HTTP/1.1 body that stops arriving is cut", stall: true, wantCut: true},
		{name: "an HTTP/2 body that stops arriving is cut", h2: true, stall: true, wantCut: true},
		{name: "an HTTP/1.1 upload that progresses for far longer than the timeout is read whole", pause: idle / 3},
		{name: "an HTTP/2 client stream that progresses for far longer than the timeout is read whole", h2: true, pause: idle / 3},
		{name: "a gRPC client stream silent for longer than the timeout is read whole", h2: true, grpc: true, pause: 2 * idle},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			type read struct {
				n   int64
				err error
			}
			reads := make(chan read, 1)
			addr := serveLimited(t, NewConnLimit(8), IdleBody(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				n, err := io.Copy(io.Discard, r.Body)
				reads <- read{n, err}
			}), idle))
			pr, pw := io.Pipe()
			const parts = 12
			go func() {
				for i := range parts {
					if _, err := pw.Write([]byte("x")); err != nil {
						return
					}
					if tc.stall && i == 0 {
						<-t.Context().Done()
						return
					}
					time.Sleep(tc.pause)
				}
				_ = pw.Close()
			}()
			t.Cleanup(func() { _ = pw.Close() })
			client := &http.Client{Transport: &http.Transport{}}
			if tc.h2 {
				client = h2cClient(t)
			}
			ctx, cancel := context.WithTimeout(t.Context(), deadline)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/", pr)
			if err != nil {
				t.Fatal(err)
			}
			req.ContentLength = parts
			if tc.grpc {
				req.ContentLength = -1
				req.Header.Set("Content-Type", "application/grpc+proto")
			}
			go func() {
				if resp, err := client.Do(req); err == nil {
					_ = resp.Body.Close()
				}
			}()
			var got read
			select {
			case got = <-reads:
			case <-time.After(deadline):
				t.Fatal("the handler's read did not end")
			}
			if tc.wantCut {
				if !errors.Is(got.err, ErrBodyIdle) {
					t.Fatalf("read %d bytes from a stalled body, error %v; want the read cut with ErrBodyIdle", got.n, got.err)
				}
				return
			}
			if got.err != nil || got.n != parts {
				t.Fatalf("read %d bytes, error %v; want %d without error", got.n, got.err, parts)
			}
		})
	}
}

// BenchmarkLimitWrappers measures what the stream and body wrappers add to a GET over HTTP/1.1,
// the warm path: nothing allocated.
func BenchmarkLimitWrappers(b *testing.B) {
	limit := NewConnLimit(1 << 10)
	h := limit.Streams(IdleBody(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}), time.Minute))
	r, err := http.NewRequest(http.MethodGet, "http://test/", http.NoBody)
	if err != nil {
		b.Fatal(err)
	}
	w := discardWriter{}
	b.ReportAllocs()
	for b.Loop() {
		h.ServeHTTP(w, r)
	}
}

// discardWriter is a ResponseWriter that keeps nothing.
type discardWriter struct{}

func (discardWriter) Header() http.Header         { return nil }
func (discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (discardWriter) WriteHeader(int)             {}

func TestWriteIdleTimeoutSparesAnIdleHijackedConnection(t *testing.T) {
	// A WebSocket as the reverse proxy passes it on: the handler hijacks the connection, answers
	// 101, and copies what the app sends with io.Copy, which reaches the connection's ReadFrom.
	// Silent for longer than the timeout, it must still carry the next message.
	const idle = 300 * time.Millisecond
	limit := NewConnLimit(8)
	limit.WriteIdleTimeout = idle
	app, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	go func() {
		c, err := app.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		time.Sleep(3 * idle)
		_, _ = io.WriteString(c, "after the silence\n")
	}()
	addr := serveLimited(t, limit, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		up, err := net.Dial("tcp", app.Addr().String())
		if err != nil {
			t.Error(err)
			return
		}
		defer up.Close()
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		_, _ = io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: test\r\nConnection: Upgrade\r\n\r\n")
		_, _ = io.Copy(conn, up)
	}))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: test\r\nConnection: Upgrade\r\nUpgrade: test\r\n\r\n")
	_ = c.SetReadDeadline(time.Now().Add(deadline))
	b, _ := io.ReadAll(c)
	if !bytes.HasSuffix(b, []byte("\r\n\r\nafter the silence\n")) {
		t.Fatalf("the hijacked connection carried %q; want the 101 and the message sent after the silence", b)
	}
}

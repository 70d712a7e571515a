package server

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
)

func TestStart(t *testing.T) {
	tests := []struct {
		name string
		// handlerDelay is how long the one active request takes once shutdown has begun.
		handlerDelay    time.Duration
		shutdownTimeout time.Duration
		wantCompleted   bool
	}{
		{name: "An active request finishes within the shutdown timeout.", handlerDelay: 50 * time.Millisecond, shutdownTimeout: 5 * time.Second, wantCompleted: true},
		{name: "An active request past the shutdown timeout is cut off.", handlerDelay: 5 * time.Second, shutdownTimeout: 50 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			started := make(chan struct{})
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				close(started)
				select {
				case <-time.After(tt.handlerDelay):
				case <-r.Context().Done():
				}
				_, _ = io.WriteString(w, "done")
			})
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			s := &Server{HTTP: &http.Server{Handler: h}, Listener: ln, ShutdownTimeout: tt.shutdownTimeout, Log: logr.Discard()}
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() { done <- s.Start(ctx) }()

			type result struct {
				body string
				err  error
			}
			res := make(chan result, 1)
			go func() {
				resp, err := http.Get("http://" + ln.Addr().String())
				if err != nil {
					res <- result{err: err}
					return
				}
				defer resp.Body.Close()
				b, err := io.ReadAll(resp.Body)
				res <- result{string(b), err}
			}()
			<-started
			cancel()

			if err := <-done; err != nil {
				t.Fatalf("Start() = %v, want nil", err)
			}
			r := <-res
			if completed := r.err == nil && r.body == "done"; completed != tt.wantCompleted {
				t.Errorf("request completed = %t (body %q, err %v), want %t", completed, r.body, r.err, tt.wantCompleted)
			}
			if _, err := net.Dial("tcp", ln.Addr().String()); err == nil {
				t.Error("server still accepts connections after Start returned")
			}
		})
	}
}

func TestStartListenError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s := &Server{HTTP: &http.Server{Addr: ln.Addr().String()}, Log: logr.Discard()}
	if err := s.Start(t.Context()); err == nil {
		t.Fatal("Start() on a taken address = nil, want an error")
	}
}

func TestErrorLog(t *testing.T) {
	tests := []struct {
		name      string
		verbosity int
		want      []string
	}{
		{name: "Lines are hidden at info level.", verbosity: 0},
		{name: "Lines are kept at debug level, without the trailing newline.", verbosity: 1, want: []string{"http: TLS handshake error"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			sink := funcr.New(func(_, args string) { got = append(got, args) }, funcr.Options{Verbosity: tt.verbosity})
			ErrorLog(sink).Printf("http: TLS handshake error\n")
			if len(got) != len(tt.want) {
				t.Fatalf("logged %q, want %d lines", got, len(tt.want))
			}
			for i, w := range tt.want {
				if !strings.Contains(got[i], `"error"="`+w+`"`) {
					t.Errorf("line %d = %s, want error %q", i, got[i], w)
				}
			}
		})
	}
}

func TestCloseAfterChunked(t *testing.T) {
	tests := []struct {
		name string
		// req is what the client sends: one request, and after it the start of another.
		req       string
		wantPaths []string
		wantClose bool
	}{
		{
			name: "Bytes after a chunked body that also claims a Content-Length are never read as a request.",
			req: "POST /first HTTP/1.1\r\nHost: a\r\nContent-Length: 30\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" +
				"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
			wantPaths: []string{"/first"},
			wantClose: true,
		},
		{
			name: "A chunked request without a Content-Length is answered, then its connection closed.",
			req: "POST /first HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n" +
				"GET /second HTTP/1.1\r\nHost: a\r\n\r\n",
			wantPaths: []string{"/first"},
			wantClose: true,
		},
		{
			name: "A request with a Content-Length keeps its connection for the next one.",
			req: "POST /first HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc" +
				"GET /second HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
			wantPaths: []string{"/first", "/second"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			paths := make(chan string, 4)
			h := CloseAfterChunked(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
				paths <- r.URL.Path
				_, _ = io.WriteString(w, "ok")
			}))
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			s := &Server{HTTP: &http.Server{Handler: h}, Listener: ln, ShutdownTimeout: time.Second, Log: logr.Discard()}
			go func() { _ = s.Start(t.Context()) }()

			conn, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
			if _, err := io.WriteString(conn, tt.req); err != nil {
				t.Fatal(err)
			}
			// The server closes the connection in every case: after the chunked request, or after
			// the second request, which asks for it.
			got, err := io.ReadAll(conn)
			if err != nil {
				t.Fatalf("read until the server closes: %v (got %q)", err, got)
			}
			close(paths)
			var gotPaths []string
			for p := range paths {
				gotPaths = append(gotPaths, p)
			}
			if strings.Join(gotPaths, " ") != strings.Join(tt.wantPaths, " ") {
				t.Errorf("handler saw %q, want %q", gotPaths, tt.wantPaths)
			}
			br := bufio.NewReader(bytes.NewReader(got))
			var closes []bool
			for {
				if _, err := br.Peek(1); err == io.EOF {
					break
				}
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("parse response %d: %v (got %q)", len(closes)+1, err, got)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				closes = append(closes, resp.Close)
			}
			if len(closes) != len(tt.wantPaths) {
				t.Fatalf("got %d responses, want %d: %q", len(closes), len(tt.wantPaths), got)
			}
			if closes[0] != tt.wantClose {
				t.Errorf("first response closes the connection = %t, want %t: %q", closes[0], tt.wantClose, got)
			}
		})
	}
}

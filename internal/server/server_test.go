package server

import (
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

package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/websocket"

	"github.com/lobby-http/lobby/e2e/framework/poll"
	"github.com/lobby-http/lobby/internal/testpki"
)

func TestLoadConfig(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	t.Run("defaults apply when nothing is set", func(t *testing.T) {
		cfg, err := loadConfig(nil, env(nil))
		if err != nil {
			t.Fatal(err)
		}
		if cfg.port != 8080 || cfg.readyPath != "/healthz" || cfg.ip != "" || cfg.grpcPort != 0 {
			t.Errorf("config = %+v", cfg)
		}
	})
	t.Run("flags win over the environment", func(t *testing.T) {
		cfg, err := loadConfig([]string{"-port", "9000"}, env(map[string]string{"PORT": "7000", "POD_IP": "10.244.1.9", "STARTUP_DELAY": "2s"}))
		if err != nil {
			t.Fatal(err)
		}
		if cfg.port != 9000 || cfg.ip != "10.244.1.9" || cfg.startupDelay.String() != "2s" {
			t.Errorf("config = %+v", cfg)
		}
	})
	for _, tt := range []struct{ name, key, value string }{
		{"a bad duration names its variable", "RESPONSE_DELAY", "soon"},
		{"a bad port names its variable", "PORT", "http"},
		{"a ready path without a slash is refused", "READY_PATH", "healthz"},
		{"a certificate without its key is refused", "TLS_CERT", "not PEM"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := loadConfig(nil, env(map[string]string{tt.key: tt.value}))
			if err == nil || !strings.Contains(err.Error(), tt.key) {
				t.Errorf("err = %v, want it to name %s", err, tt.key)
			}
		})
	}
}

func TestLoadConfigReadsTheKeyPair(t *testing.T) {
	leaf := testpki.NewCA(t, "test CA").Issue(t, "echo.ns.svc")
	cfg, err := loadConfig(nil, func(k string) string {
		return map[string]string{"TLS_CERT": string(leaf.CertPEM), "TLS_KEY": string(leaf.KeyPEM)}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.cert == nil || cfg.cert.Leaf == nil || cfg.cert.Leaf.DNSNames[0] != "echo.ns.svc" {
		t.Errorf("cert = %+v, want the key pair for echo.ns.svc", cfg.cert)
	}
}

// startEcho serves the app's handler the way run does (HTTP/1.1 and h2c) on loopback.
func startEcho(t *testing.T) string {
	t.Helper()
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	srv := httptest.NewUnstartedServer(handler(config{readyPath: "/healthz", podName: "echo-0"}))
	srv.Config.Protocols = &protocols
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

func TestHandler(t *testing.T) {
	addr := startEcho(t)

	t.Run("the root echoes the request as JSON with the pod name", func(t *testing.T) {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+addr+"/some/path?x=1", nil)
		req.Host = "app.example"
		req.Header.Set("X-Test", "yes")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var got echo
		if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
			t.Fatal(err)
		}
		if got.Method != "GET" || got.Host != "app.example" || got.Path != "/some/path" || got.Query != "x=1" ||
			got.PodName != "echo-0" || got.Headers["X-Test"][0] != "yes" {
			t.Errorf("echo = %+v", got)
		}
	})

	t.Run("unencrypted HTTP/2 is served", func(t *testing.T) {
		client := &http.Client{Transport: &http2.Transport{
			AllowHTTP: true,
			DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, network, addr)
			},
		}}
		resp, err := client.Get("http://" + addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var got echo
		if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
			t.Fatal(err)
		}
		if got.Proto != "HTTP/2.0" {
			t.Errorf("proto = %s, want HTTP/2.0", got.Proto)
		}
	})

	t.Run("status paths answer with their status and the ready path with 200", func(t *testing.T) {
		for path, want := range map[string]int{"/status/503": 503, "/status/204": 204, "/status/abc": 400, "/healthz": 200} {
			resp, err := http.Get("http://" + addr + path)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != want {
				t.Errorf("GET %s = %d, want %d", path, resp.StatusCode, want)
			}
		}
	})

	t.Run("server-sent events arrive one by one", func(t *testing.T) {
		resp, err := http.Get("http://" + addr + "/sse?n=3&interval=10ms")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
			t.Errorf("content type = %q", ct)
		}
		var events int
		s := bufio.NewScanner(resp.Body)
		for s.Scan() {
			if strings.HasPrefix(s.Text(), "data: event ") {
				events++
			}
		}
		if events != 3 {
			t.Errorf("got %d events, want 3", events)
		}
	})

	t.Run("WebSocket messages are echoed", func(t *testing.T) {
		ws, err := websocket.Dial("ws://"+addr+"/ws", "", "http://"+addr)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()
		for _, msg := range []string{"hello", "again"} {
			if err := websocket.Message.Send(ws, msg); err != nil {
				t.Fatal(err)
			}
			var got string
			if err := websocket.Message.Receive(ws, &got); err != nil {
				t.Fatal(err)
			}
			if got != msg {
				t.Errorf("echoed %q, want %q", got, msg)
			}
		}
	})

	t.Run("a bad delay is a 400", func(t *testing.T) {
		resp, err := http.Get("http://" + addr + "/?delay=later")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), "delay") {
			t.Errorf("GET /?delay=later = %d %q", resp.StatusCode, b)
		}
	})

	t.Run("/delayed counts the requests in their delay", func(t *testing.T) {
		delayed := func() string {
			resp, err := http.Get("http://" + addr + "/delayed")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return strings.TrimSpace(string(b))
		}
		if got := delayed(); got != "0" {
			t.Fatalf("before a slow request: %q, want 0", got)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() {
			defer close(done)
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/?delay=1m", nil)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
		}()
		waitFor := func(want string) {
			t.Helper()
			err := poll.Until(t.Context(), 5*time.Second, "/delayed to be "+want, func() error {
				if got := delayed(); got != want {
					return fmt.Errorf("/delayed = %q", got)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		waitFor("1")
		cancel()
		<-done
		waitFor("0")
	})
}

// Command echo is the sample app the process kubelet runs in end-to-end tests (image
// lobby.test/echo). It serves HTTP/1.1 and unencrypted HTTP/2 (h2c) on $POD_IP:$PORT and,
// when GRPC_PORT is set, the gRPC health service on $POD_IP:$GRPC_PORT.
//
// It binds the pod address, not the wildcard: every pod of the process kubelet shares one
// network namespace, so two pods listening on 0.0.0.0:8080 would collide.
//
// Configuration, from the environment (each has a flag of the same meaning that wins over it):
//
//	POD_IP          -ip              address to listen on (empty: every address)
//	PORT            -port            HTTP port (8080)
//	GRPC_PORT       -grpc-port       gRPC health port (0: none)
//	STARTUP_DELAY   -startup-delay   wait before listening, like a slow cold start (0)
//	READY_PATH      -ready-path      path that answers 200 once listening (/healthz)
//	RESPONSE_DELAY  -response-delay  added to every request but the readiness path (0)
//	CRASH_AFTER     -crash-after     exit 1 this long after listening (0: never)
//	SHUTDOWN_DELAY  -shutdown-delay  on SIGTERM, keep serving this long before draining (0)
//	POD_NAME        -pod-name        reported in every echo
//	TLS_CERT        (env only)       PEM certificate: with TLS_KEY, serve HTTPS (HTTP/2 and
//	TLS_KEY         (env only)       HTTP/1.1 by ALPN) instead of HTTP and h2c on PORT
//
// Endpoints: the readiness path; / echoes the request as JSON (method, host, path, query,
// proto, headers, podName; ?delay=250ms delays the answer); /status/<code> answers with that
// status; /sse streams ?n= events (default 3) ?interval= apart (default 100ms), each flushed;
// /ws echoes WebSocket messages; /crash answers, then exits 1; /delayed answers how many
// requests are in their delay now (a test can wait until a slow request has reached the app);
// /upload reads the whole request body and answers its length; /download?size= answers that
// many bytes (default 1 MiB), written 32 KiB at a time.
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// config is the app's configuration.
type config struct {
	ip            string
	port          int
	grpcPort      int
	startupDelay  time.Duration
	readyPath     string
	responseDelay time.Duration
	crashAfter    time.Duration
	shutdownDelay time.Duration
	podName       string
	// cert, when set, is served on the HTTP port instead of clear text.
	cert *tls.Certificate
}

func main() {
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	cfg, err := loadConfig(os.Args[1:], os.Getenv)
	if err != nil {
		log.Printf("echo: %v", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx, cfg); err != nil {
		log.Printf("echo: %v", err)
		os.Exit(1)
	}
}

// loadConfig reads the environment, then flags over it.
func loadConfig(args []string, getenv func(string) string) (config, error) {
	var cfg config
	var errs []error
	dur := func(name string) time.Duration {
		v := getenv(name)
		if v == "" {
			return 0
		}
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			errs = append(errs, fmt.Errorf("%s=%q: want a duration such as 2s", name, v))
		}
		return d
	}
	num := func(name string, def int) int {
		v := getenv(name)
		if v == "" {
			return def
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 65535 {
			errs = append(errs, fmt.Errorf("%s=%q: want a port number", name, v))
		}
		return n
	}
	fs := flag.NewFlagSet("echo", flag.ContinueOnError)
	fs.StringVar(&cfg.ip, "ip", getenv("POD_IP"), "address to listen on (env POD_IP)")
	fs.IntVar(&cfg.port, "port", num("PORT", 8080), "HTTP port (env PORT)")
	fs.IntVar(&cfg.grpcPort, "grpc-port", num("GRPC_PORT", 0), "gRPC health port, 0 for none (env GRPC_PORT)")
	fs.DurationVar(&cfg.startupDelay, "startup-delay", dur("STARTUP_DELAY"), "wait before listening (env STARTUP_DELAY)")
	readyPath := getenv("READY_PATH")
	if readyPath == "" {
		readyPath = "/healthz"
	}
	fs.StringVar(&cfg.readyPath, "ready-path", readyPath, "readiness path (env READY_PATH)")
	fs.DurationVar(&cfg.responseDelay, "response-delay", dur("RESPONSE_DELAY"), "delay of every response (env RESPONSE_DELAY)")
	fs.DurationVar(&cfg.crashAfter, "crash-after", dur("CRASH_AFTER"), "exit 1 this long after listening (env CRASH_AFTER)")
	fs.DurationVar(&cfg.shutdownDelay, "shutdown-delay", dur("SHUTDOWN_DELAY"), "serve this long after SIGTERM (env SHUTDOWN_DELAY)")
	fs.StringVar(&cfg.podName, "pod-name", getenv("POD_NAME"), "pod name reported in echoes (env POD_NAME)")
	if err := errors.Join(errs...); err != nil {
		return cfg, err
	}
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if certPEM, keyPEM := getenv("TLS_CERT"), getenv("TLS_KEY"); certPEM != "" || keyPEM != "" {
		c, err := tls.X509KeyPair([]byte(certPEM), []byte(keyPEM))
		if err != nil {
			return cfg, fmt.Errorf("TLS_CERT and TLS_KEY: %w", err)
		}
		cfg.cert = &c
	}
	if !strings.HasPrefix(cfg.readyPath, "/") {
		return cfg, fmt.Errorf("READY_PATH %q: want a path starting with /", cfg.readyPath)
	}
	return cfg, nil
}

// run serves until ctx ends, then shuts down gracefully.
func run(ctx context.Context, cfg config) error {
	log.Printf("starting pod=%s startupDelay=%s", cfg.podName, cfg.startupDelay)
	select {
	case <-ctx.Done():
		return nil
	case <-time.After(cfg.startupDelay):
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(cfg.ip, strconv.Itoa(cfg.port)))
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	if cfg.cert != nil {
		protocols.SetHTTP2(true)
	} else {
		protocols.SetUnencryptedHTTP2(true)
	}
	srv := &http.Server{
		Handler:           handler(cfg),
		Protocols:         &protocols,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	errc := make(chan error, 2)
	if cfg.cert != nil {
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{*cfg.cert}, MinVersion: tls.VersionTLS12}
		go func() { errc <- srv.ServeTLS(ln, "", "") }()
	} else {
		go func() { errc <- srv.Serve(ln) }()
	}
	log.Printf("listening on %s (TLS %t)", ln.Addr(), cfg.cert != nil)

	var gsrv *grpc.Server
	if cfg.grpcPort != 0 {
		gln, err := net.Listen("tcp", net.JoinHostPort(cfg.ip, strconv.Itoa(cfg.grpcPort)))
		if err != nil {
			_ = srv.Close()
			return fmt.Errorf("listen grpc: %w", err)
		}
		gsrv = grpc.NewServer()
		hs := health.NewServer()
		hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
		healthpb.RegisterHealthServer(gsrv, hs)
		go func() { errc <- gsrv.Serve(gln) }()
		log.Printf("grpc health on %s", gln.Addr())
	}

	var crash <-chan time.Time
	if cfg.crashAfter > 0 {
		crash = time.After(cfg.crashAfter)
	}
	select {
	case <-crash:
		log.Printf("crashing as CRASH_AFTER=%s says", cfg.crashAfter)
		os.Exit(1)
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Printf("terminating: serving %s more, then draining", cfg.shutdownDelay)
	time.Sleep(cfg.shutdownDelay)
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if gsrv != nil {
		gsrv.GracefulStop()
	}
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shut down: %w", err)
	}
	log.Printf("stopped")
	return nil
}

// echo is the JSON / answers with.
type echo struct {
	Method string `json:"method"`
	Host   string `json:"host"`
	Path   string `json:"path"`
	Query  string `json:"query,omitempty"`
	Proto  string `json:"proto"`
	// TLSServerName is the server name the client asked for over TLS; empty over clear text.
	TLSServerName string              `json:"tlsServerName,omitempty"`
	Headers       map[string][]string `json:"headers"`
	RemoteAddr    string              `json:"remoteAddr"`
	PodName       string              `json:"podName"`
}

// tlsServerName returns the server name r's client asked for over TLS.
func tlsServerName(r *http.Request) string {
	if r.TLS == nil {
		return ""
	}
	return r.TLS.ServerName
}

func handler(cfg config) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(cfg.readyPath, func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	var waiting atomic.Int64
	mux.HandleFunc("/delayed", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "%d\n", waiting.Load())
	})
	delayed := func(h http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			d := cfg.responseDelay
			if q := r.URL.Query().Get("delay"); q != "" {
				v, err := time.ParseDuration(q)
				if err != nil {
					http.Error(w, "delay: want a duration such as 250ms", http.StatusBadRequest)
					return
				}
				d += v
			}
			if d > 0 {
				waiting.Add(1)
				select {
				case <-r.Context().Done():
				case <-time.After(d):
				}
				waiting.Add(-1)
				if r.Context().Err() != nil {
					return
				}
			}
			h(w, r)
		}
	}
	mux.HandleFunc("/", delayed(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(echo{
			Method: r.Method, Host: r.Host, Path: r.URL.Path, Query: r.URL.RawQuery, Proto: r.Proto,
			Headers: r.Header, RemoteAddr: r.RemoteAddr, PodName: cfg.podName, TLSServerName: tlsServerName(r),
		})
	}))
	mux.HandleFunc("/status/{code}", delayed(func(w http.ResponseWriter, r *http.Request) {
		code, err := strconv.Atoi(r.PathValue("code"))
		if err != nil || code < 200 || code > 599 {
			http.Error(w, "want /status/<200-599>", http.StatusBadRequest)
			return
		}
		w.WriteHeader(code)
		fmt.Fprintf(w, "%d %s\n", code, http.StatusText(code))
	}))
	mux.HandleFunc("/sse", delayed(func(w http.ResponseWriter, r *http.Request) {
		n, delay := 3, 100*time.Millisecond
		if v := r.URL.Query().Get("n"); v != "" {
			if i, err := strconv.Atoi(v); err == nil && i >= 0 {
				n = i
			}
		}
		if v := r.URL.Query().Get("interval"); v != "" {
			if d, err := time.ParseDuration(v); err == nil && d >= 0 {
				delay = d
			}
		}
		rc := http.NewResponseController(w)
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		for i := range n {
			if i > 0 {
				select {
				case <-r.Context().Done():
					return
				case <-time.After(delay):
				}
			}
			fmt.Fprintf(w, "id: %d\ndata: event %d from %s\n\n", i, i, cfg.podName)
			if err := rc.Flush(); err != nil {
				return
			}
		}
	}))
	mux.Handle("/ws", websocket.Handler(func(ws *websocket.Conn) {
		var msg []byte
		for {
			if err := websocket.Message.Receive(ws, &msg); err != nil {
				return
			}
			if err := websocket.Message.Send(ws, msg); err != nil {
				return
			}
		}
	}))
	mux.HandleFunc("/upload", func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			http.Error(w, fmt.Sprintf("read body after %d bytes: %v", n, err), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%d\n", n)
	})
	mux.HandleFunc("/download", func(w http.ResponseWriter, r *http.Request) {
		size := int64(1 << 20)
		if v := r.URL.Query().Get("size"); v != "" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				http.Error(w, "want /download?size=<bytes>", http.StatusBadRequest)
				return
			}
			size = n
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		chunk := make([]byte, 32<<10)
		for size > 0 {
			n, err := w.Write(chunk[:min(size, int64(len(chunk)))])
			if err != nil {
				return
			}
			size -= int64(n)
		}
	})
	mux.HandleFunc("/crash", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("crashing\n"))
		_ = http.NewResponseController(w).Flush()
		log.Printf("crashing as /crash asked")
		go func() {
			time.Sleep(50 * time.Millisecond) // let the answer leave
			os.Exit(1)
		}()
	})
	return mux
}

// Command bare is the baseline the interceptor process is measured against in e2e/bench: the
// least a Go program can do for the same job, run as a process of its own so that its latency
// and memory are measured the same way as the interceptor's.
//
// With -mode proxy it is a bare httputil.ReverseProxy in front of -target (Host kept,
// X-Forwarded-* set, a transport keeping 256 idle connections and not asking for compression;
// -pool adds a sync.Pool of copy buffers). With -mode hold it is a bare net/http server whose
// handler blocks every request on a channel until the release; on -admin it answers GET /held
// with the number of requests blocked and POST /release with closing the channel, after which
// every request, held or new, is answered 200.
//
// In either mode, -admin also serves GET /metrics: the Go runtime figures the benchmarks read
// from the interceptor's own /metrics, under the same names and computed the same way as
// client_golang's Go collector computes them (go_memstats_mallocs_total from runtime/metrics),
// so that both processes' allocations are counted alike.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"runtime/metrics"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	log.SetFlags(0)
	if err := run(os.Args[1:]); err != nil {
		log.Fatal(err)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("bare", flag.ContinueOnError)
	mode := fs.String("mode", "", "proxy or hold")
	addr := fs.String("addr", "", "address to serve on, host:port")
	target := fs.String("target", "", "proxy mode: the backend's URL, http://host:port")
	pool := fs.Bool("pool", false, "proxy mode: reuse copy buffers through a sync.Pool")
	admin := fs.String("admin", "", "address of /metrics, and in hold mode of /held and /release")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *addr == "" {
		return errors.New("-addr is required: the host:port to serve on")
	}
	switch *mode {
	case "proxy":
		h, err := proxy(*target, *pool)
		if err != nil {
			return err
		}
		if *admin == "" {
			return serve(*addr, h)
		}
		mux := http.NewServeMux()
		mux.HandleFunc("GET /metrics", metricsHandler)
		errc := make(chan error, 2)
		go func() { errc <- serve(*addr, h) }()
		go func() { errc <- serve(*admin, mux) }()
		return <-errc
	case "hold":
		if *admin == "" {
			return errors.New("-admin is required with -mode hold: the host:port of /held and /release")
		}
		return hold(*addr, *admin)
	default:
		return fmt.Errorf("-mode %q: want proxy or hold", *mode)
	}
}

func serve(addr string, h http.Handler) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return (&http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}).Serve(ln)
}

func proxy(target string, pool bool) (http.Handler, error) {
	u, err := url.Parse(target)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		return nil, fmt.Errorf("-target %q: want http://host:port", target)
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(u)
			r.Out.Host = r.In.Host
			r.SetXForwarded()
		},
		Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        256,
			MaxIdleConnsPerHost: 256,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
		},
	}
	if pool {
		rp.BufferPool = &bufferPool{p: sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}}
	}
	return rp, nil
}

// bufferPool is an httputil.BufferPool over a sync.Pool.
type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() []byte  { return *b.p.Get().(*[]byte) }
func (b *bufferPool) Put(x []byte) { b.p.Put(&x) }

func hold(addr, adminAddr string) error {
	release := make(chan struct{})
	var once sync.Once
	var held atomic.Int64
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		held.Add(1)
		select {
		case <-release:
		case <-r.Context().Done():
			held.Add(-1)
			return
		}
		held.Add(-1)
		_, _ = io.WriteString(w, "hello, world\n")
	})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /held", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, strconv.FormatInt(held.Load(), 10)+"\n")
	})
	mux.HandleFunc("POST /release", func(w http.ResponseWriter, _ *http.Request) {
		once.Do(func() { close(release) })
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /metrics", metricsHandler)
	errc := make(chan error, 2)
	go func() { errc <- serve(addr, app) }()
	go func() { errc <- serve(adminAddr, mux) }()
	return <-errc
}

// runtimeSamples are the runtime/metrics behind metricsHandler's answer: client_golang's Go
// collector reports go_memstats_mallocs_total as the sum of the first two (heap objects and
// tiny allocations), and go_sched_gomaxprocs_threads as the third.
var runtimeSamples = []string{"/gc/heap/allocs:objects", "/gc/heap/tiny/allocs:objects", "/sched/gomaxprocs:threads"}

// metricsHandler answers with go_memstats_mallocs_total and go_sched_gomaxprocs_threads in the
// Prometheus text format, read as the interceptor's Go collector reads them: runtime/metrics
// rather than runtime.ReadMemStats, whose stop-the-world flush of the per-P caches would count
// this process's allocations more exactly than the interceptor's are counted.
func metricsHandler(w http.ResponseWriter, _ *http.Request) {
	s := make([]metrics.Sample, len(runtimeSamples))
	for i, name := range runtimeSamples {
		s[i].Name = name
	}
	metrics.Read(s)
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	fmt.Fprintf(w, "go_memstats_mallocs_total %d\ngo_sched_gomaxprocs_threads %d\n",
		s[0].Value.Uint64()+s[1].Value.Uint64(), s[2].Value.Uint64())
}

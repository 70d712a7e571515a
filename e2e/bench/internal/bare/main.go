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
	admin := fs.String("admin", "", "hold mode: address of the /held and /release endpoints")
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
		return serve(*addr, h)
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
	errc := make(chan error, 2)
	go func() { errc <- serve(addr, app) }()
	go func() { errc <- serve(adminAddr, mux) }()
	return <-errc
}

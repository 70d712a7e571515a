package proxy

import (
	"net/http"
	"net/http/httputil"
	"strings"
)

// rewrite points the outbound request at the chosen endpoint. Host is preserved;
// X-Forwarded-For is appended to, and X-Forwarded-Host and -Proto are set unless an earlier
// proxy (the ingress) set them, since it saw the client's host and scheme.
func rewrite(pr *httputil.ProxyRequest) {
	fw := pr.In.Context().Value(exchangeKey{}).(*forward)
	out, in := pr.Out, pr.In
	out.URL.Scheme = fw.scheme
	out.URL.Host = fw.ep.Host
	out.Host = in.Host
	ip := clientIP(in.RemoteAddr)
	if prior := in.Header["X-Forwarded-For"]; len(prior) > 0 {
		v := prior[0]
		for _, p := range prior[1:] {
			v += ", " + p
		}
		out.Header["X-Forwarded-For"] = []string{v + ", " + ip}
	} else {
		out.Header["X-Forwarded-For"] = []string{ip}
	}
	if v := in.Header["X-Forwarded-Host"]; len(v) > 0 {
		out.Header["X-Forwarded-Host"] = v
	} else {
		out.Header["X-Forwarded-Host"] = []string{in.Host}
	}
	if v := in.Header["X-Forwarded-Proto"]; len(v) > 0 {
		out.Header["X-Forwarded-Proto"] = v
	} else if in.TLS != nil {
		out.Header["X-Forwarded-Proto"] = protoHTTPS
	} else {
		out.Header["X-Forwarded-Proto"] = protoHTTP
	}
	if out.Body != nil && out.Body != http.NoBody {
		fw.body = &retryBody{r: out.Body}
		out.Body = fw.body
	}
	if fw.x.span.on() {
		fw.x.span.inject(out.Header)
	}
}

var (
	protoHTTP  = []string{"http"}
	protoHTTPS = []string{"https"}
)

// clientIP returns the host part of a RemoteAddr without allocating.
func clientIP(remoteAddr string) string {
	if i := strings.LastIndexByte(remoteAddr, ':'); i >= 0 {
		remoteAddr = remoteAddr[:i]
	}
	return strings.TrimSuffix(strings.TrimPrefix(remoteAddr, "["), "]")
}

// modifyResponse records the upstream's status code.
func modifyResponse(resp *http.Response) error {
	fw := resp.Request.Context().Value(exchangeKey{}).(*forward)
	fw.x.code = resp.StatusCode
	fw.x.upstreamCode = resp.StatusCode
	return nil
}

// bufferPool is an httputil.BufferPool over a buffered channel: a sync.Pool of []byte would
// allocate on every Put to box the slice.
type bufferPool chan []byte

func newBufferPool() bufferPool { return make(bufferPool, 256) }

// Get returns a 32 KiB buffer.
func (p bufferPool) Get() []byte {
	select {
	case b := <-p:
		return b
	default:
		return make([]byte, 32*1024)
	}
}

// Put returns b to the pool, or drops it when the pool is full.
func (p bufferPool) Put(b []byte) {
	select {
	case p <- b[:cap(b)]:
	default:
	}
}

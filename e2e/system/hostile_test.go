//go:build e2e

package system

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"

	"github.com/lobby-http/lobby/e2e/deploy"
	"github.com/lobby-http/lobby/e2e/framework/poll"
	"github.com/lobby-http/lobby/operator/api/v1alpha1"
)

// Hostile input: malformed and abusive requests, sent as raw bytes so that no client library
// tidies them first, straight to an interceptor's proxy port and through nginx; and absurd
// HTTPScaledObjects. Each gets a defined answer, no interceptor process dies, and a warm app on
// another route keeps answering.

// hostileHost is a host name of the test's own: a namespace still being deleted after an earlier
// test keeps its routes for a while, and an older object claiming the same host would win.
func hostileHost(name, ns string) string { return name + "." + ns + ".hostile.example" }

// hostileRoutes are the apps the request tests send to: warm on its own host, and two apps that
// share pathsHost by path prefix, public on /public and admin on /admin.
type hostileRoutes struct {
	warm, public, admin *app
	warmHost, pathsHost string
}

func deployHostileRoutes(t *testing.T) hostileRoutes {
	ns := testNamespace(t)
	h := hostileRoutes{warmHost: hostileHost("warm", ns), pathsHost: hostileHost("paths", ns)}
	h.warm = deployApp(t, ns, appSpec{name: "warm", replicas: 1, hso: v1alpha1.HTTPScaledObjectSpec{Hosts: []string{h.warmHost}}})
	h.public = deployApp(t, ns, appSpec{name: "public", replicas: 1, hso: v1alpha1.HTTPScaledObjectSpec{
		Hosts: []string{h.pathsHost}, PathPrefixes: []string{"/public"}}})
	h.admin = deployApp(t, ns, appSpec{name: "admin", replicas: 1, hso: v1alpha1.HTTPScaledObjectSpec{
		Hosts: []string{h.pathsHost}, PathPrefixes: []string{"/admin"}}})
	return h
}

func (h hostileRoutes) all() []*app { return []*app{h.warm, h.public, h.admin} }

// rawCase is one request written byte for byte, and the answer it must get.
type rawCase struct {
	name string
	req  string
	code int
	// body, when set, is the exact body of the answer.
	body string
	// routedTo is the app whose route counts the request; nil means no route counts it, so no app
	// sees it.
	routedTo *app
	// check, when set, inspects the app's echo of the request.
	check func(t *testing.T, e echoedRequest)
}

// echoedRequest is the part of the echo app's answer to / that these tests read.
type echoedRequest struct {
	Method  string              `json:"method"`
	Path    string              `json:"path"`
	Headers map[string][]string `json:"headers"`
	PodName string              `json:"podName"`
}

// rawAnswer is what came back on a connection that was sent raw bytes.
type rawAnswer struct {
	resp *http.Response
	body string
	// closed reports that the server closed the connection after this response.
	closed bool
}

// exchangeRaw writes req on a new connection to addr, from its own goroutine (a server may answer
// before it has read everything, as with an oversized header block), and reads the first response.
// With untilClose it then reads on until the server closes the connection, and fails if another
// response arrives.
func exchangeRaw(t *testing.T, addr, req string, untilClose bool) rawAnswer {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(60 * time.Second))
	go func() { _, _ = io.WriteString(conn, req) }()
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read the answer to %.80q: %v", req, err)
	}
	body, err := io.ReadAll(resp.Body)
	// net/http answers a request it refuses with a body that ends when the connection does, and
	// closes a connection with unread request bytes by a reset: then the reset is that end.
	if err != nil && !(errors.Is(err, syscall.ECONNRESET) && resp.Close && resp.ContentLength < 0) {
		t.Fatalf("read the body of the answer to %.80q: %v", req, err)
	}
	r := rawAnswer{resp: resp, body: string(body)}
	if untilClose {
		rest, err := io.ReadAll(br)
		if err != nil && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("read until the server closes the connection: %v", err)
		}
		if len(rest) > 0 {
			t.Fatalf("after the answer the server sent %q, want the connection closed", rest)
		}
		r.closed = true
	}
	return r
}

// routedCounts returns the requests each app's route has counted, summed over the interceptors.
func routedCounts(t *testing.T, ins []*deploy.Instance, apps []*app) map[string]uint64 {
	t.Helper()
	out := map[string]uint64{}
	for _, in := range ins {
		q, err := queue(in.URL("admin"))
		if err != nil {
			t.Fatalf("read the counts of %s: %v", in.Process.Name, err)
		}
		for _, a := range apps {
			rc, ok := q[a.key()]
			if !ok {
				t.Fatalf("%s does not route %s", in.Process.Name, a.key())
			}
			out[a.key()] += rc.Requests
		}
	}
	return out
}

// hostAddr is the host:port of an http:// URL.
func hostAddr(url string) string { return strings.TrimPrefix(url, "http://") }

// unharmed checks that the interceptors of the test are the same processes, still running and
// still listed by the release, and that each serves the warm app. panicsBefore is what
// countPanics returned when the test began: a new panic in a log is a request that crashed a
// handler.
type unharmed struct {
	ins          []*deploy.Instance
	pids         []int
	panicsBefore []int
	warm         *app
	warmHost     string
}

func newUnharmed(t *testing.T, warm *app, warmHost string) *unharmed {
	u := &unharmed{ins: suite.lobby.Instances("interceptor"), warm: warm, warmHost: warmHost}
	if len(u.ins) == 0 {
		t.Fatal("no interceptor is running")
	}
	for _, in := range u.ins {
		u.pids = append(u.pids, in.Process.PID())
	}
	u.panicsBefore = countPanics(t, u.ins)
	return u
}

func (u *unharmed) check(t *testing.T) {
	t.Helper()
	listed := map[int]bool{}
	for _, in := range suite.lobby.Instances("interceptor") {
		listed[in.Process.PID()] = true
	}
	for i, in := range u.ins {
		if exited, err := in.Process.Exited(); exited {
			t.Fatalf("interceptor %s (pid %d) exited: %v; log %s", in.Process.Name, u.pids[i], err, in.Process.LogFile)
		}
		if !listed[u.pids[i]] {
			t.Fatalf("interceptor %s (pid %d) is no longer one of the release's interceptors", in.Process.Name, u.pids[i])
		}
		r := send(t.Context(), http.MethodGet, in.URL("http")+"/", u.warmHost, nil)
		var e echoedRequest
		if r.err != nil || r.code != http.StatusOK || json.Unmarshal([]byte(r.body), &e) != nil || !strings.HasPrefix(e.PodName, u.warm.name+"-") {
			t.Fatalf("the warm app through %s: got %d %q (%v), want 200 from a %s pod", in.Process.Name, r.code, r.body, r.err, u.warm.name)
		}
	}
	for i, n := range countPanics(t, u.ins) {
		if n != u.panicsBefore[i] {
			t.Fatalf("interceptor %s logged %d handler panics during the test; see %s", u.ins[i].Process.Name, n-u.panicsBefore[i], u.ins[i].Process.LogFile)
		}
	}
}

// countPanics counts the handler panics net/http logged for each interceptor.
func countPanics(t *testing.T, ins []*deploy.Instance) []int {
	t.Helper()
	out := make([]int, len(ins))
	for i, in := range ins {
		b, err := os.ReadFile(in.Process.LogFile)
		if err != nil {
			t.Fatalf("read the log of %s: %v", in.Process.Name, err)
		}
		out[i] = bytes.Count(b, []byte("panic serving"))
	}
	return out
}

// runRawCases sends each case to addr and checks its answer, the route counters of ins, and that
// the interceptors are unharmed.
func runRawCases(t *testing.T, addr string, ins []*deploy.Instance, routes hostileRoutes, u *unharmed, cases []rawCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := routedCounts(t, ins, routes.all())
			r := exchangeRaw(t, addr, tc.req, false)
			if r.resp.StatusCode != tc.code || (tc.body != "" && r.body != tc.body) {
				t.Errorf("got %d %.300q, want %d %q", r.resp.StatusCode, r.body, tc.code, tc.body)
			}
			after := routedCounts(t, ins, routes.all())
			for _, a := range routes.all() {
				want := before[a.key()]
				if a == tc.routedTo {
					want++
				}
				if after[a.key()] != want {
					t.Errorf("route %s counted %d requests, want %d", a.key(), after[a.key()]-before[a.key()], want-before[a.key()])
				}
			}
			if tc.check != nil && r.resp.StatusCode == http.StatusOK {
				var e echoedRequest
				if err := json.Unmarshal([]byte(r.body), &e); err != nil {
					t.Fatalf("decode the app's echo %.300q: %v", r.body, err)
				}
				tc.check(t, e)
			}
			u.check(t)
		})
	}
}

// rawGet is a GET request line with the given target and header lines, each ending in CRLF.
func rawGet(target string, headers ...string) string {
	return "GET " + target + " HTTP/1.1\r\n" + strings.Join(headers, "") + "\r\n"
}

func TestHostileRequestsToInterceptor(t *testing.T) {
	routes := deployHostileRoutes(t)
	u := newUnharmed(t, routes.warm, routes.warmHost)
	in := u.ins[0]
	addr := hostAddr(in.URL("http"))
	ins := []*deploy.Instance{in}
	warm := "Host: " + routes.warmHost + "\r\n"
	paths := "Host: " + routes.pathsHost + "\r\n"
	longPath := "/public/" + strings.Repeat("x", 10_000-len("/public/"))

	runRawCases(t, addr, ins, routes, u, []rawCase{
		// Framing.
		{name: "Two different Content-Lengths are refused before routing.",
			req:  "POST / HTTP/1.1\r\n" + warm + "Content-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
			code: http.StatusBadRequest, body: "400 Bad Request"},
		{name: "A Transfer-Encoding other than chunked is refused.",
			req:  "POST / HTTP/1.1\r\n" + warm + "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
			code: http.StatusNotImplemented, body: "Unsupported transfer encoding"},
		{name: "A negative Content-Length is refused.",
			req:  "POST / HTTP/1.1\r\n" + warm + "Content-Length: -1\r\n\r\n",
			code: http.StatusBadRequest, body: "400 Bad Request"},
		// Host.
		{name: "HTTP/1.1 without Host is refused.",
			req:  rawGet("/"),
			code: http.StatusBadRequest, body: "400 Bad Request: missing required Host header"},
		{name: "Two Host headers are refused.",
			req:  rawGet("/", warm, "Host: other.hostile.example\r\n"),
			code: http.StatusBadRequest, body: "400 Bad Request"},
		{name: "A Host with characters outside host names is refused.",
			req:  rawGet("/", "Host: warm.hostile.example<script>\r\n"),
			code: http.StatusBadRequest, body: "400 Bad Request: malformed Host header"},
		{name: "A Host with a space is refused.",
			req:  rawGet("/", "Host: warm hostile.example\r\n"),
			code: http.StatusBadRequest, body: "400 Bad Request: malformed Host header"},
		{name: "An empty Host matches no host and gets 404.",
			req:  rawGet("/", "Host: \r\n"),
			code: http.StatusNotFound, body: "not found\n"},
		{name: "A Host with a malformed port is routed by its name: the port is ignored.",
			req:  rawGet("/", "Host: "+routes.warmHost+":99999x\r\n"),
			code: http.StatusOK, routedTo: routes.warm},
		{name: "HTTP/1.0 without Host matches no host and gets 404.",
			req:  "GET / HTTP/1.0\r\n\r\n",
			code: http.StatusNotFound, body: "not found\n"},
		// Request line.
		{name: "A method that is not a token is refused.",
			req:  "G(T / HTTP/1.1\r\n" + warm + "\r\n",
			code: http.StatusBadRequest, body: "400 Bad Request"},
		{name: "An unknown method is forwarded to the app.",
			req:  "BREW / HTTP/1.1\r\n" + warm + "\r\n",
			code: http.StatusOK, routedTo: routes.warm,
			check: func(t *testing.T, e echoedRequest) {
				if e.Method != "BREW" {
					t.Errorf("the app saw method %q, want BREW", e.Method)
				}
			}},
		{name: "An HTTP/2 version on an HTTP/1 request line is refused.",
			req:  "GET / HTTP/2.0\r\n" + warm + "\r\n",
			code: http.StatusHTTPVersionNotSupported},
		{name: "A TLS handshake on the clear-text port is refused.",
			req:  "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + strings.Repeat("\x00", 32) + "\r\n\r\n",
			code: http.StatusBadRequest, body: "400 Bad Request"},
		{name: "Text that is not HTTP is refused.",
			req:  "hello there\r\n\r\n",
			code: http.StatusBadRequest, body: "400 Bad Request"},
		{name: "A request target without a leading slash is refused.",
			req:  rawGet("public", paths),
			code: http.StatusBadRequest, body: "400 Bad Request"},
		{name: "A malformed percent escape in the path is refused.",
			req:  rawGet("/public/%zz", paths),
			code: http.StatusBadRequest, body: "400 Bad Request"},
		// Header lines.
		{name: "A bare LF inside a header value is refused.",
			req:  rawGet("/", warm, "X-Injected: a\nb\r\n"),
			code: http.StatusBadRequest, body: "400 Bad Request"},
		{name: "A CR without LF inside a header value is refused.",
			req:  rawGet("/", warm, "X-Injected: a\rSet-Cookie: b\r\n"),
			code: http.StatusBadRequest, body: "400 Bad Request"},
		{name: "A NUL inside a header value is refused.",
			req:  rawGet("/", warm, "X-Injected: a\x00b\r\n"),
			code: http.StatusBadRequest, body: "400 Bad Request"},
		{name: "A space between a header name and its colon is refused.",
			req:  rawGet("/", warm, "X-Injected : a\r\n"),
			code: http.StatusBadRequest, body: "400 Bad Request: invalid header name"},
		{name: "An obs-fold continuation line is replaced by a space, as RFC 9112 allows.",
			req:  rawGet("/", warm, "X-Folded: first\r\n second\r\n"),
			code: http.StatusOK, routedTo: routes.warm,
			check: func(t *testing.T, e echoedRequest) {
				if got := e.Headers["X-Folded"]; len(got) != 1 || got[0] != "first second" {
					t.Errorf("the app saw X-Folded %q, want one value \"first second\"", got)
				}
			}},
		{name: "Lines ended by a bare LF are read as lines, as RFC 9112 allows.",
			req:  "GET / HTTP/1.1\n" + "Host: " + routes.warmHost + "\nX-Bare: lf\n\n",
			code: http.StatusOK, routedTo: routes.warm,
			check: func(t *testing.T, e echoedRequest) {
				if got := e.Headers["X-Bare"]; len(got) != 1 || got[0] != "lf" {
					t.Errorf("the app saw X-Bare %q, want \"lf\"", got)
				}
			}},
		// Paths: routing reads the decoded path with its dot segments resolved and slashes merged,
		// as nginx normalises it before it applies its rules (docs/routing.md), so the route is
		// the one an ingress in front would pick; the request is forwarded unchanged.
		{name: "An encoded dot-dot is routed where it leads, and the app gets the path as sent.",
			req:  rawGet("/public/%2e%2e/admin", paths),
			code: http.StatusOK, routedTo: routes.admin,
			check: func(t *testing.T, e echoedRequest) {
				if e.Path != "/public/../admin" {
					t.Errorf("the app saw path %q, want /public/../admin", e.Path)
				}
			}},
		{name: "A dot-dot is routed where it leads; the app answers with its redirect to the clean path.",
			req:  rawGet("/public/../admin", paths),
			code: http.StatusTemporaryRedirect, routedTo: routes.admin},
		{name: "An encoded dot-dot out of the other prefix is routed where it leads too.",
			req:  rawGet("/admin/%2E%2E/public", paths),
			code: http.StatusOK, routedTo: routes.public},
		{name: "A doubled slash before a prefix is merged; the app answers with its redirect to the clean path.",
			req:  rawGet("//admin", paths),
			code: http.StatusTemporaryRedirect, routedTo: routes.admin},
		{name: "A dot-dot above the root stays at the root.",
			req:  rawGet("/%2e%2e/admin", paths),
			code: http.StatusOK, routedTo: routes.admin},
		{name: "An encoded slash is routed by the decoded path.",
			req:  rawGet("/public%2Fx", paths),
			code: http.StatusOK, routedTo: routes.public},
		{name: "A 10,000-byte path is routed like any other.",
			req:  rawGet(longPath, paths),
			code: http.StatusOK, routedTo: routes.public,
			check: func(t *testing.T, e echoedRequest) {
				if e.Path != longPath {
					t.Errorf("the app saw a path of %d bytes, want the %d sent", len(e.Path), len(longPath))
				}
			}},
	})

	t.Run("Content-Length beside chunked is framed as chunked and the connection closed: the bytes after the body are never a request.", func(t *testing.T) {
		before := routedCounts(t, ins, routes.all())
		r := exchangeRaw(t, addr, "POST /first HTTP/1.1\r\n"+warm+"Content-Length: 48\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"+
			rawGet("/smuggled", warm), true)
		var e echoedRequest
		if r.resp.StatusCode != http.StatusOK || json.Unmarshal([]byte(r.body), &e) != nil || e.Path != "/first" {
			t.Fatalf("got %d %.300q, want 200 from the app for /first", r.resp.StatusCode, r.body)
		}
		if len(e.Headers["Content-Length"]) != 0 {
			t.Errorf("the app saw Content-Length %q, want none: the body was framed as chunked", e.Headers["Content-Length"])
		}
		if !r.resp.Close {
			t.Errorf("the answer lacks Connection: close; headers %v", r.resp.Header)
		}
		if after := routedCounts(t, ins, routes.all()); after[routes.warm.key()] != before[routes.warm.key()]+1 {
			t.Errorf("route %s counted %d requests, want 1", routes.warm.key(), after[routes.warm.key()]-before[routes.warm.key()])
		}
		u.check(t)
	})

	spec, err := suite.lobby.Rendered.Process("interceptor")
	if err != nil {
		t.Fatal(err)
	}
	maxHeaderBytes, err := strconv.Atoi(spec.Env["LOBBY_MAX_HEADER_BYTES"])
	if err != nil {
		t.Fatalf("the chart's LOBBY_MAX_HEADER_BYTES %q: %v", spec.Env["LOBBY_MAX_HEADER_BYTES"], err)
	}

	t.Run("A header block within the limit is forwarded.", func(t *testing.T) {
		big := strings.Repeat("h", maxHeaderBytes/2)
		r := exchangeRaw(t, addr, rawGet("/", warm, "X-Big: "+big+"\r\n"), false)
		var e echoedRequest
		if r.resp.StatusCode != http.StatusOK || json.Unmarshal([]byte(r.body), &e) != nil {
			t.Fatalf("got %d %.300q, want 200 from the app", r.resp.StatusCode, r.body)
		}
		if got := e.Headers["X-Big"]; len(got) != 1 || got[0] != big {
			t.Errorf("the app did not see the %d-byte header whole", len(big))
		}
		u.check(t)
	})

	t.Run("A header block over the limit is refused with 431.", func(t *testing.T) {
		before := routedCounts(t, ins, routes.all())
		// net/http reads up to the limit plus 4 KiB of slack before it gives up.
		r := exchangeRaw(t, addr, rawGet("/", warm, "X-Big: "+strings.Repeat("h", maxHeaderBytes+8<<10)+"\r\n"), false)
		if want := "431 Request Header Fields Too Large"; r.resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge || r.body != want {
			t.Errorf("got %d %.300q, want 431 %q", r.resp.StatusCode, r.body, want)
		}
		if after := routedCounts(t, ins, routes.all()); after[routes.warm.key()] != before[routes.warm.key()] {
			t.Errorf("route %s counted the refused request", routes.warm.key())
		}
		u.check(t)
	})

	t.Run("A body larger than nginx allows is streamed to the app: the interceptor sets no body limit.", func(t *testing.T) {
		const size = 2 << 20
		r := exchangeRaw(t, addr, "POST / HTTP/1.1\r\n"+warm+"Content-Length: "+strconv.Itoa(size)+"\r\n\r\n"+strings.Repeat("b", size), false)
		var e echoedRequest
		if r.resp.StatusCode != http.StatusOK || json.Unmarshal([]byte(r.body), &e) != nil {
			t.Fatalf("got %d %.300q, want 200 from the app", r.resp.StatusCode, r.body)
		}
		if got := e.Headers["Content-Length"]; len(got) != 1 || got[0] != strconv.Itoa(size) {
			t.Errorf("the app saw Content-Length %q, want %d", got, size)
		}
		u.check(t)
	})
}

func TestHostileRequestsThroughIngress(t *testing.T) {
	routes := deployHostileRoutes(t)
	u := newUnharmed(t, routes.warm, routes.warmHost)
	addr := hostAddr(suite.ingress.URL)
	warm := "Host: " + routes.warmHost + "\r\n"
	paths := "Host: " + routes.pathsHost + "\r\n"

	// nginx answers these itself, with its own HTML page, before any interceptor sees them; the
	// counters of both interceptors show that.
	runRawCases(t, addr, u.ins, routes, u, []rawCase{
		{name: "Content-Length beside chunked is refused by nginx.",
			req:  "POST / HTTP/1.1\r\n" + warm + "Content-Length: 48\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + rawGet("/smuggled", warm),
			code: http.StatusBadRequest},
		{name: "Two different Content-Lengths are refused by nginx.",
			req:  "POST / HTTP/1.1\r\n" + warm + "Content-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
			code: http.StatusBadRequest},
		{name: "An obs-fold continuation line is refused by nginx.",
			req:  rawGet("/", warm, "X-Folded: first\r\n second\r\n"),
			code: http.StatusBadRequest},
		{name: "A CR without LF inside a header value is refused by nginx.",
			req:  rawGet("/", warm, "X-Injected: a\rSet-Cookie: b\r\n"),
			code: http.StatusBadRequest},
		{name: "A dot-dot above the root is refused by nginx.",
			req:  rawGet("/%2e%2e/admin", paths),
			code: http.StatusBadRequest},
		{name: "A 10,000-byte path is refused by nginx with 414.",
			req:  rawGet("/public/"+strings.Repeat("x", 10_000), paths),
			code: http.StatusRequestURITooLong},
		{name: "A header line longer than nginx's buffers is refused by nginx.",
			req:  rawGet("/", warm, "X-Big: "+strings.Repeat("h", 10_000)+"\r\n"),
			code: http.StatusBadRequest},
		{name: "A body over nginx's client_max_body_size is refused by nginx with 413.",
			req:  "POST / HTTP/1.1\r\n" + warm + "Content-Length: " + strconv.Itoa(2<<20) + "\r\n\r\n" + strings.Repeat("b", 2<<20),
			code: http.StatusRequestEntityTooLarge},
		// nginx sends no Host when the client sent none, and the interceptor refuses that.
		{name: "HTTP/1.0 without Host is refused.",
			req:  "GET / HTTP/1.0\r\n\r\n",
			code: http.StatusBadRequest},
		// nginx passes the request target as sent, after routing on its normalised form; the
		// interceptor routes on the same normalised form, so both pick the same app.
		{name: "An encoded dot-dot passes nginx and is routed where nginx saw it lead.",
			req:  rawGet("/public/%2e%2e/admin", paths),
			code: http.StatusOK, routedTo: routes.admin,
			check: func(t *testing.T, e echoedRequest) {
				if e.Path != "/public/../admin" {
					t.Errorf("the app saw path %q, want /public/../admin", e.Path)
				}
			}},
		{name: "An encoded dot-dot out of the admin prefix reaches the public app, as nginx saw it.",
			req:  rawGet("/admin/%2E%2E/public", paths),
			code: http.StatusOK, routedTo: routes.public},
	})
}

func TestSlowlorisIsCutAtTheHeaderTimeout(t *testing.T) {
	routes := deployHostileRoutes(t)
	u := newUnharmed(t, routes.warm, routes.warmHost)
	in := u.ins[0]
	addr := hostAddr(in.URL("http"))
	spec, err := suite.lobby.Rendered.Process("interceptor")
	if err != nil {
		t.Fatal(err)
	}
	timeout, err := time.ParseDuration(spec.Env["LOBBY_READ_HEADER_TIMEOUT"])
	if err != nil {
		t.Fatalf("the chart's LOBBY_READ_HEADER_TIMEOUT %q: %v", spec.Env["LOBBY_READ_HEADER_TIMEOUT"], err)
	}

	// Trickling clients send a request line and the start of a header, then one more byte every
	// half second, for at most the header timeout and a minute: the server has to cut them off.
	// Silent clients connect and send nothing.
	const trickling, silent = 200, 20
	type slowResult struct {
		answer  []byte
		err     error
		elapsed time.Duration
	}
	results := make([]slowResult, trickling+silent)
	var started atomic.Int32
	var wg sync.WaitGroup
	for i := range trickling + silent {
		// Taken before the dial: the server's deadline starts when it begins reading, later.
		start := time.Now()
		conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			t.Fatalf("dial slow client %d: %v", i, err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(start.Add(timeout + time.Minute))
		done := make(chan struct{})
		wg.Go(func() {
			defer close(done)
			answer, err := io.ReadAll(conn)
			results[i] = slowResult{answer: answer, err: err, elapsed: time.Since(start)}
		})
		if i >= trickling {
			started.Add(1)
			continue
		}
		wg.Go(func() {
			if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: "+routes.warmHost+"\r\nX-Slow: "); err != nil {
				return
			}
			started.Add(1)
			tick := time.NewTicker(500 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-done:
					return
				case <-tick.C:
					if _, err := conn.Write([]byte{'s'}); err != nil {
						return
					}
				}
			}
		})
	}
	if err := poll.Until(t.Context(), 30*time.Second, "every slow client to have started", func() error {
		if n := started.Load(); n < trickling+silent {
			return fmt.Errorf("%d of %d", n, trickling+silent)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// Meanwhile other clients are served, through the same interceptor.
	for _, r := range sendMany(t.Context(), 20, in.URL("http")+"/", routes.warmHost) {
		var e echoedRequest
		if r.err != nil || r.code != http.StatusOK || json.Unmarshal([]byte(r.body), &e) != nil || !strings.HasPrefix(e.PodName, "warm-") {
			t.Fatalf("the warm app while %d clients trickle headers: got %d %q (%v), want 200", trickling, r.code, r.body, r.err)
		}
	}

	wg.Wait()
	bad := 0
	for i, r := range results {
		// A read timeout is a network error to net/http, which closes the connection without an
		// answer; a byte trickled in just as it closes turns the close into a reset. A client
		// that sent nothing may instead get a 400: the wait for its first bytes is also
		// net/http's check for an h2c preface, which answers so (seen with a server in the
		// client's own process).
		closed := r.err == nil || errors.Is(r.err, syscall.ECONNRESET)
		ok := closed && len(r.answer) == 0
		want := "the connection closed without an answer"
		if i >= trickling && len(r.answer) > 0 {
			resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(r.answer)), nil)
			ok = closed && err == nil && resp.StatusCode == http.StatusBadRequest
			want = "the connection closed, with no answer or a 400"
		}
		if !ok || r.elapsed < timeout {
			if bad < 5 {
				t.Errorf("slow client %d: after %v got %q (read error %v), want %s at the %v header timeout",
					i, r.elapsed.Round(time.Millisecond), r.answer, r.err, want, timeout)
			}
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d slow clients were not cut off at the header timeout as defined", bad, len(results))
	}
	u.check(t)
}

func TestAbsurdHTTPScaledObjects(t *testing.T) {
	ns := testNamespace(t)
	warmHost := hostileHost("warm", ns)
	warm := deployApp(t, ns, appSpec{name: "warm", replicas: 1, hso: v1alpha1.HTTPScaledObjectSpec{Hosts: []string{warmHost}}})
	u := newUnharmed(t, warm, warmHost)
	ctx := t.Context()

	hosts := func(n int, domain string) []any {
		out := make([]any, n)
		for i := range out {
			out[i] = fmt.Sprintf("h%03d.%s", i, domain)
		}
		return out
	}
	// The API server refuses these as kubectl apply would send them, with the chart's CRD.
	for _, tc := range []struct {
		name string
		spec map[string]any
		want []string
	}{
		{"Thousands of hosts are refused.",
			map[string]any{"hosts": hosts(5000, "absurd.hostile.example")},
			[]string{"spec.hosts", "must have at most 256 items"}},
		{"A host with characters outside host names is refused.",
			map[string]any{"hosts": []any{"shop_<1>.hostile.example"}},
			[]string{"spec.hosts[0]", "should match"}},
		{"A duration with an unknown unit is refused.",
			map[string]any{"timeouts": map[string]any{"conditionWait": "3 days"}},
			[]string{"spec.timeouts.conditionWait", "should match"}},
		{"A duration too long for the interceptor to hold is refused.",
			map[string]any{"timeouts": map[string]any{"responseHeader": "9999999999999h"}},
			[]string{"spec.timeouts", "timeouts.responseHeader must not be negative"}},
		{"A placeholder header name that is not an HTTP header name is refused.",
			map[string]any{"coldStart": map[string]any{"placeholder": map[string]any{"headers": map[string]any{"X-A\r\nSet-Cookie": "evil=1"}}}},
			[]string{"spec.coldStart.placeholder.headers", "names must be HTTP header names"}},
		{"A placeholder header value with a line break is refused.",
			map[string]any{"coldStart": map[string]any{"placeholder": map[string]any{"headers": map[string]any{"X-A": "1\r\nSet-Cookie: evil=1"}}}},
			[]string{"spec.coldStart.placeholder.headers[X-A]", "must not hold line breaks or other control characters"}},
		{"A header value longer than the maximum is refused.",
			map[string]any{"headers": []any{map[string]any{"name": "X-Huge", "value": strings.Repeat("v", 1<<20)}}},
			[]string{"spec.headers[0].value", "may not be more than 4096"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := map[string]any{
				"hosts":          []any{"absurd.hostile.example"},
				"scaleTargetRef": map[string]any{"name": "absurd", "service": "absurd", "port": int64(80)},
			}
			for k, v := range tc.spec {
				spec[k] = v
			}
			obj := &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": v1alpha1.GroupVersion.String(), "kind": "HTTPScaledObject",
				"metadata": map[string]any{"namespace": ns, "name": "absurd"},
				"spec":     spec,
			}}
			err := suite.cluster.Client.Create(ctx, obj)
			if err == nil {
				t.Fatal("Create() succeeded, want the API server to refuse the object")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Create() error = %.500q, want it to name %q", err, w)
				}
			}
		})
	}

	// What the API server does accept at its bounds is routed, and other routes are unaffected.
	t.Run("The maximum number of hosts is routed.", func(t *testing.T) {
		var names []string
		for _, h := range hosts(256, hostileHost("many", ns)) {
			names = append(names, h.(string))
		}
		deployApp(t, ns, appSpec{name: "many", replicas: 1, hso: v1alpha1.HTTPScaledObjectSpec{Hosts: names}})
		for _, host := range []string{names[0], names[128], strings.ToUpper(names[255])} {
			r := send(ctx, http.MethodGet, suite.ingress.URL+"/", host, nil)
			var e echoedRequest
			if r.code != http.StatusOK || json.Unmarshal([]byte(r.body), &e) != nil || !strings.HasPrefix(e.PodName, "many-") {
				t.Errorf("%s: got %d %q (%v), want 200 from a many pod", host, r.code, r.body, r.err)
			}
		}
		u.check(t)
	})

	t.Run("The maximum number of headers with the longest values is routed.", func(t *testing.T) {
		var headers []v1alpha1.Header
		req := http.Header{}
		for i := range 32 {
			name, value := fmt.Sprintf("X-Match-%02d", i), strings.Repeat(strconv.Itoa(i%10), 4096)
			headers = append(headers, v1alpha1.Header{Name: name, Value: ptr.To(value)})
			req.Set(name, value)
		}
		picky := hostileHost("picky", ns)
		deployApp(t, ns, appSpec{name: "picky", replicas: 1, hso: v1alpha1.HTTPScaledObjectSpec{
			Hosts: []string{picky}, Headers: headers}})
		// Straight to an interceptor: 128 KiB of headers is more than nginx's buffers take.
		in := u.ins[0]
		r := send(ctx, http.MethodGet, in.URL("http")+"/", picky, req)
		var e echoedRequest
		if r.code != http.StatusOK || json.Unmarshal([]byte(r.body), &e) != nil || !strings.HasPrefix(e.PodName, "picky-") {
			t.Errorf("with every header: got %d %.300q (%v), want 200 from a picky pod", r.code, r.body, r.err)
		}
		req.Del("X-Match-31")
		if r := send(ctx, http.MethodGet, in.URL("http")+"/", picky, req); r.code != http.StatusNotFound || r.body != "not found\n" {
			t.Errorf("with one header missing: got %d %.300q (%v), want 404", r.code, r.body, r.err)
		}
		u.check(t)
	})
}

//go:build e2e

package system

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"golang.org/x/net/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"k8s.io/utils/ptr"

	"github.com/lobby-http/lobby/e2e/deploy"
	"github.com/lobby-http/lobby/e2e/framework/poll"
	"github.com/lobby-http/lobby/operator/api/v1alpha1"
)

// The interceptor of TestHostileClientsCannotPinTheInterceptor: a 256Mi memory limit, which
// derives a cap of 5,324 connection slots and 2,662 held requests, 100 streams per HTTP/2
// connection (the default), and idle deadlines short enough for the test.
const (
	limitsMemory      = 256 << 20
	limitsIdle        = 2 * time.Second
	limitsColdStart   = 5 * time.Second
	limitsStreamsConn = 100
	// limitsWarmP99 bounds the warm route's p99 latency while an attack runs, on this 2-core
	// machine where the attack's clients and the interceptor share the cores. The warm clients
	// open their connections as the attack opens its 1,000: a SYN the kernel drops in that burst
	// is sent again after its initial retransmission timeout, 1 s, before lobby sees it (the likely
	// cause of a p99 of 1.05 s with p50 0.9 ms seen once). The bound is one retransmission plus half a second.
	limitsWarmP99 = 1500 * time.Millisecond
)

// limitsRig is the interceptor under attack and the routes it serves.
type limitsRig struct {
	in                 *deploy.Instance
	proxyAddr, metrics string
	warmHost, coldHost string
	grpcHost           string
	cold               *app
}

// TestHostileClientsCannotPinTheInterceptor attacks one interceptor, configured by the chart with a
// 256Mi memory limit, the way a client reaching it directly could: 10,000 streams on one h2c
// connection for an app at zero, 1,000 uploads whose bodies stop arriving, and 1,000 downloads
// whose clients read nothing. For each: the interceptor's resident set stays under its memory
// limit, it is the same process throughout and logs no panic, a warm app on another route keeps
// answering every request within its latency bound, and the attack's streams and connections
// are refused or cut as designed, every one of them counted. Each attack ends by itself within
// its deadlines. Then an event stream, a WebSocket and a gRPC stream silent for longer than the
// idle deadlines, an upload that progresses and a download read slowly show what is not cut.
func TestHostileClientsCannotPinTheInterceptor(t *testing.T) {
	ns := testNamespace(t)
	ctx := t.Context()
	r := &limitsRig{
		warmHost: "warm." + ns + ".limits.example",
		coldHost: "cold." + ns + ".limits.example",
		grpcHost: "grpc." + ns + ".limits.example",
	}
	one := &v1alpha1.ReplicaStruct{Min: ptr.To[int32](1), Max: ptr.To[int32](1)}
	warm := deployApp(t, ns, appSpec{name: "warm", replicas: 1, hso: v1alpha1.HTTPScaledObjectSpec{Hosts: []string{r.warmHost}, Replicas: one}})
	grpcApp := deployApp(t, ns, appSpec{name: "grpc", replicas: 1, env: map[string]string{"GRPC_PORT": "9000"}, portName: "grpc", targetPort: 9000,
		hso: v1alpha1.HTTPScaledObjectSpec{Hosts: []string{r.grpcHost}, Replicas: one}})
	// Only the interceptor below sees the cold app's requests, and the scalers do not subscribe
	// to it: the app stays at zero and its requests stay held.
	r.cold = deployApp(t, ns, appSpec{name: "cold", hso: v1alpha1.HTTPScaledObjectSpec{Hosts: []string{r.coldHost}}})
	warm.waitReady(t, 1)
	grpcApp.waitReady(t, 1)

	in, err := suite.lobby.StartVariant(ctx, "interceptor", deploy.VariantOptions{
		Name:        "limits-" + randomSuffix(),
		ValuesFiles: []string{filepath.Join("testdata", "values.yaml")},
		Set: map[string]string{
			"interceptor.resources.limits.memory": "256Mi",
			"interceptor.coldStartTimeout":        limitsColdStart.String(),
			"interceptor.env[0].name":             "LOBBY_BODY_IDLE_TIMEOUT",
			"interceptor.env[0].value":            limitsIdle.String(),
			"interceptor.env[1].name":             "LOBBY_WRITE_IDLE_TIMEOUT",
			"interceptor.env[1].value":            limitsIdle.String(),
		},
	})
	if err != nil {
		t.Fatalf("start an interceptor with a 256Mi memory limit: %v", err)
	}
	t.Cleanup(func() { _ = in.Process.Stop() })
	r.in = in
	r.proxyAddr = netip.AddrPortFrom(in.Addr, uint16(in.Ports["http"])).String()
	r.metrics = in.URL("admin") + "/metrics"
	for _, a := range []*app{warm, grpcApp, r.cold} {
		waitRoutingOn(t, []*deploy.Instance{in}, a.key(), 30*time.Second)
	}
	if v, err := scrapeSample(r.metrics, "lobby_interceptor_max_held_requests", nil); err != nil || v != 2662 {
		t.Fatalf("lobby_interceptor_max_held_requests = %v (%v), want 2662 from the 256Mi limit", v, err)
	}
	pid := in.Process.PID()
	panicsBefore := countPanics(t, []*deploy.Instance{in})[0]

	before := measureWarm(ctx, []string{in.URL("http")}, r.warmHost)
	if err := before.check(); err != nil {
		t.Fatalf("the warm app before the attacks: %v", err)
	}
	p50, p99 := before.percentiles()
	t.Logf("warm app before the attacks: p50 %v, p99 %v", p50, p99)

	// during runs attack while the warm app is measured, then checks the interceptor.
	during := func(t *testing.T, attack func(t *testing.T)) {
		t.Helper()
		warmDone := make(chan *warmRun, 1)
		go func() { warmDone <- measureWarm(ctx, []string{in.URL("http")}, r.warmHost) }()
		attack(t)
		w := <-warmDone
		if err := w.check(); err != nil {
			t.Errorf("the warm app during the attack: %v", err)
		}
		p50, p99 := w.percentiles()
		t.Logf("warm app during the attack: p50 %v, p99 %v", p50, p99)
		if p99 > limitsWarmP99 {
			t.Errorf("the warm app's p99 during the attack is %v, want at most %v", p99, limitsWarmP99)
		}
		if exited, err := in.Process.Exited(); exited || in.Process.PID() != pid {
			t.Fatalf("the interceptor exited (%v) or was restarted; log %s", err, in.Process.LogFile)
		}
		if n := countPanics(t, []*deploy.Instance{in})[0]; n != panicsBefore {
			t.Fatalf("the interceptor logged %d handler panics; see %s", n-panicsBefore, in.Process.LogFile)
		}
		hwm, err := procStatusBytes(pid, "VmHWM:")
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("interceptor peak resident set so far: %.1f MiB of its %d MiB limit", toMiB(hwm), limitsMemory>>20)
		if hwm >= limitsMemory {
			t.Errorf("the interceptor's peak resident set is %.1f MiB, over its %d MiB memory limit", toMiB(hwm), limitsMemory>>20)
		}
	}

	t.Run("10,000 streams on one h2c connection get no more than the connection's share", func(t *testing.T) {
		during(t, r.h2cFlood)
	})
	t.Run("1,000 uploads whose bodies stop arriving are cut at the body idle deadline", func(t *testing.T) {
		during(t, r.slowUploads)
	})
	t.Run("1,000 downloads whose clients read nothing are cut at the write idle deadline", func(t *testing.T) {
		during(t, r.stalledDownloads)
	})
	t.Run("streams and transfers that progress, or are silent by design, outlive the deadlines", r.progressing)
}

// h2cFlood opens 10,000 streams for the cold app on one h2c connection, as fast as it can write
// them and ignoring the interceptor's limit of concurrent streams, reads every answer, and
// checks that at most the connection's share of streams was ever held and that every stream was
// either held and answered after the cold-start timeout, or refused (reset, or beyond the
// connection's GOAWAY).
func (r *limitsRig) h2cFlood(t *testing.T) {
	const streams = 10_000
	c, err := net.DialTimeout("tcp", r.proxyAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Minute))
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	bw := bufio.NewWriterSize(c, 64<<10)
	fr := http2.NewFramer(bw, c)
	// wmu orders the framer's writes: the reader acknowledges settings while streams are written.
	var wmu sync.Mutex
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	if err := bw.Flush(); err != nil {
		t.Fatal(err)
	}

	// The reader sorts every stream's outcome.
	var (
		mu       sync.Mutex
		answered = map[uint32]string{}
		reset    = map[uint32]http2.ErrCode{}
		goAway   = uint32(1 << 31) // the last stream the server processes, once it says GOAWAY
	)
	readDone := make(chan error, 1)
	go func() {
		dec := hpack.NewDecoder(4096, nil)
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				readDone <- err
				return
			}
			mu.Lock()
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if !f.IsAck() {
					wmu.Lock()
					if fr.WriteSettingsAck() == nil {
						_ = bw.Flush()
					}
					wmu.Unlock()
				}
			case *http2.HeadersFrame:
				fields, err := dec.DecodeFull(f.HeaderBlockFragment())
				if err != nil {
					mu.Unlock()
					readDone <- fmt.Errorf("decode headers of stream %d: %w", f.StreamID, err)
					return
				}
				for _, hf := range fields {
					if hf.Name == ":status" {
						answered[f.StreamID] = hf.Value
					}
				}
			case *http2.RSTStreamFrame:
				reset[f.StreamID] = f.ErrCode
			case *http2.GoAwayFrame:
				goAway = min(goAway, f.LastStreamID)
			}
			mu.Unlock()
		}
	}()

	// The held streams of the cold route, sampled while the flood runs.
	var maxHeld atomic.Int64
	sampling, stopSampling := context.WithCancel(t.Context())
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for sampling.Err() == nil {
			if q, err := queue(r.in.URL("admin")); err == nil {
				if h := q[r.cold.key()].Held; h > maxHeld.Load() {
					maxHeld.Store(h)
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()

	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	sent := 0
	start := time.Now()
	for i := range streams {
		block.Reset()
		for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", r.coldHost}, {":path", "/"}} {
			_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		wmu.Lock()
		err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: uint32(2*i + 1), BlockFragment: block.Bytes(), EndStream: true, EndHeaders: true})
		if err == nil && i%100 == 99 {
			err = bw.Flush()
		}
		wmu.Unlock()
		if err != nil {
			t.Logf("writing stream %d failed: %v", i+1, err)
			break
		}
		sent++
	}
	wmu.Lock()
	_ = bw.Flush()
	wmu.Unlock()
	t.Logf("%d streams written in %v", sent, time.Since(start).Round(time.Millisecond))

	// Every stream sent is accounted for within the cold-start timeout and some slack.
	accounted := func() (held, refused, unprocessed int) {
		mu.Lock()
		defer mu.Unlock()
		for i := range sent {
			id := uint32(2*i + 1)
			switch {
			case answered[id] != "":
				held++
			case hasKey(reset, id):
				refused++
			case id > goAway:
				unprocessed++
			}
		}
		return
	}
	end := time.Now().Add(limitsColdStart + time.Minute)
	var answeredN, refusedN, unprocessedN int
	for {
		answeredN, refusedN, unprocessedN = accounted()
		if answeredN+refusedN+unprocessedN == sent || time.Now().After(end) {
			break
		}
		select {
		case err := <-readDone:
			answeredN, refusedN, unprocessedN = accounted()
			if answeredN+refusedN+unprocessedN != sent {
				t.Fatalf("the connection ended (%v) with %d held and answered, %d refused, %d beyond GOAWAY of %d streams sent", err, answeredN, refusedN, unprocessedN, sent)
			}
		case <-time.After(50 * time.Millisecond):
			continue
		}
		break
	}
	stopSampling()
	<-sampled
	mu.Lock()
	codes := map[string]int{}
	for _, st := range answered {
		codes[st]++
	}
	resetCodes := map[string]int{}
	for _, code := range reset {
		resetCodes[code.String()]++
	}
	mu.Unlock()
	t.Logf("%d streams sent: %d held then answered %v, %d refused %v, %d beyond GOAWAY; at most %d held at once",
		sent, answeredN, codes, refusedN, resetCodes, unprocessedN, maxHeld.Load())
	if answeredN+refusedN+unprocessedN != sent {
		t.Fatalf("only %d of %d streams were accounted for within %v", answeredN+refusedN+unprocessedN, sent, limitsColdStart+time.Minute)
	}
	if sent < streams && unprocessedN == 0 {
		t.Errorf("only %d of %d streams were written, and the server said no GOAWAY", sent, streams)
	}
	if maxHeld.Load() > limitsStreamsConn || answeredN > limitsStreamsConn || answeredN == 0 {
		t.Errorf("%d streams held at most at once and %d answered, want between 1 and the connection's %d", maxHeld.Load(), answeredN, limitsStreamsConn)
	}
	for st, n := range codes {
		if st != strconv.Itoa(http.StatusGatewayTimeout) {
			t.Errorf("%d held streams were answered %s, want 504 at the cold-start timeout", n, st)
		}
	}
	if err := poll.Until(t.Context(), 30*time.Second, "the cold route to hold nothing", func() error {
		q, err := queue(r.in.URL("admin"))
		if err != nil {
			return err
		}
		if h := q[r.cold.key()].Held; h != 0 {
			return fmt.Errorf("%d held", h)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// hasKey reports whether m has k.
func hasKey[K comparable, V any](m map[K]V, k K) bool { _, ok := m[k]; return ok }

// rawOutcome is how one raw client connection of an attack ended.
type rawOutcome struct {
	// status is the status line the client read, empty when none came.
	status string
	// read is how many bytes the client read in all.
	read int64
	// after is how long after its last byte sent the connection ended.
	after time.Duration
	err   error
}

// rawAttack dials n connections to the proxy, sends each req, and hands each to wait, which
// returns when the client is ready to read; then the client reads until the server closes the
// connection or 20 seconds pass.
func (r *limitsRig) rawAttack(t *testing.T, n int, req []byte, wait func(c net.Conn)) []rawOutcome {
	out := make([]rawOutcome, n)
	var wg sync.WaitGroup
	dialed := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			c, err := net.DialTimeout("tcp", r.proxyAddr, 30*time.Second)
			dialed <- err
			if err != nil {
				out[i].err = err
				return
			}
			defer c.Close()
			if tc, ok := c.(*net.TCPConn); ok {
				// A small receive window, so that a client that does not read holds the
				// interceptor's writes after a few KiB, not after megabytes of kernel buffers.
				_ = tc.SetReadBuffer(4 << 10)
			}
			if _, err := c.Write(req); err != nil {
				out[i].err = err
				return
			}
			sentAt := time.Now()
			wait(c)
			_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
			br := bufio.NewReaderSize(c, 64<<10)
			line, err := br.ReadString('\n')
			out[i].status = strings.TrimSpace(line)
			m, err2 := io.Copy(io.Discard, br)
			out[i].read = int64(len(line)) + m
			out[i].after = time.Since(sentAt)
			out[i].err = errors.Join(ignoreEOF(err), ignoreReset(err2))
		})
	}
	for range n {
		if err := <-dialed; err != nil {
			t.Errorf("dial: %v", err)
		}
	}
	wg.Wait()
	return out
}

// errorKind names an error without the addresses in it, to count errors by kind.
func errorKind(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		return s[i+2:]
	}
	return s
}

func ignoreEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return nil
	}
	return ignoreReset(err)
}

// ignoreReset drops a connection reset: a server that closes a connection whose client left
// bytes unread resets it, which is one way of cutting it.
func ignoreReset(err error) error {
	if err != nil && strings.Contains(err.Error(), "connection reset") {
		return nil
	}
	return err
}

// slowUploads sends 1,000 uploads that announce 1 MiB, send 16 bytes and then nothing. The app
// reads bodies whole, so each waits on its body until the interceptor cuts it at the body idle
// deadline: every connection must end, none before the deadline, all within it and some slack,
// and the interceptor's open connections must return to what they were.
func (r *limitsRig) slowUploads(t *testing.T) {
	const n = 1000
	openBefore, err := scrapeSample(r.metrics, "lobby_interceptor_proxy_open_connections", nil)
	if err != nil {
		t.Fatal(err)
	}
	req := []byte("POST /upload HTTP/1.1\r\nHost: " + r.warmHost + "\r\nContent-Length: 1048576\r\n\r\n0123456789abcdef")
	out := r.rawAttack(t, n, req, func(net.Conn) {})
	statuses := map[string]int{}
	var early, late, failed int
	var longest time.Duration
	errs := map[string]int{}
	for _, o := range out {
		statuses[o.status]++
		if o.err != nil {
			errs[errorKind(o.err)]++
		}
		longest = max(longest, o.after)
		switch {
		case o.err != nil:
			failed++
		case o.after < limitsIdle*9/10:
			early++
		case o.after > limitsIdle+15*time.Second:
			late++
		}
	}
	t.Logf("%d slow uploads ended: answers %v, errors %v; the last %v after its last byte", n, statuses, errs, longest.Round(time.Millisecond))
	if failed+early+late > 0 {
		t.Errorf("%d connections failed, %d ended before the %v body idle deadline, %d more than 15s after it", failed, early, limitsIdle, late)
	}
	for st, k := range statuses {
		if st != "" && !strings.HasPrefix(st, "HTTP/1.1 408 ") {
			t.Errorf("%d uploads were answered %q, want 408 (the client's body stopped arriving) or the connection cut", k, st)
		}
	}
	if err := poll.Until(t.Context(), 30*time.Second, "the interceptor's open connections to return to what they were", func() error {
		v, err := scrapeSample(r.metrics, "lobby_interceptor_proxy_open_connections", nil)
		if err != nil {
			return err
		}
		if v > openBefore+4 { // the warm measurement's own connections may still be open
			return fmt.Errorf("%v open, %v before", v, openBefore)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// stalledDownloads asks for 1,000 downloads of 16 MiB and reads nothing. The interceptor's
// writes stall once the small client windows and its socket buffers are full; at the write idle
// deadline it closes the connections while the clients still read nothing. Then each client
// reads what had reached it: less than the whole body, then the end of the connection.
func (r *limitsRig) stalledDownloads(t *testing.T) {
	const n, size = 1000, 16 << 20
	openBefore, err := scrapeSample(r.metrics, "lobby_interceptor_proxy_open_connections", nil)
	if err != nil {
		t.Fatal(err)
	}
	req := []byte("GET /download?size=" + strconv.Itoa(size) + " HTTP/1.1\r\nHost: " + r.warmHost + "\r\n\r\n")
	var ready sync.WaitGroup
	ready.Add(n)
	release := make(chan struct{})
	start := time.Now()
	done := make(chan []rawOutcome, 1)
	go func() {
		done <- r.rawAttack(t, n, req, func(net.Conn) {
			ready.Done()
			<-release
		})
	}()
	ready.Wait()
	// Every download is open on the interceptor's side, its response under way.
	if err := poll.Until(t.Context(), 30*time.Second, "the interceptor to hold the downloads open", func() error {
		v, err := scrapeSample(r.metrics, "lobby_interceptor_proxy_open_connections", nil)
		if err != nil {
			return err
		}
		if v < openBefore+n {
			return fmt.Errorf("%v open, want at least %v", v, openBefore+n)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// The clients read nothing until the interceptor has closed all of them on its side: that
	// count, from the interceptor's own gauge, is what shows the slots freed.
	var closedAfter time.Duration
	if err := poll.Until(t.Context(), limitsIdle+time.Minute, "the interceptor to close the stalled downloads", func() error {
		v, err := scrapeSample(r.metrics, "lobby_interceptor_proxy_open_connections", nil)
		if err != nil {
			return err
		}
		if v > openBefore+4 {
			return fmt.Errorf("%v open, %v before", v, openBefore)
		}
		closedAfter = time.Since(start)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	close(release)
	out := <-done
	// Each client then reads what had reached it. None may get the whole body. A client may also
	// see no end at all: the kernel drops a closed socket that still had data for a client
	// advertising a zero window for long (an orphan), without telling the client; the
	// interceptor's side is closed either way, which is what the gauge above counted.
	var whole, orphaned int
	statuses := map[string]int{}
	errs := map[string]int{}
	for _, o := range out {
		statuses[o.status]++
		if o.err != nil {
			errs[errorKind(o.err)]++
		}
		var ne net.Error
		switch {
		case o.read >= size:
			whole++
		case errors.As(o.err, &ne) && ne.Timeout():
			orphaned++
		}
	}
	t.Logf("%d stalled downloads closed by the interceptor within %v of the first request; answers %v, errors %v", n, closedAfter.Round(time.Millisecond), statuses, errs)
	t.Logf("%d clients saw their connection end, %d saw no end (closed on the interceptor's side, dropped by the kernel)", n-orphaned, orphaned)
	if whole > 0 {
		t.Errorf("%d downloads were read whole; want every one cut short", whole)
	}
	if closedAfter < limitsIdle {
		t.Errorf("the downloads were closed %v after they began, before the %v write idle deadline", closedAfter, limitsIdle)
	}
}

// progressing checks what the idle deadlines must not cut: an event stream whose events are
// further apart than the deadlines, a WebSocket and a gRPC stream silent for longer, an upload
// that trickles for longer, and a download read slowly for longer.
func (r *limitsRig) progressing(t *testing.T) {
	ctx := t.Context()
	base := "http://" + r.proxyAddr
	var wg sync.WaitGroup
	check := func(name string, f func() error) {
		wg.Go(func() {
			if err := f(); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		})
	}
	gap := limitsIdle * 3 / 2
	check("an event stream with events 3s apart", func() error {
		got := send(ctx, http.MethodGet, base+"/sse?n=3&interval="+gap.String(), r.warmHost, nil)
		if got.err != nil || got.code != http.StatusOK || strings.Count(got.body, "data: event") != 3 {
			return fmt.Errorf("status %d, %q, %v; want 3 events", got.code, got.body, got.err)
		}
		return nil
	})
	check("a WebSocket silent for 3s", func() error {
		conn, err := net.DialTimeout("tcp", r.proxyAddr, 5*time.Second)
		if err != nil {
			return err
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(time.Minute))
		cfg, err := websocket.NewConfig("ws://"+r.warmHost+"/ws", "http://"+r.warmHost+"/")
		if err != nil {
			return err
		}
		ws, err := websocket.NewClient(cfg, conn)
		if err != nil {
			return err
		}
		for _, msg := range []string{"before", "after the silence"} {
			if err := websocket.Message.Send(ws, msg); err != nil {
				return err
			}
			var got string
			if err := websocket.Message.Receive(ws, &got); err != nil || got != msg {
				return fmt.Errorf("echo %q, %v; want %q", got, err, msg)
			}
			time.Sleep(gap)
		}
		return nil
	})
	check("a gRPC health watch silent for 3s", func() error {
		cc, err := grpc.NewClient(r.proxyAddr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority(r.grpcHost))
		if err != nil {
			return err
		}
		defer cc.Close()
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		w, err := healthpb.NewHealthClient(cc).Watch(wctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			return err
		}
		if _, err := w.Recv(); err != nil {
			return fmt.Errorf("first status: %w", err)
		}
		// The server sends nothing more until the status changes: the stream must stay open.
		ended := make(chan error, 1)
		go func() { _, err := w.Recv(); ended <- err }()
		select {
		case err := <-ended:
			return fmt.Errorf("the watch ended while silent: %v", err)
		case <-time.After(gap):
		}
		return nil
	})
	check("an upload trickling a byte every second for 5s", func() error {
		pr, pw := io.Pipe()
		go func() {
			for range 5 {
				if _, err := pw.Write([]byte("x")); err != nil {
					return
				}
				time.Sleep(limitsIdle / 2)
			}
			_ = pw.Close()
		}()
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/upload", pr)
		if err != nil {
			return err
		}
		req.Host, req.ContentLength = r.warmHost, 5
		resp, err := httpClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(b)) != "5" {
			return fmt.Errorf("status %d, %q; want 200 and 5 bytes read", resp.StatusCode, b)
		}
		return nil
	})
	check("a 4 MiB download read 64 KiB at a time over about 6s", func() error {
		const size = 4 << 20
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/download?size="+strconv.Itoa(size), nil)
		if err != nil {
			return err
		}
		req.Host = r.warmHost
		resp, err := httpClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		buf := make([]byte, 64<<10)
		var n int
		for {
			m, err := io.ReadFull(resp.Body, buf)
			n += m
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				break
			}
			if err != nil {
				return fmt.Errorf("after %d bytes: %w", n, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if n != size {
			return fmt.Errorf("read %d bytes, want %d", n, size)
		}
		return nil
	})
	wg.Wait()
}

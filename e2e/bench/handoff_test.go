package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

const (
	// handoffs is how many hand-offs of one held request each iteration of BenchmarkHandoff
	// times, so that one iteration (which is what `go test -bench` runs by default) already
	// gives a p99.
	handoffs = 100
	// handoffHeld is how many requests BenchmarkHandoff1000 holds at once.
	handoffHeld = 1000
	// handoffHost is the Host of the hand-off route (route names it app.test).
	handoffHost = "app.test"
	// coldStartHeader is the interceptor's response header on requests that were held.
	coldStartHeader = "X-Lobby-Cold-Start"
)

// BenchmarkHandoff measures the hand-off of one held request through a real API server: the
// interceptor binary watches the API server (as the chart configures it); the route's Service
// has an EndpointSlice with one endpoint, not ready; the endpoint is a backend in this process
// that stamps each request's arrival. Each hand-off holds one request (sent on a new connection,
// and counted only once the interceptor's /queue shows it held), restarts the backend so that
// the interceptor must open a new connection to it, as to a pod that has just started, then
// updates the EndpointSlice to ready through the API server, the clock starting just before the
// Update call. A plain client-go watch on the same EndpointSlice in this process stamps when
// the update comes back from the API server, which tells the API server's part (the write and
// the watch delivery) from the interceptor's (its informer, the wake-up and the forward). Each
// iteration does 100 hand-offs, flipping the endpoint back to not ready in between.
//
// Metrics, p50 and p99 over every hand-off, in milliseconds:
//   - handoff-p50-ms, handoff-p99-ms: Update call → the held request arrives at the backend;
//   - handoff-response-p50-ms, handoff-response-p99-ms: Update call → the response at the
//     client (the design's "EndpointSlice ready → one held request answered", p99 ≤ 5 ms,
//     here including the API server);
//   - handoff-watch-p50-ms, handoff-watch-p99-ms: Update call → the update arrives on the
//     test's own watch: the API server's share;
//   - handoff-interceptor-p50-ms, handoff-interceptor-p99-ms: the update on the test's watch →
//     the response at the client, per hand-off: the interceptor's share (its informer gets the
//     same event from the same API server at about the same moment; when this process's watch
//     is the later of the two, this figure is short by the difference).
func BenchmarkHandoff(b *testing.B) {
	need(b)
	ctx := b.Context()
	h := newHandoff(ctx, b, []string{"LOBBY_COLD_START_TIMEOUT=2m"})
	var arrival, response, watched, interceptor []time.Duration
	n := 0
	for b.Loop() {
		for range handoffs {
			n++
			path := "/handoff/" + strconv.Itoa(n)
			res, err := h.hold(ctx, path, 1)
			if err != nil {
				b.Fatal(err)
			}
			t, err := h.release(ctx)
			if err != nil {
				b.Fatal(err)
			}
			r, err := res.wait(ctx)
			if err != nil {
				b.Fatal(err)
			}
			at, ok := h.backend.arrival(r[0].path)
			if !ok {
				b.Fatalf("the backend has no arrival for %s, which was answered %d", r[0].path, r[0].code)
			}
			arrival = append(arrival, at.Sub(t.update))
			response = append(response, r[0].at.Sub(t.update))
			watched = append(watched, t.watched.Sub(t.update))
			interceptor = append(interceptor, r[0].at.Sub(t.watched))
		}
	}
	b.StopTimer()
	report := func(name string, d []time.Duration) {
		s := sorted(d)
		b.ReportMetric(percentile(s, 0.50), name+"-p50-ms")
		b.ReportMetric(percentile(s, 0.99), name+"-p99-ms")
	}
	report("handoff", arrival)
	report("handoff-response", response)
	report("handoff-watch", watched)
	report("handoff-interceptor", interceptor)
}

// BenchmarkHandoff1000 is BenchmarkHandoff with 1,000 requests held at once, each on a
// connection of its own, released by one update of the EndpointSlice to ready; each iteration
// is one round.
//
// Metrics, in milliseconds (all-ms figures are of the worst round; p50 and p99 are over every
// request of every round):
//   - handoff1000-all-ms: Update call → the last response at the client (the design's
//     "EndpointSlice ready → 1,000 held requests all answered", ≤ 50 ms, here including the API
//     server);
//   - handoff1000-arrival-all-ms: Update call → the last request arriving at the backend;
//   - handoff1000-watch-ms: Update call → the update on the test's own watch (the API server's
//     share);
//   - handoff1000-interceptor-all-ms: the update on the test's watch → the last response (the
//     interceptor's share);
//   - handoff1000-p50-ms, handoff1000-p99-ms: Update call → each response.
func BenchmarkHandoff1000(b *testing.B) {
	need(b)
	if want := uint64(2*handoffHeld + 1024); shared.nofile < want {
		b.Skipf("RLIMIT_NOFILE is %d; holding %d requests needs at least %d", shared.nofile, handoffHeld, want)
	}
	ctx := b.Context()
	h := newHandoff(ctx, b, []string{"LOBBY_COLD_START_TIMEOUT=2m", "LOBBY_MAX_PENDING_REQUESTS=" + strconv.Itoa(2*handoffHeld)})
	var all, arrivalAll, watched, interceptorAll time.Duration
	var each []time.Duration
	round := 0
	for b.Loop() {
		round++
		res, err := h.hold(ctx, "/handoff1000/"+strconv.Itoa(round), handoffHeld)
		if err != nil {
			b.Fatal(err)
		}
		t, err := h.release(ctx)
		if err != nil {
			b.Fatal(err)
		}
		rs, err := res.wait(ctx)
		if err != nil {
			b.Fatal(err)
		}
		var lastResponse, lastArrival time.Time
		for _, r := range rs {
			at, ok := h.backend.arrival(r.path)
			if !ok {
				b.Fatalf("the backend has no arrival for %s, which was answered %d", r.path, r.code)
			}
			if at.After(lastArrival) {
				lastArrival = at
			}
			if r.at.After(lastResponse) {
				lastResponse = r.at
			}
			each = append(each, r.at.Sub(t.update))
		}
		all = max(all, lastResponse.Sub(t.update))
		arrivalAll = max(arrivalAll, lastArrival.Sub(t.update))
		watched = max(watched, t.watched.Sub(t.update))
		interceptorAll = max(interceptorAll, lastResponse.Sub(t.watched))
	}
	b.StopTimer()
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	s := sorted(each)
	b.ReportMetric(ms(all), "handoff1000-all-ms")
	b.ReportMetric(ms(arrivalAll), "handoff1000-arrival-all-ms")
	b.ReportMetric(ms(watched), "handoff1000-watch-ms")
	b.ReportMetric(ms(interceptorAll), "handoff1000-interceptor-all-ms")
	b.ReportMetric(percentile(s, 0.50), "handoff1000-p50-ms")
	b.ReportMetric(percentile(s, 0.99), "handoff1000-p99-ms")
}

// handoff is the set-up of a hand-off benchmark: a route whose one endpoint is a recording
// backend, an interceptor routing it, and a watch on its EndpointSlice.
type handoff struct {
	ns      string
	key     string // the route's /queue key
	proxy   string // the interceptor's proxy address
	admin   string // the interceptor's admin URL
	backend *recorder
	slice   *discoveryv1.EndpointSlice // as last written
	watch   *sliceWatch
}

// newHandoff creates the route in a namespace of its own, a backend on an address of its own,
// starts an interceptor (with extra settings) that watches that namespace, and a watch on the
// route's EndpointSlice.
func newHandoff(ctx context.Context, tb testing.TB, extra []string) *handoff {
	tb.Helper()
	h := &handoff{ns: next("handoff")}
	h.key = h.ns + "/app"
	if err := namespace(ctx, h.ns); err != nil {
		tb.Fatal(err)
	}
	if err := route(ctx, shared.kube, h.ns, "app", false); err != nil {
		tb.Fatal(err)
	}
	addr, err := shared.cluster.AllocAddr()
	if err != nil {
		tb.Fatal(err)
	}
	h.backend = &recorder{addr: netip.AddrPortFrom(addr, appPort), arrived: map[string]time.Time{}}
	if err := h.backend.restart(ctx); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(h.backend.close)
	// route points the endpoint at the shared backend; this one points it at the recorder.
	s, err := shared.kube.DiscoveryV1().EndpointSlices(h.ns).Get(ctx, "app", metav1.GetOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	s.Endpoints[0].Addresses = []string{addr.String()}
	if h.slice, err = shared.kube.DiscoveryV1().EndpointSlices(h.ns).Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		tb.Fatal(err)
	}
	if h.watch, err = watchSlice(ctx, h.ns, "app", h.slice.ResourceVersion); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(h.watch.stop)
	_, h.proxy, h.admin = startInterceptor(ctx, tb, next("interceptor"), false, append([]string{"LOBBY_WATCH_NAMESPACE=" + h.ns}, extra...),
		func(q map[string]queueCounts) bool { _, ok := q[h.key]; return ok })
	return h
}

// setReady writes the endpoint's readiness through the API server and returns when the Update
// call started.
func (h *handoff) setReady(ctx context.Context, ready bool) (time.Time, error) {
	s := h.slice.DeepCopy()
	s.Endpoints[0].Conditions.Ready = ptr.To(ready)
	start := time.Now()
	s, err := shared.kube.DiscoveryV1().EndpointSlices(h.ns).Update(ctx, s, metav1.UpdateOptions{})
	if err != nil {
		return start, fmt.Errorf("update EndpointSlice %s/app to ready=%t: %w", h.ns, ready, err)
	}
	h.slice = s
	return start, nil
}

// hold makes the endpoint not ready, restarts the backend (so that no connection to it
// survives from before), and holds n requests, each on a new connection, for paths prefix/0 …
// prefix/n-1 (a retry appends its attempt). It returns once the interceptor's /queue shows all
// n held.
//
// The interceptor may not have seen the endpoint turn not ready yet when the first request
// arrives, and then forwards it at once: so one request goes first and is sent again until it is
// held, which proves the interceptor sees no ready endpoint, and only then do the others follow.
func (h *handoff) hold(ctx context.Context, prefix string, n int) (*held, error) {
	if _, err := h.setReady(ctx, false); err != nil {
		return nil, err
	}
	if err := h.backend.restart(ctx); err != nil {
		return nil, err
	}
	res := &held{}
	deadline := time.Now().Add(time.Minute)
	for attempt := 0; ; attempt++ {
		first := make(chan result, 1)
		path := prefix + "/0"
		if attempt > 0 {
			path += "." + strconv.Itoa(attempt)
		}
		go func() { first <- send(ctx, h.proxy, handoffHost, path) }()
		ok, err := h.waitHeld(ctx, 1, first)
		if err != nil {
			return nil, err
		}
		if ok {
			res.pending = append(res.pending, first)
			break
		}
		r := <-first
		if r.err != nil || r.code != http.StatusOK || r.coldStart != "" {
			return nil, fmt.Errorf("a request before the hand-off was answered %d (%s: %q), error %v; want it held", r.code, coldStartHeader, r.coldStart, r.err)
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("after a minute, the interceptor still forwards %s at once: it does not see the endpoint not ready", h.key)
		}
		// Forwarded: the interceptor had not seen the update yet. Give its informer a moment,
		// and close the connection the forward opened.
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
		if err := h.backend.restart(ctx); err != nil {
			return nil, err
		}
	}
	// The others, at most dialing connections being opened at once.
	sem := make(chan struct{}, dialing)
	for i := 1; i < n; i++ {
		c := make(chan result, 1)
		res.pending = append(res.pending, c)
		sem <- struct{}{}
		go func() { c <- sendAfter(ctx, h.proxy, handoffHost, prefix+"/"+strconv.Itoa(i), func() { <-sem }) }()
	}
	if n > 1 {
		ok, err := h.waitHeld(ctx, int64(n), nil)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("%d requests were sent, but the interceptor does not hold them all", n)
		}
	}
	return res, nil
}

// waitHeld polls the interceptor's /queue until it shows n requests held for the route, and
// reports whether it did; it gives up (false) when done yields first (the request was answered
// instead), and fails after a minute.
func (h *handoff) waitHeld(ctx context.Context, n int64, done chan result) (bool, error) {
	deadline := time.Now().Add(time.Minute)
	var last int64
	for {
		q, err := queue(ctx, h.admin)
		if err == nil {
			if last = q[h.key].Held; last == n {
				return true, nil
			}
		}
		if time.Now().After(deadline) {
			return false, fmt.Errorf("wait for %d requests held by the interceptor: %d after a minute (last error %v)", n, last, err)
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case r := <-done:
			done <- r // hold reads it
			return false, nil
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// timing is when a release started and when the test's watch saw it.
type timing struct {
	update  time.Time // just before the Update call
	watched time.Time // the update's arrival on the test's watch
}

// release makes the endpoint ready and returns when the Update started and when its watch event
// arrived here.
func (h *handoff) release(ctx context.Context) (timing, error) {
	var t timing
	var err error
	if t.update, err = h.setReady(ctx, true); err != nil {
		return t, err
	}
	if t.watched, err = h.watch.seen(ctx, h.slice.ResourceVersion); err != nil {
		return t, err
	}
	return t, nil
}

// held is a set of requests the interceptor holds.
type held struct {
	pending []chan result
}

// wait returns every held request's result once all are in, within two minutes, and fails
// unless each was answered 200 by the backend after being held.
func (hd *held) wait(ctx context.Context) ([]result, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	out := make([]result, 0, len(hd.pending))
	var errs []error
	for _, c := range hd.pending {
		select {
		case r := <-c:
			switch {
			case r.err != nil:
				errs = append(errs, fmt.Errorf("%s: %w", r.path, r.err))
			case r.code != http.StatusOK:
				errs = append(errs, fmt.Errorf("%s: answered %d, want 200", r.path, r.code))
			case r.coldStart == "":
				errs = append(errs, fmt.Errorf("%s: answered without %s, so it was not held", r.path, coldStartHeader))
			}
			out = append(out, r)
		case <-ctx.Done():
			return nil, fmt.Errorf("after two minutes, %d of %d held requests answered", len(out), len(hd.pending))
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%d of %d held requests failed: %w", len(errs), len(out), errors.Join(errs[:min(len(errs), 5)]...))
	}
	return out, nil
}

// result is the outcome of one request at the client.
type result struct {
	path      string
	at        time.Time // when the whole response had been read
	code      int
	coldStart string // the X-Lobby-Cold-Start header
	err       error
}

// send sends GET path with host to the proxy at addr on a new connection and reads the answer.
func send(ctx context.Context, addr, host, path string) result {
	return sendAfter(ctx, addr, host, path, func() {})
}

// sendAfter is send, calling sent once the request is written (or failed to be).
func sendAfter(ctx context.Context, addr, host, path string, sent func()) result {
	r := result{path: path}
	d := net.Dialer{Timeout: 30 * time.Second}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		sent()
		r.err = err
		return r
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
	defer stop()
	_, err = io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: "+host+"\r\nConnection: close\r\n\r\n")
	sent()
	if err != nil {
		r.err = err
		return r
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		r.err = err
		return r
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	r.at = time.Now()
	r.code, r.coldStart, r.err = resp.StatusCode, resp.Header.Get(coldStartHeader), err
	return r
}

// recorder is the backend of the hand-off benchmarks: it stamps each request's arrival by path.
type recorder struct {
	addr netip.AddrPort

	mu      sync.Mutex
	arrived map[string]time.Time
	srv     *http.Server
}

func (rc *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	at := time.Now()
	rc.mu.Lock()
	if _, ok := rc.arrived[r.URL.Path]; !ok {
		rc.arrived[r.URL.Path] = at
	}
	rc.mu.Unlock()
	_, _ = io.WriteString(w, "hello, world\n")
}

// arrival returns when the request for path first arrived.
func (rc *recorder) arrival(path string) (time.Time, bool) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	at, ok := rc.arrived[path]
	return at, ok
}

// restart shuts the server down, closing its listener and every connection to it, and serves
// again on the same address with no arrivals recorded.
func (rc *recorder) restart(ctx context.Context) error {
	rc.close()
	ln, err := net.Listen("tcp", rc.addr.String())
	if err != nil {
		return fmt.Errorf("backend: %w", err)
	}
	srv := &http.Server{Handler: rc, ReadHeaderTimeout: 10 * time.Second}
	rc.mu.Lock()
	rc.srv = srv
	clear(rc.arrived)
	rc.mu.Unlock()
	go func() { _ = srv.Serve(ln) }()
	return nil
}

// close stops the server, if it runs.
func (rc *recorder) close() {
	rc.mu.Lock()
	srv := rc.srv
	rc.srv = nil
	rc.mu.Unlock()
	if srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if srv.Shutdown(ctx) != nil {
		_ = srv.Close()
	}
}

// sliceWatch is a plain client-go watch on one EndpointSlice in this process, stamping each
// event on arrival. The interceptor's informer watches the same API server, so an update arrives
// there at about the same moment: the time from the Update call to the stamp is the API
// server's share of a hand-off.
type sliceWatch struct {
	events chan sliceEvent
	stop   func()
}

type sliceEvent struct {
	resourceVersion string
	at              time.Time
}

// watchSlice watches EndpointSlice ns/name from resource version rv on.
func watchSlice(ctx context.Context, ns, name, rv string) (*sliceWatch, error) {
	ctx, cancel := context.WithCancel(ctx)
	w, err := shared.kube.DiscoveryV1().EndpointSlices(ns).Watch(ctx, metav1.ListOptions{
		FieldSelector: "metadata.name=" + name, ResourceVersion: rv})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("watch EndpointSlice %s/%s: %w", ns, name, err)
	}
	sw := &sliceWatch{events: make(chan sliceEvent, 64), stop: func() { cancel(); w.Stop() }}
	go func() {
		defer close(sw.events)
		for ev := range w.ResultChan() {
			at := time.Now()
			s, ok := ev.Object.(*discoveryv1.EndpointSlice)
			if !ok {
				continue
			}
			select {
			case sw.events <- sliceEvent{s.ResourceVersion, at}:
			case <-ctx.Done():
				return
			}
		}
	}()
	return sw, nil
}

// seen returns when the update that wrote resource version rv arrived, skipping earlier ones,
// waiting at most 30 s.
func (sw *sliceWatch) seen(ctx context.Context, rv string) (time.Time, error) {
	timeout := time.After(30 * time.Second)
	for {
		select {
		case e, ok := <-sw.events:
			if !ok {
				return time.Time{}, errors.New("the test's EndpointSlice watch ended")
			}
			if e.resourceVersion == rv {
				return e.at, nil
			}
		case <-timeout:
			return time.Time{}, fmt.Errorf("the update to resource version %s did not arrive on the test's watch within 30s", rv)
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		}
	}
}

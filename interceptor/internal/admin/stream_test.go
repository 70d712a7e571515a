package admin

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/lobby-http/lobby/internal/server"
	"github.com/lobby-http/lobby/internal/stream"
)

// streamFixture is a running Stream (dispatcher included) served over HTTP on loopback.
type streamFixture struct {
	src    *fakeSource
	acts   *Activations
	stream *Stream
	clock  *clocktesting.FakeClock
	url    string
}

func newStreamFixture(t *testing.T, o StreamOptions) *streamFixture {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	acts, err := NewActivations(reg)
	if err != nil {
		t.Fatal(err)
	}
	f := &streamFixture{src: &fakeSource{}, acts: acts, clock: clocktesting.NewFakeClock(time.UnixMilli(1700000000000))}
	o.Source, o.Activations, o.Clock, o.Registerer, o.Interceptor = f.src, acts, f.clock, reg, "interceptor-0"
	if o.Interval == 0 {
		o.Interval = time.Second
	}
	if f.stream, err = NewStream(o); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- f.stream.Start(ctx) }()
	ts := httptest.NewServer(f.stream)
	t.Cleanup(func() {
		cancel()
		<-done
		ts.Close()
	})
	f.url = ts.URL + stream.Path
	// The dispatcher's ticker exists once the fake clock has a waiter; steps before it would be
	// lost.
	for !f.clock.HasWaiters() {
		time.Sleep(time.Millisecond)
	}
	return f
}

// subscribe opens the stream and returns a channel of its frames, read in the background.
func (f *streamFixture) subscribe(t *testing.T) <-chan stream.Frame {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, f.url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != stream.ContentType {
		t.Fatalf("GET %s = %d %q, want 200 %q", stream.Path, resp.StatusCode, resp.Header.Get("Content-Type"), stream.ContentType)
	}
	frames := make(chan stream.Frame, 64)
	go func() {
		defer close(frames)
		dec := stream.NewDecoder(resp.Body, 0)
		for {
			var fr stream.Frame
			if err := dec.Decode(&fr); err != nil {
				return
			}
			frames <- fr
		}
	}()
	return frames
}

// next returns the next frame, failing the test when none comes within a generous bound (the
// bound guards against hangs; it measures nothing).
func next(t *testing.T, frames <-chan stream.Frame) stream.Frame {
	t.Helper()
	select {
	case fr, ok := <-frames:
		if !ok {
			t.Fatal("stream ended, want a frame")
		}
		return fr
	case <-time.After(5 * time.Second):
		t.Fatal("no frame within 5s")
	}
	return stream.Frame{}
}

func TestStreamFrames(t *testing.T) {
	web := stream.RouteCounts{Key: "apps/web", InFlight: 1, Requests: 7, Rate: 0.1}
	idle := stream.RouteCounts{Key: "default/idle"}
	f := newStreamFixture(t, StreamOptions{})
	f.src.set(web, idle)
	frames := f.subscribe(t)

	first := next(t, frames)
	if first.Kind != stream.KindSnapshot || first.Seq != 1 || first.Interceptor != "interceptor-0" ||
		first.UnixMilli != 1700000000000 || len(first.Routes) != 2 || first.Routes[0] != web || first.Routes[1] != idle {
		t.Fatalf("first frame = %+v, want a snapshot of both routes with seq 1", first)
	}

	// The clock is never stepped here, so the frame can only come from the push path.
	busy := stream.RouteCounts{Key: "default/idle", Held: 1, Requests: 1}
	f.acts.Notify(fakeRoute{busy})
	act := next(t, frames)
	if act.Kind != stream.KindActivate || act.Seq != 2 || len(act.Routes) != 1 || act.Routes[0] != busy {
		t.Fatalf("frame after activation = %+v, want an activate frame of default/idle with seq 2", act)
	}

	f.src.set(web, busy)
	f.clock.Step(time.Second)
	counts := next(t, frames)
	if counts.Kind != stream.KindCounts || counts.Seq != 3 || len(counts.Routes) != 2 || counts.Routes[1] != busy ||
		counts.UnixMilli != 1700000001000 {
		t.Fatalf("frame after one interval = %+v, want a counts frame of both routes with seq 3", counts)
	}
	f.clock.Step(time.Second)
	if fr := next(t, frames); fr.Kind != stream.KindCounts || fr.Seq != 4 {
		t.Fatalf("frame after two intervals = %+v, want a counts frame with seq 4", fr)
	}
}

func TestStreamActivationCoalescing(t *testing.T) {
	tests := []struct {
		name     string
		notify   []string
		overflow bool
		busy     []stream.RouteCounts // what the source reports
		want     []string
	}{
		{name: "One activation gives one route.", notify: []string{"a/x"}, want: []string{"a/x"}},
		{name: "Activations queued together share one frame.", notify: []string{"a/x", "a/y", "a/z"}, want: []string{"a/x", "a/y", "a/z"}},
		{name: "A route activated twice appears once.", notify: []string{"a/x", "a/y", "a/x"}, want: []string{"a/x", "a/y"}},
		{
			name:     "After an overflow every busy route is activated.",
			notify:   []string{"a/x"},
			overflow: true,
			busy:     []stream.RouteCounts{{Key: "a/lost", Held: 1}, {Key: "a/quiet"}, {Key: "a/x", Held: 1}},
			want:     []string{"a/x", "a/lost"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := &fakeSource{}
			src.set(tt.busy...)
			acts, err := NewActivations(prometheus.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			s, err := NewStream(StreamOptions{Source: src, Activations: acts, Interval: time.Second,
				Clock: clocktesting.NewFakeClock(time.Unix(0, 0)), Registerer: prometheus.NewRegistry()})
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range tt.notify {
				acts.Notify(fakeRoute{stream.RouteCounts{Key: k, Held: 1}})
			}
			acts.overflow.Store(tt.overflow)
			e := s.activation(<-acts.ch)
			var got []string
			for _, r := range e.routes {
				got = append(got, r.Key)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) || e.kind != stream.KindActivate {
				t.Errorf("activate frame routes = %v (%s), want %v", got, e.kind, tt.want)
			}
		})
	}
}

func TestStreamNotifyNeverBlocks(t *testing.T) {
	acts, err := NewActivations(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	// Nothing drains the queue: notifications past its capacity must still return.
	for i := range activationQueue + 10 {
		acts.Notify(fakeRoute{stream.RouteCounts{Key: fmt.Sprintf("a/%d", i)}})
	}
	if !acts.overflow.Load() {
		t.Error("overflow not recorded after the queue filled")
	}
}

func TestStreamStuckSubscriber(t *testing.T) {
	// The write timeout must be long enough for the healthy subscriber to take a megabyte frame
	// under the race detector, which slows encoding and decoding several times.
	f := newStreamFixture(t, StreamOptions{WriteTimeout: time.Second, Buffer: 2})
	// Frames of about a megabyte fill the stuck subscriber's socket buffers quickly.
	routes := make([]stream.RouteCounts, 10000)
	for i := range routes {
		routes[i] = stream.RouteCounts{Key: fmt.Sprintf("namespace-%05d/route", i), Requests: 1}
	}
	f.src.set(routes...)

	// The stuck subscriber sends its request and never reads a byte.
	stuck, err := net.Dial("tcp", f.url[len("http://"):len(f.url)-len(stream.Path)])
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.Close()
	if _, err := fmt.Fprintf(stuck, "GET %s HTTP/1.1\r\nHost: admin\r\n\r\n", stream.Path); err != nil {
		t.Fatal(err)
	}
	healthy := f.subscribe(t)
	if fr := next(t, healthy); fr.Kind != stream.KindSnapshot {
		t.Fatalf("first frame = %s, want snapshot", fr.Kind)
	}
	for range 20 {
		f.clock.Step(time.Second)
		if fr := next(t, healthy); fr.Kind != stream.KindCounts {
			t.Fatalf("frame = %s, want counts", fr.Kind)
		}
	}
	f.acts.Notify(fakeRoute{stream.RouteCounts{Key: "namespace-00001/route", Held: 1}})
	if fr := next(t, healthy); fr.Kind != stream.KindActivate {
		t.Fatalf("frame after activation = %s, want activate while another subscriber is stuck", fr.Kind)
	}

	// The stuck subscriber is dropped once a write has waited for the write timeout.
	deadline := time.Now().Add(10 * time.Second)
	for testutil.ToFloat64(f.stream.subscribers) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("subscribers = %v, want the stuck one dropped", testutil.ToFloat64(f.stream.subscribers))
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Its connection is closed: reading it gives what was sent, then the end.
	_ = stuck.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, bufio.NewReader(stuck)); err != nil {
		t.Errorf("reading the dropped subscriber's connection: %v, want it closed", err)
	}
}

// pipeWriter is a ResponseWriter that blocks each write until the test reads it.
type pipeWriter struct {
	h http.Header
	w *io.PipeWriter
}

func (p *pipeWriter) Header() http.Header         { return p.h }
func (p *pipeWriter) WriteHeader(int)             {}
func (p *pipeWriter) Write(b []byte) (int, error) { return p.w.Write(b) }
func (p *pipeWriter) Flush()                      {}

func TestStreamLaggingSubscriberGetsSnapshot(t *testing.T) {
	src := &fakeSource{}
	src.set(stream.RouteCounts{Key: "apps/web", InFlight: 3})
	acts, err := NewActivations(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	clk := clocktesting.NewFakeClock(time.Unix(0, 0))
	s, err := NewStream(StreamOptions{Source: src, Activations: acts, Interval: time.Second, Buffer: 2,
		Clock: clk, Registerer: prometheus.NewRegistry(), Log: logr.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	defer pr.Close()
	req := httptest.NewRequestWithContext(t.Context(), http.MethodGet, stream.Path, nil)
	go s.ServeHTTP(&pipeWriter{h: http.Header{}, w: pw}, req)
	dec := stream.NewDecoder(pr, 0)
	var fr stream.Frame
	if err := dec.Decode(&fr); err != nil || fr.Kind != stream.KindSnapshot {
		t.Fatalf("first frame = %s (%v), want snapshot", fr.Kind, err)
	}
	// The subscriber is registered; while it is blocked writing frame 2, the queue of two fills
	// and the frames after it are lost.
	publish := func(i int) {
		s.publish(event{kind: stream.KindCounts, routes: []stream.RouteCounts{{Key: fmt.Sprintf("a/%d", i)}}, at: clk.Now()})
	}
	publish(0)
	// Wait until the handler has taken frame 2 and is blocked writing it.
	for queued := 1; queued > 0; time.Sleep(time.Millisecond) {
		s.mu.Lock()
		for sub := range s.subs {
			queued = len(sub.ch)
		}
		s.mu.Unlock()
	}
	for i := 1; i < 6; i++ {
		publish(i)
	}
	if err := dec.Decode(&fr); err != nil || fr.Kind != stream.KindCounts || fr.Routes[0].Key != "a/0" {
		t.Fatalf("second frame = %+v (%v), want the counts frame being written when the queue filled", fr, err)
	}
	if err := dec.Decode(&fr); err != nil || fr.Kind != stream.KindSnapshot || fr.Seq != 3 || fr.Routes[0].Key != "apps/web" {
		t.Fatalf("third frame = %+v (%v), want a fresh snapshot with seq 3 in place of the stale frames", fr, err)
	}
}

func TestStreamSubscriberCap(t *testing.T) {
	f := newStreamFixture(t, StreamOptions{MaxSubscribers: 2})
	first := f.subscribe(t)
	next(t, first)
	next(t, f.subscribe(t))

	resp, err := http.Get(f.url)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" ||
		!strings.Contains(string(body), "stream full: 2 subscribers already") || !strings.Contains(string(body), "LOBBY_STREAM_MAX_SUBSCRIBERS") {
		t.Errorf("third subscriber = %d %q (Retry-After %q), want 503 saying the stream is full and which setting raises it",
			resp.StatusCode, body, resp.Header.Get("Retry-After"))
	}
	if v := testutil.ToFloat64(f.stream.refused); v != 1 {
		t.Errorf("lobby_interceptor_stream_refused_total = %v, want 1", v)
	}
	if v := testutil.ToFloat64(f.stream.subscribers); v != 2 {
		t.Errorf("lobby_interceptor_stream_subscribers = %v, want 2", v)
	}
}

func TestServerStartEndsStreams(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	acts, err := NewActivations(reg)
	if err != nil {
		t.Fatal(err)
	}
	src := &fakeSource{}
	clk := clocktesting.NewFakeClock(time.Unix(0, 0))
	st, err := NewStream(StreamOptions{Source: src, Activations: acts, Interval: time.Second, Clock: clk, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := New(Options{Source: src, Stream: st, Gatherer: reg, Clock: clk,
		Server: &server.Server{HTTP: &http.Server{}, Listener: ln, ShutdownTimeout: 5 * time.Second, Log: logr.Discard()}})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Start(ctx) }()

	resp, err := http.Get("http://" + ln.Addr().String() + stream.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	dec := stream.NewDecoder(resp.Body, 0)
	var fr stream.Frame
	if err := dec.Decode(&fr); err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Start() = %v, want nil", err)
		}
	case <-time.After(4 * time.Second):
		t.Fatal("Start did not return before the shutdown timeout: an open stream held it")
	}
	if err := dec.Decode(&fr); err != io.EOF {
		t.Errorf("stream after shutdown: %v, want a clean end (EOF)", err)
	}
}

// BenchmarkNotify measures the activation hook on the request path, with a dispatcher draining
// the queue.
func BenchmarkNotify(b *testing.B) {
	acts, err := NewActivations(prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			select {
			case <-acts.ch:
			case <-done:
				return
			}
		}
	}()
	// A pointer, as *counts.Route is, so that passing it as a Route does not allocate.
	r := &fakeRoute{stream.RouteCounts{Key: "apps/web"}}
	b.ReportAllocs()
	for b.Loop() {
		acts.Notify(r)
	}
}

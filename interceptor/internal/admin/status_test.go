package admin

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/lobby-http/lobby/internal/stream"
)

// fakeTarget is a Target whose ready endpoints the test sets.
type fakeTarget struct {
	ready atomic.Int64
	once  sync.Once
	wake  chan struct{}
}

func newFakeTarget() *fakeTarget { return &fakeTarget{wake: make(chan struct{})} }

func (t *fakeTarget) setReady(n int) {
	t.ready.Store(int64(n))
	if n > 0 {
		t.once.Do(func() { close(t.wake) })
	}
}

func (t *fakeTarget) Ready() int { return int(t.ready.Load()) }

func (t *fakeTarget) Wait(ctx context.Context) error {
	select {
	case <-t.wake:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// liveRoute is a Route whose counts the test changes while the status page reads them.
type liveRoute struct {
	mu     sync.Mutex
	counts stream.RouteCounts
}

func (r *liveRoute) Key() string { return r.counts.Key }
func (r *liveRoute) Counts(time.Time) stream.RouteCounts {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.counts
}
func (r *liveRoute) set(c stream.RouteCounts) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.counts = c
}

// fakeApps lists fixed apps.
type fakeApps []App

func (a fakeApps) Apps() []App { return a }

var (
	_ Target = (*fakeTarget)(nil)
	_ Route  = (*liveRoute)(nil)
	_ Apps   = fakeApps(nil)
)

// statusFixture is a running Status with one route, "shop/cart", served over HTTP.
type statusFixture struct {
	status *Status
	target *fakeTarget
	route  *liveRoute
	clock  *clocktesting.FakeClock
	url    string
}

func newStatusFixture(t *testing.T, maxViewers int) *statusFixture {
	t.Helper()
	f := &statusFixture{target: newFakeTarget(), route: &liveRoute{counts: stream.RouteCounts{Key: "shop/cart"}},
		clock: clocktesting.NewFakeClock(time.UnixMilli(1700000000000))}
	f.status = NewStatus(StatusOptions{
		Apps:        fakeApps{{Key: "shop/cart", Target: f.target, Counts: f.route}},
		Interceptor: "interceptor-0",
		MaxViewers:  maxViewers,
		Clock:       f.clock,
		Log:         logr.Discard(),
	})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- f.status.Start(ctx) }()
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+StatusPath, f.status.ServePage)
	mux.HandleFunc("GET "+StatusJSONPath, f.status.ServeJSON)
	mux.HandleFunc("GET "+StatusEventsPath, f.status.ServeEvents)
	ts := httptest.NewServer(mux)
	t.Cleanup(func() {
		ts.Close()
		cancel()
		<-done
	})
	f.url = ts.URL
	return f
}

// await returns the first view that satisfies ok, failing the test after a few seconds.
func (f *statusFixture) await(t *testing.T, what string, ok func(StatusView) bool) StatusView {
	t.Helper()
	var v StatusView
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		b, _, _ := f.status.current()
		v = StatusView{}
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatalf("view %s: %v", b, err)
		}
		if ok(v) {
			return v
		}
	}
	t.Fatalf("no view with %s; last: %+v", what, v)
	return v
}

func steps(r StatusRoute) []string {
	if r.ColdStart == nil {
		return nil
	}
	var out []string
	for _, s := range r.ColdStart.Steps {
		out = append(out, s.Name)
	}
	return out
}

func TestStatusFollowsAColdStart(t *testing.T) {
	f := newStatusFixture(t, 0)
	at := f.clock.Now()
	f.status.Observe(stream.KindSnapshot, []stream.RouteCounts{{Key: "shop/cart"}}, at)
	v := f.await(t, "the route cold", func(v StatusView) bool { return len(v.Routes) == 1 && v.Routes[0].State == StateCold })
	if v.Interceptor != "interceptor-0" || v.Routes[0].ColdStart != nil {
		t.Errorf("view = %+v, want interceptor-0's and no cold start yet", v)
	}

	held := stream.RouteCounts{Key: "shop/cart", Held: 1, Requests: 1}
	f.route.set(held)
	f.status.Observe(stream.KindActivate, []stream.RouteCounts{held}, at)
	v = f.await(t, "the route waking", func(v StatusView) bool { return v.Routes[0].State == StateWaking })
	if got := strings.Join(steps(v.Routes[0]), ","); got != StepArrived+","+StepPushed || !v.Routes[0].ColdStart.UnderWay {
		t.Errorf("steps = %q under way %v, want arrival and push, under way", got, v.Routes[0].ColdStart.UnderWay)
	}

	f.target.setReady(1)
	v = f.await(t, "the endpoint ready", func(v StatusView) bool { return len(steps(v.Routes[0])) == 3 })
	if r := v.Routes[0]; r.State != StateWarm || r.Ready != 1 || r.ColdStart.UnderWay {
		t.Errorf("route = %+v, want warm with 1 ready endpoint, cold start over", r)
	}
	// The held request is forwarded (in flight, then answered): only the answer is a step.
	f.route.set(stream.RouteCounts{Key: "shop/cart", InFlight: 1, Requests: 1})
	time.Sleep(20 * time.Millisecond)
	if got := steps(f.await(t, "three steps", func(StatusView) bool { return true }).Routes[0]); len(got) != 3 {
		t.Errorf("steps = %q before the answer, want three", got)
	}
	f.route.set(stream.RouteCounts{Key: "shop/cart", Requests: 1})
	v = f.await(t, "the first answer", func(v StatusView) bool { return len(steps(v.Routes[0])) == 4 })
	if got := steps(v.Routes[0]); got[3] != StepAnswered {
		t.Errorf("steps = %q, want the first answer last", got)
	}
}

func TestStatusActivationOfAWarmRouteIsNoColdStart(t *testing.T) {
	f := newStatusFixture(t, 0)
	f.target.setReady(2)
	c := stream.RouteCounts{Key: "shop/cart", InFlight: 1, Requests: 7}
	f.route.set(c)
	f.status.Observe(stream.KindActivate, []stream.RouteCounts{c}, f.clock.Now())
	f.status.Observe(stream.KindCounts, []stream.RouteCounts{c}, f.clock.Now())
	v := f.await(t, "the counts", func(v StatusView) bool { return len(v.Routes) == 1 && v.Routes[0].Requests == 7 })
	if r := v.Routes[0]; r.State != StateWarm || r.Ready != 2 || r.InFlight != 1 || r.ColdStart != nil {
		t.Errorf("route = %+v, want warm, 2 ready, 1 in flight, no cold start", r)
	}
}

func TestStatusRateIsOverTheLastMinute(t *testing.T) {
	f := newStatusFixture(t, 0)
	f.target.setReady(1)
	start := f.clock.Now()
	// 10 requests a second for two minutes, one counts frame a second.
	for i := range 121 {
		n := uint64(10 * i)
		f.route.set(stream.RouteCounts{Key: "shop/cart", Requests: n})
		f.status.Observe(stream.KindCounts, []stream.RouteCounts{{Key: "shop/cart", Requests: n}}, start.Add(time.Duration(i)*time.Second))
		// One frame at a time, as the dispatcher sends them: the queue is short.
		v := f.await(t, "the frame taken", func(v StatusView) bool { return len(v.Routes) == 1 && v.Routes[0].Requests == n })
		if i == 30 && v.Routes[0].RatePerSecond != 10 {
			t.Errorf("rate 30 s in = %v, want 10 per second over the half minute seen", v.Routes[0].RatePerSecond)
		}
	}
	v := f.await(t, "two minutes in", func(v StatusView) bool { return len(v.Routes) == 1 && v.Routes[0].Requests == 1200 })
	if got := v.Routes[0].RatePerSecond; got != 10 {
		t.Errorf("rate = %v, want 10 per second", got)
	}
}

func TestStatusEventsServeEveryNewViewAndCapViewers(t *testing.T) {
	f := newStatusFixture(t, 1)
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, f.url+StatusEventsPath, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("GET %s = %d %q, want 200 text/event-stream", StatusEventsPath, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	events := make(chan StatusView, 8)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				var v StatusView
				if json.Unmarshal([]byte(data), &v) == nil {
					events <- v
				}
			}
		}
	}()
	next := func() StatusView {
		t.Helper()
		select {
		case v := <-events:
			return v
		case <-time.After(5 * time.Second):
			t.Fatal("no event within 5 s")
			return StatusView{}
		}
	}
	if v := next(); len(v.Routes) != 0 {
		t.Errorf("first event = %+v, want the empty view of a page with no frame yet", v)
	}
	f.route.set(stream.RouteCounts{Key: "shop/cart", Requests: 3})
	f.status.Observe(stream.KindCounts, []stream.RouteCounts{{Key: "shop/cart", Requests: 3}}, f.clock.Now())
	if v := next(); len(v.Routes) != 1 || v.Routes[0].Requests != 3 {
		t.Errorf("second event = %+v, want the route with 3 requests", v)
	}

	second, err := http.Get(f.url + StatusEventsPath)
	if err != nil {
		t.Fatal(err)
	}
	second.Body.Close()
	if second.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("a viewer over the cap got %d, want 503", second.StatusCode)
	}

	for _, tt := range []struct{ path, contentType, contains string }{
		{StatusPath, "text/html; charset=utf-8", "this interceptor replica only"},
		{StatusJSONPath, "application/json", `"key":"shop/cart"`},
	} {
		r, err := http.Get(f.url + tt.path)
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		_, _ = bufio.NewReader(r.Body).WriteTo(&b)
		r.Body.Close()
		if r.StatusCode != http.StatusOK || r.Header.Get("Content-Type") != tt.contentType || !strings.Contains(b.String(), tt.contains) {
			t.Errorf("GET %s = %d %q %.80q, want 200 %q containing %q", tt.path, r.StatusCode, r.Header.Get("Content-Type"), b.String(), tt.contentType, tt.contains)
		}
	}
}

// mutableApps lists apps the test changes.
type mutableApps struct {
	mu   sync.Mutex
	apps []App
}

func (m *mutableApps) Apps() []App {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]App(nil), m.apps...)
}

func (m *mutableApps) set(apps ...App) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.apps = apps
}

func TestStatusListsTheRoutedObjectsOnly(t *testing.T) {
	apps := &mutableApps{}
	cart, web := &liveRoute{counts: stream.RouteCounts{Key: "shop/cart"}}, &liveRoute{counts: stream.RouteCounts{Key: "shop/web"}}
	apps.set(App{Key: "shop/cart", Target: newFakeTarget(), Counts: cart}, App{Key: "shop/web", Target: newFakeTarget(), Counts: web})
	clk := clocktesting.NewFakeClock(time.UnixMilli(1700000000000))
	s := NewStatus(StatusOptions{Apps: apps, Clock: clk, Log: logr.Discard()})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Start(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	keys := func() string {
		b, _, _ := s.current()
		var v StatusView
		_ = json.Unmarshal(b, &v)
		var k []string
		for _, r := range v.Routes {
			k = append(k, r.Key)
		}
		return strings.Join(k, ",")
	}
	wait := func(want string) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); keys() != want; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("routes = %q, want %q", keys(), want)
			}
		}
	}
	s.Observe(stream.KindCounts, []stream.RouteCounts{web.counts, cart.counts}, clk.Now())
	wait("shop/cart,shop/web")
	// An activation for an object no longer routed, then the counts frame after the table lost it.
	apps.set(App{Key: "shop/web", Target: newFakeTarget(), Counts: web})
	s.Observe(stream.KindActivate, []stream.RouteCounts{{Key: "shop/gone", Held: 1, Requests: 1}}, clk.Now())
	s.Observe(stream.KindCounts, []stream.RouteCounts{web.counts}, clk.Now())
	wait("shop/web")
}

func TestStatusDropsActivationsOfWarmRoutesOnTheDispatcher(t *testing.T) {
	f := newStatusFixture(t, 0)
	cart := []stream.RouteCounts{{Key: "shop/cart", InFlight: 1, Requests: 1}}
	if f.status.warm(cart) {
		t.Error("an activation was dropped before the producer knew the routes")
	}
	f.status.Observe(stream.KindCounts, []stream.RouteCounts{{Key: "shop/cart"}}, f.clock.Now())
	f.await(t, "the route listed", func(v StatusView) bool { return len(v.Routes) == 1 })
	for _, tt := range []struct {
		name   string
		ready  int
		routes []stream.RouteCounts
		want   bool
	}{
		{"A route without a ready endpoint may begin a cold start.", 0, cart, false},
		{"A route with a ready endpoint is warm.", 1, cart, true},
		{"A route the producer does not know yet is passed on.", 1, append(cart, stream.RouteCounts{Key: "shop/new"}), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f.target.ready.Store(int64(tt.ready))
			if got := f.status.warm(tt.routes); got != tt.want {
				t.Errorf("warm = %v, want %v", got, tt.want)
			}
		})
	}
}

package fleet

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/lobby-http/lobby/internal/stream"
)

// scriptedInterceptor answers its first stream request with frames, then ends the response;
// later requests get 503, as from an interceptor that is shutting down.
func scriptedInterceptor(t *testing.T, frames ...stream.Frame) (addr string, requests *atomic.Int32) {
	t.Helper()
	requests = &atomic.Int32{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if requests.Add(1) > 1 {
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", stream.ContentType)
		enc := stream.NewEncoder(w)
		for i := range frames {
			if err := enc.Encode(&frames[i]); err != nil {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), requests
}

func newTestFleet(t *testing.T, clk Clock) (*Fleet, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	f, err := New(Options{Clock: clk, Grace: 10 * time.Second, Registerer: reg, Log: testr.New(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return f, reg
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 5s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestABrokenStreamsCountsLastForTheGracePeriodThenDrop(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Unix(1_700_000_000, 0))
	f, _ := newTestFleet(t, clk)
	addr, requests := scriptedInterceptor(t, stream.Frame{Kind: stream.KindSnapshot, Seq: 1, Routes: []stream.RouteCounts{{Key: "shop/cart", Held: 2}}})
	f.SetTargets([]Target{{Addr: addr, Ready: true}})

	// The stream delivers its snapshot and ends; the fake clock holds the reconnect back.
	waitFor(t, "the snapshot to count", func() bool { return f.Sum("shop/cart").Held == 2 })
	waitFor(t, "the stream to be lost", func() bool { return testutil.ToFloat64(f.metrics.connected) == 0 && clk.HasWaiters() })
	w := f.Watch("shop/cart")
	defer w.Close()
	active, _, changed := w.State()
	if !active {
		t.Fatal("the object is idle right after its interceptor's stream broke, want its last counts to count")
	}

	clk.Step(9 * time.Second)
	if s := f.Sum("shop/cart"); s.Held != 2 || !s.Active {
		t.Fatalf("Sum = %+v 9s into the 10s grace period, want the last counts", s)
	}
	clk.Step(time.Second)
	select {
	case <-changed:
	case <-time.After(5 * time.Second):
		t.Fatal("watchers were not woken when the grace period ended")
	}
	if active, _, _ := w.State(); active {
		t.Fatal("the object is still active after the grace period")
	}
	if s := f.Sum("shop/cart"); s.Held != 0 || s.Interceptors != 0 {
		t.Fatalf("Sum = %+v after the grace period, want nothing", s)
	}
	waitFor(t, "a reconnect attempt", func() bool { return requests.Load() >= 2 })
}

func TestAStreamWithAGapInItsSequenceIsDroppedAndReconnected(t *testing.T) {
	f, reg := newTestFleet(t, nil)
	addr, requests := scriptedInterceptor(t,
		stream.Frame{Kind: stream.KindSnapshot, Seq: 1, Routes: []stream.RouteCounts{{Key: "shop/cart", InFlight: 1}}},
		stream.Frame{Kind: stream.KindCounts, Seq: 3, Routes: []stream.RouteCounts{{Key: "shop/cart", InFlight: 7}}},
	)
	f.SetTargets([]Target{{Addr: addr, Ready: true}})
	waitFor(t, "a reconnect", func() bool { return requests.Load() >= 2 })
	if got := f.Sum("shop/cart").InFlight; got != 1 {
		t.Fatalf("InFlight = %d, want 1 from the snapshot: the frame after the gap must not be applied", got)
	}
	if n, err := testutil.GatherAndCount(reg, "lobby_scaler_stream_reconnects_total"); err != nil || n != 1 {
		t.Fatalf("reconnect metric missing: %d, %v", n, err)
	}
}

func TestAStreamMustStartWithASnapshot(t *testing.T) {
	f, _ := newTestFleet(t, nil)
	addr, requests := scriptedInterceptor(t, stream.Frame{Kind: stream.KindCounts, Seq: 1, Routes: []stream.RouteCounts{{Key: "shop/cart", Held: 4}}})
	f.SetTargets([]Target{{Addr: addr, Ready: true}})
	waitFor(t, "a reconnect", func() bool { return requests.Load() >= 2 })
	if f.HasSnapshot() || f.Sum("shop/cart").Held != 0 {
		t.Fatal("a stream that began with a counts frame was applied")
	}
}

func TestSubscriptionsFollowTheTargets(t *testing.T) {
	// A fake clock that is never stepped keeps every subscription at its first connect.
	f, _ := newTestFleet(t, clocktesting.NewFakeClock(time.Now()))
	addrs := func() []string {
		var out []string
		for _, p := range *f.pods.Load() {
			out = append(out, p.addr)
		}
		return out
	}
	tests := []struct {
		name    string
		targets []Target
		want    string
	}{
		{"ready pods are subscribed, in address order", []Target{{Addr: "10.0.0.2:9090", Ready: true}, {Addr: "10.0.0.1:9090", Ready: true}}, "10.0.0.1:9090,10.0.0.2:9090"},
		{"a subscribed pod that turns unready is kept while listed", []Target{{Addr: "10.0.0.1:9090"}, {Addr: "10.0.0.2:9090", Ready: true}}, "10.0.0.1:9090,10.0.0.2:9090"},
		{"an unready pod that was not subscribed is not", []Target{{Addr: "10.0.0.1:9090"}, {Addr: "10.0.0.3:9090"}}, "10.0.0.1:9090"},
		{"a pod that leaves is unsubscribed", []Target{{Addr: "10.0.0.3:9090", Ready: true}}, "10.0.0.3:9090"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.SetTargets(tt.targets)
			waitFor(t, "the subscriptions "+tt.want, func() bool { return strings.Join(addrs(), ",") == tt.want })
		})
	}
}

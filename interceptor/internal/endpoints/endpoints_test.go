package endpoints

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func addrs(s ...string) []netip.AddrPort {
	out := make([]netip.AddrPort, 0, len(s))
	for _, a := range s {
		out = append(out, netip.MustParseAddrPort(a))
	}
	return out
}

func hosts(s *Snapshot) []string {
	var out []string
	for _, e := range s.Endpoints {
		out = append(out, e.Host)
	}
	return out
}

func TestPublish(t *testing.T) {
	tests := []struct {
		name      string
		publishes [][]netip.AddrPort
		proto     Protocol
		wantHosts []string
	}{
		{"A new target has no endpoint.", nil, HTTP1, nil},
		{"Endpoints are sorted by address and duplicates count once.",
			[][]netip.AddrPort{addrs("10.0.0.2:80", "10.0.0.1:80", "10.0.0.2:80")}, H2C, []string{"10.0.0.1:80", "10.0.0.2:80"}},
		{"The last publish wins.",
			[][]netip.AddrPort{addrs("10.0.0.1:80"), addrs("10.0.0.3:80")}, HTTPS, []string{"10.0.0.3:80"}},
		{"Publishing no address empties the target.",
			[][]netip.AddrPort{addrs("10.0.0.1:80"), nil}, HTTP1, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tg := NewTarget("ns", "app", 80, "")
			for _, a := range tc.publishes {
				tg.Publish(tc.proto, a)
			}
			snap := tg.Snapshot()
			if got := hosts(snap); !slices.Equal(got, tc.wantHosts) {
				t.Errorf("endpoints = %v, want %v", got, tc.wantHosts)
			}
			if len(tc.publishes) > 0 && snap.Protocol != tc.proto {
				t.Errorf("protocol = %v, want %v", snap.Protocol, tc.proto)
			}
		})
	}
}

func TestPublishKeepsTheEndpointsOfAddressesItKeeps(t *testing.T) {
	tg := NewTarget("ns", "app", 80, "")
	tg.Publish(HTTP1, addrs("10.0.0.1:80", "10.0.0.2:80"))
	kept := tg.Snapshot().Endpoints[0]
	kept.Acquire()
	kept.MarkSuspect(time.Hour)
	tg.Publish(HTTP1, addrs("10.0.0.1:80", "10.0.0.3:80"))
	if e := tg.Snapshot().Endpoints[0]; e != kept || e.InFlight() != 1 || !e.Suspect() {
		t.Fatalf("the kept address has a new endpoint (same: %v, in flight %d, suspect %v); want the same one with its count and mark", e == kept, e.InFlight(), e.Suspect())
	}
	tg.Publish(HTTP1, nil)
	tg.Publish(HTTP1, addrs("10.0.0.1:80"))
	if e := tg.Snapshot().Endpoints[0]; e == kept || e.Suspect() {
		t.Errorf("an address that left and came back kept its old endpoint; want a new one without a mark")
	}
}

func TestPublishWakesOnlyItsOwnWaiters(t *testing.T) {
	a, b := NewTarget("ns", "a", 80, ""), NewTarget("ns", "b", 80, "")
	wait := func(tg *Target) <-chan error {
		ch := make(chan error, 1)
		go func() {
			_, err := tg.Wait(t.Context())
			ch <- err
		}()
		return ch
	}
	wa, wb := wait(a), wait(b)
	a.Publish(HTTP1, addrs("10.0.0.1:80"))
	select {
	case err := <-wa:
		if err != nil {
			t.Fatalf("waiter of a: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the waiter of a was not woken when a gained an endpoint")
	}
	select {
	case err := <-wb:
		t.Fatalf("the waiter of b returned (%v) although b has no endpoint", err)
	case <-time.After(20 * time.Millisecond):
	}
}

func TestWaitHonoursContext(t *testing.T) {
	tg := NewTarget("ns", "app", 80, "")
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if _, err := tg.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait = %v, want the context's error", err)
	}
}

func TestClaim(t *testing.T) {
	t.Run("An endpoint without a mark or with a running one cannot be claimed.", func(t *testing.T) {
		e := &Endpoint{}
		if e.Claim(time.Hour) {
			t.Error("claimed an endpoint without a mark")
		}
		e.MarkSuspect(time.Hour)
		if e.Claim(time.Hour) {
			t.Error("claimed an endpoint whose mark still runs")
		}
	})
	t.Run("Of many callers, exactly one claims a mark that ran out.", func(t *testing.T) {
		e := &Endpoint{}
		e.MarkSuspect(-time.Second)
		var wins atomic.Int32
		var wg sync.WaitGroup
		for range 50 {
			wg.Go(func() {
				if e.Claim(time.Hour) {
					wins.Add(1)
				}
			})
		}
		wg.Wait()
		if n := wins.Load(); n != 1 {
			t.Errorf("%d callers claimed the endpoint, want 1", n)
		}
	})
}

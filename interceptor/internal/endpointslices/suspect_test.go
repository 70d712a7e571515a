package endpointslices

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/lobby-http/lobby/interceptor/internal/endpoints"
)

// readyTarget returns a Store and the target of Service app's port 80 with the given ready pods.
func readyTarget(t *testing.T, addrs ...string) (*Store, *endpoints.Target) {
	t.Helper()
	s := NewStore(logr.Discard())
	tg := s.Target("ns", "app", 80, "")
	s.UpdateService(newService("ns", "app", svcPort("", 80, "")))
	setReady(s, addrs...)
	return s, tg
}

// setReady publishes the one slice of Service app with the given ready pods.
func setReady(s *Store, addrs ...string) {
	var eps []ep
	for _, a := range addrs {
		eps = append(eps, ep{addr: a})
	}
	s.UpdateSlice(newSlice("ns", "app", "app-1", map[string]int32{"": 8080}, eps...))
}

// waitAsync calls tg.Wait in the background and returns where its result arrives.
func waitAsync(ctx context.Context, tg *endpoints.Target) <-chan waitResult {
	ch := make(chan waitResult, 1)
	go func() {
		s, err := tg.Wait(ctx)
		ch <- waitResult{s, err}
	}()
	return ch
}

type waitResult struct {
	snap *endpoints.Snapshot
	err  error
}

// stillWaiting fails t when the waiter has returned, after giving it a moment to do so wrongly.
func stillWaiting(t *testing.T, ch <-chan waitResult) {
	t.Helper()
	select {
	case r := <-ch:
		t.Fatalf("Wait returned (%v, %v) while every endpoint is suspect", r.snap, r.err)
	case <-time.After(20 * time.Millisecond):
	}
}

func TestWaitPassesSuspectEndpointsOver(t *testing.T) {
	tests := []struct {
		name string
		// change makes an endpoint pickable again, or does nothing; tg's only endpoint is suspect.
		change    func(s *Store, tg *endpoints.Target, e *endpoints.Endpoint)
		wantHosts []string
		// wantSuspect is whether the original endpoint is still suspect afterwards.
		wantSuspect bool
	}{
		{
			name:        "An answer from the suspect endpoint ends its mark and wakes the waiters.",
			change:      func(_ *Store, tg *endpoints.Target, e *endpoints.Endpoint) { tg.Responded(e) },
			wantHosts:   []string{"10.0.0.1:8080"},
			wantSuspect: false,
		},
		{
			name:        "A new ready endpoint wakes the waiters while the old one stays suspect.",
			change:      func(s *Store, _ *endpoints.Target, _ *endpoints.Endpoint) { setReady(s, "10.0.0.1", "10.0.0.2") },
			wantHosts:   []string{"10.0.0.1:8080", "10.0.0.2:8080"},
			wantSuspect: true,
		},
		{
			name: "An endpoint that leaves the slice and comes back is no longer suspect.",
			change: func(s *Store, _ *endpoints.Target, _ *endpoints.Endpoint) {
				setReady(s)
				setReady(s, "10.0.0.1")
			},
			wantHosts:   []string{"10.0.0.1:8080"},
			wantSuspect: true, // The old endpoints.Endpoint keeps its mark; the snapshot has a new one.
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, tg := readyTarget(t, "10.0.0.1")
			e := tg.Snapshot().Endpoints[0]
			e.MarkSuspect(time.Hour)
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			var waiters []<-chan waitResult
			for range 5 {
				waiters = append(waiters, waitAsync(ctx, tg))
			}
			stillWaiting(t, waiters[0])

			tc.change(s, tg, e)
			for _, ch := range waiters {
				r := <-ch
				if r.err != nil {
					t.Fatalf("Wait = %v, want a snapshot", r.err)
				}
				if got := hosts(r.snap); !slices.Equal(got, tc.wantHosts) {
					t.Errorf("Wait returned %v, want %v", got, tc.wantHosts)
				}
				for _, got := range r.snap.Endpoints {
					if got != e && got.Suspect() {
						t.Errorf("new endpoint %s is suspect", got.Host)
					}
				}
			}
			if e.Suspect() != tc.wantSuspect {
				t.Errorf("old endpoint suspect = %v, want %v", e.Suspect(), tc.wantSuspect)
			}
		})
	}
}

func TestSuspectMarkSurvivesUpdatesThatKeepTheEndpoint(t *testing.T) {
	s, tg := readyTarget(t, "10.0.0.1")
	e := tg.Snapshot().Endpoints[0]
	e.MarkSuspect(time.Hour)
	setReady(s, "10.0.0.1")
	s.UpdateService(newService("ns", "app", svcPort("", 80, "")))
	snap := tg.Snapshot()
	if len(snap.Endpoints) != 1 || snap.Endpoints[0] != e || !e.Suspect() {
		t.Fatalf("after updates that keep the pod ready, endpoints = %v and suspect = %v; want the same, still suspect", hosts(snap), e.Suspect())
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if _, err := tg.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait = %v, want it to wait until the context ends", err)
	}
}

func TestWaitReturnsWhenTheSuspectMarkRunsOut(t *testing.T) {
	_, tg := readyTarget(t, "10.0.0.1")
	e := tg.Snapshot().Endpoints[0]
	e.MarkSuspect(50 * time.Millisecond)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	snap, err := tg.Wait(ctx)
	if err != nil || len(snap.Endpoints) != 1 {
		t.Fatalf("Wait = %v, %v; want the snapshot once the mark ran out", snap, err)
	}
	if !e.Suspect() {
		t.Errorf("the mark ended by itself; it should stay until claimed or answered")
	}
	if !e.Claim(time.Hour) {
		t.Fatal("Claim of a mark that ran out failed")
	}
	// The claim renewed the mark: the endpoint is passed over again while its claimer tries it.
	ctx, cancel = context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if _, err := tg.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait after the claim = %v, want it to wait", err)
	}
}

package admin

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/lobby-http/lobby/internal/stream"
)

func TestCollector(t *testing.T) {
	tests := []struct {
		name   string
		routes []stream.RouteCounts
		want   string
	}{
		{name: "No routes expose no series.", want: ""},
		{
			name: "Every route exposes its three gauges.",
			routes: []stream.RouteCounts{
				{Key: "apps/web", InFlight: 2, Held: 5, Open: 1, Requests: 9, Rate: 1.5},
				{Key: "default/idle"},
			},
			want: `
# HELP lobby_interceptor_held_requests Requests waiting for the route's target to have a ready endpoint.
# TYPE lobby_interceptor_held_requests gauge
lobby_interceptor_held_requests{route="apps/web"} 5
lobby_interceptor_held_requests{route="default/idle"} 0
# HELP lobby_interceptor_in_flight_requests Requests forwarded to the route's target and not yet answered.
# TYPE lobby_interceptor_in_flight_requests gauge
lobby_interceptor_in_flight_requests{route="apps/web"} 2
lobby_interceptor_in_flight_requests{route="default/idle"} 0
# HELP lobby_interceptor_open_connections Upgraded connections (such as WebSockets) open to the route's target.
# TYPE lobby_interceptor_open_connections gauge
lobby_interceptor_open_connections{route="apps/web"} 1
lobby_interceptor_open_connections{route="default/idle"} 0
`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := &fakeSource{}
			src.set(tt.routes...)
			c := NewCollector(src, clocktesting.NewFakePassiveClock(time.Unix(0, 0)))
			if err := testutil.CollectAndCompare(c, strings.NewReader(tt.want)); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestActivationsCounter(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	a, err := NewActivations(reg)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		a.Notify(fakeRoute{stream.RouteCounts{Key: "apps/web"}})
	}
	want := `
# HELP lobby_interceptor_activations_total Idle-to-busy transitions of routes, each pushed to stream subscribers as an activation.
# TYPE lobby_interceptor_activations_total counter
lobby_interceptor_activations_total 3
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "lobby_interceptor_activations_total"); err != nil {
		t.Error(err)
	}
}

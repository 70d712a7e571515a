package admin

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/lobby-http/lobby/internal/stream"
)

// newTestServer returns an admin Server over src with the given checks, served by httptest, and
// its Stream (whose dispatcher is not running).
func newTestServer(t *testing.T, src Source, checks ...Check) (*Server, *httptest.Server) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	acts, err := NewActivations(reg)
	if err != nil {
		t.Fatal(err)
	}
	clk := clocktesting.NewFakeClock(time.Unix(1700000000, 0))
	st, err := NewStream(StreamOptions{Source: src, Activations: acts, Interval: time.Second, Clock: clk, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	s := New(Options{Source: src, Stream: st, Gatherer: reg, Checks: checks, Clock: clk})
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return s, ts
}

func get(t *testing.T, url string) (int, string, http.Header) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b), resp.Header
}

func TestReadyz(t *testing.T) {
	tests := []struct {
		name     string
		routes   bool // whether the routes informer has synced
		slices   bool // whether the endpoints informer has synced
		drain    bool
		wantCode int
		wantBody string
	}{
		{name: "Before the informers sync it is not ready and says which.", routes: false, slices: false, wantCode: 503, wantBody: "routes not synced\nendpoints not synced\n"},
		{name: "With one informer synced it names the other.", routes: true, slices: false, wantCode: 503, wantBody: "endpoints not synced\n"},
		{name: "With every informer synced it is ready.", routes: true, slices: true, wantCode: 200, wantBody: "ok\n"},
		{name: "While draining it is not ready even when synced.", routes: true, slices: true, drain: true, wantCode: 503, wantBody: "draining\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, ts := newTestServer(t, &fakeSource{},
				Synced("routes", func() bool { return tt.routes }),
				Synced("endpoints", func() bool { return tt.slices }))
			if tt.drain {
				s.Drain()
			}
			code, body, _ := get(t, ts.URL+"/readyz")
			if code != tt.wantCode || body != tt.wantBody {
				t.Errorf("GET /readyz = %d %q, want %d %q", code, body, tt.wantCode, tt.wantBody)
			}
			if code, _, _ := get(t, ts.URL+"/livez"); code != http.StatusOK {
				t.Errorf("GET /livez = %d, want 200 whatever the readiness", code)
			}
		})
	}
}

func TestReadyzTransitions(t *testing.T) {
	var synced bool
	s, ts := newTestServer(t, &fakeSource{}, func() error {
		if !synced {
			return errors.New("routes not synced")
		}
		return nil
	})
	want := []int{503, 200, 503}
	var got []int
	for step := range 3 {
		switch step {
		case 1:
			synced = true
		case 2:
			s.Drain()
		}
		code, _, _ := get(t, ts.URL+"/readyz")
		got = append(got, code)
	}
	if !slices.Equal(got, want) {
		t.Errorf("/readyz through unsynced, synced, draining = %v, want %v", got, want)
	}
}

func TestQueue(t *testing.T) {
	tests := []struct {
		name   string
		routes []stream.RouteCounts
		want   string
	}{
		{name: "No routes give an empty object.", want: `{}`},
		{
			name: "Routes are keyed by namespace and name.",
			routes: []stream.RouteCounts{
				{Key: "apps/web", InFlight: 2, Held: 1, Open: 3, Requests: 40, Rate: 0.5},
				{Key: "default/idle"},
			},
			want: `{"apps/web":{"inFlight":2,"held":1,"open":3,"requests":40,"rate":0.5},` +
				`"default/idle":{"inFlight":0,"held":0,"open":0,"requests":0,"rate":0}}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := &fakeSource{}
			src.set(tt.routes...)
			_, ts := newTestServer(t, src)
			code, body, h := get(t, ts.URL+"/queue")
			if code != http.StatusOK || h.Get("Content-Type") != "application/json" {
				t.Fatalf("GET /queue = %d %q, want 200 application/json", code, h.Get("Content-Type"))
			}
			if !json.Valid([]byte(body)) || strings.TrimSpace(body) != tt.want {
				t.Errorf("GET /queue body = %s, want %s", body, tt.want)
			}
		})
	}
}

func TestMetricsEndpoint(t *testing.T) {
	_, ts := newTestServer(t, &fakeSource{})
	code, body, _ := get(t, ts.URL+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics = %d, want 200", code)
	}
	for _, name := range []string{"lobby_interceptor_activations_total", "lobby_interceptor_stream_subscribers"} {
		if !strings.Contains(body, name) {
			t.Errorf("GET /metrics lacks %s", name)
		}
	}
}

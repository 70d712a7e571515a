package proxy_test

import (
	"net/http"
	"slices"
	"testing"

	"github.com/go-logr/logr/testr"

	"github.com/lobby-http/lobby/interceptor/internal/proxy"
)

func TestAddOnColdStartHeader(t *testing.T) {
	tests := []struct {
		name      string
		stage     func(proxy.ForwardHandler) proxy.ForwardHandler
		wantCold  []string
		wantWarm  []string
		wantLobby bool
	}{
		{"with the stage, a held request gets true and a warm one false, as from the add-on",
			proxy.AddOnColdStart, []string{"true"}, []string{"false"}, true},
		{"without the stage, neither gets the header", nil, nil, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnvChain(t, testr.New(t), proxy.ForwarderOptions{}, tt.stage)
			e.backend("10.0.0.1", hello("app"))
			route := e.route("app.test", "app", nil)

			res := e.fetchAsync(t.Context(), "app.test")
			eventually(t, "the request is held", func() bool { h, _, _ := countsOf(route); return h == 1 })
			e.ready("app", "10.0.0.1")
			cold := <-res
			if cold.err != nil || cold.code != http.StatusOK {
				t.Fatalf("held response = %d (%v), want 200", cold.code, cold.err)
			}
			if got := cold.header.Values(proxy.AddOnColdStartHeader); !slices.Equal(got, tt.wantCold) {
				t.Errorf("held response %s = %q, want %q", proxy.AddOnColdStartHeader, got, tt.wantCold)
			}
			if (cold.header.Get(proxy.ColdStartHeader) != "") != tt.wantLobby {
				t.Errorf("held response %s = %q, want lobby's own header as before", proxy.ColdStartHeader, cold.header.Get(proxy.ColdStartHeader))
			}

			warm := e.fetch(t.Context(), "app.test")
			if warm.err != nil || warm.code != http.StatusOK {
				t.Fatalf("warm response = %d (%v), want 200", warm.code, warm.err)
			}
			if got := warm.header.Values(proxy.AddOnColdStartHeader); !slices.Equal(got, tt.wantWarm) {
				t.Errorf("warm response %s = %q, want %q", proxy.AddOnColdStartHeader, got, tt.wantWarm)
			}
		})
	}
}

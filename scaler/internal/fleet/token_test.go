package fleet

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"
	clocktesting "k8s.io/utils/clock/testing"
)

func TestSubscribePresentsTheTokenFileReadAgainOnEveryConnection(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Get("Authorization"))
		mu.Unlock()
		http.Error(w, "token rejected: send a valid ServiceAccount token", http.StatusUnauthorized)
	}))
	t.Cleanup(srv.Close)
	file := filepath.Join(t.TempDir(), "token")
	f, err := New(Options{TokenFile: file, Clock: clocktesting.NewFakeClock(time.Unix(1_700_000_000, 0)),
		Registerer: prometheus.NewRegistry(), Log: testr.New(t)})
	if err != nil {
		t.Fatal(err)
	}
	p := &pod{addr: strings.TrimPrefix(srv.URL, "http://")}

	if _, err := f.subscribe(t.Context(), p); err == nil || !strings.Contains(err.Error(), "read the interceptor token") {
		t.Errorf("subscribe without a token file = %v, want an error naming the token", err)
	}
	for _, token := range []string{"first", "rotated"} {
		if err := os.WriteFile(file, []byte(token+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := f.subscribe(t.Context(), p)
		if err == nil || !strings.Contains(err.Error(), "401 Unauthorized: token rejected: send a valid ServiceAccount token") {
			t.Errorf("subscribe refused = %v, want the status and the interceptor's reason", err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"Bearer first", "Bearer rotated"}; strings.Join(seen, ",") != strings.Join(want, ",") {
		t.Errorf("Authorization headers = %q, want %q", seen, want)
	}
}

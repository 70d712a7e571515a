//go:build e2e

package system

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/lobby-http/lobby/e2e/browser"
	"github.com/lobby-http/lobby/e2e/framework/poll"
	"github.com/lobby-http/lobby/operator/api/v1alpha1"
)

// ScreenshotsEnv names the folder TestStatusPage writes the documentation's screenshots of the
// status page to (`make screenshots` sets it to docs/images); unset, they go to a temporary folder.
const ScreenshotsEnv = "LOBBY_SCREENSHOTS"

// statusView is the part of an interceptor's /status.json the test reads.
type statusView struct {
	Interceptor string `json:"interceptor"`
	Routes      []struct {
		Key       string  `json:"key"`
		State     string  `json:"state"`
		Ready     int     `json:"readyEndpoints"`
		Held      int64   `json:"held"`
		InFlight  int64   `json:"inFlight"`
		Requests  uint64  `json:"requests"`
		Rate      float64 `json:"ratePerSecond"`
		ColdStart *struct {
			Steps []struct {
				Name  string  `json:"name"`
				Since float64 `json:"sinceArrivedMillis"`
			} `json:"steps"`
		} `json:"coldStart"`
	} `json:"routes"`
}

// TestStatusPage opens one interceptor's status page in Chromium, wakes an app from zero through
// that interceptor, and watches the app's row go cold → waking → warm on the same page, without a
// reload, its cold-start timeline fill in, and the figures of the page's JSON agree with /queue,
// the interceptor's Prometheus metrics and the app's EndpointSlice.
func TestStatusPage(t *testing.T) {
	ns := testNamespace(t)
	ctx := t.Context()
	host := "status." + ns + ".example.com"
	a := deployApp(t, ns, appSpec{name: "status", env: map[string]string{"STARTUP_DELAY": "2s"},
		hso: v1alpha1.HTTPScaledObjectSpec{Hosts: []string{host}}})
	in := suite.lobby.Instances("interceptor")[0]
	admin := in.URL("admin")
	shots := os.Getenv(ScreenshotsEnv)
	if shots == "" {
		shots = t.TempDir()
	}

	b, err := browser.Start(ctx, browser.Options{Width: 1200, Height: 420})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.Open(ctx, admin+"/status"); err != nil {
		t.Fatal(err)
	}
	// A reload would drop this mark: the page must change by itself.
	if _, err := browser.Eval[bool](ctx, b, "window.lobbyTestMark = true"); err != nil {
		t.Fatal(err)
	}
	row := func(state string) string {
		return fmt.Sprintf(`(function(){var r=document.getElementById(%q);return r!==null&&r.dataset.state===%q;})()`, "route-"+a.key(), state)
	}
	if err := b.WaitEval(ctx, 10*time.Second, row("cold")); err != nil {
		t.Fatalf("the app's row never showed cold: %v", err)
	}
	if _, err := b.WaitText(ctx, 5*time.Second, "live"); err != nil {
		t.Fatalf("the page's event stream never connected: %v", err)
	}

	answered := make(chan response, 1)
	go func() { answered <- send(ctx, http.MethodGet, in.URL("http")+"/", host, nil) }()
	if err := b.WaitEval(ctx, 30*time.Second, row("waking")); err != nil {
		t.Fatalf("the app's row never showed waking: %v", err)
	}
	// While the request is held, every view of it agrees.
	if err := poll.Until(ctx, 10*time.Second, "the held request on the page, /queue and the metrics", func() error {
		return agree(ctx, admin, a.key(), 0, 1, 1)
	}); err != nil {
		t.Fatal(err)
	}
	if err := b.Screenshot(ctx, filepath.Join(shots, "status-page-waking.png")); err != nil {
		t.Error(err)
	}
	if err := b.WaitEval(ctx, 90*time.Second, row("warm")); err != nil {
		t.Fatalf("the app's row never showed warm: %v", err)
	}
	r := <-answered
	if r.err != nil || r.code != http.StatusOK {
		t.Fatalf("the request held through the cold start got %d %v, want 200", r.code, r.err)
	}
	if _, err := b.WaitText(ctx, 10*time.Second, "first answer"); err != nil {
		t.Errorf("the cold start's timeline never showed the first answer: %v", err)
	}
	if marked, err := browser.Eval[bool](ctx, b, "window.lobbyTestMark === true"); err != nil || !marked {
		t.Errorf("the page was reloaded (mark %v, %v); it must update itself", marked, err)
	}

	// Warm traffic, every request answered, then every view agrees on the totals.
	const warm = 20
	for i := range warm {
		if r := send(ctx, http.MethodGet, in.URL("http")+"/", host, nil); r.err != nil || r.code != http.StatusOK {
			t.Fatalf("warm request %d got %d %v, want 200", i, r.code, r.err)
		}
	}
	if err := poll.Until(ctx, 10*time.Second, "the totals on the page, /queue and the metrics", func() error {
		return agree(ctx, admin, a.key(), 0, 0, 1+warm)
	}); err != nil {
		t.Fatal(err)
	}
	v, err := statusPage(admin)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range v.Routes {
		if r.Key != a.key() {
			continue
		}
		if r.ColdStart == nil || len(r.ColdStart.Steps) != 4 {
			t.Fatalf("cold start of %s = %+v, want four steps", a.key(), r.ColdStart)
		}
		for i, s := range r.ColdStart.Steps {
			if i > 0 && s.Since < r.ColdStart.Steps[i-1].Since {
				t.Errorf("step %q at %v ms comes before the step before it", s.Name, s.Since)
			}
		}
		t.Logf("cold start on %s: %+v", v.Interceptor, r.ColdStart.Steps)
	}
	if _, err := b.WaitText(ctx, 10*time.Second, strconv.Itoa(1+warm)); err != nil {
		t.Errorf("the page never showed %d requests: %v", 1+warm, err)
	}
	if err := b.Screenshot(ctx, filepath.Join(shots, "status-page-warm.png")); err != nil {
		t.Error(err)
	}
}

// statusPage reads an interceptor's /status.json.
func statusPage(adminURL string) (statusView, error) {
	var v statusView
	resp, err := http.Get(adminURL + "/status.json")
	if err != nil {
		return v, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return v, fmt.Errorf("GET %s/status.json: %s", adminURL, resp.Status)
	}
	return v, json.NewDecoder(resp.Body).Decode(&v)
}

// agree returns nil when the interceptor's status page (JSON), its /queue and its metrics all
// show the route key with the given in-flight, held and total requests (the metrics count the
// requests answered, which equals those received once none is held or in flight), and the page's
// ready endpoints equal those of the app's EndpointSlices.
func agree(ctx context.Context, adminURL, key string, inFlight, held int64, requests uint64) error {
	v, err := statusPage(adminURL)
	if err != nil {
		return err
	}
	q, err := queue(adminURL)
	if err != nil {
		return err
	}
	qc, ok := q[key]
	if !ok {
		return fmt.Errorf("/queue has no %s", key)
	}
	for _, r := range v.Routes {
		if r.Key != key {
			continue
		}
		if r.InFlight != inFlight || r.Held != held || r.Requests != requests {
			return fmt.Errorf("status page: %d in flight, %d held, %d requests; want %d, %d, %d", r.InFlight, r.Held, r.Requests, inFlight, held, requests)
		}
		if qc.InFlight != r.InFlight || qc.Held != r.Held || qc.Requests != r.Requests {
			return fmt.Errorf("/queue %+v disagrees with the status page %+v", qc, r)
		}
		for metric, want := range map[string]int64{"lobby_interceptor_in_flight_requests": inFlight, "lobby_interceptor_held_requests": held} {
			got, err := scrapeSample(adminURL+"/metrics", metric, map[string]string{"route": key})
			if err != nil {
				return err
			}
			if int64(got) != want {
				return fmt.Errorf("%s = %v, want %d as on the status page", metric, got, want)
			}
		}
		if held == 0 && inFlight == 0 {
			answered, err := scrapeSample(adminURL+"/metrics", "lobby_interceptor_requests_total", map[string]string{"route": key})
			if err != nil {
				return err
			}
			if uint64(answered) != r.Requests {
				return fmt.Errorf("lobby_interceptor_requests_total of %s = %v, the status page counts %d", key, answered, r.Requests)
			}
		}
		ready, err := readyEndpoints(ctx, key)
		if err != nil {
			return err
		}
		if ready != r.Ready {
			return fmt.Errorf("the EndpointSlices of %s have %d ready endpoints, the status page %d", key, ready, r.Ready)
		}
		return nil
	}
	return fmt.Errorf("the status page has no %s", key)
}

// readyEndpoints counts the ready endpoints of the EndpointSlices of Service namespace/name.
func readyEndpoints(ctx context.Context, key string) (int, error) {
	ns, name, _ := strings.Cut(key, "/")
	var slices discoveryv1.EndpointSliceList
	if err := suite.cluster.Client.List(ctx, &slices, client.InNamespace(ns), client.MatchingLabels{discoveryv1.LabelServiceName: name}); err != nil {
		return 0, err
	}
	n := 0
	for _, s := range slices.Items {
		for _, ep := range s.Endpoints {
			if ptr.Deref(ep.Conditions.Ready, true) && !ptr.Deref(ep.Conditions.Terminating, false) {
				n++
			}
		}
	}
	return n, nil
}

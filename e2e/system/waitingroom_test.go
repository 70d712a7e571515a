//go:build e2e

package system

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/lobby-http/lobby/e2e/browser"
	"github.com/lobby-http/lobby/e2e/framework/poll"
	"github.com/lobby-http/lobby/operator/api/v1alpha1"
)

// browserAccept is the Accept header a browser sends when it navigates to a page.
const browserAccept = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"

// TestWaitingRoomShowsBrowsersAPageWhileAPIClientsAreHeld follows an app at zero in cold-start
// mode Auto, through the ingress: a browser's GET gets the waiting page at once while an API
// client's POST, sent before it, is held and answered by the app once it is up; the status
// endpoint the page polls turns ready; and the browser's next GET gets the app.
func TestWaitingRoomShowsBrowsersAPageWhileAPIClientsAreHeld(t *testing.T) {
	ns := testNamespace(t)
	const host = "waiting.example.com"
	deployApp(t, ns, appSpec{
		name: "waiting",
		// Slow enough that the page is surely served while the app is still starting.
		env: map[string]string{"STARTUP_DELAY": "2s"},
		hso: v1alpha1.HTTPScaledObjectSpec{
			Hosts:     []string{host},
			ColdStart: &v1alpha1.ColdStartSpec{Mode: v1alpha1.ColdStartModeAuto},
		},
	})
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()

	posted := make(chan response, 1)
	go func() {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, suite.ingress.URL+"/orders", strings.NewReader(`{"item":1}`))
		if err != nil {
			posted <- response{err: err}
			return
		}
		req.Host = host
		req.Header.Set("Accept", "application/json")
		req.Header.Set("Content-Type", "application/json")
		resp, err := httpClient.Do(req)
		if err != nil {
			posted <- response{err: err, at: time.Now()}
			return
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		posted <- response{code: resp.StatusCode, body: string(body), header: resp.Header, err: err, at: time.Now()}
	}()
	// The POST reaches the interceptor first and is held there.
	if err := poll.Until(ctx, 10*time.Second, "the API POST to be held", func() error { return heldIs(ns+"/waiting", 1) }); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	page := send(ctx, http.MethodGet, suite.ingress.URL+"/", host, http.Header{"Accept": {browserAccept}})
	if page.err != nil {
		t.Fatal(page.err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("the waiting page took %s: it must come at once, not after a hold", took)
	}
	if page.code != http.StatusServiceUnavailable || page.header.Get("Cache-Control") != "no-store" ||
		page.header.Get("Retry-After") == "" || page.header.Get("Refresh") == "" || !strings.Contains(page.body, "waiting is starting") {
		t.Fatalf("a browser at zero got %d %v:\n%s\nwant the waiting page (503, no-store, Retry-After, Refresh)", page.code, page.header, page.body)
	}
	select {
	case r := <-posted:
		t.Fatalf("the API POST was answered (%d %q %v) before the app was up: it must be held", r.code, r.body, r.err)
	default:
	}

	status := func() (bool, error) {
		r := send(ctx, http.MethodGet, suite.ingress.URL+"/.lobby/status?path=/", host, nil)
		if r.err != nil {
			return false, r.err
		}
		if r.code != http.StatusOK || r.header.Get("Cache-Control") != "no-store" {
			return false, fmt.Errorf("status endpoint: %d %v %q", r.code, r.header, r.body)
		}
		var st struct {
			Ready bool `json:"ready"`
		}
		if err := json.Unmarshal([]byte(r.body), &st); err != nil {
			return false, fmt.Errorf("status endpoint: %w in %q", err, r.body)
		}
		return st.Ready, nil
	}
	if ready, err := status(); err != nil || ready {
		t.Errorf("status right after the page = ready %v (%v), want not ready", ready, err)
	}
	if err := poll.Until(ctx, 60*time.Second, "the status endpoint to say ready", func() error {
		ready, err := status()
		if err == nil && !ready {
			err = fmt.Errorf("not ready yet")
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}

	r := <-posted
	if r.err != nil || r.code != http.StatusOK || r.header.Get("X-Lobby-Cold-Start") == "" {
		t.Errorf("the held API POST got %d %q %v, want the app's 200 after a hold", r.code, r.body, r.err)
	}
	var e echoed
	if err := json.Unmarshal([]byte(r.body), &e); err != nil || e.Path != "/orders" {
		t.Errorf("the app saw path %q (%v), want /orders", e.Path, err)
	}
	app := send(ctx, http.MethodGet, suite.ingress.URL+"/", host, http.Header{"Accept": {browserAccept}})
	if app.err != nil || app.code != http.StatusOK || strings.Contains(app.body, "is starting") {
		t.Errorf("a browser once the app is up got %d %q %v, want the app", app.code, app.body, app.err)
	}
}

// heldIs reports, as an error, whether the interceptors hold n requests of key in all.
func heldIs(key string, n int64) error {
	var held int64
	for _, in := range suite.lobby.Instances("interceptor") {
		q, err := queue(in.URL("admin"))
		if err != nil {
			return err
		}
		held += q[key].Held
	}
	if held != n {
		return fmt.Errorf("%d held, want %d", held, n)
	}
	return nil
}

// TestWaitingPageFollowsItsConfigMap serves the waiting page of an app that stays asleep from a
// ConfigMap, which the object's WaitingPage condition reports loaded: the page changes when the
// ConfigMap does, and when the ConfigMap goes, lobby's built-in page is served.
func TestWaitingPageFollowsItsConfigMap(t *testing.T) {
	ns := testNamespace(t)
	ctx := t.Context()
	c := suite.cluster.Client
	const host = "paged.example.com"
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "pages", Labels: map[string]string{"http.keda.sh/response-body": "true"}},
		Data:       map[string]string{"index.html": "<p>first page</p>"},
	}
	if err := c.Create(ctx, cm); err != nil {
		t.Fatal(err)
	}
	deployApp(t, ns, appSpec{
		name: "paged",
		// The app never gets ready within the test: every request finds it asleep.
		env: map[string]string{"STARTUP_DELAY": "10m"},
		hso: v1alpha1.HTTPScaledObjectSpec{
			Hosts: []string{host},
			ColdStart: &v1alpha1.ColdStartSpec{Mode: v1alpha1.ColdStartModePlaceholder,
				WaitingPage: &v1alpha1.WaitingPageSpec{BodyFromConfigMap: &v1alpha1.ConfigMapKeyRef{Name: "pages"}}},
		},
	})
	pageIs := func(want string) func() error {
		return func() error {
			r := send(ctx, http.MethodGet, suite.ingress.URL+"/", host, nil)
			if r.err != nil {
				return r.err
			}
			if r.code != http.StatusServiceUnavailable || r.header.Get("Cache-Control") != "no-store" || !strings.Contains(r.body, want) {
				return fmt.Errorf("got %d %v %q, want the waiting page with %q", r.code, r.header, r.body, want)
			}
			return nil
		}
	}
	conditionIs := func(status metav1.ConditionStatus) func() error {
		return func() error {
			var hso v1alpha1.HTTPScaledObject
			if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "paged"}, &hso); err != nil {
				return err
			}
			got := meta.FindStatusCondition(hso.Status.Conditions, "WaitingPage")
			if got == nil || got.Status != status {
				return fmt.Errorf("WaitingPage condition %+v, want status %s", got, status)
			}
			return nil
		}
	}
	if err := poll.Until(ctx, 30*time.Second, "the page from the ConfigMap", pageIs("first page")); err != nil {
		t.Fatal(err)
	}
	if err := poll.Until(ctx, 30*time.Second, "the WaitingPage condition to be True", conditionIs(metav1.ConditionTrue)); err != nil {
		t.Fatal(err)
	}

	cm.Data["index.html"] = "<p>second page</p>"
	if err := c.Update(ctx, cm); err != nil {
		t.Fatal(err)
	}
	if err := poll.Until(ctx, 30*time.Second, "the page to follow the ConfigMap", pageIs("second page")); err != nil {
		t.Fatal(err)
	}

	if err := c.Delete(ctx, cm); err != nil {
		t.Fatal(err)
	}
	// The interceptors watch the ConfigMap and switch at once; the operator, which reads it
	// rather than watch every ConfigMap, reports it at its next check.
	if err := poll.Until(ctx, 30*time.Second, "the built-in page once the ConfigMap is gone", pageIs("paged is starting")); err != nil {
		t.Fatal(err)
	}
}

// TestWaitingPageInABrowser opens an app at zero (cold-start mode Auto) in headless Chromium
// through the ingress, as a person would: the browser shows lobby's waiting page at once, and
// then, with no action of its own, the app's real page once the app is ready — the page's script
// (or its Refresh header) reloads it. make screenshots keeps a screenshot of the waiting page.
func TestWaitingPageInABrowser(t *testing.T) {
	ns := testNamespace(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	host := "shop." + ns + ".example.com"
	deployApp(t, ns, appSpec{
		name: "shop",
		// Slow enough that the browser surely sees the page before the app is up.
		env: map[string]string{"STARTUP_DELAY": "3s"},
		hso: v1alpha1.HTTPScaledObjectSpec{
			Hosts:     []string{host},
			ColdStart: &v1alpha1.ColdStartSpec{Mode: v1alpha1.ColdStartModeAuto},
		},
	})
	shots := os.Getenv(ScreenshotsEnv)
	if shots == "" {
		shots = t.TempDir()
	}
	ingress, err := url.Parse(suite.ingress.URL)
	if err != nil {
		t.Fatal(err)
	}
	b, err := browser.Start(ctx, browser.Options{Width: 1000, Height: 560, Hosts: map[string]string{host: ingress.Hostname()}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	page := "http://" + net.JoinHostPort(host, ingress.Port()) + "/"
	if err := b.Open(ctx, page); err != nil {
		t.Fatal(err)
	}
	text, err := b.Text(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text, "shop is starting") {
		t.Fatalf("a browser opening an app at zero saw:\n%s\nwant lobby's waiting page", text)
	}
	if err := b.Screenshot(ctx, filepath.Join(shots, "waiting-page.png")); err != nil {
		t.Error(err)
	}
	// No action from here on: the page must land on the app by itself.
	text, err = b.WaitText(ctx, 90*time.Second, `"podName"`)
	if err != nil {
		t.Fatalf("the browser never left the waiting page for the app: %v", err)
	}
	// Chromium shows a JSON answer as text, with its own controls above it in recent versions.
	var e echoed
	if err := json.Unmarshal([]byte(text[strings.Index(text, "{"):]), &e); err != nil || e.Path != "/" {
		t.Errorf("the browser landed on %q (%v), want the app's answer for /", text, err)
	}
	got, err := b.URL(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if u, err := url.Parse(got); err != nil || u.Hostname() != host || u.Path != "/" {
		t.Errorf("the browser is at %q, want %s: the page must reload itself, not go elsewhere", got, page)
	}
}

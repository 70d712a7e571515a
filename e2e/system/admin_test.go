//go:build e2e

package system

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lobby-http/lobby/e2e/deploy"
	"github.com/lobby-http/lobby/e2e/framework"
	"github.com/lobby-http/lobby/e2e/framework/poll"
	"github.com/lobby-http/lobby/internal/stream"
)

// TestAdminAPIAnswersOnlyTheScalersIdentity checks the interceptors' admin API against the real
// API server: /queue and the push stream refuse a client without a token (401), a token of the
// right ServiceAccount issued for the API server (401), and a valid token of another
// ServiceAccount (403); they serve the release's scaler identity, which the scalers themselves use
// (every interceptor counts them as stream subscribers). /metrics and the probes stay open.
func TestAdminAPIAnswersOnlyTheScalersIdentity(t *testing.T) {
	ns := testNamespace(t)
	ctx := t.Context()
	c, rel := suite.cluster, suite.lobby
	spec, err := rel.Rendered.Process("interceptor")
	if err != nil {
		t.Fatal(err)
	}
	audience := spec.Env["LOBBY_ADMIN_TOKEN_AUDIENCE"]
	scalerSA := rel.Namespace + "/" + rel.Release + "-scaler"

	intruder, err := c.AdminFor(ctx, ns+"/intruder", audience)
	if err != nil {
		t.Fatal(err)
	}
	apiToken, err := c.ServiceAccountToken(ctx, scalerSA)
	if err != nil {
		t.Fatal(err)
	}
	clients := []struct {
		who   string
		admin *framework.Admin
		want  int
		body  string
	}{
		{"a client without a token", framework.NewAdmin(""), http.StatusUnauthorized, "no bearer token"},
		{"the scaler's ServiceAccount with a token for the API server", framework.NewAdmin(apiToken), http.StatusUnauthorized, "token rejected"},
		{"another ServiceAccount with a token for the interceptors", intruder, http.StatusForbidden, "system:serviceaccount:" + ns + ":intruder may not read"},
		{"the scaler's ServiceAccount", rel.Admin, http.StatusOK, ""},
	}
	for _, in := range rel.Instances("interceptor") {
		admin := in.URL("admin")
		for _, cl := range clients {
			code, body, err := cl.admin.Status(ctx, admin+"/queue")
			if err != nil || code != cl.want || !strings.Contains(body, cl.body) {
				t.Errorf("%s: GET /queue as %s = %d %q (%v), want %d with %q", in.Process.Name, cl.who, code, body, err, cl.want, cl.body)
			}
			resp, err := cl.admin.Stream(ctx, admin)
			var se *framework.StatusError
			switch {
			case cl.want == http.StatusOK && err == nil:
				resp.Body.Close()
			case cl.want != http.StatusOK && errors.As(err, &se) && se.Code == cl.want:
			default:
				t.Errorf("%s: subscribe as %s: %v, want %d", in.Process.Name, cl.who, err, cl.want)
				if err == nil {
					resp.Body.Close()
				}
			}
		}
		for _, p := range []string{"/metrics", "/livez", "/readyz"} {
			if code, _, err := framework.NewAdmin("").Status(ctx, admin+p); err != nil || code != http.StatusOK {
				t.Errorf("%s: GET %s without a token = %d (%v), want 200", in.Process.Name, p, code, err)
			}
		}
		// Both scalers hold a stream, opened with their projected tokens.
		if err := poll.Until(ctx, 15*time.Second, "both scalers to subscribe to "+in.Process.Name, func() error {
			n, err := scrapeSample(admin+"/metrics", "lobby_interceptor_stream_subscribers", nil)
			if err != nil {
				return err
			}
			if n < float64(len(rel.Instances("scaler"))) {
				return fmt.Errorf("%v subscribers", n)
			}
			return nil
		}); err != nil {
			t.Error(err)
		}
		for result, want := range map[string]bool{"missing": true, "rejected": true, "forbidden": true, "allowed": true} {
			n, err := scrapeSample(admin+"/metrics", "lobby_interceptor_admin_auth_total", map[string]string{"result": result})
			if (err == nil && n > 0) != want {
				t.Errorf("%s: lobby_interceptor_admin_auth_total{result=%q} = %v (%v)", in.Process.Name, result, n, err)
			}
		}
	}
}

// TestStreamSubscriberCap starts an interceptor whose stream takes three subscribers (not
// published, so no scaler subscribes to it): three subscribe, the fourth gets 503 saying the
// stream is full, and once one leaves a new one is taken again.
func TestStreamSubscriberCap(t *testing.T) {
	ctx := t.Context()
	rel := suite.lobby
	in, err := rel.StartVariant(ctx, "interceptor", deploy.VariantOptions{
		Name:        "subcap-" + randomSuffix(),
		ValuesFiles: []string{filepath.Join("testdata", "values.yaml")},
		Set:         map[string]string{"interceptor.streamMaxSubscribers": "3"},
	})
	if err != nil {
		t.Fatalf("start an interceptor taking three subscribers: %v", err)
	}
	t.Cleanup(func() { _ = in.Process.Stop() })
	admin := in.URL("admin")

	var open []context.CancelFunc
	t.Cleanup(func() {
		for _, cancel := range open {
			cancel()
		}
	})
	subscribe := func() error {
		sctx, cancel := context.WithCancel(ctx)
		resp, err := rel.Admin.Stream(sctx, admin)
		if err != nil {
			cancel()
			return err
		}
		// The snapshot frame shows the subscription is taken.
		var f stream.Frame
		if err := stream.NewDecoder(resp.Body, 0).Decode(&f); err != nil || f.Kind != stream.KindSnapshot {
			cancel()
			return fmt.Errorf("first frame %+v, %v; want a snapshot", f, err)
		}
		open = append(open, func() { cancel(); resp.Body.Close() })
		return nil
	}
	for i := range 3 {
		if err := subscribe(); err != nil {
			t.Fatalf("subscriber %d of 3: %v", i+1, err)
		}
	}
	err = subscribe()
	var se *framework.StatusError
	if !errors.As(err, &se) || se.Code != http.StatusServiceUnavailable || !strings.Contains(se.Body, "stream full: 3 subscribers already") {
		t.Fatalf("fourth subscriber: %v, want 503 saying the stream is full", err)
	}
	if n, err := scrapeSample(admin+"/metrics", "lobby_interceptor_stream_refused_total", nil); err != nil || n != 1 {
		t.Errorf("lobby_interceptor_stream_refused_total = %v (%v), want 1", n, err)
	}
	if n, err := scrapeSample(admin+"/metrics", "lobby_interceptor_stream_subscribers", nil); err != nil || n != 3 {
		t.Errorf("lobby_interceptor_stream_subscribers = %v (%v), want 3", n, err)
	}

	open[0]()
	open = open[1:]
	if err := poll.Until(ctx, 10*time.Second, "a freed place to be taken", subscribe); err != nil {
		t.Fatal(err)
	}
}

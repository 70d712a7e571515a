//go:build e2e

package system

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"text/template"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/lobby-http/lobby/e2e/chart"
	"github.com/lobby-http/lobby/e2e/framework"
	"github.com/lobby-http/lobby/e2e/framework/poll"
	"github.com/lobby-http/lobby/operator/api/v1alpha1"
)

// startPrometheus runs Prometheus (Debian package prometheus) with testdata/prometheus.yml.tmpl,
// discovering lobby's admin endpoints through the API server and evaluating the chart's alert
// rules, and returns its URL.
func startPrometheus(ctx context.Context, c *framework.Cluster, namespace string) (string, error) {
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		return "", fmt.Errorf("find prometheus (install the Debian package prometheus: make deps): %w", err)
	}
	addr, err := c.AllocAddr()
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp(c.Dir, "prometheus-")
	if err != nil {
		return "", err
	}
	tmpl, err := template.ParseFiles(filepath.Join("testdata", "prometheus.yml.tmpl"))
	if err != nil {
		return "", err
	}
	var conf bytes.Buffer
	suite.promTargets = filepath.Join(dir, "targets.json")
	if _, err := writeTargets(ctx, c, namespace); err != nil {
		return "", err
	}
	if err := tmpl.Execute(&conf, map[string]any{"Targets": suite.promTargets, "Rules": chart.AlertRulesPath()}); err != nil {
		return "", err
	}
	file := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(file, conf.Bytes(), 0o644); err != nil {
		return "", err
	}
	listen := netip.AddrPortFrom(addr, 9090).String()
	p, err := c.RunBinary(ctx, framework.ProcessSpec{Name: "prometheus", Path: bin, Addr: addr, Args: []string{
		"--config.file=" + file, "--storage.tsdb.path=" + filepath.Join(dir, "data"),
		"--web.listen-address=" + listen, "--storage.tsdb.retention.time=1h",
	}})
	if err != nil {
		return "", err
	}
	u := "http://" + listen
	waitCtx, release := p.WhileRunning(ctx)
	defer release()
	err = poll.Until(waitCtx, 30*time.Second, "prometheus to be ready on "+listen, func() error {
		resp, err := http.Get(u + "/-/ready")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/-/ready: %s", resp.Status)
		}
		return nil
	})
	if err != nil {
		log, _ := os.ReadFile(p.LogFile)
		return "", fmt.Errorf("%w\n%s", err, log)
	}
	return u, nil
}

// writeTargets writes Prometheus' file_sd targets: every ready endpoint, on the port named admin,
// of the Services labelled app.kubernetes.io/name=lobby in namespace, as a ServiceMonitor selects
// them. It returns how many there are.
func writeTargets(ctx context.Context, c *framework.Cluster, namespace string) (int, error) {
	var svcs corev1.ServiceList
	if err := c.Client.List(ctx, &svcs, client.InNamespace(namespace), client.MatchingLabels{"app.kubernetes.io/name": "lobby"}); err != nil {
		return 0, fmt.Errorf("list lobby's Services: %w", err)
	}
	type group struct {
		Targets []string          `json:"targets"`
		Labels  map[string]string `json:"labels"`
	}
	groups := []group{}
	for _, svc := range svcs.Items {
		var slices discoveryv1.EndpointSliceList
		if err := c.Client.List(ctx, &slices, client.InNamespace(namespace), client.MatchingLabels{discoveryv1.LabelServiceName: svc.Name}); err != nil {
			return 0, fmt.Errorf("list the EndpointSlices of %s: %w", svc.Name, err)
		}
		for _, sl := range slices.Items {
			for _, p := range sl.Ports {
				if p.Name == nil || *p.Name != "admin" || p.Port == nil {
					continue
				}
				for _, ep := range sl.Endpoints {
					if !ptr.Deref(ep.Conditions.Ready, true) || len(ep.Addresses) == 0 {
						continue
					}
					labels := map[string]string{
						"namespace": namespace, "service": svc.Name,
						"component": svc.Labels["app.kubernetes.io/component"],
					}
					if ep.TargetRef != nil {
						labels["pod"] = ep.TargetRef.Name
					}
					groups = append(groups, group{Targets: []string{fmt.Sprintf("%s:%d", ep.Addresses[0], *p.Port)}, Labels: labels})
				}
			}
		}
	}
	b, err := json.Marshal(groups)
	if err != nil {
		return 0, err
	}
	tmp := suite.promTargets + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return 0, err
	}
	return len(groups), os.Rename(tmp, suite.promTargets)
}

// labelValues matches Grafana's label_values(metric, label) variable query.
var labelValues = regexp.MustCompile(`^label_values\(\s*(.+?)\s*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)$`)

// promQL turns a Grafana query into PromQL with the same data: label_values(m, l), a Grafana
// function, becomes count by (l) (m), one series per value of l.
func promQL(expr string) string {
	if m := labelValues.FindStringSubmatch(expr); m != nil {
		return "count by (" + m[2] + ") (" + m[1] + ")"
	}
	return expr
}

// promQuery runs an instant query and returns the number of series in its result.
func promQuery(ctx context.Context, base, query string) (int, error) {
	var data struct {
		Result []json.RawMessage `json:"result"`
	}
	if err := promGet(ctx, base+"/api/v1/query?query="+url.QueryEscape(query), &data); err != nil {
		return 0, err
	}
	return len(data.Result), nil
}

// promHas fails unless query has at least one series in its result.
func promHas(ctx context.Context, query string) error {
	n, err := promQuery(ctx, suite.prometheus, query)
	if err == nil && n == 0 {
		err = fmt.Errorf("no series for %s", query)
	}
	return err
}

// promGet calls Prometheus' HTTP API at u and decodes the answer's data into data.
func promGet(ctx context.Context, u string, data any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	r := struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   any    `json:"data"`
	}{Data: data}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return fmt.Errorf("decode the answer of %s: %w", u, err)
	}
	if r.Status != "success" {
		return fmt.Errorf("%s: %s", u, r.Error)
	}
	return nil
}

func TestPrometheusSeesLobby(t *testing.T) {
	framework.SuiteCluster(t) // The suite's setup started Prometheus with the cluster.
	// Earlier tests may have replaced an interceptor: scrape the current ones, and wait until
	// Prometheus does (it applies a changed targets file within 5 s, then scrapes each target
	// within a scrape interval).
	targets, err := writeTargets(t.Context(), suite.cluster, suite.lobby.Namespace)
	if err != nil {
		t.Fatal(err)
	}
	up := fmt.Sprintf(`up{namespace=%q} == 1`, suite.lobby.Namespace)
	if err := poll.Until(t.Context(), 30*time.Second, fmt.Sprintf("Prometheus to scrape all %d of lobby's targets", targets), func() error {
		n, err := promQuery(t.Context(), suite.prometheus, up)
		if err == nil && n != targets {
			err = fmt.Errorf("%d up", n)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	ns := testNamespace(t)
	// The app starts slowly enough for Prometheus to scrape the held requests' new series before
	// the queue rejects any: a counter's first increase is seen only from a sample before it.
	a := deployApp(t, ns, appSpec{name: "watched", env: map[string]string{"STARTUP_DELAY": "5s"}, hso: v1alpha1.HTTPScaledObjectSpec{
		Hosts: []string{"watched.example.com"}, ColdStart: &v1alpha1.ColdStartSpec{MaxPendingRequests: ptr.To[int32](2)}}})
	ctx := t.Context()
	// Two requests held through a cold start and two rejected by the queue bound, all through
	// the same interceptor, give every panel of the dashboard something to show.
	in := suite.lobby.Instances("interceptor")[0]
	held := make(chan []response, 1)
	go func() { held <- sendMany(ctx, 2, in.URL("http")+"/", "watched.example.com") }()
	if err := poll.Until(t.Context(), 10*time.Second, "two requests to be held", func() error {
		q, err := queue(in.URL("admin"))
		if err != nil {
			return err
		}
		if q[a.key()].Held != 2 {
			return fmt.Errorf("held = %d", q[a.key()].Held)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	rejections := fmt.Sprintf(`lobby_interceptor_queue_rejections_total{route=%q} == 0`, a.key())
	if err := poll.Until(t.Context(), 5*time.Second, "Prometheus to scrape "+rejections, func() error { return promHas(ctx, rejections) }); err != nil {
		t.Fatal(err)
	}
	checkAll(t, "requests over the bound", sendMany(ctx, 2, in.URL("http")+"/", "watched.example.com"), http.StatusServiceUnavailable)
	checkAll(t, "held requests", <-held, http.StatusOK)

	for _, q := range []string{
		fmt.Sprintf(`lobby_interceptor_requests_total{route=%q,code="200",namespace="lobby",service=~".+",pod=~".+"}`, a.key()),
		fmt.Sprintf(`lobby_interceptor_requests_total{route=%q,code="503"}`, a.key()),
		fmt.Sprintf(`lobby_interceptor_in_flight_requests{route=%q}`, a.key()),
		fmt.Sprintf(`lobby_interceptor_held_requests{route=%q}`, a.key()),
	} {
		if err := poll.Until(t.Context(), 15*time.Second, "Prometheus to have "+q, func() error { return promHas(ctx, q) }); err != nil {
			t.Fatal(err)
		}
	}

	queries, err := chart.Dashboard()
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range queries {
		expr := promQL(q.PromQL(a.key()))
		t.Run(q.Panel+" "+q.RefID, func(t *testing.T) {
			if err := poll.Until(t.Context(), 15*time.Second, "the dashboard query to return data: "+expr, func() error { return promHas(ctx, expr) }); err != nil {
				t.Fatal(err)
			}
		})
	}
	checkAlertRules(t, a.key())
}

// checkAlertRules checks the chart's alert rules, which the suite's Prometheus evaluates against
// lobby: every rule evaluates without error, every metric of lobby's that a rule reads has series,
// and LobbyHoldQueueFull is pending for route, whose hold queue overflowed (it fires only after
// 5 minutes).
func checkAlertRules(t *testing.T, route string) {
	t.Helper()
	ctx := t.Context()
	rules, err := chart.AlertRules()
	if err != nil {
		t.Fatal(err)
	}
	if err := poll.Until(t.Context(), 15*time.Second, "Prometheus to evaluate every alert rule", func() error {
		var data struct {
			Groups []struct {
				Rules []struct {
					Name      string `json:"name"`
					Health    string `json:"health"`
					LastError string `json:"lastError"`
				} `json:"rules"`
			} `json:"groups"`
		}
		if err := promGet(ctx, suite.prometheus+"/api/v1/rules?type=alert", &data); err != nil {
			return err
		}
		health := map[string]string{}
		for _, g := range data.Groups {
			for _, r := range g.Rules {
				health[r.Name] = r.Health + r.LastError
			}
		}
		for _, r := range rules {
			if h := health[r.Alert]; h != "ok" {
				return fmt.Errorf("rule %s: health %q", r.Alert, h)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, r := range rules {
		for _, m := range r.Metrics() {
			q := fmt.Sprintf(`count(%s{namespace=%q})`, m, suite.lobby.Namespace)
			if err := poll.Until(t.Context(), 15*time.Second, "Prometheus to have "+m+", which "+r.Alert+" reads", func() error { return promHas(ctx, q) }); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := poll.Until(t.Context(), 15*time.Second, "LobbyHoldQueueFull to be pending for "+route, func() error {
		var data struct {
			Alerts []struct {
				Labels map[string]string `json:"labels"`
				State  string            `json:"state"`
			} `json:"alerts"`
		}
		if err := promGet(ctx, suite.prometheus+"/api/v1/alerts", &data); err != nil {
			return err
		}
		var seen []string
		for _, a := range data.Alerts {
			l := a.Labels
			if l["alertname"] == "LobbyHoldQueueFull" && l["route"] == route && l["namespace"] == suite.lobby.Namespace && a.State == "pending" {
				return nil
			}
			seen = append(seen, fmt.Sprintf("%s %v", a.State, l))
		}
		return fmt.Errorf("alerts: %v", seen)
	}); err != nil {
		t.Fatal(err)
	}
}

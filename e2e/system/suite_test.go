//go:build e2e

// Package system holds the end-to-end suite: lobby installed from its chart into the local cluster
// (real kube-apiserver, kube-controller-manager, KEDA and the process kubelet), with nginx in front
// as ingress-nginx configures it, and sample apps scaled from zero, out and back to zero.
package system

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/lobby-http/lobby/e2e/deploy"
	"github.com/lobby-http/lobby/e2e/framework"
	"github.com/lobby-http/lobby/e2e/framework/poll"
)

// suite is the cluster, the lobby release and the ingress every test of the package shares; each
// test works in its own Kubernetes namespace.
var suite struct {
	cluster *framework.Cluster
	lobby   *deploy.Lobby
	ingress *ingress
	// prometheus is the URL of the Prometheus that scrapes lobby.
	prometheus string
	// promTargets is Prometheus' file_sd targets file.
	promTargets string
}

func TestMain(m *testing.M) {
	os.Exit(framework.RunSuite(m, framework.Options{}, setup))
}

// setup installs lobby from its chart into the cluster and starts nginx and Prometheus.
func setup(ctx context.Context, c *framework.Cluster) error {
	suite.cluster = c
	start := time.Now()
	var err error
	suite.lobby, err = deploy.Install(ctx, c, deploy.Options{
		ValuesFiles: []string{filepath.Join("testdata", "values.yaml")},
		Replicas:    map[string]int{"interceptor": 2, "scaler": 2, "operator": 1},
	})
	if err != nil {
		return fmt.Errorf("install lobby: %w", err)
	}
	fmt.Printf("lobby installed from the chart in %v\n", time.Since(start).Round(time.Millisecond))
	if suite.ingress, err = startIngress(ctx, c, suite.lobby); err != nil {
		return fmt.Errorf("start nginx: %w", err)
	}
	if suite.prometheus, err = startPrometheus(ctx, c, suite.lobby.Namespace); err != nil {
		return fmt.Errorf("start prometheus: %w", err)
	}
	return nil
}

// ingress is nginx in front of the interceptors.
type ingress struct {
	// URL is where clients send requests: http://<addr>:80.
	URL    string
	listen string
	dir    string
	conf   string
	proc   *framework.Process
	// tmpl is the configuration template in testdata, upstreams returns the addresses it sends
	// to, and data is what else the template reads.
	tmpl      string
	upstreams func() []string
	data      map[string]any
}

// startIngress renders testdata/nginx.conf.tmpl with the interceptors' proxy addresses and runs
// nginx with it.
func startIngress(ctx context.Context, c *framework.Cluster, l *deploy.Lobby) (*ingress, error) {
	return startNginx(ctx, c, "nginx.conf.tmpl", func() []string { return proxyAddrs(l.Instances("interceptor"), "http") }, nil)
}

// proxyAddrs returns the addresses of the given port of interceptors.
func proxyAddrs(interceptors []*deploy.Instance, port string) []string {
	var addrs []string
	for _, i := range interceptors {
		addrs = append(addrs, netip.AddrPortFrom(i.Addr, uint16(i.Ports[port])).String())
	}
	return addrs
}

// startNginx renders testdata/<tmpl> with the upstreams, the folders, the listen address and
// data, and runs nginx with it. nginx.conf.tmpl retries on the next upstream as ingress-nginx
// does, unless data has NoRetry set.
func startNginx(ctx context.Context, c *framework.Cluster, tmpl string, upstreams func() []string, data map[string]any) (*ingress, error) {
	bin, err := exec.LookPath("nginx")
	if err != nil {
		if bin, err = exec.LookPath("/usr/sbin/nginx"); err != nil {
			return nil, fmt.Errorf("find nginx (install the Debian package nginx: make deps): %w", err)
		}
	}
	addr, err := c.AllocAddr()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(c.Dir, "nginx-")
	if err != nil {
		return nil, err
	}
	listen := netip.AddrPortFrom(addr, 80).String()
	in := &ingress{URL: "http://" + listen, listen: listen, dir: dir, conf: filepath.Join(dir, "nginx.conf"),
		tmpl: tmpl, upstreams: upstreams, data: data}
	conf, err := in.render()
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(in.conf, conf, 0o644); err != nil {
		return nil, err
	}
	in.proc, err = c.RunBinary(ctx, framework.ProcessSpec{Name: "nginx", Path: bin, Args: []string{"-p", dir, "-c", in.conf}, Addr: addr})
	if err != nil {
		return nil, err
	}
	waitCtx, release := in.proc.WhileRunning(ctx)
	defer release()
	err = poll.Until(waitCtx, 10*time.Second, "nginx to listen on "+listen, func() error {
		resp, err := http.Get(in.URL + "/")
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		return resp.Body.Close()
	})
	if err != nil {
		log, _ := os.ReadFile(in.proc.LogFile)
		return nil, fmt.Errorf("%w\n%s", err, log)
	}
	return in, nil
}

// render returns nginx's configuration with the current upstreams.
func (in *ingress) render() ([]byte, error) {
	tmpl, err := template.ParseFiles(filepath.Join("testdata", in.tmpl))
	if err != nil {
		return nil, err
	}
	data := map[string]any{"Dir": in.dir, "Listen": in.listen, "Upstreams": in.upstreams()}
	for k, v := range in.data {
		data[k] = v
	}
	var conf bytes.Buffer
	if err := tmpl.Execute(&conf, data); err != nil {
		return nil, err
	}
	return conf.Bytes(), nil
}

// TestNoForbiddenErrors runs last: lobby's processes ran all along with the tokens of the chart's
// ServiceAccounts, so a missing permission in the chart's RBAC shows up in their logs.
func TestNoForbiddenErrors(t *testing.T) {
	framework.SuiteCluster(t)
	logs, err := filepath.Glob(filepath.Join(suite.cluster.LogDir, suite.lobby.Release+"-*.log"))
	if err != nil {
		t.Fatal(err)
	}
	if len(logs) < 3 {
		t.Fatalf("found %d logs of lobby's processes in %s, want one per process", len(logs), suite.cluster.LogDir)
	}
	for _, file := range logs {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if duringOutage(line) {
				continue
			}
			// RBAC denials read `... is forbidden: User "system:serviceaccount:..." cannot ...`;
			// other Forbidden answers (a namespace being deleted refuses new objects) are not
			// about permissions.
			if l := strings.ToLower(line); strings.Contains(l, "forbidden: user") || strings.Contains(l, "unauthorized") {
				t.Errorf("%s: %s", filepath.Base(file), line)
			}
		}
	}
}

// duringOutage reports whether a JSON log line was written while a control-plane component was
// restarting (see framework.Cluster.Outages): a restarted API server denies requests until its
// RBAC authorizer has read the roles, which says nothing about the chart's RBAC.
func duringOutage(line string) bool {
	var l struct {
		TS time.Time `json:"ts"`
	}
	if json.Unmarshal([]byte(line), &l) != nil || l.TS.IsZero() {
		return false
	}
	for _, o := range suite.cluster.Outages() {
		if !l.TS.Before(o.From) && (o.To.IsZero() || !l.TS.After(o.To)) {
			return true
		}
	}
	return false
}

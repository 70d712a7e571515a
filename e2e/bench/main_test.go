package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/lobby-http/lobby/e2e/framework"
	"github.com/lobby-http/lobby/e2e/framework/poll"
	"github.com/lobby-http/lobby/operator/api/v1alpha1"
)

// appPort is the port of every app Service and of the backend the EndpointSlices point at.
const appPort = 8080

// suite is the shared setup: one cluster, the binaries, and a backend.
type suite struct {
	cluster     *framework.Cluster
	kube        kubernetes.Interface // an admin clientset without client-side throttling
	interceptor string               // the interceptor binary
	bare        string               // the baseline binary (internal/bare)
	backend     netip.Addr           // the backend's address; it serves on appPort
	nofile      uint64               // this process's RLIMIT_NOFILE, which the processes it starts inherit
	admin       *framework.Admin     // reads the interceptors' /queue as the ServiceAccount they allow
}

var shared suite

func TestMain(m *testing.M) {
	os.Exit(framework.RunSuite(m, framework.Options{WithoutKEDA: true, WithoutKubelet: true}, setup))
}

func setup(ctx context.Context, c *framework.Cluster) error {
	shared.cluster = c
	// 10,000 held requests need 10,000 descriptors on each side, and more for the backend: the
	// soft limit goes up to the hard one (raising that needs CAP_SYS_RESOURCE), and the processes
	// started later inherit it. BenchmarkHeldMemory checks that it is enough.
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("read RLIMIT_NOFILE: %w", err)
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("raise RLIMIT_NOFILE to %d: %w", lim.Max, err)
	}
	shared.nofile = lim.Cur
	cfg := *c.RESTConfig
	// The routes benchmark creates thousands of objects; the API server is the only limit.
	cfg.QPS, cfg.Burst = 5000, 5000
	kube, err := kubernetes.NewForConfig(&cfg)
	if err != nil {
		return fmt.Errorf("admin clientset: %w", err)
	}
	shared.kube = kube
	if shared.admin, err = c.AdminFor(ctx, framework.AdminServiceAccount, framework.AdminAudience); err != nil {
		return err
	}
	if shared.interceptor, err = c.Build(ctx, "./interceptor"); err != nil {
		return err
	}
	if shared.bare, err = c.Build(ctx, "./e2e/bench/internal/bare"); err != nil {
		return err
	}
	if shared.backend, err = c.AllocAddr(); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", netip.AddrPortFrom(shared.backend, appPort).String())
	if err != nil {
		return fmt.Errorf("backend: %w", err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "hello, world\n")
	}), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return nil
}

func need(tb testing.TB) {
	tb.Helper()
	framework.SuiteCluster(tb)
}

// pinned wraps a command in `taskset -c cpu` when taskset is there, so the process and every
// thread it starts run on that core only. The process id stays the command's: taskset execs it.
func pinned(cpu int, path string, args ...string) (string, []string, bool) {
	ts, err := exec.LookPath("taskset")
	if err != nil {
		return path, args, false
	}
	return ts, append([]string{"-c", strconv.Itoa(cpu), path}, args...), true
}

// pinSelf moves every thread of this process to cpus (a taskset list such as "0" or "0,1").
func pinSelf(cpus string) error {
	out, err := exec.Command("taskset", "-a", "-p", "-c", cpus, strconv.Itoa(os.Getpid())).CombinedOutput()
	if err != nil {
		return fmt.Errorf("taskset -a -p -c %s: %w: %s", cpus, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// pinClient pins this process — the backend, and the load generator when it runs here — to
// core 0 with GOMAXPROCS=1, the proxies under test being pinned to core 1, and returns what undoes
// it. Without taskset it logs that client (what else runs on core 0) and the proxies share
// every core.
func pinClient(b *testing.B, client string) (undo func()) {
	if _, _, ok := pinned(1, ""); !ok {
		b.Logf("taskset is missing: the proxies, %s and the backend share every core", client)
		return func() {}
	}
	if err := pinSelf("0"); err != nil {
		b.Fatal(err)
	}
	procs := runtime.GOMAXPROCS(1)
	return func() {
		runtime.GOMAXPROCS(procs)
		if err := pinSelf("0,1"); err != nil {
			b.Error(err)
		}
	}
}

// interceptor starts the interceptor binary as the chart configures it, with extra settings,
// optionally pinned to core 1, and waits until its /queue lists every key of want.
func startInterceptor(ctx context.Context, tb testing.TB, name string, pin bool, extra []string, want func(map[string]queueCounts) bool) (*framework.Process, string, string) {
	tb.Helper()
	addr, err := shared.cluster.AllocAddr()
	if err != nil {
		tb.Fatal(err)
	}
	path, args := shared.interceptor, []string(nil)
	if pin {
		path, args, _ = pinned(1, path)
	}
	env := append([]string{"KUBECONFIG=" + shared.cluster.Kubeconfig, "LOBBY_LOG_FORMAT=console",
		"POD_NAME=" + name, "POD_NAMESPACE=lobby",
		"LOBBY_PROXY_ADDR=$(POD_IP):8080", "LOBBY_ADMIN_ADDR=$(POD_IP):9090", "LOBBY_DRAIN_DELAY=0s",
		"LOBBY_ADMIN_ALLOWED_SERVICE_ACCOUNTS=" + framework.AdminServiceAccount}, extra...)
	p, err := shared.cluster.RunBinary(ctx, framework.ProcessSpec{Name: name, Path: path, Args: args, Addr: addr, Env: env})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = p.Stop() })
	admin := "http://" + net.JoinHostPort(addr.String(), "9090")
	if err := poll.Until(ctx, 2*time.Minute, "the interceptor to route every HTTPScaledObject", func() error {
		q, err := queue(ctx, admin)
		if err == nil && !want(q) {
			err = fmt.Errorf("/queue lists %d routes, not the ones wanted yet", len(q))
		}
		return err
	}); err != nil {
		tb.Fatalf("%v (log: %s)", err, p.LogFile)
	}
	return p, net.JoinHostPort(addr.String(), "8080"), admin
}

// queueCounts is the part of an interceptor /queue entry the benchmarks read.
type queueCounts struct {
	Held int64 `json:"held"`
}

func queue(ctx context.Context, admin string) (map[string]queueCounts, error) {
	var q map[string]queueCounts
	err := shared.admin.GetJSON(ctx, admin+"/queue", &q)
	return q, err
}

// startBare starts the baseline binary with args, named name, on a fresh address, optionally
// pinned to core 1, and returns it with its address.
func startBare(ctx context.Context, tb testing.TB, name string, pin bool, args ...string) (*framework.Process, netip.Addr) {
	tb.Helper()
	addr, err := shared.cluster.AllocAddr()
	if err != nil {
		tb.Fatal(err)
	}
	path := shared.bare
	if pin {
		path, args, _ = pinned(1, path, args...)
	}
	p, err := shared.cluster.RunBinary(ctx, framework.ProcessSpec{Name: name, Path: path, Args: args, Addr: addr})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = p.Stop() })
	return p, addr
}

// waitListening waits until something accepts connections on addr.
func waitListening(ctx context.Context, tb testing.TB, addr string) {
	tb.Helper()
	if err := poll.Until(ctx, 30*time.Second, addr+" to listen", func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err
	}); err != nil {
		tb.Fatal(err)
	}
}

// route creates the HTTPScaledObject name (host name.test) in ns, its Service, and an
// EndpointSlice whose one endpoint is the backend, ready or not.
func route(ctx context.Context, kube kubernetes.Interface, ns, name string, ready bool) error {
	o := &v1alpha1.HTTPScaledObject{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1alpha1.HTTPScaledObjectSpec{
			Hosts:          []string{name + ".test"},
			ScaleTargetRef: v1alpha1.ScaleTargetRef{Name: name, Kind: "Deployment", APIVersion: "apps/v1", Service: name, Port: appPort},
		},
	}
	if err := shared.cluster.Client.Create(ctx, o); err != nil {
		return fmt.Errorf("create HTTPScaledObject %s/%s: %w", ns, name, err)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: appPort}}},
	}
	if _, err := kube.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create Service %s/%s: %w", ns, name, err)
	}
	if _, err := kube.DiscoveryV1().EndpointSlices(ns).Create(ctx, slice(ns, name, name, ready, shared.backend.String()), metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create EndpointSlice %s/%s: %w", ns, name, err)
	}
	return nil
}

// slice is an EndpointSlice of Service svc with one endpoint per address, each ready or not.
func slice(ns, name, svc string, ready bool, addrs ...string) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name,
			Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](appPort)}},
	}
	for i, a := range addrs {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{a},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(ready)},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: svc + "-" + strconv.Itoa(i)},
		})
	}
	return s
}

func namespace(ctx context.Context, ns string) error {
	_, err := shared.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create namespace %s: %w", ns, err)
	}
	return nil
}

// rss returns the resident set size of process pid, from VmRSS in /proc/<pid>/status.
func rss(pid int) (int64, error) { return procStatus(pid, "VmRSS:") }

// procStatus returns a field of /proc/<pid>/status counted in kB (VmRSS:, VmHWM:), in bytes.
func procStatus(pid int, field string) (int64, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parse %s of process %d: %q", field, pid, v)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// percentile returns the q quantile of sorted durations, in milliseconds.
func percentile(sorted []time.Duration, q float64) float64 {
	d := sorted[min(len(sorted)-1, int(q*float64(len(sorted))))]
	return float64(d) / float64(time.Millisecond)
}

func sorted(d []time.Duration) []time.Duration {
	d = slices.Clone(d)
	slices.Sort(d)
	return d
}

// seq numbers the objects and processes of successive benchmark runs, so that none reuses a name.
var seq atomic.Int64

func next(prefix string) string { return prefix + "-" + strconv.FormatInt(seq.Add(1), 10) }

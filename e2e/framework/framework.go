// Package framework starts a real Kubernetes control plane and real KEDA on one machine, for
// end-to-end tests and benchmarks: etcd, kube-apiserver, kube-controller-manager, the KEDA
// operator and metrics adapter, and the process kubelet of e2e/kubelet, each a local process
// bound to its own address on the loopback device of the network namespace that
// netns.RunTestsInside created. Certificates are generated per cluster; every component logs to
// a file in Cluster.LogDir.
//
// A test package starts one cluster in its TestMain and shares it; each test works in its own
// Kubernetes namespace. docs/local-cluster.md describes what runs where.
package framework

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"

	"github.com/lobby-http/lobby/e2e/netns"
	"github.com/lobby-http/lobby/operator/api/v1alpha1"
)

// ErrNoBinaries means the control-plane binaries have not been built. Tests skip on it (and
// fail under CI=true).
var ErrNoBinaries = errors.New("control-plane binaries not found")

// ErrNotInNamespace means Start was called outside the network namespace that
// netns.RunTestsInside creates.
var ErrNotInNamespace = errors.New("not inside an e2e network namespace: call framework.Start from a TestMain that uses netns.RunTestsInside")

// Options configures Start. The zero value starts everything with defaults.
type Options struct {
	// BinDir holds kube-apiserver, kube-controller-manager, keda-operator, keda-adapter and
	// etcd. Empty: $KUBEBUILDER_ASSETS, else the folder `make tools` builds into
	// (.cache/tools/k8s-<version>-keda-<version>/bin at the module root).
	BinDir string
	// KeepDir keeps the cluster's folder (certificates, kubeconfigs, logs, etcd data) after
	// Stop, for debugging; its path is printed.
	KeepDir bool
	// LogWriter receives the harness's own progress lines (component start times). Nil means
	// os.Stderr.
	LogWriter io.Writer
	// WithoutKEDA skips the KEDA operator and metrics adapter (KEDA's CRDs are still installed).
	WithoutKEDA bool
	// WithoutKubelet skips the process kubelet: pods are created but never run.
	WithoutKubelet bool
}

// Cluster is a running local cluster. Its methods are safe for concurrent use.
type Cluster struct {
	// Kubeconfig is the path of an admin kubeconfig file (user in group system:masters).
	Kubeconfig string
	// RESTConfig is the admin client configuration.
	RESTConfig *rest.Config
	// Kube is an admin clientset.
	Kube kubernetes.Interface
	// Client is an admin controller-runtime client whose scheme knows the built-in types,
	// lobby's v1alpha1 and CRDs; other kinds (KEDA's, APIServices) work as unstructured.
	Client client.Client
	// Dir is the cluster's folder: certificates, kubeconfigs, logs, etcd data.
	Dir string
	// LogDir holds one log file per component and process.
	LogDir string
	// APIServerURL is the API server's address (https://10.244.0.1:<port>).
	APIServerURL string
	// Images maps the sample apps' image names (lobby.test/echo, ...) to their executables,
	// as the process kubelet runs them; nil with Options.WithoutKubelet.
	Images map[string]string

	opts    Options
	log     io.Writer
	binDir  string
	root    string
	pki     *pki
	etcdDir string
	etcdURL string
	// etcdArgs and apiServerArgs are the components' flags, for restarts; apiServerReady checks
	// the API server's /readyz as the admin.
	etcdArgs, apiServerArgs []string
	apiServerReady          func(context.Context) error
	// kedaKubeconfig is the KEDA components' kubeconfig; kedaMetricsServiceAddr the
	// operator's gRPC metrics service, which the adapter dials.
	kedaKubeconfig         string
	kedaMetricsServiceAddr string

	// restarts serialises the Stop/Start operations of faults.go.
	restarts sync.Mutex

	mu        sync.Mutex
	etcd      *Process   // the running etcd, replaced by StartEtcd
	apiServer *Process   // the running kube-apiserver, replaced by StartAPIServer
	processes []*Process // in start order; a restarted component's process takes its predecessor's place
	outages   []Outage
	stopFuncs []func() error
	stopped   bool
	stopErr   error
}

// Start starts a cluster. It must run inside netns.RunTestsInside. On error, everything it
// had started is stopped again.
func Start(ctx context.Context, opts Options) (_ *Cluster, err error) {
	if !netns.Inside() {
		return nil, ErrNotInNamespace
	}
	root, err := moduleRoot()
	if err != nil {
		return nil, err
	}
	need := []string{"etcd", "kube-apiserver", "kube-controller-manager"}
	if !opts.WithoutKEDA {
		need = append(need, "keda-operator", "keda-adapter")
	}
	binDir, err := findBinDir(root, opts.BinDir, need)
	if err != nil {
		return nil, err
	}
	c := &Cluster{opts: opts, log: opts.LogWriter, binDir: binDir, root: root}
	if c.log == nil {
		c.log = os.Stderr
	}
	if c.Dir, err = os.MkdirTemp("", "lobby-e2e-cluster-"); err != nil {
		return nil, fmt.Errorf("create cluster folder: %w", err)
	}
	c.LogDir = filepath.Join(c.Dir, "logs")
	if err := os.MkdirAll(c.LogDir, 0o700); err != nil {
		return nil, fmt.Errorf("create log folder: %w", err)
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, c.Stop())
		}
	}()
	started := time.Now()
	c.progress("cluster folder %s", c.Dir)

	adapterAddr, err := allocAddr(controlPlanePool)
	if err != nil {
		return nil, err
	}
	if c.pki, err = newPKI(filepath.Join(c.Dir, "pki"), net.IP(netns.ControlPlaneAddr.AsSlice()), net.IP(adapterAddr.AsSlice())); err != nil {
		return nil, err
	}

	if err := c.step("etcd", func() error { return c.startEtcd(ctx) }); err != nil {
		return nil, err
	}
	if err := c.step("kube-apiserver", func() error { return c.startAPIServer(ctx) }); err != nil {
		return nil, err
	}

	// Everything else needs only the API server: the controller manager, the CRDs and then
	// KEDA, and the kubelet start side by side.
	var wg sync.WaitGroup
	errs := make([]error, 3)
	wg.Go(func() {
		errs[0] = c.step("kube-controller-manager", func() error { return c.startControllerManager(ctx) })
	})
	wg.Go(func() {
		if errs[1] = c.step("CRDs (lobby, KEDA)", func() error { return c.installCRDs(ctx) }); errs[1] != nil || opts.WithoutKEDA {
			return
		}
		if errs[1] = c.step("keda-operator", func() error { return c.startKEDAOperator(ctx) }); errs[1] != nil {
			return
		}
		errs[1] = c.step("keda-adapter (APIService available)", func() error { return c.startKEDAAdapter(ctx, adapterAddr) })
	})
	if !opts.WithoutKubelet {
		wg.Go(func() {
			errs[2] = c.step("kubelet (node ready)", func() error { return c.startKubelet(ctx) })
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	c.progress("cluster ready in %s (kubeconfig %s)", time.Since(started).Round(time.Millisecond), c.Kubeconfig)
	return c, nil
}

// step runs start, printing how long it took.
func (c *Cluster) step(name string, start func() error) error {
	t0 := time.Now()
	if err := start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	c.progress("%s ready in %s", name, time.Since(t0).Round(time.Millisecond))
	return nil
}

func (c *Cluster) progress(format string, args ...any) {
	fmt.Fprintf(c.log, "framework: "+format+"\n", args...)
}

// addProcess records p so Stop ends it.
func (c *Cluster) addProcess(p *Process) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.processes = append(c.processes, p)
}

// onStop registers f to run at Stop, before the processes are stopped, newest first.
func (c *Cluster) onStop(f func() error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stopFuncs = append(c.stopFuncs, f)
}

// Processes returns every process the cluster started, in start order, including ones that
// have exited.
func (c *Cluster) Processes() []*Process {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*Process(nil), c.processes...)
}

// Stop ends everything the cluster started: the kubelet and its pods first, then every
// process in reverse start order (SIGTERM, SIGKILL after ten seconds), waiting for each; then
// it removes the cluster's folder unless Options.KeepDir is set. It reports processes that had
// died on their own or needed SIGKILL. Calling it again returns the first result.
func (c *Cluster) Stop() error {
	c.mu.Lock()
	if c.stopped {
		defer c.mu.Unlock()
		return c.stopErr
	}
	c.stopped = true
	funcs, procs := c.stopFuncs, c.processes
	c.mu.Unlock()

	var errs []error
	for i := len(funcs) - 1; i >= 0; i-- {
		errs = append(errs, funcs[i]())
	}
	for i := len(procs) - 1; i >= 0; i-- {
		errs = append(errs, procs[i].Stop())
	}
	if c.etcdDir != "" {
		errs = append(errs, os.RemoveAll(c.etcdDir))
	}
	if c.Dir != "" {
		if c.opts.KeepDir {
			c.progress("kept cluster folder %s", c.Dir)
		} else if err := os.RemoveAll(c.Dir); err != nil {
			errs = append(errs, fmt.Errorf("remove cluster folder: %w", err))
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stopErr = errors.Join(errs...)
	return c.stopErr
}

// TB is the part of testing.TB that DumpLogs uses.
type TB interface {
	Helper()
	Logf(format string, args ...any)
}

// dumpLines is how many lines of each log DumpLogs prints.
const dumpLines = 60

// DumpLogs prints the last lines of every log in LogDir (components, lobby's processes, the
// kubelet and its pods). Call it from t.Cleanup when t.Failed().
func (c *Cluster) DumpLogs(t TB) {
	t.Helper()
	err := filepath.WalkDir(c.LogDir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Logf("read %s: %v", path, err)
			return nil
		}
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		if len(lines) > dumpLines {
			lines = lines[len(lines)-dumpLines:]
		}
		t.Logf("--- last %d lines of %s ---\n%s", len(lines), path, strings.Join(lines, "\n"))
		return nil
	})
	if err != nil {
		t.Logf("read log folder %s: %v", c.LogDir, err)
	}
}

// DumpLogsIfFailed registers a cleanup on t that, if t failed, prints the last lines of every
// log to standard error at once. go test prints a test's own lines when it has ended, after its
// cleanups, so the test's errors come after the logs, at the end of its output, where they are
// found first; with -v everything is printed as it happens anyway.
func (c *Cluster) DumpLogsIfFailed(t testing.TB) {
	t.Helper()
	t.Cleanup(func() {
		if t.Failed() {
			fmt.Fprintf(os.Stderr, "--- %s failed; the logs of the local cluster follow, its errors after them ---\n", t.Name())
			c.DumpLogs(Stderr)
		}
	})
}

// newScheme returns the scheme of Cluster.Client.
func newScheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		clientgoscheme.AddToScheme, v1alpha1.AddToScheme, apiextensionsv1.AddToScheme,
	} {
		if err := add(s); err != nil {
			return nil, fmt.Errorf("build client scheme: %w", err)
		}
	}
	return s, nil
}

// writeKubeconfig writes a kubeconfig for the API server with the given client credentials:
// a certificate pair, or a bearer token.
func (c *Cluster) writeKubeconfig(path, user string, cert keyPair, token string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["lobby-e2e"] = &clientcmdapi.Cluster{Server: c.APIServerURL, CertificateAuthority: c.pki.ca.certFile}
	auth := &clientcmdapi.AuthInfo{Token: token}
	if cert.certFile != "" {
		auth.ClientCertificate, auth.ClientKey = cert.certFile, cert.keyFile
	}
	cfg.AuthInfos[user] = auth
	cfg.Contexts["lobby-e2e"] = &clientcmdapi.Context{Cluster: "lobby-e2e", AuthInfo: user}
	cfg.CurrentContext = "lobby-e2e"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("write kubeconfig %s: %w", path, err)
	}
	return nil
}

// moduleRoot returns the folder of lobby's go.mod.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("find the module root with `go env GOMOD`: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("find the module root: not inside lobby's Go module (run the tests from the repository)")
	}
	return filepath.Dir(gomod), nil
}

// BinPath returns the path of a binary of the folder the control plane's binaries come from
// (kube-apiserver, the kubelet, ...), or an error wrapping ErrNoBinaries when it is missing.
func (c *Cluster) BinPath(name string) (string, error) {
	p, err := binPath(c.binDir, name)
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%w: %s missing in %s; run `make tools`", ErrNoBinaries, name, c.binDir)
	}
	return p, nil
}

// binPath returns the path of binary name: in dir, or for etcd, which `make deps` installs
// from Debian's etcd-server package, on PATH when dir lacks it.
func binPath(dir, name string) (string, error) {
	p := filepath.Join(dir, name)
	if _, err := os.Stat(p); err == nil || name != "etcd" {
		return p, err
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%w: etcd is neither in %s nor on PATH; run `make deps`", ErrNoBinaries, dir)
	}
	return p, nil
}

// findBinDir returns the folder holding the control-plane binaries, checking that it holds
// every one of need.
func findBinDir(root, dir string, need []string) (string, error) {
	source := "Options.BinDir"
	if dir == "" {
		dir, source = os.Getenv("KUBEBUILDER_ASSETS"), "KUBEBUILDER_ASSETS"
	}
	if dir == "" {
		source = "the `make tools` cache"
		cmd := exec.Command("go", "list", "-m", "-f", "{{.Version}}", "k8s.io/kubernetes", "github.com/kedacore/keda/v2")
		cmd.Dir = filepath.Join(root, "e2e", "tools")
		out, err := cmd.Output()
		if err != nil {
			return "", fmt.Errorf("read the pinned versions in e2e/tools/go.mod: %w", err)
		}
		v := strings.Fields(string(out))
		if len(v) != 2 {
			return "", fmt.Errorf("read the pinned versions in e2e/tools/go.mod: got %q", out)
		}
		cache := os.Getenv("TOOLS_CACHE")
		if cache == "" {
			cache = filepath.Join(root, ".cache", "tools")
		}
		dir = filepath.Join(cache, "k8s-"+v[0]+"-keda-"+v[1], "bin")
	}
	for _, b := range need {
		if b == "etcd" {
			if _, err := binPath(dir, b); err == nil {
				continue
			}
		}
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			return "", fmt.Errorf("%w: %s missing in %s (from %s); run `make tools` (first build about 17 minutes on 2 cores)",
				ErrNoBinaries, b, dir, source)
		}
	}
	return dir, nil
}

// Address pools: control-plane extras (10.244.0.2 up) and lobby's processes and test servers
// (10.244.255.1 up). The kubelet allocates pod addresses from 10.244.1.0 up.
var (
	controlPlanePool = &addrPool{next: netip.MustParseAddr("10.244.0.2"), last: netip.MustParseAddr("10.244.0.254")}
	processPool      = &addrPool{next: netip.MustParseAddr("10.244.255.1"), last: netip.MustParseAddr("10.244.255.254")}
)

type addrPool struct {
	mu         sync.Mutex
	next, last netip.Addr
}

// allocAddr takes the next address of pool and puts it on the namespace's loopback device.
func allocAddr(pool *addrPool) (netip.Addr, error) {
	pool.mu.Lock()
	ip := pool.next
	if ip.Compare(pool.last) > 0 {
		pool.mu.Unlock()
		return netip.Addr{}, fmt.Errorf("allocate an address: pool up to %s exhausted", pool.last)
	}
	pool.next = ip.Next()
	pool.mu.Unlock()
	if err := netns.AddAddr(ip); err != nil {
		return netip.Addr{}, err
	}
	return ip, nil
}

// AllocAddr returns a fresh address (10.244.255.x) on the namespace's loopback device, for a
// test server that the cluster's components must reach.
func (c *Cluster) AllocAddr() (netip.Addr, error) { return allocAddr(processPool) }

// freePort returns a TCP port that is free on ip. The namespace is private to this run, so
// nothing else can take it before the component binds it.
func freePort(ip netip.Addr) (int, error) {
	ln, err := net.Listen("tcp", netip.AddrPortFrom(ip, 0).String())
	if err != nil {
		return 0, fmt.Errorf("find a free port on %s: %w", ip, err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// hostPort joins ip and port.
func hostPort(ip netip.Addr, port int) string {
	return netip.AddrPortFrom(ip, uint16(port)).String()
}

// Package node adds a real Kubernetes node to the local e2e cluster, beside the process kubelet:
// the upstream kubelet (built from the e2e/tools module, the API server's version) with Debian's
// containerd, runc and CNI plugins, running containers from images imported out of tarballs
// (no registry is reachable). docs/local-cluster.md describes the set-up and why each setting
// is what it is.
//
// Everything runs in the cluster's network namespace: containerd and the kubelet are started
// through nsenter (see hostMountNS), pods sit on a bridge there, and their traffic to the control
// plane is delivered locally. There is no kube-proxy: the `kubernetes` Service's cluster IP,
// which in-cluster clients dial, is translated to the API server's address by one iptables DNAT
// rule; other Services are reached at their endpoints' addresses, as nginx and lobby reach them
// anyway, and names through e2e/hosts.
//
// There is no scheduler either: the process kubelet binds pods that select no other node, and
// Node binds the pods whose nodeSelector matches its labels (the chart's nodeSelector values put
// a release there).
package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/lobby-http/lobby/e2e/framework"
	"github.com/lobby-http/lobby/e2e/framework/poll"
	"github.com/lobby-http/lobby/e2e/netns"
)

// ErrUnavailable means the node cannot run on this machine: a package or binary is missing.
// Tests skip on it, except under CI=true.
var ErrUnavailable = errors.New("the real node cannot run here")

// DefaultName is the Node's name when Options.Name is empty.
const DefaultName = "lobby-e2e-real-node"

// Pod network of the real node: a bridge in the cluster's network namespace with the gateway's
// address, pods from the rest of the range.
var (
	PodCIDR = netip.MustParsePrefix("10.246.0.0/24")
	gateway = netip.MustParseAddr("10.246.0.1")
)

// readyTimeout bounds containerd's and the kubelet's starts.
const readyTimeout = 90 * time.Second

// Options say how to start the node.
type Options struct {
	// Name is the Node's name; empty means DefaultName.
	Name string
	// Images are image tarballs (docker-save or OCI archives, as hack/images writes them),
	// imported into containerd before the kubelet starts.
	Images []string
	// SandboxImage is the pod sandbox ("pause") image; it must be in one of Images.
	SandboxImage string
}

// Node is a running real node.
type Node struct {
	// Name is the Node's name; its kubernetes.io/hostname label says the same.
	Name string
	// Addr is the node's InternalIP, the address the kubelet serves on.
	Addr netip.Addr
	// Dir is the node's folder: configuration, containerd's root and state, the kubelet's root.
	Dir string
	// PodLogDir holds the containers' logs, <namespace>_<pod>_<uid>/<container>/<n>.log.
	PodLogDir string

	c          *framework.Cluster
	containerd *daemon
	kubelet    *daemon
	ctr        string // path of ctr
	host       string // /proc/<pid> of a process in the machine's mount namespace (hostMountNS)
	stopBinder context.CancelFunc
	binderDone chan struct{}
	stopOnce   sync.Once
	stopErr    error
}

// tools are the programs the node needs, with the Debian package each comes from.
var tools = map[string]string{
	"containerd":              "containerd",
	"containerd-shim-runc-v2": "containerd",
	"ctr":                     "containerd",
	"runc":                    "runc",
	"nsenter":                 "util-linux",
	"iptables":                "iptables",
	cniBinDir + "/bridge":     "containernetworking-plugins",
	cniBinDir + "/host-local": "containernetworking-plugins",
	cniBinDir + "/loopback":   "containernetworking-plugins",
}

// Available reports why the node cannot run here, wrapping ErrUnavailable, or nil.
func Available() error {
	var missing []string
	for p, pkg := range tools {
		if strings.HasPrefix(p, "/") {
			if _, err := os.Stat(p); err != nil {
				missing = append(missing, p+" ("+pkg+")")
			}
			continue
		}
		if _, err := exec.LookPath(p); err != nil {
			missing = append(missing, p+" ("+pkg+")")
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return fmt.Errorf("%w: missing %s; run `make deps`", ErrUnavailable, strings.Join(missing, ", "))
	}
	return nil
}

// Start starts containerd, imports the images, routes the `kubernetes` Service to the API
// server, starts the kubelet, waits for the Node to be Ready and starts binding the pods that
// select it. The node stops when the cluster does (before its processes) or on Stop. On error
// everything started is stopped again.
func Start(ctx context.Context, c *framework.Cluster, o Options) (_ *Node, err error) {
	if err := Available(); err != nil {
		return nil, err
	}
	kubeletBin, err := c.BinPath("kubelet")
	if err != nil {
		return nil, err
	}
	if o.Name == "" {
		o.Name = DefaultName
	}
	if o.SandboxImage == "" {
		return nil, errors.New("start the real node: Options.SandboxImage is empty")
	}
	host, err := hostMountNS()
	if err != nil {
		return nil, err
	}
	if !mounted(host+"/mountinfo", "/sys/fs/cgroup/memory") {
		return nil, fmt.Errorf("%w: no cgroup v1 memory controller at /sys/fs/cgroup/memory (the kubelet is configured for cgroup v1)", ErrUnavailable)
	}
	ctrPath, _ := exec.LookPath("ctr")
	n := &Node{Name: o.Name, Dir: filepath.Join(c.Dir, "node"), c: c, ctr: ctrPath, host: host}
	n.PodLogDir = filepath.Join(n.Dir, "pod-logs")
	if n.Addr, err = c.AllocAddr(); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, n.Stop())
		}
	}()
	c.OnStop(n.Stop)

	if err := step("containerd", func() error { return n.startContainerd(ctx, o.SandboxImage) }); err != nil {
		return nil, err
	}
	err = step(fmt.Sprintf("%d images imported", len(o.Images)), func() error {
		for _, img := range o.Images {
			if err := n.importImage(ctx, img); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := routeAPIServer(ctx, c); err != nil {
		return nil, err
	}
	var node *corev1.Node
	err = step("kubelet (node "+n.Name+" Ready)", func() error {
		if err := n.startKubelet(ctx, kubeletBin); err != nil {
			return err
		}
		node, err = n.waitReady(ctx)
		return err
	})
	if err != nil {
		return nil, err
	}
	bctx, cancel := context.WithCancel(context.Background())
	n.stopBinder, n.binderDone = cancel, make(chan struct{})
	go func() {
		defer close(n.binderDone)
		bind(bctx, c, node)
	}()
	return n, nil
}

// step runs start, printing how long it took, as the framework prints its components' starts.
func step(name string, start func() error) error {
	t0 := time.Now()
	if err := start(); err != nil {
		return fmt.Errorf("start the real node: %s: %w", name, err)
	}
	fmt.Fprintf(os.Stderr, "node: %s in %s\n", name, time.Since(t0).Round(time.Millisecond))
	return nil
}

// startContainerd writes containerd's and the CNI configuration and starts containerd.
func (n *Node) startContainerd(ctx context.Context, sandboxImage string) error {
	cni, err := cniConfig(n.Dir, PodCIDR, gateway)
	if err != nil {
		return err
	}
	conf := filepath.Join(n.Dir, "containerd", "config.toml")
	if err := writeFiles(map[string][]byte{
		conf: []byte(containerdConfig(n.Dir, sandboxImage)),
		filepath.Join(n.Dir, "cni", "net.d", "10-lobby-e2e.conflist"): cni,
	}); err != nil {
		return err
	}
	if n.containerd, err = startDaemon("containerd", netns.Name(), n.host, filepath.Join(n.c.LogDir, "node-containerd.log"),
		"containerd", "--config", conf); err != nil {
		return err
	}
	return poll.Until(ctx, readyTimeout, "containerd to answer on its socket", func() error {
		if done, err := n.containerd.exited(); done {
			return fmt.Errorf("containerd exited (%v); see %s", err, filepath.Join(n.c.LogDir, "node-containerd.log"))
		}
		_, err := n.runCtr(ctx, "version")
		return err
	})
}

// runCtr runs ctr against the node's containerd, in the namespace the CRI plugin uses.
func (n *Node) runCtr(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, n.ctr, append([]string{"--address", socketPath(n.Dir), "--namespace", "k8s.io"}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("ctr %s: %w\n%s", strings.Join(args, " "), err, indent(out.String()))
	}
	return out.String(), nil
}

// importImage imports an image tarball into the CRI plugin's namespace, unpacked for its
// snapshotter.
func (n *Node) importImage(ctx context.Context, tarball string) error {
	if _, err := n.runCtr(ctx, "images", "import", tarball); err != nil {
		return fmt.Errorf("import image %s: %w", tarball, err)
	}
	return nil
}

// routeAPIServer makes the `kubernetes` Service's cluster IP and port, which every pod's
// in-cluster configuration dials (KUBERNETES_SERVICE_HOST/PORT), reach the API server: the one
// rule kube-proxy would write for it, for traffic arriving from the pods' bridge.
func routeAPIServer(ctx context.Context, c *framework.Cluster) error {
	svc, err := c.Kube.CoreV1().Services(metav1.NamespaceDefault).Get(ctx, "kubernetes", metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("read the kubernetes Service: %w", err)
	}
	u, err := url.Parse(c.APIServerURL)
	if err != nil {
		return fmt.Errorf("parse the API server's URL: %w", err)
	}
	var port int32
	for _, p := range svc.Spec.Ports {
		if p.Name == "https" {
			port = p.Port
		}
	}
	if port == 0 {
		return errors.New("the kubernetes Service has no https port")
	}
	args := []string{"-w", "-t", "nat", "-A", "PREROUTING", "-d", svc.Spec.ClusterIP + "/32", "-p", "tcp",
		"--dport", strconv.Itoa(int(port)), "-j", "DNAT", "--to-destination", u.Host}
	if out, err := exec.CommandContext(ctx, "iptables", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("route the kubernetes Service to the API server: iptables %s: %w\n%s", strings.Join(args, " "), err, indent(string(out)))
	}
	return nil
}

// startKubelet writes the kubelet's configuration and starts it. It authenticates to the API
// server with the admin's client certificate (system:masters): the node's own identity and the
// Node authorizer are not what lobby's tests check.
func (n *Node) startKubelet(ctx context.Context, bin string) error {
	ports := make([]int, 2)
	for i := range ports {
		p, err := freePort(n.Addr)
		if err != nil {
			return err
		}
		ports[i] = p
	}
	conf := filepath.Join(n.Dir, "kubelet", "config.yaml")
	if err := writeFiles(map[string][]byte{
		conf: []byte(kubeletConfig(n.Dir, n.Addr, ports[0], ports[1], filepath.Join(n.c.Dir, "pki", "ca.crt"))),
	}); err != nil {
		return err
	}
	var err error
	n.kubelet, err = startDaemon("kubelet", netns.Name(), n.host, filepath.Join(n.c.LogDir, "node-kubelet.log"), bin,
		"--config="+conf,
		"--kubeconfig="+n.c.Kubeconfig,
		"--root-dir="+filepath.Join(n.Dir, "kubelet", "root"),
		"--cert-dir="+filepath.Join(n.Dir, "kubelet", "pki"),
		"--hostname-override="+n.Name,
		"--node-ip="+n.Addr.String(),
		"--v=2",
	)
	return err
}

// waitReady waits for the kubelet to register the Node and report it Ready.
func (n *Node) waitReady(ctx context.Context) (*corev1.Node, error) {
	var node *corev1.Node
	err := poll.Until(ctx, readyTimeout, "node "+n.Name+" to be Ready", func() error {
		if done, err := n.kubelet.exited(); done {
			return fmt.Errorf("the kubelet exited (%v); see %s", err, filepath.Join(n.c.LogDir, "node-kubelet.log"))
		}
		got, err := n.c.Kube.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, cond := range got.Status.Conditions {
			if cond.Type == corev1.NodeReady {
				if cond.Status != corev1.ConditionTrue {
					return fmt.Errorf("Ready is %s: %s", cond.Status, cond.Message)
				}
				node = got
				return nil
			}
		}
		return errors.New("no Ready condition yet")
	})
	return node, err
}

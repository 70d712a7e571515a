package node

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"

	"github.com/lobby-http/lobby/e2e/framework/poll"
)

// drainTimeout bounds how long Stop waits for the kubelet to stop the node's pods.
const drainTimeout = 60 * time.Second

// Stop stops the node and removes every trace of it: it stops binding, deletes the node's pods
// and waits for the kubelet to stop them (as a drain would: their volumes unmounted, their
// sandboxes' networks torn down), stops the kubelet, kills any container left, stops containerd,
// unmounts whatever is still mounted under the node's folder and removes the Node object. The
// cluster's network namespace, deleted after the tests, takes the bridge and the DNAT rule with
// it. Calling it again returns the first call's result.
func (n *Node) Stop() error {
	n.stopOnce.Do(func() { n.stopErr = n.stop() })
	return n.stopErr
}

func (n *Node) stop() error {
	ctx := context.Background()
	var errs []error
	if n.stopBinder != nil {
		n.stopBinder()
		<-n.binderDone
	}
	if n.kubelet != nil {
		if done, _ := n.kubelet.exited(); !done {
			errs = append(errs, n.drain(ctx))
		}
	}
	errs = append(errs, n.kubelet.stop())
	if n.containerd != nil {
		if done, _ := n.containerd.exited(); !done {
			errs = append(errs, n.killContainers(ctx))
		}
	}
	errs = append(errs, n.containerd.stop())
	errs = append(errs, unmountUnder(n.host, n.Dir))
	errs = append(errs, removeCgroups(n.host))
	if n.c.Kube != nil {
		if err := n.c.Kube.CoreV1().Nodes().Delete(ctx, n.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete node %s: %w", n.Name, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("stop the real node: %w", err)
	}
	return nil
}

// drain deletes every pod bound to the node, with its grace period, and waits until the kubelet
// has stopped them and confirmed their deletion; pods still there at the end are deleted at once.
func (n *Node) drain(ctx context.Context) error {
	onNode := metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("spec.nodeName", n.Name).String()}
	pods := n.c.Kube.CoreV1().Pods(metav1.NamespaceAll)
	list, err := pods.List(ctx, onNode)
	if err != nil {
		return fmt.Errorf("drain node %s: %w", n.Name, err)
	}
	for _, p := range list.Items {
		if err := n.c.Kube.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("drain node %s: delete pod %s/%s: %w", n.Name, p.Namespace, p.Name, err)
		}
	}
	var left []corev1.Pod
	err = poll.Until(ctx, drainTimeout, "the pods of node "+n.Name+" to be gone", func() error {
		list, err := pods.List(ctx, onNode)
		if err != nil {
			return err
		}
		if left = list.Items; len(left) > 0 {
			return fmt.Errorf("%d pods left", len(left))
		}
		return nil
	})
	if err == nil {
		return nil
	}
	var names []string
	for _, p := range left {
		names = append(names, p.Namespace+"/"+p.Name)
		_ = n.c.Kube.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
	}
	return fmt.Errorf("drain node %s: %w; pods %v deleted at once", n.Name, err, names)
}

// killContainers kills and deletes every task and container containerd still has (the kubelet
// is stopped by now, so nothing restarts them).
func (n *Node) killContainers(ctx context.Context) error {
	out, err := n.runCtr(ctx, "containers", "list", "--quiet")
	if err != nil {
		return err
	}
	var errs []error
	for _, id := range strings.Fields(out) {
		// A container without a task (already stopped) makes kill fail: only deletion counts.
		_, _ = n.runCtr(ctx, "tasks", "kill", "--signal", "SIGKILL", id)
		_, _ = n.runCtr(ctx, "tasks", "delete", "--force", id)
		if _, err := n.runCtr(ctx, "containers", "delete", id); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// unmountUnder unmounts every mount point under dir, deepest first: in the machine's mount
// namespace (that of the process host, a /proc/<pid> folder), where containerd and the kubelet
// mounted them (rootfs overlays, pod network namespaces, projected volumes), and in this
// process's, which received them by propagation.
func unmountUnder(host, dir string) error {
	if host == "" {
		return nil
	}
	var errs []error
	for _, p := range mountsUnder(host+"/mountinfo", dir) {
		if out, err := exec.Command("nsenter", "--mount="+host+"/ns/mnt", "--", "umount", "--lazy", p).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("unmount %s: %w: %s", p, err, strings.TrimSpace(string(out))))
		}
	}
	for _, p := range mountsUnder("/proc/self/mountinfo", dir) {
		if err := syscall.Unmount(p, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s here: %w", p, err))
		}
	}
	if left := mountsUnder(host+"/mountinfo", dir); len(left) > 0 {
		errs = append(errs, fmt.Errorf("still mounted under %s: %v", dir, left))
	}
	return errors.Join(errs...)
}

// mounted reports whether point is a mount point in a mountinfo file.
func mounted(mountinfo, point string) bool {
	return slices.Contains(mountsUnder(mountinfo, point), point)
}

// mountsUnder lists the mount points under dir in a mountinfo file, deepest first.
func mountsUnder(mountinfo, dir string) []string {
	f, err := os.Open(mountinfo)
	if err != nil {
		return nil
	}
	defer f.Close()
	var points []string
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 64*1024), 1024*1024)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) < 5 {
			continue
		}
		// The mount point is the fifth field, with spaces and the like escaped in octal.
		p := strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(fields[4])
		if p == dir || strings.HasPrefix(p, dir+"/") {
			points = append(points, p)
		}
	}
	slices.SortFunc(points, func(a, b string) int {
		if d := strings.Count(b, "/") - strings.Count(a, "/"); d != 0 {
			return d
		}
		return strings.Compare(a, b)
	})
	return slices.Compact(points)
}

// freePort returns a TCP port free on ip.
func freePort(ip netip.Addr) (int, error) {
	l, err := net.Listen("tcp", netip.AddrPortFrom(ip, 0).String())
	if err != nil {
		return 0, fmt.Errorf("find a free port on %s: %w", ip, err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// removeCgroups removes the kubelet's cgroups (kubepods and the QoS and pod cgroups under it) from
// every cgroup v1 controller, deepest first, once they are empty; host is a /proc/<pid> folder in
// the machine's mount namespace.
func removeCgroups(host string) error {
	if host == "" {
		return nil
	}
	roots, _ := filepath.Glob(host + "/root/sys/fs/cgroup/*/kubepods")
	var errs []error
	for _, root := range roots {
		var dirs []string
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for _, d := range slices.Backward(dirs) {
			if err := os.Remove(d); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", strings.TrimPrefix(d, host+"/root"), err))
			}
		}
	}
	return errors.Join(errs...)
}

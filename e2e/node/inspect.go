package node

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// ContainerPID returns the process id, as this process sees it, of the main process of the
// container a pod's status names (containerStatuses[].containerID, containerd://<id>).
func (n *Node) ContainerPID(ctx context.Context, containerID string) (int, error) {
	id, ok := strings.CutPrefix(containerID, "containerd://")
	if !ok {
		return 0, fmt.Errorf("find container %q: not a containerd container ID", containerID)
	}
	out, err := n.runCtr(ctx, "tasks", "list")
	if err != nil {
		return 0, err
	}
	// TASK PID STATUS
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == id {
			return strconv.Atoi(f[1])
		}
	}
	return 0, fmt.Errorf("find container %s: containerd lists no task for it", id)
}

// MemoryCgroup returns the memory cgroup of process pid and that cgroup's limit in bytes
// (cgroup v1 memory.limit_in_bytes), read in the machine's mount namespace, where the cgroup
// controllers are mounted.
func (n *Node) MemoryCgroup(pid int) (path string, limit int64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return "", 0, fmt.Errorf("read the cgroups of process %d: %w", pid, err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		// hierarchy-ID:controller-list:cgroup-path
		parts := strings.SplitN(s.Text(), ":", 3)
		if len(parts) == 3 && strings.Contains(","+parts[1]+",", ",memory,") {
			path = parts[2]
		}
	}
	if path == "" {
		return "", 0, fmt.Errorf("process %d is in no memory cgroup", pid)
	}
	b, err := os.ReadFile(filepath.Join(n.host, "root", "sys", "fs", "cgroup", "memory", path, "memory.limit_in_bytes"))
	if err != nil {
		return path, 0, fmt.Errorf("read the memory limit of cgroup %s: %w", path, err)
	}
	limit, err = strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return path, 0, fmt.Errorf("read the memory limit of cgroup %s: %w", path, err)
	}
	return path, limit, nil
}

// Security is what the kernel says about a process's identity and privileges, to check a
// container's security context against.
type Security struct {
	// UID and GID are the real user and group ids.
	UID, GID string
	// CapEff is the effective capability set, in hexadecimal (all zeros: every capability
	// dropped).
	CapEff string
	// NoNewPrivs is true when the process cannot gain privileges (allowPrivilegeEscalation:
	// false).
	NoNewPrivs bool
	// ReadOnlyRoot is true when its root filesystem is mounted read-only.
	ReadOnlyRoot bool
}

// ProcessSecurity reads the Security of process pid from /proc.
func ProcessSecurity(pid int) (Security, error) {
	var sec Security
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return sec, fmt.Errorf("read the status of process %d: %w", pid, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "Uid:":
			sec.UID = f[1]
		case "Gid:":
			sec.GID = f[1]
		case "CapEff:":
			sec.CapEff = f[1]
		case "NoNewPrivs:":
			sec.NoNewPrivs = f[1] == "1"
		}
	}
	b, err = os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		return sec, fmt.Errorf("read the mounts of process %d: %w", pid, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		// The mount point is the fifth field, its options the sixth.
		if f := strings.Fields(line); len(f) >= 6 && f[4] == "/" {
			sec.ReadOnlyRoot = strings.HasPrefix(f[5], "ro,") || f[5] == "ro"
		}
	}
	return sec, nil
}

// ContainerLog returns what a container of a pod on the node has written so far (every
// restart's log, oldest first), in the kubelet's CRI log format: "<time> <stream> <tag> <line>".
func (n *Node) ContainerLog(pod *corev1.Pod, container string) (string, error) {
	dir := filepath.Join(n.PodLogDir, pod.Namespace+"_"+pod.Name+"_"+string(pod.UID), container)
	files, err := filepath.Glob(filepath.Join(dir, "*.log"))
	if err != nil || len(files) == 0 {
		return "", fmt.Errorf("read the log of %s/%s %s: no log in %s (%v)", pod.Namespace, pod.Name, container, dir, err)
	}
	var b strings.Builder
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("read the log of %s/%s %s: %w", pod.Namespace, pod.Name, container, err)
		}
		b.Write(data)
	}
	return b.String(), nil
}

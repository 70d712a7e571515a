package node

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// hostMountNS returns the mount namespace containerd and the kubelet run in: the one the test
// binary started in, before `ip netns exec` re-executed it. It is the parent's: ip execs the
// test binary in place, so the parent of the process inside is the process outside.
//
// `ip netns exec` gives the test process a mount namespace of its own with a fresh /sys mounted
// for the network namespace, and that /sys has no /sys/fs/cgroup: there the kubelet fails with
// "failed to find cgroup mounts" and runc with "no cgroup mount found in mountinfo". So both are
// started through nsenter into the cluster's network namespace and this mount namespace, where
// the cgroup mounts are. (The machine's first process would do as well, but in the dev container
// its namespaces cannot be opened: "cannot open /proc/1/ns/mnt: Permission denied".)
func hostMountNS() (string, error) {
	parent := fmt.Sprintf("/proc/%d", os.Getppid())
	self, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		return "", fmt.Errorf("find the machine's mount namespace: %w", err)
	}
	theirs, err := os.Readlink(parent + "/ns/mnt")
	if err != nil {
		return "", fmt.Errorf("find the machine's mount namespace: %w", err)
	}
	if self == theirs {
		return "", errors.New("find the machine's mount namespace: this process shares its parent's; run it under netns.RunTestsInside")
	}
	return parent, nil
}

// daemonStopTimeout bounds how long stop waits after SIGTERM before it sends SIGKILL.
const daemonStopTimeout = 15 * time.Second

// daemon is containerd or the kubelet, run through nsenter; its output goes to a log file.
type daemon struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// startDaemon runs argv inside the network namespace netnsName and the mount namespace of the
// process host (a /proc/<pid> folder, see hostMountNS), its standard output and error appended to
// logFile.
func startDaemon(name, netnsName, host, logFile string, argv ...string) (*daemon, error) {
	f, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open log of %s: %w", name, err)
	}
	args := append([]string{"--net=/var/run/netns/" + netnsName, "--mount=" + host + "/ns/mnt", "--"}, argv...)
	// nsenter execs argv after entering the namespaces (no fork: neither is a PID namespace), so
	// the process is the daemon itself and signals reach it.
	cmd := exec.Command("nsenter", args...)
	cmd.Stdout, cmd.Stderr = f, f
	// Its own process group, so a Ctrl-C at the terminal reaches the test binary, which stops
	// the node in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	d := &daemon{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		d.err = cmd.Wait()
		_ = f.Close()
		close(d.done)
	}()
	return d, nil
}

// exited reports whether the daemon has exited, and how.
func (d *daemon) exited() (bool, error) {
	select {
	case <-d.done:
		return true, d.err
	default:
		return false, nil
	}
}

// stop sends SIGTERM, then SIGKILL after daemonStopTimeout, and waits for the daemon to exit.
func (d *daemon) stop() error {
	if d == nil {
		return nil
	}
	if done, _ := d.exited(); done {
		return nil
	}
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("stop %s: %w", d.name, err)
	}
	select {
	case <-d.done:
		return nil
	case <-time.After(daemonStopTimeout):
		_ = d.cmd.Process.Kill()
		<-d.done
		return fmt.Errorf("stop %s: killed after ignoring SIGTERM for %s", d.name, daemonStopTimeout)
	}
}

// Package hosts answers the DNS names of a local cluster's Services from a private /etc/hosts:
// the local cluster has no cluster DNS, and the processes the end-to-end tests start (KEDA's
// operator dialling the scaler by the address the chart gives, say) resolve names the way any
// program does. The file is bind-mounted in the test process's own mount namespace, which
// `ip netns exec` gave it, so the machine's /etc/hosts is never touched.
package hosts

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
)

// Entry is one line of /etc/hosts.
type Entry struct {
	// Addr is the address the names resolve to.
	Addr netip.Addr
	// Names are the names.
	Names []string
}

// ServiceNames returns the DNS names a Service has in a cluster.
func ServiceNames(name, namespace string) []string {
	base := name + "." + namespace
	return []string{base + ".svc.cluster.local", base + ".svc", base}
}

// state is the private /etc/hosts of this test process and its children.
var state struct {
	mu   sync.Mutex
	file string // /etc/hosts once the private copy is bind-mounted over it
	base []byte // /etc/hosts as it was
}

// Set makes entries the Services' lines of /etc/hosts; nil removes them. The first call
// bind-mounts a private copy over /etc/hosts; later calls rewrite the copy in place, through
// /etc/hosts (truncating keeps the inode the mount holds). One process has one set of entries: the caller owns all of them.
func Set(entries []Entry) error {
	state.mu.Lock()
	defer state.mu.Unlock()
	if state.file == "" {
		if len(entries) == 0 {
			return nil
		}
		base, err := os.ReadFile("/etc/hosts")
		if err != nil {
			return fmt.Errorf("read /etc/hosts: %w", err)
		}
		f, err := os.CreateTemp("", "lobby-e2e-hosts-")
		if err != nil {
			return fmt.Errorf("create private hosts file: %w", err)
		}
		f.Close()
		if err := os.WriteFile(f.Name(), base, 0o644); err != nil {
			return fmt.Errorf("write private hosts file: %w", err)
		}
		if err := bindMount(f.Name(), "/etc/hosts"); err != nil {
			os.Remove(f.Name())
			return fmt.Errorf("bind-mount a private /etc/hosts (needs root inside the e2e network namespace): %w", err)
		}
		// The mount holds the file's inode, and /etc/hosts now names it: the copy's own name is
		// not needed, and removing it leaves nothing behind in /tmp.
		if err := os.Remove(f.Name()); err != nil {
			return fmt.Errorf("remove the private hosts file's name: %w", err)
		}
		state.file, state.base = "/etc/hosts", base
	}
	var b strings.Builder
	b.Write(state.base)
	b.WriteString("\n# Services of lobby's e2e cluster\n")
	for _, e := range entries {
		b.WriteString(e.Addr.String() + "\t" + strings.Join(e.Names, " ") + "\n")
	}
	// Truncate and write the same inode: the bind mount refers to it.
	if err := os.WriteFile(state.file, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("write private hosts file: %w", err)
	}
	return nil
}

// bindMount bind-mounts file over target, refusing to when this process shares its parent's mount
// namespace: netns re-executes the tests through `ip netns exec`, which gives them a mount
// namespace of their own, so a shared one means the mount would change the machine's /etc/hosts.
func bindMount(file, target string) error {
	self, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		return err
	}
	parent, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", os.Getppid()))
	if err != nil {
		return err
	}
	if self == parent {
		return errors.New("this process shares its parent's mount namespace; run it under netns.RunTestsInside or netns.RunInside")
	}
	return syscall.Mount(file, target, "", syscall.MS_BIND, "")
}

// Package netns runs end-to-end tests inside a private Linux network namespace, so every address
// the local control plane, the process kubelet and lobby's binaries bind is their own: nothing
// listens on the machine's interfaces and nothing collides with another run.
//
// A test package's TestMain calls RunTestsInside. The first invocation (on the machine's own
// network) creates a fresh named namespace with `ip netns add`, brings its loopback device up
// with the control-plane address on it, builds every program the namespace will run
// (prebuilt.Prepare: nothing inside can download), and runs the same test binary again inside
// it with `ip netns exec`. When that child exits, every process left in the namespace is killed and the
// namespace is deleted, whatever the outcome. Inside, RunTestsInside simply runs the tests.
//
// Pods and lobby's processes get their own /32 addresses on the namespace's loopback device
// through AddAddr and DelAddr, which refuse to touch the machine's own network.
package netns

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lobby-http/lobby/e2e/framework/poll"
	"github.com/lobby-http/lobby/e2e/prebuilt"
)

// envName is the environment variable that carries the namespace's name into the re-executed
// test binary. Inside checks it against the process's actual network namespace, so a stale or
// inherited value never makes code believe it is isolated when it is not.
const envName = "LOBBY_E2E_NETNS"

// ControlPlaneAddr is the address the control plane (etcd, kube-apiserver, KEDA) binds. It is on
// the namespace's loopback device from the start.
var ControlPlaneAddr = netip.MustParseAddr("10.244.0.1")

// namePrefix starts the name of every namespace this package creates, so a leftover from a
// killed run is easy to recognise in `ip netns list`.
const namePrefix = "lobby-e2e-"

// deleteTimeout bounds how long Delete waits for killed processes to disappear.
const deleteTimeout = 10 * time.Second

// Namespace is a named network namespace created by Create. Its zero value is not usable.
type Namespace struct {
	// Name is the namespace's name as `ip netns list` shows it.
	Name string
}

// Available reports why namespaces cannot be created here (not root, or no `ip` even after
// trying to install iproute2), or nil when they can.
func Available() error {
	if os.Geteuid() != 0 {
		return errors.New("network namespaces need root (run the tests as root, e.g. in the dev container)")
	}
	if _, err := exec.LookPath("ip"); err == nil {
		return nil
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		return errors.New("the `ip` command is missing: install iproute2")
	}
	out, err := exec.Command("sh", "-c",
		"apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2").CombinedOutput()
	if err != nil {
		return fmt.Errorf("install iproute2 for the `ip` command: %w: %s", err, strings.TrimSpace(string(out)))
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return errors.New("the `ip` command is still missing after installing iproute2")
	}
	return nil
}

// Create makes a fresh network namespace named lobby-e2e-<random>, brings its loopback device
// up and puts ControlPlaneAddr on it. On error nothing is left behind.
func Create(ctx context.Context) (*Namespace, error) {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("pick a namespace name: %w", err)
	}
	n := &Namespace{Name: namePrefix + hex.EncodeToString(b[:])}
	if err := ipCmd(ctx, "netns", "add", n.Name); err != nil {
		return nil, fmt.Errorf("create network namespace: %w", err)
	}
	setup := [][]string{
		{"-n", n.Name, "link", "set", "lo", "up"},
		{"-n", n.Name, "addr", "add", ControlPlaneAddr.String() + "/32", "dev", "lo"},
	}
	for _, args := range setup {
		if err := ipCmd(ctx, args...); err != nil {
			return nil, errors.Join(fmt.Errorf("set up network namespace %s: %w", n.Name, err), n.Delete())
		}
	}
	return n, nil
}

// Command returns a command that runs name with args inside the namespace. name is resolved on
// the caller's PATH first; `/proc/self/exe` must not be passed as is, because inside
// `ip netns exec` it would name ip itself.
func (n *Namespace) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// PIDs lists the processes whose network namespace is this one.
func (n *Namespace) PIDs() ([]int, error) {
	out, err := exec.Command("ip", "netns", "pids", n.Name).Output()
	if err != nil {
		return nil, fmt.Errorf("list processes in network namespace %s: %w", n.Name, cmdErr(err))
	}
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("list processes in network namespace %s: unexpected pid %q", n.Name, f)
		}
		pids = append(pids, pid)
	}
	return pids, nil
}

// Delete kills every process still in the namespace (SIGKILL: by now they are leftovers of a
// run that has ended), waits for them to go, deletes the namespace and checks that
// `ip netns list` no longer shows it.
func (n *Namespace) Delete() error {
	var errs []error
	pids, err := n.PIDs()
	if err != nil {
		errs = append(errs, err)
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("kill leftover process %d in network namespace %s: %w", pid, n.Name, err))
		}
	}
	if err := waitGone(pids, deleteTimeout); err != nil {
		errs = append(errs, fmt.Errorf("clear network namespace %s: %w", n.Name, err))
	}
	if err := ipCmd(context.Background(), "netns", "del", n.Name); err != nil {
		errs = append(errs, fmt.Errorf("delete network namespace %s: %w", n.Name, err))
	}
	names, err := List()
	if err != nil {
		errs = append(errs, err)
	}
	for _, name := range names {
		if name == n.Name {
			errs = append(errs, fmt.Errorf("network namespace %s is still listed after deleting it", n.Name))
		}
	}
	return errors.Join(errs...)
}

// List returns the names of the machine's named network namespaces.
func List() ([]string, error) {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return nil, fmt.Errorf("list network namespaces: %w", cmdErr(err))
	}
	var names []string
	for _, line := range strings.Split(string(out), "\n") {
		// Lines look like "name" or "name (id: 3)".
		if f := strings.Fields(line); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	return names, nil
}

// waitGone waits until none of pids is a live process (a zombie counts as gone: it holds no
// namespace and no socket) or the timeout passes.
func waitGone(pids []int, timeout time.Duration) error {
	return poll.Until(context.Background(), timeout, "the killed processes to be gone", func() error {
		var alive []int
		for _, pid := range pids {
			if processAlive(pid) {
				alive = append(alive, pid)
			}
		}
		if len(alive) > 0 {
			return fmt.Errorf("processes %v still alive after SIGKILL", alive)
		}
		return nil
	})
}

// processAlive reports whether pid names a process that is neither gone nor a zombie.
func processAlive(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The state follows the command name, which is in parentheses and may itself contain ')'.
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return true
	}
	return s[i+2] != 'Z' && s[i+2] != 'X'
}

// Inside reports whether this process runs in the network namespace RunTestsInside created for
// it: the name it was given must name the namespace the process is actually in.
func Inside() bool {
	name := os.Getenv(envName)
	if name == "" {
		return false
	}
	var self, named syscall.Stat_t
	if syscall.Stat("/proc/self/ns/net", &self) != nil || syscall.Stat("/run/netns/"+name, &named) != nil {
		return false
	}
	return self.Dev == named.Dev && self.Ino == named.Ino
}

// Name returns the name of the namespace this process runs in, or "" when Inside is false.
func Name() string {
	if !Inside() {
		return ""
	}
	return os.Getenv(envName)
}

// AddAddr puts ip as a /32 on the namespace's loopback device, so a process can bind it and
// every other process in the namespace can reach it. Adding an address that is already there
// is not an error. It refuses to run outside the namespace, so a test never changes the
// machine's own network.
func AddAddr(ip netip.Addr) error {
	if err := checkAddr(ip); err != nil {
		return fmt.Errorf("add address: %w", err)
	}
	// replace, unlike add, succeeds when the address is already there.
	if err := ipCmd(context.Background(), "addr", "replace", ip.String()+"/32", "dev", "lo"); err != nil {
		return fmt.Errorf("add address %s to lo: %w", ip, err)
	}
	return nil
}

// DelAddr removes a /32 that AddAddr put on the loopback device. Removing an address that is
// not there is not an error.
func DelAddr(ip netip.Addr) error {
	if err := checkAddr(ip); err != nil {
		return fmt.Errorf("delete address: %w", err)
	}
	out, err := exec.Command("ip", "-o", "addr", "show", "dev", "lo", "to", ip.String()+"/32").Output()
	if err != nil {
		return fmt.Errorf("look up address %s on lo: %w", ip, cmdErr(err))
	}
	if len(strings.TrimSpace(string(out))) == 0 {
		return nil
	}
	if err := ipCmd(context.Background(), "addr", "del", ip.String()+"/32", "dev", "lo"); err != nil {
		return fmt.Errorf("delete address %s from lo: %w", ip, err)
	}
	return nil
}

func checkAddr(ip netip.Addr) error {
	if !Inside() {
		return errors.New("not inside a namespace created by netns.RunTestsInside; refusing to change the machine's network")
	}
	if !ip.Is4() || ip.IsLoopback() || ip.IsUnspecified() {
		return fmt.Errorf("%s is not a usable IPv4 address (Kubernetes rejects loopback endpoint addresses; use 10.244.x.y)", ip)
	}
	return nil
}

// RunTestsInside is for a TestMain: it runs m's tests inside a fresh network namespace and
// returns the exit code to pass to os.Exit.
//
// Outside a namespace it creates one, re-executes the test binary there with the same
// arguments (standard streams passed through, SIGINT and SIGTERM forwarded), then deletes the
// namespace and everything left in it, and returns the child's exit code (1 if the cleanup
// failed). Where namespaces are unavailable (not root, no `ip`) it prints why and returns 0,
// skipping the tests — except when CI=true, where it fails, because CI must not silently skip
// end-to-end tests.
func RunTestsInside(m *testing.M) int {
	if Inside() {
		keepRelayFromChildren()
		return m.Run()
	}
	if err := Available(); err != nil {
		if os.Getenv("CI") == "true" {
			fmt.Fprintf(os.Stderr, "FAIL: end-to-end tests cannot run: %v\n", err)
			return 1
		}
		fmt.Fprintf(os.Stderr, "skipping end-to-end tests: %v\n", err)
		return 0
	}
	return reexec()
}

// RunInside is RunTestsInside for a program rather than a test binary: inside the namespace it
// returns run's exit code; outside it re-executes the program in a fresh namespace, deletes the
// namespace afterwards and returns the program's exit code. Where namespaces are unavailable it
// says why and returns 1.
func RunInside(run func() int) int {
	if Inside() {
		keepRelayFromChildren()
		return run()
	}
	if err := Available(); err != nil {
		fmt.Fprintf(os.Stderr, "cannot create a network namespace: %v\n", err)
		return 1
	}
	return reexec()
}

// reexec runs this binary again, with the same arguments, inside a fresh namespace, after
// building on the machine's own network every program the namespace will run (prebuilt.Prepare):
// inside, nothing can download a module.
func reexec() (code int) {
	cleanup, err := prebuilt.Prepare(context.Background())
	defer func() {
		if err := cleanup(); err != nil {
			fmt.Fprintf(os.Stderr, "FAIL: %v\n", err)
			code = 1
		}
	}()
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: %v\n", err)
		return 1
	}
	code, err = runInside(os.Args[1:], os.Stdout, os.Stderr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: %v\n", err)
		return 1
	}
	return code
}

// runInside re-executes the running binary with args inside a fresh namespace, its output going
// to stdout and stderr, and returns its exit code; err reports a failure to set up or clean up.
func runInside(args []string, stdout, stderr io.Writer) (code int, err error) {
	exe, err := os.Executable()
	if err != nil {
		return 1, fmt.Errorf("find the test binary: %w", err)
	}
	ns, err := Create(context.Background())
	if err != nil {
		return 1, err
	}
	defer func() {
		if derr := ns.Delete(); derr != nil {
			err = errors.Join(err, derr)
			code = 1
		}
	}()
	cmd := ns.Command(context.Background(), exe, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, stdout, stderr
	// GOPROXY=off makes any module download attempted inside fail at once, naming the module,
	// rather than after a DNS failure: everything the namespace runs is built before it.
	cmd.Env = append(os.Environ(), envName+"="+ns.Name, "GOPROXY=off")
	// The relay socket (see Expose) is the child's descriptor 3.
	relayEnd, childEnd, err := newRelayPair()
	if err != nil {
		return 1, err
	}
	r := &relay{conn: relayEnd, host: "127.0.0.1"}
	cmd.ExtraFiles = []*os.File{childEnd}
	cmd.Env = append(cmd.Env, relayFDEnv+"=3")
	exited := make(chan struct{})
	relayDone := make(chan struct{})
	defer func() {
		close(exited)
		<-relayDone
	}()
	go func() {
		defer close(relayDone)
		r.serve(exited)
	}()

	// Forward interrupts so the tests inside can stop their processes; the namespace is
	// deleted afterwards either way.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	err = cmd.Start()
	// Only the child holds its end from now on, so the relay sees it close when the child exits.
	childEnd.Close()
	if err != nil {
		return 1, fmt.Errorf("run the tests in network namespace %s: %w", ns.Name, err)
	}
	done := make(chan struct{})
	go func() {
		for {
			select {
			case s := <-sigs:
				_ = cmd.Process.Signal(s)
			case <-done:
				return
			}
		}
	}()
	werr := cmd.Wait()
	close(done)
	if werr == nil {
		return 0, nil
	}
	var exit *exec.ExitError
	if !errors.As(werr, &exit) {
		return 1, fmt.Errorf("run the tests in network namespace %s: %w", ns.Name, werr)
	}
	if status, ok := exit.Sys().(syscall.WaitStatus); ok && status.Signaled() {
		fmt.Fprintf(os.Stderr, "the tests in network namespace %s were ended by %s\n", ns.Name, status.Signal())
		return 1, nil
	}
	return exit.ExitCode(), nil
}

// ipCmd runs ip with args and returns its standard error text in the error.
func ipCmd(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// cmdErr adds a failed command's standard error text to its error.
func cmdErr(err error) error {
	var exit *exec.ExitError
	if errors.As(err, &exit) && len(exit.Stderr) > 0 {
		return fmt.Errorf("%w: %s", err, strings.TrimSpace(string(exit.Stderr)))
	}
	return err
}

package framework

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// stopTimeout bounds how long Stop waits after SIGTERM before it sends SIGKILL.
const stopTimeout = 10 * time.Second

// errKilled, wrapped in Stop's error, means the process ignored SIGTERM for too long and was
// killed: it is gone, but did not shut down cleanly.
var errKilled = errors.New("killed")

// Process is a program the cluster started: a control-plane component or one of lobby's
// binaries. Its standard output and error go to LogFile.
type Process struct {
	// Name identifies the process in logs and errors.
	Name string
	// Addr is the address on the namespace's loopback device the process was given, or the
	// zero value when it binds the control-plane address.
	Addr netip.Addr
	// LogFile holds the process's standard output and error.
	LogFile string

	cmd     *exec.Cmd
	log     *os.File
	done    chan struct{}
	waitErr error
	stop    sync.Once
	stopErr error
}

// startProcess runs path with args and env (added to this process's environment), its output
// going to logDir/name.log.
func startProcess(name, path string, args, env []string, logDir string) (*Process, error) {
	logFile := filepath.Join(logDir, name+".log")
	f, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open log of %s: %w", name, err)
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	// Its own process group, so a Ctrl-C at the terminal reaches the test binary, which
	// stops everything in order, instead of every component at once.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("start %s (%s): %w", name, path, err)
	}
	p := &Process{Name: name, LogFile: logFile, cmd: cmd, log: f, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		_ = f.Close()
		close(p.done)
	}()
	return p, nil
}

// PID returns the process id.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// ErrExited is wrapped by the cause of a context from WhileRunning that ended because its
// process exited.
var ErrExited = errors.New("exited")

// WhileRunning returns a copy of ctx that also ends when the process exits, with a cause
// (context.Cause) that wraps ErrExited and holds the end of the process's log: a wait for
// something the process should do (poll.Until) stops, and says why, when it no longer can. The
// cancel function releases it.
func (p *Process) WhileRunning(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(ctx)
	go func() {
		select {
		case <-p.done:
			// The cluster's folder goes when Start fails, so the cause carries the log's end.
			cancel(fmt.Errorf("%s %w: %w; the end of its log %s:\n%s", p.Name, ErrExited, exitErr(p.waitErr), p.LogFile, logTail(p.LogFile, 20)))
		case <-ctx.Done():
		}
	}()
	return ctx, func() { cancel(nil) }
}

// Exited reports whether the process has exited, and its wait error if so.
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.waitErr
	default:
		return false, nil
	}
}

// Stop sends SIGTERM, waits up to ten seconds, then sends SIGKILL to the process group, and
// waits for the process to be gone. An exit caused by the SIGTERM is not an error; a process
// that had already died on its own or needed SIGKILL is.
func (p *Process) Stop() error {
	p.stop.Do(func() {
		select {
		case <-p.done:
			p.stopErr = fmt.Errorf("%s had exited before it was stopped: %w (log: %s)", p.Name, exitErr(p.waitErr), p.LogFile)
			return
		default:
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
			return
		case <-time.After(stopTimeout):
		}
		// The group too: a component may have children of its own.
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
		p.stopErr = fmt.Errorf("%w: %s did not exit within %s of SIGTERM (log: %s)", errKilled, p.Name, stopTimeout, p.LogFile)
	})
	return p.stopErr
}

func exitErr(err error) error {
	if err == nil {
		return errors.New("exit status 0")
	}
	return err
}

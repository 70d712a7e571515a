package kubelet

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Crash-loop back-off: the first restart is immediate, then the delay doubles from
// backoffInitial up to backoffMax, and resets once a container has run for backoffReset.
// The real kubelet uses 10s doubling to 5m, reset after 10m; these are short so tests of
// restarts take seconds.
const (
	backoffInitial = time.Second
	backoffMax     = 10 * time.Second
	backoffReset   = 10 * time.Second
	// retryConfig is how long a container whose configuration cannot be resolved (a missing
	// ConfigMap, say) waits before trying again.
	retryConfig = 2 * time.Second
)

// containerState is what the kubelet knows about one container; the pod worker turns it into a
// ContainerStatus.
type containerState struct {
	state, last  corev1.ContainerState
	restarts     int32
	ready        bool
	started      bool
	containerID  string
	imageID      string
	startedProbe bool // whether a startup probe has passed (or there is none)
}

// containerRunner runs one container of a pod: it starts the image's executable, restarts it as
// the restart policy says, runs its probes and stops it when asked.
type containerRunner struct {
	w    *podWorker
	spec *corev1.Container

	mu    sync.Mutex
	st    containerState
	grace time.Duration // grace period of the stop request, set before stop is closed

	stop     chan struct{}
	stopOnce sync.Once
	restart  chan string // a probe asks for a restart, with the reason
	done     chan struct{}
}

func newContainerRunner(w *podWorker, spec *corev1.Container) *containerRunner {
	return &containerRunner{
		w:       w,
		spec:    spec,
		st:      containerState{state: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}}},
		stop:    make(chan struct{}),
		restart: make(chan string, 1),
		done:    make(chan struct{}),
	}
}

// requestStop asks the container to stop for good: SIGTERM, then SIGKILL after grace.
func (r *containerRunner) requestStop(grace time.Duration) {
	r.stopOnce.Do(func() {
		r.mu.Lock()
		r.grace = grace
		r.mu.Unlock()
		close(r.stop)
	})
}

func (r *containerRunner) stopping() bool {
	select {
	case <-r.stop:
		return true
	default:
		return false
	}
}

// snapshot returns a copy of the container's state.
func (r *containerRunner) snapshot() containerState {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.st
	st.state = *st.state.DeepCopy()
	st.last = *st.last.DeepCopy()
	return st
}

// update changes the state under the lock and tells the pod worker its status changed.
func (r *containerRunner) update(f func(st *containerState)) {
	r.mu.Lock()
	f(&r.st)
	r.mu.Unlock()
	r.w.markDirty()
}

func (r *containerRunner) logf(format string, args ...any) {
	r.w.logf("container "+r.spec.Name+": "+format, args...)
}

// sleep waits d or until the container is asked to stop; it reports false in the latter case.
func (r *containerRunner) sleep(d time.Duration) bool {
	if d <= 0 {
		return !r.stopping()
	}
	select {
	case <-r.stop:
		return false
	case <-r.w.k.clock.After(d):
		return true
	}
}

func (r *containerRunner) setWaiting(reason, message string) {
	r.update(func(st *containerState) {
		st.state = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: message}}
		st.ready, st.started = false, false
	})
}

// run is the container's life: start, supervise, restart with back-off, until it must not
// restart or is asked to stop.
func (r *containerRunner) run(ctx context.Context) {
	defer close(r.done)
	pod := r.w.currentPod()
	exe, ok := r.w.k.opts.Images[r.spec.Image]
	if !ok {
		msg := fmt.Sprintf("image %q is not one the process kubelet can run (known: %v); build it into e2e/apps and list it in Options.Images",
			r.spec.Image, r.w.k.imageNames())
		r.logf("unknown image %q", r.spec.Image)
		r.setWaiting("ErrImagePull", msg)
		if r.sleep(time.Second) {
			r.setWaiting("ImagePullBackOff", "Back-off pulling image "+strconv.Quote(r.spec.Image)+": "+msg)
		}
		<-r.stop
		return
	}

	backoff := time.Duration(0)
	ran := false
	for !r.stopping() {
		env, err := containerEnv(ctx, r.w.k.opts.Client, pod, r.spec, r.w.addrs())
		if err != nil {
			r.logf("cannot compose environment: %v", err)
			r.setWaiting("CreateContainerConfigError", err.Error())
			r.sleep(retryConfig)
			continue
		}
		select { // a restart asked for by the previous run's probes is done
		case <-r.restart:
		default:
		}
		p, err := r.start(exe, env)
		if err != nil {
			r.logf("cannot start: %v", err)
			r.setWaiting("RunContainerError", err.Error())
			r.sleep(retryConfig)
			continue
		}
		startedAt := metav1.Now().Rfc3339Copy()
		r.update(func(st *containerState) {
			if ran {
				st.restarts++
			}
			st.state = corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: startedAt}}
			st.containerID = "process://" + strconv.Itoa(p.pid)
			st.imageID = "file://" + exe
			st.startedProbe = r.spec.StartupProbe == nil
			st.started = st.startedProbe
			st.ready = st.started && r.spec.ReadinessProbe == nil
		})
		ran = true
		r.logf("started pid=%d", p.pid)

		probeCtx, cancelProbes := context.WithCancel(ctx)
		var probes sync.WaitGroup
		r.startProbes(probeCtx, &probes, env.environ())
		reason := r.supervise(p)
		cancelProbes()
		probes.Wait()

		code, exitReason, message := p.exit()
		finished := metav1.Now().Rfc3339Copy()
		terminated := corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
			ExitCode: code, Reason: exitReason, Message: message, StartedAt: startedAt, FinishedAt: finished,
			ContainerID: "process://" + strconv.Itoa(p.pid),
		}}
		r.logf("exited pid=%d exitCode=%d reason=%s%s", p.pid, code, exitReason, reason)
		r.update(func(st *containerState) {
			st.state = terminated
			st.ready, st.started = false, false
		})
		if r.stopping() || !shouldRestart(pod.Spec.RestartPolicy, code) {
			break
		}

		if finished.Sub(startedAt.Time) >= backoffReset {
			backoff = 0
		}
		delay := backoff
		backoff = min(max(2*backoff, backoffInitial), backoffMax)
		r.update(func(st *containerState) {
			st.last = terminated
			if delay > 0 {
				st.state = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{
					Reason:  "CrashLoopBackOff",
					Message: fmt.Sprintf("back-off %s restarting failed container=%s pod=%s_%s(%s)", delay, r.spec.Name, pod.Name, pod.Namespace, pod.UID),
				}}
			} else {
				st.state = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}}
			}
		})
		if delay > 0 {
			r.logf("back-off %s before restart", delay)
		}
		r.sleep(delay)
	}
	<-r.stop
}

// shouldRestart says whether a container that exited with code restarts under policy.
func shouldRestart(policy corev1.RestartPolicy, code int32) bool {
	switch policy {
	case corev1.RestartPolicyNever:
		return false
	case corev1.RestartPolicyOnFailure:
		return code != 0
	default:
		return true
	}
}

// supervise waits for the process to exit, stopping it when asked to stop or restart; it
// returns a note on why it ended for the log.
func (r *containerRunner) supervise(p *process) string {
	select {
	case <-p.exited:
		return ""
	case <-r.stop:
		r.mu.Lock()
		grace := r.grace
		r.mu.Unlock()
		r.kill(p, grace)
		return " (stopped)"
	case why := <-r.restart:
		r.logf("%s; restarting", why)
		r.kill(p, r.probeGrace())
		return " (" + why + ")"
	}
}

// probeGrace is the grace period for a restart a probe asked for: the pod's, as no probe-level
// terminationGracePeriodSeconds is honoured separately here.
func (r *containerRunner) probeGrace() time.Duration {
	pod := r.w.currentPod()
	if g := r.spec.LivenessProbe; g != nil && g.TerminationGracePeriodSeconds != nil {
		return time.Duration(*g.TerminationGracePeriodSeconds) * time.Second
	}
	return podGrace(pod)
}

// kill sends SIGTERM to the container's process group, SIGKILL after grace (or earlier if a
// stop with a shorter grace arrives meanwhile), and waits for the process to exit.
func (r *containerRunner) kill(p *process, grace time.Duration) {
	p.signal(syscall.SIGTERM)
	deadline := r.w.k.clock.Now().Add(grace)
	timer := r.w.k.clock.NewTimer(grace)
	defer timer.Stop()
	stop := r.stop
	for {
		select {
		case <-p.exited:
			return
		case <-timer.C():
			p.signal(syscall.SIGKILL)
			<-p.exited
			return
		case <-stop:
			stop = nil
			r.mu.Lock()
			g := r.grace
			r.mu.Unlock()
			if d := r.w.k.clock.Now().Add(g); d.Before(deadline) {
				deadline = d
				timer.Stop()
				timer = r.w.k.clock.NewTimer(g)
			}
		}
	}
}

// startProbes starts the container's probers: the startup probe first, and the readiness and
// liveness probes once it passed (at once when there is none).
func (r *containerRunner) startProbes(ctx context.Context, wg *sync.WaitGroup, env []string) {
	target := probeTarget{podIP: r.w.addrs().podIP, ports: r.spec.Ports, env: env}
	startRest := func() {
		if p := r.spec.ReadinessProbe; p != nil {
			r.runProber(ctx, wg, probeReadiness, p, target, func(ok bool, err error) {
				r.update(func(st *containerState) { st.ready = ok && st.state.Running != nil })
				r.logProbe(probeReadiness, ok, err)
			})
		}
		if p := r.spec.LivenessProbe; p != nil {
			r.runProber(ctx, wg, probeLiveness, p, target, func(ok bool, err error) {
				r.logProbe(probeLiveness, ok, err)
				if !ok {
					r.requestRestart(fmt.Sprintf("liveness probe failed: %v", err))
				}
			})
		}
	}
	p := r.spec.StartupProbe
	if p == nil {
		startRest()
		return
	}
	r.runProber(ctx, wg, probeStartup, p, target, func(ok bool, err error) {
		r.logProbe(probeStartup, ok, err)
		if !ok {
			r.requestRestart(fmt.Sprintf("startup probe failed: %v", err))
			return
		}
		r.update(func(st *containerState) {
			st.startedProbe, st.started = true, true
			st.ready = r.spec.ReadinessProbe == nil
		})
		startRest()
	})
}

func (r *containerRunner) runProber(ctx context.Context, wg *sync.WaitGroup, kind string, p *corev1.Probe, target probeTarget, onChange func(bool, error)) {
	check, err := probeCheck(p, target)
	if err != nil {
		r.logf("%s probe is invalid: %v", kind, err)
		check = func(context.Context) error { return err }
	}
	pr := &prober{kind: kind, probe: p, clock: r.w.k.clock, check: check, onChange: onChange}
	wg.Go(func() { pr.run(ctx) })
}

func (r *containerRunner) logProbe(kind string, ok bool, err error) {
	if ok {
		r.logf("%s probe succeeded", kind)
		return
	}
	r.logf("%s probe failed: %v", kind, err)
}

// requestRestart asks the supervisor to restart the container; a pending request is enough.
func (r *containerRunner) requestRestart(why string) {
	select {
	case r.restart <- why:
	default:
	}
}

// process is a running container process, the leader of its own process group.
type process struct {
	cmd    *exec.Cmd
	pid    int
	exited chan struct{}
}

// start starts the container's process with stdout and stderr appended to its log file.
func (r *containerRunner) start(exe string, env *envList) (*process, error) {
	pod := r.w.currentPod()
	logPath := filepath.Join(r.w.k.opts.LogDir, pod.Namespace+"_"+pod.Name+"_"+r.spec.Name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open container log: %w", err)
	}
	defer f.Close() // the child has its own copy
	dir := r.spec.WorkingDir
	if dir == "" {
		dir = "/"
	}
	cmd := &exec.Cmd{
		Path:   exe,
		Args:   containerArgs(r.spec, env),
		Env:    env.environ(),
		Dir:    dir,
		Stdout: f,
		Stderr: f,
		// Its own process group, so stopping the container stops its children too; and
		// killed if the kubelet's process dies, so no container outlives a crashed test.
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL},
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", exe, err)
	}
	p := &process{cmd: cmd, pid: cmd.Process.Pid, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		// The container is gone once its main process is; take what it left behind with it.
		_ = syscall.Kill(-p.pid, syscall.SIGKILL)
		close(p.exited)
	}()
	return p, nil
}

// signal sends sig to the process group.
func (p *process) signal(sig syscall.Signal) {
	if err := syscall.Kill(-p.pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		_ = p.cmd.Process.Signal(sig)
	}
}

// exit returns the exit code as a container runtime reports it (128+signal for a signal), and
// the reason Kubernetes shows; call it only after exited is closed.
func (p *process) exit() (code int32, reason, message string) {
	ps := p.cmd.ProcessState
	if ps == nil {
		return 128, "Error", "process state unknown"
	}
	ws, _ := ps.Sys().(syscall.WaitStatus)
	switch {
	case ws.Signaled():
		return int32(128 + int(ws.Signal())), "Error", "killed by signal " + ws.Signal().String()
	case ps.ExitCode() == 0:
		return 0, "Completed", ""
	default:
		return int32(ps.ExitCode()), "Error", ""
	}
}

// imageNames returns the known images, sorted, for error messages.
func (k *Kubelet) imageNames() []string {
	names := make([]string, 0, len(k.opts.Images))
	for n := range k.opts.Images {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

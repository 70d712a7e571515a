package framework

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// Control-plane faults: tests stop etcd or the API server and start it again, to check what
// clients of the API (lobby's informers, KEDA, the controller manager) do meanwhile and after.
// A component comes back with the flags, address, certificates and data of its first start,
// as it would after a restart on a control-plane node; its output is appended to the same
// log, between marker lines, so DumpLogs tells the whole story.

// Outage is a time a control-plane component was down or coming back: from the moment it was
// told to stop until it was ready again (for etcd, until the API server was ready on it again).
type Outage struct {
	// Component is kube-apiserver or etcd.
	Component string
	// From is when it was told to stop; To when it was ready again, zero while it is not.
	From, To time.Time
}

// Outages returns the outages the cluster's faults caused, oldest first. A restarted API server
// answers before its caches are filled (its RBAC authorizer denies requests until it has read
// the roles), so checks of what clients logged skip these windows.
func (c *Cluster) Outages() []Outage {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Outage(nil), c.outages...)
}

// addrInUseRetries bounds the starts StartAPIServer and StartEtcd try when the component's
// port is taken. A client connection may hold the same port number as its source port while
// the component is down; such connections are short-lived, so a later start succeeds.
const addrInUseRetries = 5

// StopAPIServer stops kube-apiserver (SIGTERM, SIGKILL after ten seconds) and returns once it
// has exited: from then until StartAPIServer, every connection to the API is refused. It is an
// error when the API server is not running.
func (c *Cluster) StopAPIServer() error {
	return c.stopComponent("kube-apiserver", &c.apiServer)
}

// StartAPIServer starts kube-apiserver again, on the same address with the same flags,
// certificates and etcd, and waits until its /readyz answers 200. Clients built before
// (Cluster.Kube, Cluster.Client, the kubeconfigs) keep working, as do service-account tokens:
// the signing key is the same. It is an error when the API server is running.
func (c *Cluster) StartAPIServer(ctx context.Context) error {
	if err := c.startComponent(ctx, "kube-apiserver", "kube-apiserver", &c.apiServer, c.apiServerArgs, c.apiServerReady); err != nil {
		return err
	}
	c.endOutage("kube-apiserver")
	return nil
}

// RestartAPIServer stops kube-apiserver, keeps it down for down from the moment it has exited,
// and starts it again (see StopAPIServer and StartAPIServer). If ctx ends during the outage the
// API server stays down and the error says so.
func (c *Cluster) RestartAPIServer(ctx context.Context, down time.Duration) error {
	return c.restart(ctx, down, "kube-apiserver", c.StopAPIServer, c.StartAPIServer)
}

// StopEtcd stops etcd and returns once it has exited. The API server keeps running and
// answers what it can from its watch cache; writes fail. It is an error when etcd is not
// running.
func (c *Cluster) StopEtcd() error {
	return c.stopComponent("etcd", &c.etcd)
}

// StartEtcd starts etcd again on the same addresses with the same data folder, so every object
// and its resource version survive, waits for its /health and then, when the API server is
// running, for the API server's /readyz (which checks its link to etcd). It is an error when
// etcd is running.
func (c *Cluster) StartEtcd(ctx context.Context) error {
	if err := c.startComponent(ctx, "etcd", "etcd", &c.etcd, c.etcdArgs, c.etcdReady()); err != nil {
		return err
	}
	c.mu.Lock()
	api := c.apiServer
	c.mu.Unlock()
	if exited, _ := api.Exited(); !exited {
		if err := waitFor(ctx, "kube-apiserver back on etcd", api, c.apiServerReady); err != nil {
			return err
		}
	}
	c.endOutage("etcd")
	return nil
}

// RestartEtcd stops etcd, keeps it down for down from the moment it has exited, and starts it
// again with the same data (see StopEtcd and StartEtcd).
func (c *Cluster) RestartEtcd(ctx context.Context, down time.Duration) error {
	return c.restart(ctx, down, "etcd", c.StopEtcd, c.StartEtcd)
}

// restart runs stop, waits down, and runs start.
func (c *Cluster) restart(ctx context.Context, down time.Duration, name string, stop func() error, start func(context.Context) error) error {
	if err := stop(); err != nil {
		return err
	}
	t := time.NewTimer(down)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return fmt.Errorf("restart %s: %w; it was left stopped", name, ctx.Err())
	case <-t.C:
	}
	return start(ctx)
}

// stopComponent stops the process in slot.
func (c *Cluster) stopComponent(name string, slot **Process) error {
	c.restarts.Lock()
	defer c.restarts.Unlock()
	c.mu.Lock()
	p, stopped := *slot, c.stopped
	c.mu.Unlock()
	if stopped {
		return fmt.Errorf("stop %s: the cluster has been stopped", name)
	}
	if p == nil {
		return fmt.Errorf("stop %s: the cluster runs none", name)
	}
	if exited, err := p.Exited(); exited {
		return fmt.Errorf("stop %s: not running (%v)", name, exitErr(err))
	}
	t0 := time.Now()
	c.mu.Lock()
	c.outages = append(c.outages, Outage{Component: name, From: t0})
	c.mu.Unlock()
	markLog(p.LogFile, "stopping "+name+" (SIGTERM)")
	err := p.Stop()
	if errors.Is(err, errKilled) {
		// It is gone all the same, which is what a test of an outage needs.
		c.progress("%s needed SIGKILL to stop", name)
		err = nil
	}
	markLog(p.LogFile, name+" stopped")
	if err != nil {
		return fmt.Errorf("stop %s: %w", name, err)
	}
	c.progress("%s stopped in %s", name, time.Since(t0).Round(time.Millisecond))
	return nil
}

// startComponent starts binary with args in place of the exited process in slot and waits for
// ready. The new process takes the old one's place in Processes, so Stop still stops the
// components in reverse start order and nothing is stopped twice.
func (c *Cluster) startComponent(ctx context.Context, name, binary string, slot **Process, args []string, ready func(context.Context) error) error {
	c.restarts.Lock()
	defer c.restarts.Unlock()
	c.mu.Lock()
	old := *slot
	c.mu.Unlock()
	if old == nil {
		return fmt.Errorf("start %s: the cluster never ran one", name)
	}
	if exited, _ := old.Exited(); !exited {
		return fmt.Errorf("start %s: still running as pid %d", name, old.PID())
	}
	path, err := binPath(c.binDir, binary)
	if err != nil {
		return err
	}
	t0 := time.Now()
	for attempt := 1; ; attempt++ {
		from := logSize(old.LogFile)
		markLog(old.LogFile, "starting "+name+" again")
		p, err := startProcess(name, path, args, nil, c.LogDir)
		if err != nil {
			return err
		}
		if err := c.replaceProcess(old, p, slot); err != nil {
			_ = p.Stop()
			return fmt.Errorf("start %s: %w", name, err)
		}
		old = p
		err = waitFor(ctx, name, p, ready)
		if err == nil {
			c.progress("%s ready again in %s", name, time.Since(t0).Round(time.Millisecond))
			return nil
		}
		if exited, _ := p.Exited(); !exited || attempt == addrInUseRetries || !strings.Contains(logFrom(p.LogFile, from), "address already in use") {
			return fmt.Errorf("start %s again: %w", name, err)
		}
		c.progress("%s: its port was in use; starting it again", name)
		select {
		case <-ctx.Done():
			return fmt.Errorf("start %s again: %w", name, ctx.Err())
		case <-time.After(time.Second):
		}
	}
}

// endOutage records that component is ready again.
func (c *Cluster) endOutage(component string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := len(c.outages) - 1; i >= 0; i-- {
		if o := &c.outages[i]; o.Component == component && o.To.IsZero() {
			o.To = time.Now()
			return
		}
	}
}

// replaceProcess puts p in old's place in the process list and in slot. It fails when the
// cluster has been stopped meanwhile: the caller must stop p itself.
func (c *Cluster) replaceProcess(old, p *Process, slot **Process) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return errors.New("the cluster has been stopped")
	}
	for i, q := range c.processes {
		if q == old {
			c.processes[i] = p
			*slot = p
			return nil
		}
	}
	return fmt.Errorf("%s (pid %d) is not one of the cluster's processes", old.Name, old.PID())
}

// markLog appends a line saying what the harness did to a component's log.
func markLog(file, what string) {
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "===== e2e framework, %s: %s =====\n", time.Now().Format("15:04:05.000"), what)
}

// logSize returns the size of file, or 0 when it cannot be read.
func logSize(file string) int64 {
	fi, err := os.Stat(file)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// logFrom returns file's content from offset on.
func logFrom(file string, offset int64) string {
	f, err := os.Open(file)
	if err != nil {
		return ""
	}
	defer f.Close()
	b, _ := io.ReadAll(io.NewSectionReader(f, offset, 1<<20))
	return string(b)
}

package deploy

import (
	"context"
	"fmt"
	"slices"
)

// Faults of lobby's own processes: tests restart a process where it stands, as the kubelet
// restarts a container that exited, and take an instance out of its Services before they signal
// it, as a cluster does with a pod being deleted.

// Unpublish takes in out of its Services' EndpointSlices and DNS names, as the endpoints
// controller drops a terminating pod, and leaves the process running: the caller decides when to
// signal it (in.Process.Stop), and the cluster's Stop ends it otherwise. In a cluster, SIGTERM
// and the endpoint update race each other; calling Unpublish after the signal reproduces the
// order in which an ingress learns of the change last.
func (l *Lobby) Unpublish(ctx context.Context, in *Instance) error {
	l.mu.Lock()
	n := len(l.instances[in.Component])
	l.instances[in.Component] = slices.DeleteFunc(l.instances[in.Component], func(x *Instance) bool { return x == in })
	removed := n != len(l.instances[in.Component])
	l.mu.Unlock()
	if !removed {
		return fmt.Errorf("unpublish %s: not a published instance of %s", in.Process.Name, in.Component)
	}
	return l.publish(ctx)
}

// StopInPlace stops in's process (SIGTERM, SIGKILL after ten seconds) and waits for it to exit,
// but keeps in listed in its Services' EndpointSlices and DNS names, as a pod whose container
// exited keeps its address and its place in the Service. Unlike a pod's endpoint, the entry stays
// ready meanwhile: clients that dial it are refused until StartInPlace. The error is the
// process's Stop error: nil when it exited on SIGTERM.
func (l *Lobby) StopInPlace(in *Instance) error {
	if !l.listed(in) {
		return fmt.Errorf("stop %s in place: not a published instance of %s", in.Process.Name, in.Component)
	}
	return in.Process.Stop()
}

// StartInPlace starts a new process of in's component at in's address, as the kubelet restarts
// a container in the same pod, waits for its readiness probe, and puts it in in's place in the
// Services. in must have been stopped with StopInPlace; the returned instance replaces it.
func (l *Lobby) StartInPlace(ctx context.Context, in *Instance) (*Instance, error) {
	if exited, _ := in.Process.Exited(); !exited {
		return nil, fmt.Errorf("start %s in place: it is still running; stop it with StopInPlace first", in.Process.Name)
	}
	if !l.listed(in) {
		return nil, fmt.Errorf("start %s in place: not a published instance of %s", in.Process.Name, in.Component)
	}
	l.mu.Lock()
	// A process name is unique per cluster (it names the log), so the new one gets the next
	// serial number, as a restarted container gets a new container ID.
	name := fmt.Sprintf("%s-%s-%d", l.Release, in.Component, l.serial[in.Component])
	l.serial[in.Component]++
	l.mu.Unlock()
	next, err := l.launch(ctx, name, l.specs[in.Component], in.Addr)
	if err != nil {
		return nil, fmt.Errorf("start %s in place of %s: %w", name, in.Process.Name, err)
	}
	l.mu.Lock()
	if i := slices.Index(l.instances[in.Component], in); i >= 0 {
		l.instances[in.Component][i] = next
	} else {
		l.instances[in.Component] = append(l.instances[in.Component], next)
	}
	l.mu.Unlock()
	if err := l.publish(ctx); err != nil {
		return nil, err
	}
	return next, nil
}

// Restart stops in and starts it again in place (see StopInPlace and StartInPlace).
func (l *Lobby) Restart(ctx context.Context, in *Instance) (*Instance, error) {
	if err := l.StopInPlace(in); err != nil {
		return nil, err
	}
	return l.StartInPlace(ctx, in)
}

// listed reports whether in is one of the published instances of its component.
func (l *Lobby) listed(in *Instance) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Contains(l.instances[in.Component], in)
}

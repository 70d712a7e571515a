// Package coldstart records the timeline of a request held through a scale from zero: when the
// request went in, when an interceptor pushed the activation, when KEDA scaled the Deployment,
// when the pod started and turned ready, and when the response came back. The end-to-end suite
// and `make demo` print it.
package coldstart

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/lobby-http/lobby/e2e/framework"
	"github.com/lobby-http/lobby/internal/stream"
)

// Timeline records when each step was first seen. Its methods are safe for concurrent use.
type Timeline struct {
	mu    sync.Mutex
	start time.Time
	steps map[string]time.Time
	order []string
}

// NewTimeline returns an empty timeline; Begin starts it.
func NewTimeline() *Timeline {
	return &Timeline{start: time.Now(), steps: map[string]time.Time{}}
}

// Begin makes now the time offsets count from, marks step at it and returns it.
func (tl *Timeline) Begin(step string) time.Time {
	now := time.Now()
	tl.mu.Lock()
	tl.start = now
	tl.mu.Unlock()
	tl.Mark(step, now)
	return now
}

// Mark records step at the time given, unless it was recorded already.
func (tl *Timeline) Mark(step string, at time.Time) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	if _, ok := tl.steps[step]; !ok {
		tl.steps[step] = at
		tl.order = append(tl.order, step)
	}
}

// Offset returns when step was seen, from the start, and whether it was.
func (tl *Timeline) Offset(step string) (time.Duration, bool) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	at, ok := tl.steps[step]
	return at.Sub(tl.start), ok
}

// String lists the steps in time order, each with its offset from the start and the time since
// the step before.
func (tl *Timeline) String() string {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	steps := slices.Clone(tl.order)
	slices.SortStableFunc(steps, func(a, b string) int { return tl.steps[a].Compare(tl.steps[b]) })
	var b strings.Builder
	prev := tl.start
	for _, s := range steps {
		at := tl.steps[s]
		fmt.Fprintf(&b, "  %9s  (+%-8s)  %s\n", at.Sub(tl.start).Round(time.Millisecond), at.Sub(prev).Round(time.Millisecond), s)
		prev = at
	}
	return b.String()
}

// Steps Watch marks.
const (
	StepActivation = "activation pushed by the interceptor"
	StepScaled     = "KEDA scaled the Deployment up"
	StepPodCreated = "pod created"
	StepPodStarted = "pod's process started"
	StepPodReady   = "pod ready"
)

// Watch marks on tl, until ctx ends, the activation of route (namespace/name) on the push streams
// of the interceptors at adminURLs, subscribed to through admin, and the scale-up, start and
// readiness of the Deployment namespace/name's pods. It polls the API server every 10 ms, so the
// marks are that precise.
func Watch(ctx context.Context, c client.Client, admin *framework.Admin, adminURLs []string, namespace, name string, tl *Timeline) {
	key := namespace + "/" + name
	for _, u := range adminURLs {
		go watchStream(ctx, admin, u, key, tl)
	}
	go func() {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			var dep appsv1.Deployment
			if c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, &dep) != nil || dep.Spec.Selector == nil {
				continue
			}
			if dep.Spec.Replicas != nil && *dep.Spec.Replicas > 0 {
				tl.Mark(StepScaled, time.Now())
			}
			var pods corev1.PodList
			if c.List(ctx, &pods, client.InNamespace(namespace), client.MatchingLabels(dep.Spec.Selector.MatchLabels)) != nil {
				continue
			}
			for _, p := range pods.Items {
				tl.Mark(StepPodCreated, time.Now())
				for _, cs := range p.Status.ContainerStatuses {
					if cs.State.Running != nil {
						tl.Mark(StepPodStarted, time.Now())
					}
				}
				for _, cond := range p.Status.Conditions {
					if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
						tl.Mark(StepPodReady, time.Now())
					}
				}
			}
		}
	}()
}

// watchStream subscribes to one interceptor's push stream and marks the route's activation.
func watchStream(ctx context.Context, admin *framework.Admin, adminURL, key string, tl *Timeline) {
	resp, err := admin.Stream(ctx, adminURL)
	if err != nil {
		return
	}
	defer resp.Body.Close()
	dec := stream.NewDecoder(resp.Body, stream.DefaultMaxFrameBytes)
	for {
		var f stream.Frame
		if dec.Decode(&f) != nil {
			return
		}
		if f.Kind != stream.KindActivate {
			continue
		}
		for _, r := range f.Routes {
			if r.Key == key {
				tl.Mark(StepActivation, time.Now())
			}
		}
	}
}

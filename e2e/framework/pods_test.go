package framework_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/lobby-http/lobby/e2e/framework/poll"
)

// podPIDs returns the processes whose environment has POD_NAME=name: the containers of that pod,
// as the process kubelet runs them.
func podPIDs(name string) []int {
	want := []byte("POD_NAME=" + name + "\x00")
	var pids []int
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		env, err := os.ReadFile(filepath.Join(d, "environ"))
		if err != nil || !bytes.Contains(append(env, 0), want) {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(d))
		pids = append(pids, pid)
	}
	return pids
}

// onlyPod returns the single pod of ns, or an error.
func onlyPod(t *testing.T, ns string) (*corev1.Pod, error) {
	var pods corev1.PodList
	if err := cluster(t).Client.List(t.Context(), &pods, client.InNamespace(ns)); err != nil {
		return nil, err
	}
	live := pods.Items[:0]
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil {
			live = append(live, p)
		}
	}
	if len(live) != 1 {
		return nil, fmt.Errorf("%d live pods, want 1", len(live))
	}
	return &live[0], nil
}

func TestPodDeletionAndRestarts(t *testing.T) {
	c := cluster(t)
	if c.Images == nil {
		t.Skip("the cluster runs without the process kubelet")
	}
	ctx := t.Context()

	t.Run("Deleting a pod stops its process, and its ReplicaSet's new pod gets a new one.", func(t *testing.T) {
		ns := namespace(t, c)
		dep, _ := echoDeployment(ns, "deleted", 1)
		if err := c.Client.Create(ctx, dep); err != nil {
			t.Fatal(err)
		}
		var first *corev1.Pod
		var pids []int
		if err := poll.Until(t.Context(), 30*time.Second, "the pod's process to run", func() (err error) {
			if first, err = onlyPod(t, ns); err != nil {
				return err
			}
			if pids = podPIDs(first.Name); len(pids) != 1 {
				return fmt.Errorf("%d processes of pod %s", len(pids), first.Name)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if err := c.Client.Delete(ctx, first); err != nil {
			t.Fatal(err)
		}
		if err := poll.Until(t.Context(), 15*time.Second, "the deleted pod's process to exit", func() error {
			if err := syscall.Kill(pids[0], 0); err == nil {
				return fmt.Errorf("process %d of deleted pod %s still runs", pids[0], first.Name)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if err := poll.Until(t.Context(), 30*time.Second, "a replacement pod with its own process", func() error {
			p, err := onlyPod(t, ns)
			if err != nil {
				return err
			}
			if p.Name == first.Name {
				return fmt.Errorf("only the deleted pod so far")
			}
			if n := len(podPIDs(p.Name)); n != 1 {
				return fmt.Errorf("%d processes of pod %s", n, p.Name)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("A crashing app is restarted and its restart count rises.", func(t *testing.T) {
		ns := namespace(t, c)
		dep, _ := echoDeployment(ns, "crasher", 1)
		ctr := &dep.Spec.Template.Spec.Containers[0]
		ctr.Env = append(ctr.Env, corev1.EnvVar{Name: "CRASH_AFTER", Value: "300ms"})
		if err := c.Client.Create(ctx, dep); err != nil {
			t.Fatal(err)
		}
		if err := poll.Until(t.Context(), 60*time.Second, "two restarts", func() error {
			p, err := onlyPod(t, ns)
			if err != nil {
				return err
			}
			if len(p.Status.ContainerStatuses) == 0 {
				return fmt.Errorf("no container status yet")
			}
			cs := p.Status.ContainerStatuses[0]
			if cs.RestartCount < 2 {
				return fmt.Errorf("restartCount = %d", cs.RestartCount)
			}
			if cs.LastTerminationState.Terminated == nil || cs.LastTerminationState.Terminated.ExitCode != 1 {
				return fmt.Errorf("last termination %+v, want exit code 1", cs.LastTerminationState.Terminated)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	})
}

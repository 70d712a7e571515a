package node

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestMountsUnder(t *testing.T) {
	mountinfo := `22 27 0:21 / /proc rw,relatime - proc proc rw
101 27 0:50 / /tmp/c/node/containerd/state/run/netns/cni-1 rw shared:5 - nsfs nsfs rw
102 27 0:51 / /tmp/c/node/kubelet/root/pods/u/volumes/kubernetes.io~projected/kube-api-access-x rw - tmpfs tmpfs rw
103 27 0:52 / /tmp/c/node/containerd/state/io.containerd.runtime.v2.task/k8s.io/abc/rootfs rw - overlay overlay rw
104 27 0:53 / /tmp/c/node2/elsewhere rw - tmpfs tmpfs rw
105 27 0:54 / /tmp/c/node/with\040space rw - tmpfs tmpfs rw
`
	file := filepath.Join(t.TempDir(), "mountinfo")
	if err := os.WriteFile(file, []byte(mountinfo), 0o644); err != nil {
		t.Fatal(err)
	}
	got := mountsUnder(file, "/tmp/c/node")
	want := []string{
		"/tmp/c/node/kubelet/root/pods/u/volumes/kubernetes.io~projected/kube-api-access-x",
		"/tmp/c/node/containerd/state/io.containerd.runtime.v2.task/k8s.io/abc/rootfs",
		"/tmp/c/node/containerd/state/run/netns/cni-1",
		"/tmp/c/node/with space",
	}
	if !slices.Equal(got, want) {
		t.Errorf("mountsUnder lists the mounts under the folder, deepest first, names unescaped:\ngot  %q\nwant %q", got, want)
	}
	if !mounted(file, "/proc") || mounted(file, "/tmp/c") {
		t.Error("mounted reports only mount points")
	}
}

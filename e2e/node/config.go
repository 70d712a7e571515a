package node

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
)

// cniBinDir is where Debian's containernetworking-plugins installs the plugins.
const cniBinDir = "/usr/lib/cni"

// bridgeName is the Linux bridge the pods of the real node are attached to, inside the cluster's
// network namespace.
const bridgeName = "lobby0"

// containerdConfig is containerd's configuration: its own root, state and sockets in the node's
// folder, so it never meets the machine's containerd, and a CRI plugin set up for this machine.
//
// restrict_oom_score_adj: this machine forbids lowering oom_score_adj, and without it runc fails
// every pod sandbox with "can't get final child's PID from pipe: EOF". The sandbox image cannot
// be pulled (no registry is reachable), so it is one imported under sandboxImage. Pod network
// namespaces are kept under the state folder, so none is left in the machine's /run/netns.
func containerdConfig(dir, sandboxImage string) string {
	return fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q

[grpc]
  address = %[3]q

[ttrpc]
  address = %[4]q

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = %[5]q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[6]q
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  enable_selinux = false

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %[7]q
    conf_dir = %[8]q
    max_conf_num = 1

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
`,
		filepath.Join(dir, "containerd", "root"),
		filepath.Join(dir, "containerd", "state"),
		socketPath(dir),
		filepath.Join(dir, "containerd", "ttrpc.sock"),
		filepath.Join(dir, "containerd", "opt"),
		sandboxImage,
		cniBinDir,
		filepath.Join(dir, "cni", "net.d"),
	)
}

// socketPath is containerd's CRI and API socket.
func socketPath(dir string) string { return filepath.Join(dir, "containerd", "containerd.sock") }

// cniConfig is the pod network: a bridge in the cluster's network namespace whose address is the
// pods' gateway, and host-local addresses from podCIDR. Traffic from a pod to the control plane
// (10.244.0.1 on the namespace's lo) is delivered locally by the gateway, so nothing is
// forwarded or masqueraded; pods reach each other across the bridge.
func cniConfig(dir string, podCIDR netip.Prefix, gateway netip.Addr) ([]byte, error) {
	conf := map[string]any{
		"cniVersion": "0.4.0",
		"name":       "lobby-e2e",
		"plugins": []any{
			map[string]any{
				"type":        "bridge",
				"bridge":      bridgeName,
				"isGateway":   true,
				"ipMasq":      false,
				"hairpinMode": true,
				"ipam": map[string]any{
					"type":    "host-local",
					"dataDir": filepath.Join(dir, "cni", "ipam"),
					"ranges":  [][]map[string]string{{{"subnet": podCIDR.String(), "gateway": gateway.String()}}},
					"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
				},
			},
		},
	}
	b, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode the CNI configuration: %w", err)
	}
	return b, nil
}

// kubeletConfig is the kubelet's KubeletConfiguration. The settings that differ from a
// production node, each needed on this machine or by the test cluster:
//   - failCgroupV1: false and cgroupDriver: cgroupfs: the machine has cgroup v1 controllers
//     mounted and no systemd;
//   - failSwapOn: false, localStorageCapacityIsolation: false: the kubelet would refuse to start
//     on this machine otherwise;
//   - authentication by client certificate only, AlwaysAllow authorization, and no read-only
//     port: nothing but the API server talks to it;
//   - no cluster DNS (the local cluster has none), image GC and eviction thresholds out of the
//     way (the images cannot be pulled again), pod logs in the node's folder.
func kubeletConfig(dir string, addr netip.Addr, port, healthzPort int, caFile string) string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: %[1]s
port: %[2]d
readOnlyPort: 0
healthzBindAddress: %[1]s
healthzPort: %[3]d
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: false
  x509:
    clientCAFile: %[4]q
authorization:
  mode: AlwaysAllow
containerRuntimeEndpoint: unix://%[5]s
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
localStorageCapacityIsolation: false
cgroupsPerQOS: true
enforceNodeAllocatable: ["pods"]
clusterDomain: cluster.local
resolvConf: ""
podLogsDir: %[6]q
maxPods: 30
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1%%"
  imagefs.available: "1%%"
rotateCertificates: false
serverTLSBootstrap: false
registerNode: true
nodeStatusReportFrequency: 10s
`, addr, port, healthzPort, caFile, socketPath(dir), filepath.Join(dir, "pod-logs"))
}

// writeFiles writes each file (path → content), creating its folder.
func writeFiles(files map[string][]byte) error {
	for path, content := range files {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
		if err := os.WriteFile(path, content, 0o644); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	return nil
}

// indent is for error messages quoting a command's output.
func indent(s string) string {
	return "\t" + strings.ReplaceAll(strings.TrimSpace(s), "\n", "\n\t")
}

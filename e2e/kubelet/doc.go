// Package kubelet is a process kubelet for end-to-end tests and the local demo: a node agent
// that runs each pod's containers as local processes, so a real control plane (kube-apiserver,
// kube-controller-manager, KEDA) drives real workloads on a machine with no container runtime.
//
// # What it does
//
// As far as the control plane can tell it is a node:
//
//   - It registers a Node (capacity: the machine's CPUs and memory, 250 pods; InternalIP the
//     first host address of the pod CIDR, 10.244.0.1) with a Ready condition, renews the node's
//     Lease in kube-node-lease every 5s and refreshes the Node status every 30s.
//   - It stands in for the scheduler: pods that name no node and the default scheduler are
//     bound to its node through the Binding subresource.
//   - It runs the pods bound to its node. Each pod gets a /32 address on the loopback device of
//     the network namespace the process runs in (e2e/netns), from the second /24 of the pod
//     CIDR upward; freed addresses are reused. A container's image names an executable
//     (Options.Images; prebuilt.Apps maps the apps of e2e/apps, built before the namespace is
//     entered, to images lobby.test/<name>).
//     argv is the container's command and args as Kubernetes composes them, the executable
//     standing in for the image's entrypoint (command[0] only names it); the environment is
//     the spec's env and envFrom with $(VAR) expansion, fieldRef (metadata.name, namespace,
//     uid, labels['k'], annotations['k'], spec.nodeName, spec.serviceAccountName,
//     status.podIP, status.hostIP), configMapKeyRef and secretKeyRef, plus PATH, HOME,
//     HOSTNAME and always POD_IP. stdout and stderr go to <LogDir>/<ns>_<pod>_<container>.log.
//   - Readiness, liveness and startup probes (httpGet, tcpSocket, grpc, exec) with their
//     delays, periods, timeouts and thresholds; readiness drives the Ready and ContainersReady
//     conditions, a failed liveness or startup probe restarts the container.
//   - restartPolicy Always, OnFailure and Never, with crash-loop back-off.
//   - Pod status through the status subresource, written only when it changed: phase,
//     conditions (PodScheduled, PodReadyToStartContainers, Initialized, ContainersReady,
//     Ready, honouring readiness gates), podIP(s), hostIP(s), startTime and container
//     statuses (state, last state, ready, started, restartCount).
//   - Deletion: SIGTERM to the container's process group, the deletion grace period (at least
//     2s, as in the kubelet), SIGKILL, then the pod is deleted with grace period 0 as the
//     kubelet finalizes it. When Start's context ends, every container is stopped the same way
//     (Options.ShutdownGracePeriod may shorten the wait) and every address removed.
//
// # What it does not do
//
// It pulls no images, and a container sees the machine's file system: no volumes (ConfigMaps,
// Secrets and service-account tokens are not mounted), no cgroups or resource limits, no
// users or security contexts, no init containers (a pod with any stays Pending with a
// message), no lifecycle hooks, no ephemeral containers, no service-link environment
// variables, no resourceFieldRef. When binding it honours a pod's nodeSelector (a pod that
// selects another node is left alone) but no affinity or taints. hostNetwork pods get the
// node's address.
//
// All pods share one network namespace, so an app must bind its own pod address ($POD_IP),
// never the wildcard: two pods listening on 0.0.0.0:8080 would collide. The sample apps in
// e2e/apps do so.
//
// Deviations in timing: crash-loop back-off restarts at once, then after 1s doubling to 10s,
// and resets after 10s of running (the kubelet: 10s doubling to 5m, reset after 10m), so tests
// of restarts take seconds. Exit codes of processes killed by a signal are reported as
// 128+signal, as container runtimes do.
package kubelet

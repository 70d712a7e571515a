// Command pause is the pod sandbox ("pause") image of the local cluster's real node: the process
// that holds a pod's namespaces while its containers come and go. No registry is reachable there,
// so containerd cannot pull registry.k8s.io/pause; hack/images builds this one as
// lobby.test/pause and the node imports it under the name containerd's sandbox_image names.
//
// It waits for SIGTERM or SIGINT and exits 0, as the upstream pause does.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	<-sigs
}

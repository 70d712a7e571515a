//go:build tools

// Package tools pins the Kubernetes and KEDA commands that the local cluster runs: the control
// plane, and the kubelet of its real node. It is a separate module so that the main module never
// depends on k8s.io/kubernetes.
package tools

import (
	_ "github.com/kedacore/keda/v2/cmd/adapter"
	_ "github.com/kedacore/keda/v2/cmd/operator"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubelet"
)

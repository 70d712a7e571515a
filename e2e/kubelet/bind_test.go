package kubelet

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestNeedsBinding(t *testing.T) {
	k := &Kubelet{opts: Options{NodeName: nodeName}}
	tests := []struct {
		name string
		spec corev1.PodSpec
		want bool
	}{
		{"a pod without nodeSelector is bound here", corev1.PodSpec{}, true},
		{"a pod selecting this node's hostname and OS is bound here",
			corev1.PodSpec{NodeSelector: map[string]string{corev1.LabelHostname: nodeName, corev1.LabelOSStable: "linux"}}, true},
		{"a pod selecting another node is left to that node",
			corev1.PodSpec{NodeSelector: map[string]string{corev1.LabelHostname: "real-node"}}, false},
		{"a pod selecting a label this node lacks is left alone",
			corev1.PodSpec{NodeSelector: map[string]string{"pool": "gpu"}}, false},
		{"a pod already bound is not bound again", corev1.PodSpec{NodeName: "elsewhere"}, false},
		{"a pod of another scheduler is left to it", corev1.PodSpec{SchedulerName: "custom"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := k.needsBinding(&corev1.Pod{Spec: tt.spec}); got != tt.want {
				t.Errorf("needsBinding = %t; want %t", got, tt.want)
			}
		})
	}
}

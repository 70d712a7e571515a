package node

import (
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

func TestServiceEntries(t *testing.T) {
	svc := func(name string, selector map[string]string) corev1.Service {
		return corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "lobby"}, Spec: corev1.ServiceSpec{Selector: selector}}
	}
	slice := func(svc string, ready map[string]bool) discoveryv1.EndpointSlice {
		s := discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{discoveryv1.LabelServiceName: svc}}}
		for addr, r := range ready {
			s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{addr}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(r)}})
		}
		return s
	}
	tests := []struct {
		name    string
		svcs    []corev1.Service
		slices  []discoveryv1.EndpointSlice
		want    []string
		wantErr string
	}{
		{
			name:   "a Service's names resolve to its ready endpoints only",
			svcs:   []corev1.Service{svc("lobby-scaler", map[string]string{"c": "scaler"})},
			slices: []discoveryv1.EndpointSlice{slice("lobby-scaler", map[string]bool{"10.246.0.5": true, "10.246.0.6": false}), slice("other", map[string]bool{"10.246.0.7": true})},
			want:   []string{"10.246.0.5 lobby-scaler.lobby.svc.cluster.local,lobby-scaler.lobby.svc,lobby-scaler.lobby"},
		},
		{
			name: "a Service without a selector is skipped",
			svcs: []corev1.Service{svc("manual", nil)},
		},
		{
			name:    "a Service with no ready endpoint is an error",
			svcs:    []corev1.Service{svc("lobby-scaler", map[string]string{"c": "scaler"})},
			slices:  []discoveryv1.EndpointSlice{slice("lobby-scaler", map[string]bool{"10.246.0.6": false})},
			wantErr: "no ready endpoint",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			entries, err := serviceEntries(tt.svcs, tt.slices)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v; want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, e := range entries {
				got = append(got, fmt.Sprintf("%s %s", e.Addr, strings.Join(e.Names, ",")))
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("entries:\ngot  %q\nwant %q", got, tt.want)
			}
		})
	}
}

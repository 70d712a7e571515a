package controller

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/lobby-http/lobby/operator/api/v1alpha1"
)

func TestDropForeignConditions(t *testing.T) {
	at := metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	tests := []struct {
		name string
		in   []metav1.Condition
		want []string
	}{
		{"lobby's own conditions are kept",
			[]metav1.Condition{{Type: v1alpha1.ConditionReady, LastTransitionTime: at}, {Type: v1alpha1.ConditionActive, LastTransitionTime: at},
				{Type: v1alpha1.ConditionScaledObjectReady, LastTransitionTime: at}},
			[]string{v1alpha1.ConditionReady, v1alpha1.ConditionActive, v1alpha1.ConditionScaledObjectReady}},
		{"the add-on's condition types are dropped",
			[]metav1.Condition{{Type: "Created", LastTransitionTime: at}, {Type: v1alpha1.ConditionReady, LastTransitionTime: at}, {Type: "Terminated", LastTransitionTime: at}},
			[]string{v1alpha1.ConditionReady}},
		{"a Ready condition without a transition time, as older add-on versions wrote it, is dropped",
			[]metav1.Condition{{Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: "HTTPScaledObjectIsReady"}},
			nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := v1alpha1.HTTPScaledObjectStatus{Conditions: tt.in}
			dropForeignConditions(&st)
			var got []string
			for _, c := range st.Conditions {
				got = append(got, c.Type)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("conditions = %q, want %q", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("conditions = %q, want %q", got, tt.want)
				}
			}
		})
	}
}

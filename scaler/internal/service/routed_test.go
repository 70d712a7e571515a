package service

import (
	"context"
	"testing"
	"time"

	"github.com/go-logr/logr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"

	"github.com/lobby-http/lobby/internal/externalscaler"
	"github.com/lobby-http/lobby/internal/httpso"
	"github.com/lobby-http/lobby/operator/api/v1alpha1"
	"github.com/lobby-http/lobby/scaler/internal/fleet"
)

// busyCounts reports every key busy, as counts under a shared key or from a stale interceptor
// would.
type busyCounts struct{}

func (busyCounts) Sum(string) fleet.Sum {
	return fleet.Sum{InFlight: 7, Held: 3, Rate: 12, Active: true, Interceptors: 1, Listed: 1}
}

func (busyCounts) Watch(string) *fleet.Watch { return nil }

func TestANotRoutedObjectIsNeitherActiveNorAsksForCapacity(t *testing.T) {
	objs := map[string]*v1alpha1.HTTPScaledObject{"victim/app": {}, "attacker/longer": {}}
	refused := httpso.Ref{Kind: httpso.KindHTTPScaledObject, Key: "attacker/longer"}
	s := New(objectsFake{objs: objs, synced: true, conflicts: map[httpso.Ref]httpso.Conflict{refused: {Winner: "victim/app"}}},
		busyCounts{}, logr.Discard())
	for _, tc := range []struct {
		name, ns, object string
		active           bool
		value            float64
	}{
		{"A routed object reports its counts.", "victim", "app", true, 10},
		{"An object refused its host reports nothing, whatever is counted under its key.", "attacker", "longer", false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ref := &externalscaler.ScaledObjectRef{Name: tc.object, Namespace: tc.ns, ScalerMetadata: map[string]string{MetadataKey: tc.object}}
			a, err := s.IsActive(t.Context(), ref)
			if err != nil || a.GetResult() != tc.active {
				t.Errorf("IsActive = %v, %v; want %v", a.GetResult(), err, tc.active)
			}
			m, err := s.GetMetrics(t.Context(), &externalscaler.GetMetricsRequest{ScaledObjectRef: ref})
			if err != nil || len(m.GetMetricValues()) != 1 || m.GetMetricValues()[0].GetMetricValueFloat() != tc.value {
				t.Errorf("GetMetrics = %v, %v; want %v", m.GetMetricValues(), err, tc.value)
			}
		})
	}
}

func TestInformerObjectsDecideConflictsAsTheInterceptorsDo(t *testing.T) {
	t0 := metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	t1 := metav1.NewTime(t0.Add(time.Minute))
	hso := func(ns, name string, created metav1.Time, host, path string) v1alpha1.HTTPScaledObject {
		return v1alpha1.HTTPScaledObject{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, CreationTimestamp: created},
			Spec: v1alpha1.HTTPScaledObjectSpec{Hosts: []string{host}, PathPrefixes: []string{path}}}
	}
	list := &v1alpha1.HTTPScaledObjectList{Items: []v1alpha1.HTTPScaledObject{
		hso("victim", "app", t0, "victim.example.com", "/"),
		hso("attacker", "longer", t1, "victim.example.com", "/api"),
	}}
	fw := watch.NewFake()
	inf := cache.NewSharedIndexInformer(listOnly{&cache.ListWatch{
		ListWithContextFunc:  func(context.Context, metav1.ListOptions) (runtime.Object, error) { return list, nil },
		WatchFuncWithContext: func(context.Context, metav1.ListOptions) (watch.Interface, error) { return fw, nil },
	}}, &v1alpha1.HTTPScaledObject{}, 0, cache.Indexers{})
	o := NewInformerObjects(inf, nil)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() { _ = o.Start(ctx) }()
	for deadline := time.Now().Add(5 * time.Second); !o.HasSynced(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("informer did not sync")
		}
	}
	attacker := httpso.Ref{Kind: httpso.KindHTTPScaledObject, Key: "attacker/longer"}
	if c, ok := o.Conflict(attacker); !ok || c.Owner == nil || c.Owner.Namespace != "victim" {
		t.Fatalf("Conflict(attacker/longer) = %+v, %v; want it refused, owned by namespace victim", c, ok)
	}
	if _, ok := o.Conflict(httpso.Ref{Kind: httpso.KindHTTPScaledObject, Key: "victim/app"}); ok {
		t.Error("the owner's object is reported not routed")
	}
	// The owner allows the attacker's namespace: the next answer follows the change.
	allowed := hso("victim", "app", t0, "victim.example.com", "/")
	allowed.ResourceVersion = "2"
	allowed.Annotations = map[string]string{httpso.AllowNamespacesAnnotation: "attacker"}
	fw.Modify(&allowed)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if _, ok := o.Conflict(attacker); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("attacker/longer is still not routed after the owner allowed its namespace")
		}
	}
}

// listOnly tells the reflector that its fake watch sends no initial events, so it lists first.
type listOnly struct{ *cache.ListWatch }

// IsWatchListSemanticsUnSupported reports that the watch cannot stream the initial list.
func (listOnly) IsWatchListSemanticsUnSupported() bool { return true }

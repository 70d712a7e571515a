package fleet

import (
	"context"
	"slices"
	"testing"

	"github.com/go-logr/logr/testr"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"
)

// recorder keeps the last targets it was given.
type recorder struct{ last chan []Target }

func (r *recorder) SetTargets(ts []Target) {
	select {
	case <-r.last:
	default:
	}
	r.last <- ts
}

func TestDiscoveryListsTheAdminPortOfEveryEndpointOfTheService(t *testing.T) {
	slice := func(ns, name, service string, ports []discoveryv1.EndpointPort, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
		return &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: service}},
			AddressType: discoveryv1.AddressTypeIPv4, Ports: ports, Endpoints: eps,
		}
	}
	admin := []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080)}, {Name: ptr.To("admin"), Port: ptr.To[int32](9090)}}
	kube := fake.NewClientset(
		slice("lobby", "a", "lobby-interceptor-admin", admin,
			discoveryv1.Endpoint{Addresses: []string{"10.0.0.1"}, TargetRef: &corev1.ObjectReference{Name: "interceptor-a"}},
			discoveryv1.Endpoint{Addresses: []string{"10.0.0.2"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(false)}}),
		slice("lobby", "b", "lobby-interceptor-admin", admin,
			discoveryv1.Endpoint{Addresses: []string{"10.0.0.3"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}),
		// No port named admin: nothing to subscribe to.
		slice("lobby", "c", "lobby-interceptor-admin", []discoveryv1.EndpointPort{{Name: ptr.To("metrics"), Port: ptr.To[int32](9090)}},
			discoveryv1.Endpoint{Addresses: []string{"10.0.0.4"}}),
		// Another Service, and the same Service name in another namespace.
		slice("lobby", "d", "lobby-interceptor-proxy", admin, discoveryv1.Endpoint{Addresses: []string{"10.0.0.5"}}),
		slice("other", "e", "lobby-interceptor-admin", admin, discoveryv1.Endpoint{Addresses: []string{"10.0.0.6"}}),
	)
	rec := &recorder{last: make(chan []Target, 1)}
	d, err := NewDiscovery(kube, "lobby", "lobby-interceptor-admin", "admin", rec, testr.New(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- d.Start(ctx) }()
	defer func() { cancel(); <-done }()

	want := []Target{
		{Addr: "10.0.0.1:9090", Pod: "interceptor-a", Ready: true},
		{Addr: "10.0.0.2:9090", Ready: false},
		{Addr: "10.0.0.3:9090", Ready: true},
	}
	waitFor(t, "the targets", func() bool {
		select {
		case ts := <-rec.last:
			slices.SortFunc(ts, func(a, b Target) int {
				if a.Addr < b.Addr {
					return -1
				}
				return 1
			})
			if slices.Equal(ts, want) {
				return true
			}
			t.Logf("targets %v", ts)
		default:
		}
		return false
	})
	// The informer counts as synced once its initial list has been handed out, which can be a
	// moment after the handler saw the targets.
	waitFor(t, "HasSynced after the targets were listed", d.HasSynced)
}

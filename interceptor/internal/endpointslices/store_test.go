package endpointslices

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/lobby-http/lobby/interceptor/internal/endpoints"
)

func ptr[T any](v T) *T { return &v }

func svcPort(name string, port int32, appProtocol string) corev1.ServicePort {
	p := corev1.ServicePort{Name: name, Port: port, Protocol: corev1.ProtocolTCP}
	if appProtocol != "" {
		p.AppProtocol = ptr(appProtocol)
	}
	return p
}

func newService(ns, name string, ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       corev1.ServiceSpec{Ports: ports},
	}
}

// ep is an endpoint of a test slice: an address and its ready and terminating conditions.
type ep struct {
	addr        string
	ready       *bool
	terminating *bool
}

func newSlice(ns, svc, name string, ports map[string]int32, eps ...ep) *discoveryv1.EndpointSlice {
	o := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ns, Name: name,
			Labels: map[string]string{discoveryv1.LabelServiceName: svc},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	for n, p := range ports {
		o.Ports = append(o.Ports, discoveryv1.EndpointPort{Name: ptr(n), Port: ptr(p), Protocol: ptr(corev1.ProtocolTCP)})
	}
	for _, e := range eps {
		o.Endpoints = append(o.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{e.addr},
			Conditions: discoveryv1.EndpointConditions{Ready: e.ready, Terminating: e.terminating},
		})
	}
	return o
}

func hosts(s *endpoints.Snapshot) []string {
	var out []string
	for _, e := range s.Endpoints {
		out = append(out, e.Host)
	}
	return out
}

func TestSnapshot(t *testing.T) {
	cases := []struct {
		name         string
		port         int32
		portName     string
		service      *corev1.Service
		slices       []*discoveryv1.EndpointSlice
		wantHosts    []string
		wantProtocol endpoints.Protocol
	}{
		{
			name:     "A named port selects the slice port of the same name and its container port.",
			portName: "web",
			service:  newService("ns", "app", svcPort("web", 80, ""), svcPort("admin", 81, "")),
			slices: []*discoveryv1.EndpointSlice{
				newSlice("ns", "app", "app-1", map[string]int32{"web": 8080, "admin": 9090}, ep{addr: "10.0.0.1"}),
			},
			wantHosts: []string{"10.0.0.1:8080"},
		},
		{
			name:    "A numeric port selects the Service port with that number.",
			port:    81,
			service: newService("ns", "app", svcPort("web", 80, ""), svcPort("admin", 81, "")),
			slices: []*discoveryv1.EndpointSlice{
				newSlice("ns", "app", "app-1", map[string]int32{"web": 8080, "admin": 9090}, ep{addr: "10.0.0.1"}),
			},
			wantHosts: []string{"10.0.0.1:9090"},
		},
		{
			name:    "An unnamed single port matches the unnamed slice port.",
			port:    80,
			service: newService("ns", "app", svcPort("", 80, "")),
			slices: []*discoveryv1.EndpointSlice{
				newSlice("ns", "app", "app-1", map[string]int32{"": 8080}, ep{addr: "10.0.0.2"}, ep{addr: "10.0.0.1"}),
			},
			wantHosts: []string{"10.0.0.1:8080", "10.0.0.2:8080"},
		},
		{
			name:    "Endpoints of several slices are merged and deduplicated.",
			port:    80,
			service: newService("ns", "app", svcPort("", 80, "")),
			slices: []*discoveryv1.EndpointSlice{
				newSlice("ns", "app", "app-1", map[string]int32{"": 8080}, ep{addr: "10.0.0.1"}),
				newSlice("ns", "app", "app-2", map[string]int32{"": 8080}, ep{addr: "10.0.0.1"}, ep{addr: "10.0.0.3"}),
			},
			wantHosts: []string{"10.0.0.1:8080", "10.0.0.3:8080"},
		},
		{
			name:    "Not-ready and terminating endpoints are left out; an unset ready condition means ready.",
			port:    80,
			service: newService("ns", "app", svcPort("", 80, "")),
			slices: []*discoveryv1.EndpointSlice{
				newSlice("ns", "app", "app-1", map[string]int32{"": 8080},
					ep{addr: "10.0.0.1", ready: ptr(true)},
					ep{addr: "10.0.0.2", ready: ptr(false)},
					ep{addr: "10.0.0.3", ready: ptr(true), terminating: ptr(true)},
					ep{addr: "10.0.0.4"},
				),
			},
			wantHosts: []string{"10.0.0.1:8080", "10.0.0.4:8080"},
		},
		{
			name:         "The appProtocol kubernetes.io/h2c selects endpoints.H2C.",
			port:         80,
			service:      newService("ns", "app", svcPort("web", 80, "kubernetes.io/h2c")),
			wantProtocol: endpoints.H2C,
		},
		{
			name:         "A port named grpc-api selects endpoints.H2C.",
			portName:     "grpc-api",
			service:      newService("ns", "app", svcPort("grpc-api", 80, "")),
			wantProtocol: endpoints.H2C,
		},
		{
			name:         "A port named https selects endpoints.HTTPS.",
			port:         443,
			service:      newService("ns", "app", svcPort("https", 443, "")),
			wantProtocol: endpoints.HTTPS,
		},
		{
			name:         "The appProtocol wins over the port name.",
			port:         80,
			service:      newService("ns", "app", svcPort("grpc", 80, "http")),
			wantProtocol: endpoints.HTTP1,
		},
		{
			name:     "A port the Service does not have gives no endpoints.",
			portName: "missing",
			service:  newService("ns", "app", svcPort("web", 80, "")),
			slices: []*discoveryv1.EndpointSlice{
				newSlice("ns", "app", "app-1", map[string]int32{"web": 8080}, ep{addr: "10.0.0.1"}),
			},
		},
		{
			name:     "Slices without the Service having been seen give no endpoints.",
			portName: "web",
			slices: []*discoveryv1.EndpointSlice{
				newSlice("ns", "app", "app-1", map[string]int32{"web": 8080}, ep{addr: "10.0.0.1"}),
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := NewStore(logr.Discard())
			tg := s.Target("ns", "app", tc.port, tc.portName)
			if tc.service != nil {
				s.UpdateService(tc.service)
			}
			for _, sl := range tc.slices {
				s.UpdateSlice(sl)
			}
			snap := tg.Snapshot()
			if got := hosts(snap); !slices.Equal(got, tc.wantHosts) {
				t.Errorf("endpoints = %v, want %v", got, tc.wantHosts)
			}
			if snap.Protocol != tc.wantProtocol {
				t.Errorf("protocol = %v, want %v", snap.Protocol, tc.wantProtocol)
			}
		})
	}
}

func TestTargetIsStable(t *testing.T) {
	s := NewStore(logr.Discard())
	a := s.Target("ns", "app", 80, "")
	if b := s.Target("ns", "app", 80, "ignored"); a != b {
		t.Errorf("endpoints.Target returned a new handle for the same port")
	}
	if c := s.Target("ns", "app", 0, "web"); a == c {
		t.Errorf("endpoints.Target returned the same handle for another port")
	}
}

func TestEndpointsAreReusedAcrossSnapshots(t *testing.T) {
	s := NewStore(logr.Discard())
	tg := s.Target("ns", "app", 80, "")
	s.UpdateService(newService("ns", "app", svcPort("", 80, "")))
	s.UpdateSlice(newSlice("ns", "app", "app-1", map[string]int32{"": 8080}, ep{addr: "10.0.0.1"}))
	first := tg.Snapshot().Endpoints[0]
	first.Acquire()

	s.UpdateSlice(newSlice("ns", "app", "app-1", map[string]int32{"": 8080}, ep{addr: "10.0.0.1"}, ep{addr: "10.0.0.2"}))
	snap := tg.Snapshot()
	if len(snap.Endpoints) != 2 {
		t.Fatalf("endpoints = %v, want two", hosts(snap))
	}
	if snap.Endpoints[0] != first {
		t.Errorf("the endpoint of an unchanged address was not reused")
	}
	if got := snap.Endpoints[0].InFlight(); got != 1 {
		t.Errorf("in flight = %d, want 1", got)
	}
	first.Release()
	if got := first.InFlight(); got != 0 {
		t.Errorf("in flight after release = %d, want 0", got)
	}
}

func TestDeletes(t *testing.T) {
	s := NewStore(logr.Discard())
	tg := s.Target("ns", "app", 80, "")
	sl := newSlice("ns", "app", "app-1", map[string]int32{"": 8080}, ep{addr: "10.0.0.1"})
	s.UpdateService(newService("ns", "app", svcPort("", 80, "")))
	s.UpdateSlice(sl)
	if len(tg.Snapshot().Endpoints) != 1 {
		t.Fatalf("endpoints = %v, want one", hosts(tg.Snapshot()))
	}
	s.DeleteSlice(sl)
	if got := hosts(tg.Snapshot()); len(got) != 0 {
		t.Errorf("endpoints after slice deletion = %v, want none", got)
	}
	s.UpdateSlice(sl)
	s.DeleteService("ns", "app")
	if got := hosts(tg.Snapshot()); len(got) != 0 {
		t.Errorf("endpoints after service deletion = %v, want none", got)
	}
}

func TestReadyServiceWakesOnlyItsOwnWaiters(t *testing.T) {
	s := NewStore(logr.Discard())
	a := s.Target("ns", "a", 80, "")
	b := s.Target("ns", "b", 80, "")
	s.UpdateService(newService("ns", "a", svcPort("", 80, "")))
	s.UpdateService(newService("ns", "b", svcPort("", 80, "")))

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	type result struct {
		snap *endpoints.Snapshot
		err  error
	}
	aDone := make(chan result, 10)
	bDone := make(chan result, 10)
	bCtx, bCancel := context.WithCancel(ctx)
	defer bCancel()
	for range 10 {
		go func() { s, err := a.Wait(ctx); aDone <- result{s, err} }()
		go func() { s, err := b.Wait(bCtx); bDone <- result{s, err} }()
	}

	s.UpdateSlice(newSlice("ns", "a", "a-1", map[string]int32{"": 8080}, ep{addr: "10.0.0.1"}))
	for range 10 {
		r := <-aDone
		if r.err != nil || len(r.snap.Endpoints) != 1 {
			t.Fatalf("waiter of a got %v, %v; want one endpoint", r.snap, r.err)
		}
	}
	select {
	case r := <-bDone:
		t.Fatalf("waiter of b returned (%v, %v) although b has no endpoint", r.snap, r.err)
	case <-time.After(20 * time.Millisecond):
	}
	bCancel()
	for range 10 {
		if r := <-bDone; !errors.Is(r.err, context.Canceled) {
			t.Errorf("waiter of b returned %v, want context.Canceled", r.err)
		}
	}
}

func TestWaitHonoursContext(t *testing.T) {
	s := NewStore(logr.Discard())
	tg := s.Target("ns", "app", 80, "")
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Millisecond)
	defer cancel()
	if _, err := tg.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait = %v, want context.DeadlineExceeded", err)
	}
}

func TestWaitReturnsAtOnceWhenReady(t *testing.T) {
	s := NewStore(logr.Discard())
	tg := s.Target("ns", "app", 80, "")
	s.UpdateService(newService("ns", "app", svcPort("", 80, "")))
	s.UpdateSlice(newSlice("ns", "app", "app-1", map[string]int32{"": 8080}, ep{addr: "10.0.0.1"}))
	snap, err := tg.Wait(t.Context())
	if err != nil || len(snap.Endpoints) != 1 {
		t.Errorf("Wait = %v, %v; want one endpoint", snap, err)
	}
}

func TestUnrelatedObjectsAreNotKept(t *testing.T) {
	s := NewStore(logr.Discard())
	tg := s.Target("ns", "app", 80, "")
	for i := range 5000 {
		name := fmt.Sprintf("other-%d", i)
		s.UpdateService(newService("ns", name, svcPort("", 80, "")))
		s.UpdateSlice(newSlice("ns", name, name+"-1", map[string]int32{"": 8080}, ep{addr: "10.1.0.1"}))
	}
	if got := s.Len(); got != 1 {
		t.Errorf("store keeps %d services, want 1", got)
	}
	if got := len(s.services[serviceKey{"ns", "app"}].slices); got != 0 {
		t.Errorf("store keeps %d slices of the wanted service, want 0", got)
	}

	s.Retain(nil)
	if got := s.Len(); got != 0 {
		t.Errorf("store keeps %d services after releasing every target, want 0", got)
	}
	s.UpdateService(newService("ns", "app", svcPort("", 80, "")))
	if got := s.Len(); got != 0 {
		t.Errorf("store keeps %d services after an update of a released one, want 0", got)
	}
	_ = tg
}

func TestRetainKeepsWantedTargets(t *testing.T) {
	s := NewStore(logr.Discard())
	keep := s.Target("ns", "app", 80, "")
	drop := s.Target("ns", "app", 81, "")
	gone := s.Target("ns", "old", 80, "")
	s.Retain([]*endpoints.Target{keep})
	if got := s.Len(); got != 1 {
		t.Errorf("store keeps %d services, want 1", got)
	}
	if s.Target("ns", "app", 80, "") != keep {
		t.Errorf("a retained target was replaced")
	}
	if s.Target("ns", "app", 81, "") == drop || s.Target("ns", "old", 80, "") == gone {
		t.Errorf("a released target was handed out again")
	}
}

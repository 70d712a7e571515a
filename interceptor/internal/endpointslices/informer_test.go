package endpointslices

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// eventually polls cond until it holds or a few seconds have passed.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestInformer(t *testing.T) {
	objs := []runtime.Object{
		newService("ns", "app", svcPort("web", 80, "")),
		newSlice("ns", "app", "app-1", map[string]int32{"web": 8080}, ep{addr: "10.0.0.1"}),
		newService("ns", "late", svcPort("", 80, "")),
		newSlice("ns", "late", "late-1", map[string]int32{"": 8081}, ep{addr: "10.0.0.2"}),
	}
	for i := range 200 {
		name := fmt.Sprintf("other-%d", i)
		objs = append(objs,
			newService("ns", name, svcPort("", 80, "")),
			newSlice("ns", name, name+"-1", map[string]int32{"": 8080}, ep{addr: "10.1.0.1"}))
	}
	client := fake.NewClientset(objs...)
	store := NewStore(logr.Discard())
	inf := NewInformer(store, client, "", logr.Discard())
	app := store.Target("ns", "app", 0, "web")

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- inf.Start(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Start = %v, want nil", err)
		}
	}()

	eventually(t, "the informer has synced", inf.HasSynced)
	if got := hosts(app.Snapshot()); !slices.Equal(got, []string{"10.0.0.1:8080"}) {
		t.Errorf("endpoints of a target wanted before the first list = %v", got)
	}

	// The objects of "late" were dropped by the first list; a new target must fetch them.
	late := store.Target("ns", "late", 80, "")
	waitCtx, waitCancel := context.WithTimeout(ctx, 5*time.Second)
	defer waitCancel()
	snap, err := late.Wait(waitCtx)
	if err != nil || !slices.Equal(hosts(snap), []string{"10.0.0.2:8081"}) {
		t.Errorf("endpoints of a target wanted after the first list = %v, %v", snap, err)
	}

	// Watch events reach the wanted targets.
	_, err = client.DiscoveryV1().EndpointSlices("ns").Create(ctx,
		newSlice("ns", "app", "app-2", map[string]int32{"web": 8080}, ep{addr: "10.0.0.3"}), metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create slice: %v", err)
	}
	eventually(t, "a created slice is seen", func() bool { return len(app.Snapshot().Endpoints) == 2 })

	if got := store.Len(); got != 2 {
		t.Errorf("store keeps %d services, want 2", got)
	}
}

func TestFetchResultsOlderThanEventsAreIgnored(t *testing.T) {
	withRV := func(o *discoveryv1.EndpointSlice, rv string) *discoveryv1.EndpointSlice {
		o.ResourceVersion = rv
		return o
	}
	s := NewStore(logr.Discard())
	s.fetches = true
	tg := s.Target("ns", "app", 80, "")
	svc := newService("ns", "app", svcPort("", 80, ""))
	svc.ResourceVersion = "5"
	s.UpdateService(svc)

	// A watch event newer than the fetch.
	s.UpdateSlice(withRV(newSlice("ns", "app", "app-1", map[string]int32{"": 8080}, ep{addr: "10.0.0.9"}), "20"))
	// A slice deleted after the fetch's list was taken.
	gone := withRV(newSlice("ns", "app", "app-2", map[string]int32{"": 8080}, ep{addr: "10.0.0.8"}), "21")
	s.DeleteSlice(gone)

	s.applyFetch([]serviceKey{{"ns", "app"}},
		&corev1.ServiceList{ListMeta: metav1.ListMeta{ResourceVersion: "15"}, Items: []corev1.Service{*svc}},
		&discoveryv1.EndpointSliceList{ListMeta: metav1.ListMeta{ResourceVersion: "15"}, Items: []discoveryv1.EndpointSlice{
			*withRV(newSlice("ns", "app", "app-1", map[string]int32{"": 8080}, ep{addr: "10.0.0.1"}), "12"),
			*withRV(newSlice("ns", "app", "app-2", map[string]int32{"": 8080}, ep{addr: "10.0.0.8"}), "13"),
		}})
	if got := hosts(tg.Snapshot()); !slices.Equal(got, []string{"10.0.0.9:8080"}) {
		t.Errorf("endpoints = %v, want only those of the newer event", got)
	}
	if svcState := s.services[serviceKey{"ns", "app"}]; svcState.fetching || svcState.sliceTombs != nil {
		t.Errorf("the service is still marked as being fetched")
	}
}

func TestListsFollowPagesAndKeepOnlyWhatTheStoreReads(t *testing.T) {
	var objs []runtime.Object
	for i := range 7 {
		name := fmt.Sprintf("app-%d", i)
		sl := newSlice("ns", name, name+"-1", map[string]int32{"": 8080}, ep{addr: fmt.Sprintf("10.0.0.%d", i+1)})
		sl.Annotations = map[string]string{"big": "annotation"}
		sl.Labels["other"] = "label"
		sl.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "controller"}}
		sl.Endpoints[0].TargetRef = &corev1.ObjectReference{Kind: "Pod", Name: name}
		objs = append(objs, sl)
	}
	client := fake.NewClientset(objs...)
	// The fake ignores limits: serve pages of two, with the offset of the next as the token.
	var requests []metav1.ListOptions
	client.PrependReactor("list", "endpointslices", func(a k8stesting.Action) (bool, runtime.Object, error) {
		o := a.(k8stesting.ListActionImpl).ListOptions
		requests = append(requests, o)
		from := 0
		if o.Continue != "" {
			from, _ = strconv.Atoi(o.Continue)
		}
		l := &discoveryv1.EndpointSliceList{ListMeta: metav1.ListMeta{ResourceVersion: fmt.Sprint(100 + len(requests))}}
		for n := from; n < len(objs) && n < from+int(o.Limit); n++ {
			l.Items = append(l.Items, *objs[n].(*discoveryv1.EndpointSlice))
		}
		if next := from + int(o.Limit); next < len(objs) {
			l.Continue = strconv.Itoa(next)
		}
		return true, l, nil
	})
	inf := NewInformer(NewStore(logr.Discard()), client, "", logr.Discard())

	got, err := inf.listSlices(t.Context(), metav1.ListOptions{Limit: 2, ResourceVersion: "0"},
		func(ns, svc string) bool { return svc != "app-3" })
	if err != nil {
		t.Fatal(err)
	}
	if len(requests) != 4 {
		t.Errorf("%d list requests, want 4 pages of at most 2", len(requests))
	}
	for n, o := range requests[1:] {
		if o.Continue == "" || o.ResourceVersion != "" {
			t.Errorf("request %d: continue %q, resource version %q; want a token and no version", n+2, o.Continue, o.ResourceVersion)
		}
	}
	if requests[0].ResourceVersion != "" || requests[0].Limit != 2 {
		t.Errorf("first request: resource version %q, limit %d; want the latest version (any is answered unpaged) and limit 2",
			requests[0].ResourceVersion, requests[0].Limit)
	}
	if got.ResourceVersion != "101" {
		t.Errorf("list version %q, want the first page's, 101", got.ResourceVersion)
	}
	if len(got.Items) != 6 {
		t.Fatalf("%d slices, want the 6 of wanted services", len(got.Items))
	}
	for _, s := range got.Items {
		if s.Labels[discoveryv1.LabelServiceName] == "app-3" {
			t.Errorf("slice %s of an unwanted service kept", s.Name)
		}
		if len(s.Labels) != 1 || s.Annotations != nil || s.ManagedFields != nil || s.Endpoints[0].TargetRef != nil {
			t.Errorf("slice %s keeps what the store does not read: %+v", s.Name, s)
		}
		want := compact(objs[0].(*discoveryv1.EndpointSlice))
		if c := compact(&s); len(c.ports) != 1 || c.ports[0] != want.ports[0] || len(c.ready) != 1 {
			t.Errorf("slice %s lost what the store reads: %+v", s.Name, c)
		}
	}

	// Without a limit of its own a list asks for pages of listPage.
	requests = nil
	if _, err := inf.listSlices(t.Context(), metav1.ListOptions{}, nil); err != nil {
		t.Fatal(err)
	}
	if len(requests) != 1 || requests[0].Limit != listPage {
		t.Errorf("requests %+v, want one with limit %d", requests, listPage)
	}
}

// The reflectors' lists are paged at the latest version whatever they ask for: "any version"
// would be answered unpaged from the API server's cache, and a paged list at a version is that
// exact version, which a restarted API server's watch cache refuses to watch from (see pages).
func TestPagesListTheLatestVersion(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   metav1.ListOptions
	}{
		{"the first list, at any version", metav1.ListOptions{ResourceVersion: "0"}},
		{"a relist after a watch ended, not older than the last version seen", metav1.ListOptions{ResourceVersion: "42"}},
		{"a relist after the last version expired", metav1.ListOptions{ResourceVersion: ""}},
		{"an exact version", metav1.ListOptions{ResourceVersion: "42", ResourceVersionMatch: metav1.ResourceVersionMatchExact}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []metav1.ListOptions
			err := pages(t.Context(), tc.in, func(_ context.Context, o metav1.ListOptions) (string, error) {
				got = append(got, o)
				if len(got) == 1 {
					return "next", nil
				}
				return "", nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 2 {
				t.Fatalf("%d pages requested, want 2", len(got))
			}
			for n, o := range got {
				if o.ResourceVersion != "" || o.ResourceVersionMatch != "" || o.Limit != listPage {
					t.Errorf("page %d: resource version %q, match %q, limit %d; want the latest version in pages of %d",
						n+1, o.ResourceVersion, o.ResourceVersionMatch, o.Limit, listPage)
				}
			}
			if got[1].Continue != "next" {
				t.Errorf("second page: continue %q, want the first page's token", got[1].Continue)
			}
		})
	}
}

package routing

import (
	"net/http"
	"testing"
	"time"

	"github.com/go-logr/logr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/lobby-http/lobby/interceptor/internal/endpointslices"
	"github.com/lobby-http/lobby/internal/httpso"
	"github.com/lobby-http/lobby/operator/api/v1alpha1"
)

// TestLenientSpellingsRouteAsTheAddOnRoutesThem builds the table from objects as the KEDA HTTP
// Add-on's users write them, both as stored and as the informer hands them over after
// httpso.Normalize, and checks that requests reach them as they reach them through the add-on.
func TestLenientSpellingsRouteAsTheAddOnRoutesThem(t *testing.T) {
	zero := &metav1.Duration{}
	objs := func() []*v1alpha1.HTTPScaledObject {
		port := object("port", 0, []string{"shop.example.org:8080"}, nil)
		slash := object("slash", 1, []string{"api.example.org"}, []string{"api", "v2/"})
		timeouts := object("timeouts", 2, []string{"slow.example.org"}, nil)
		timeouts.Spec.Timeouts = &v1alpha1.HTTPScaledObjectTimeoutsSpec{ConditionWait: zero, ResponseHeader: zero}
		return []*v1alpha1.HTTPScaledObject{port, slash, timeouts}
	}
	d := Defaults{ColdStartTimeout: 7 * time.Second, ResponseHeaderTimeout: 11 * time.Second, MaxPending: 5}
	lookups := []struct {
		name, host, path, want string
	}{
		{"a host written with a port is routed without it", "shop.example.org", "/", "port"},
		{"a host written with a port is routed whatever port the request names", "Shop.Example.org:443", "/cart", "port"},
		{"a path prefix written without a slash is routed with one", "api.example.org", "/api/users", "slash"},
		{"a path prefix written with a trailing slash and no leading one is routed", "api.example.org", "/v2", "slash"},
		{"a path prefix without a slash still matches on segment boundaries", "api.example.org", "/apix", ""},
	}
	for _, form := range []struct {
		name      string
		normalize bool
	}{{"as stored", false}, {"as the informer hands them over", true}} {
		list := objs()
		if form.normalize {
			for _, o := range list {
				httpso.Normalize(&o.Spec)
			}
		}
		table, conflicts := Build(list, endpointslices.NewStore(logr.Discard()), newFakeCounters(), d)
		if len(conflicts) != 0 {
			t.Fatalf("%s: conflicts %v", form.name, conflicts)
		}
		for _, l := range lookups {
			t.Run(form.name+": "+l.name, func(t *testing.T) {
				got := ""
				if r := table.Lookup(l.host, l.path, http.Header{}); r != nil {
					got = r.Name
				}
				if got != l.want {
					t.Errorf("Lookup(%q, %q) = %q, want %q", l.host, l.path, got, l.want)
				}
			})
		}
		t.Run(form.name+": zero timeouts give the global defaults", func(t *testing.T) {
			r := table.Lookup("slow.example.org", "/", http.Header{})
			if r == nil || r.ColdStartTimeout != d.ColdStartTimeout || r.ResponseHeaderTimeout != d.ResponseHeaderTimeout {
				t.Errorf("route = %+v, want the cold-start timeout %v and response header timeout %v", r, d.ColdStartTimeout, d.ResponseHeaderTimeout)
			}
		})
	}
}

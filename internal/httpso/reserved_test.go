package httpso

import (
	"strings"
	"testing"
	"time"

	"github.com/lobby-http/lobby/operator/api/v1alpha1"
	"github.com/lobby-http/lobby/operator/api/v1beta1"
)

func TestObjectsClaimingTheReservedPathAreNotRouted(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	hso := func(paths ...string) *Object {
		return FromHTTPScaledObject(obj("ns", "app", t0, v1alpha1.HTTPScaledObjectSpec{Hosts: []string{"a.io"}, PathPrefixes: paths}))
	}
	tests := []struct {
		name     string
		obj      *Object
		reserved bool
	}{
		{"the reserved prefix itself", hso("/.lobby"), true},
		{"the reserved prefix with its slash", hso("/.lobby/"), true},
		{"a path under the reserved prefix, among others", hso("/api", "/.lobby/status"), true},
		{"a path under it spelt without a leading slash", hso(".lobby/x"), true},
		{"an InterceptorRoute's path under it", route("ns", "r", t0, v1beta1.InterceptorRouteSpec{
			Rules: []v1beta1.RoutingRule{rule([]string{"a.io"}, "/.lobby/status")}}), true},
		{"a path that only starts with the same letters", hso("/.lobbyist"), false},
		{"the root, which the reserved paths are answered before", hso("/"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if n := tt.obj.HTTPScaledObject; n != nil {
				Normalize(&n.Spec)
				tt.obj = FromHTTPScaledObject(n)
			}
			accepted, conflicts := ResolveObjects([]*Object{tt.obj})
			c, lost := conflicts[tt.obj.Ref()]
			if lost != tt.reserved || (lost && !c.Reserved) || len(accepted) == 0 == !tt.reserved {
				t.Fatalf("accepted %d, conflict %+v; want reserved=%v", len(accepted), c, tt.reserved)
			}
			if lost && !strings.Contains(c.Message(), ReservedPrefix) {
				t.Errorf("message %q does not name %s", c.Message(), ReservedPrefix)
			}
		})
	}
}

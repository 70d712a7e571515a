package controller

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/lobby-http/lobby/internal/httpso"
	"github.com/lobby-http/lobby/operator/api/v1alpha1"
	"github.com/lobby-http/lobby/operator/api/v1beta1"
)

// shadowedIs returns a condition for eventually: the HTTPScaledObject's HostsShadowed condition is
// True with every fragment in its message, or absent when fragments is nil.
func (c *cluster) shadowedIs(t *testing.T, key types.NamespacedName, fragments ...string) func() string {
	return func() string {
		got := meta.FindStatusCondition(c.httpso(t, key).Status.Conditions, ConditionHostsShadowed)
		if fragments == nil {
			if got != nil {
				return fmt.Sprintf("%s has %s %q, want none", key, ConditionHostsShadowed, got.Message)
			}
			return ""
		}
		if got == nil || got.Status != metav1.ConditionTrue || got.Reason != ReasonHostOwned {
			return fmt.Sprintf("%s %s = %+v, want True/%s", key, ConditionHostsShadowed, got, ReasonHostOwned)
		}
		for _, f := range fragments {
			if !strings.Contains(got.Message, f) {
				return fmt.Sprintf("%s %s message %q lacks %q", key, ConditionHostsShadowed, got.Message, f)
			}
		}
		return ""
	}
}

func TestHostOwnershipStatus(t *testing.T) {
	c := startCluster(t)
	victimNS, attackerNS := c.namespace(t, "own-victim"), c.namespace(t, "own-attacker")
	c.service(t, victimNS, "app", "http=80")
	c.service(t, attackerNS, "app", "http=80")
	victim := newHTTPSO(victimNS, "app", "victim.own.example.com", "app", 80)
	c.create(t, victim)
	victimKey := client.ObjectKeyFromObject(victim)
	eventually(t, within, c.readyIs(t, victimKey, metav1.ConditionTrue, ReasonReconciled))
	// Creation times have a resolution of one second, and a tie goes to the first namespace/name
	// ("own-attacker" sorts first): the attackers come in a later second.
	time.Sleep(time.Until(c.httpso(t, victimKey).CreationTimestamp.Add(1100 * time.Millisecond)))

	longer := newHTTPSO(attackerNS, "longer", "victim.own.example.com", "app", 80)
	longer.Spec.PathPrefixes = []string{"/api"}
	wild := newHTTPSO(attackerNS, "wild", "*.own.example.com", "app", 80)
	route := newRoute(attackerNS, "route", "Victim.Own.Example.Com", "app")
	route.Spec.Target.Port = 80
	route.Spec.Rules[0].Paths = []v1beta1.PathMatch{{Value: "/other"}}
	for _, o := range []client.Object{longer, wild, route} {
		c.create(t, o)
	}
	longerKey, wildKey, routeKey := client.ObjectKeyFromObject(longer), client.ObjectKeyFromObject(wild), client.ObjectKeyFromObject(route)

	t.Run("a claim on a host another namespace owns is not Ready, and the status says how to be allowed", func(t *testing.T) {
		eventually(t, within, c.readyIs(t, longerKey, metav1.ConditionFalse, ReasonHostOwned,
			`host "victim.own.example.com" is owned by namespace "own-victim"`, "HTTPScaledObject own-victim/app",
			`add namespace "own-attacker" to the `+httpso.AllowNamespacesAnnotation))
		eventually(t, within, c.eventFor(t, longerKey, ReasonHostOwned, "own-victim"))
		eventually(t, within, c.routeCondition(t, routeKey, "Ready", metav1.ConditionFalse, ReasonHostOwned,
			`namespace "own-victim"`, httpso.AllowNamespacesAnnotation))
	})
	t.Run("a wildcard over the owned host is routed and says which host it does not serve", func(t *testing.T) {
		eventually(t, within, c.readyIs(t, wildKey, metav1.ConditionTrue, ReasonReconciled))
		eventually(t, within, c.shadowedIs(t, wildKey, `"victim.own.example.com" (owned by namespace "own-victim")`,
			httpso.AllowNamespacesAnnotation))
	})
	t.Run("the owner's status names the objects its namespace keeps out", func(t *testing.T) {
		eventually(t, within, c.readyIs(t, victimKey, metav1.ConditionTrue, ReasonReconciled,
			"this namespace owns their hosts", "HTTPScaledObject own-attacker/longer", "InterceptorRoute own-attacker/route"))
	})
	t.Run("once the owner allows the namespace, its claims are Ready, nothing is shadowed, and a bad entry is named", func(t *testing.T) {
		c.update(t, victimKey, func(h *v1alpha1.HTTPScaledObject) {
			h.Annotations = map[string]string{httpso.AllowNamespacesAnnotation: "Not_A_Namespace, own-attacker"}
		})
		eventually(t, within, c.readyIs(t, victimKey, metav1.ConditionTrue, ReasonReconciled, `["Not_A_Namespace"] ignored`))
		eventually(t, within, c.readyIs(t, longerKey, metav1.ConditionTrue, ReasonReconciled))
		eventually(t, within, c.routeCondition(t, routeKey, "Ready", metav1.ConditionTrue, "Reconciled"))
		eventually(t, within, c.shadowedIs(t, wildKey))
	})
}

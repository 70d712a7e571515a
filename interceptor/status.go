package main

import (
	"context"

	"github.com/lobby-http/lobby/interceptor/internal/admin"
	"github.com/lobby-http/lobby/interceptor/internal/endpoints"
	"github.com/lobby-http/lobby/interceptor/internal/routing"
)

// statusApps shows the routing table's objects on the status page.
type statusApps struct{ router *routing.Router }

var _ admin.Apps = statusApps{}

// Apps returns every routed object of the current table with its target.
func (a statusApps) Apps() []admin.App {
	routes := a.router.Table().Routes()
	out := make([]admin.App, 0, len(routes))
	for _, r := range routes {
		if r.Counts == nil || r.Target == nil {
			continue
		}
		out = append(out, admin.App{Key: r.Key, Target: statusTarget{r.Target}, Counts: r.Counts})
	}
	return out
}

// statusTarget reads a target's readiness for the status page.
type statusTarget struct{ t *endpoints.Target }

var _ admin.Target = statusTarget{}

// Ready returns the number of ready endpoints in the target's snapshot.
func (t statusTarget) Ready() int { return len(t.t.Snapshot().Endpoints) }

// Wait returns once the target has an endpoint that may be picked.
func (t statusTarget) Wait(ctx context.Context) error {
	_, err := t.t.Wait(ctx)
	return err
}

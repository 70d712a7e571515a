package proxy

import (
	"math/rand/v2"
	"slices"
	"time"

	"github.com/lobby-http/lobby/interceptor/internal/endpoints"
)

// maxAttempts bounds how many endpoints a request tries when connections fail, before it goes back
// to the wait step.
const maxAttempts = 3

// suspectFor is how long an endpoint that refused a connection is passed over when nothing else
// says it is back: the EndpointSlice usually drops a pod that is gone within a second or two, and
// when it does not (the pod refused one connection by accident, or the update is slow), one
// request tries it again after this long. So a healthy pod is passed over for at most this long,
// and a dead one costs a connection attempt this often while requests wait for it.
const suspectFor = time.Second

// pick chooses the endpoint with fewer requests in flight of two picked at random, passing
// suspect endpoints over. A suspect endpoint whose mark has run out is claimed and picked, so that
// this request tries it again (on another endpoint, if it still refuses); with every endpoint
// suspect and no mark run out, pick returns nil: the request must wait.
func pick(eps []*endpoints.Endpoint) *endpoints.Endpoint {
	n := len(eps)
	switch n {
	case 0:
		return nil
	case 1:
		if ok, _ := usable(eps[0]); ok {
			return eps[0]
		}
		return nil
	}
	i := rand.IntN(n)
	j := rand.IntN(n - 1)
	if j >= i {
		j++
	}
	a, b := eps[i], eps[j]
	okA, claimed := usable(a)
	if claimed {
		return a
	}
	okB, claimed := usable(b)
	if claimed {
		return b
	}
	switch {
	case okA && okB:
		if b.InFlight() < a.InFlight() {
			return b
		}
		return a
	case okA:
		return a
	case okB:
		return b
	}
	return pickAmong(eps, nil)
}

// usable reports whether e may be picked: it has no suspect mark, or its mark has run out and
// this caller claimed it (claimed), to try it again.
func usable(e *endpoints.Endpoint) (ok, claimed bool) {
	if !e.Suspect() {
		return true, false
	}
	claimed = e.Claim(suspectFor)
	return claimed, claimed
}

// pickAmong returns an endpoint of eps not in tried: one that is not suspect, starting at a random
// place, else one whose suspect mark it could claim, else nil.
func pickAmong(eps []*endpoints.Endpoint, tried []*endpoints.Endpoint) *endpoints.Endpoint {
	n := len(eps)
	if n == 0 {
		return nil
	}
	start := rand.IntN(n)
	for k := range n {
		if e := eps[(start+k)%n]; !e.Suspect() && !slices.Contains(tried, e) {
			return e
		}
	}
	for k := range n {
		if e := eps[(start+k)%n]; !slices.Contains(tried, e) && e.Claim(suspectFor) {
			return e
		}
	}
	return nil
}

// another returns an endpoint of the target that the request has not tried and that may be
// picked, or nil.
func (fw *forward) another() *endpoints.Endpoint {
	if fw.attempts >= maxAttempts {
		return nil
	}
	eps := fw.x.snap.Endpoints
	// The target may have gained endpoints since the request was admitted.
	if cur := fw.x.target.Snapshot(); len(cur.Endpoints) > 0 {
		eps = cur.Endpoints
	}
	return pickAmong(eps, fw.tried[:fw.attempts])
}

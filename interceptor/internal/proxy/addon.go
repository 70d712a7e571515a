package proxy

import "net/http"

// AddOnColdStartHeader is the response header the KEDA HTTP Add-on's interceptor sends on every
// proxied response: "true" when the request waited for the app to scale from zero, "false" when
// it did not. Lobby sends it, beside its own ColdStartHeader, only when the AddOnColdStart stage
// is in the chain, for clients and dashboards written against the add-on.
const AddOnColdStartHeader = "X-KEDA-HTTP-Cold-Start"

// The header values are shared, never modified: assigning them costs no allocation per request,
// and a later Add to the same header appends to a copy, since each has no spare capacity.
var (
	addOnColdStartTrue  = []string{"true"}
	addOnColdStartFalse = []string{"false"}
)

// AddOnColdStart returns the stage, placed between Wait and the forwarder, that sets
// AddOnColdStartHeader on the response the forwarder is about to write. Left out of the chain,
// it costs nothing.
func AddOnColdStart(next ForwardHandler) ForwardHandler {
	return ForwardFunc(func(w http.ResponseWriter, r *http.Request, x *Exchange) (Outcome, error) {
		if x.waited > 0 {
			w.Header()[AddOnColdStartHeader] = addOnColdStartTrue
		} else {
			w.Header()[AddOnColdStartHeader] = addOnColdStartFalse
		}
		return next.Forward(w, r, x)
	})
}

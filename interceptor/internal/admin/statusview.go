package admin

// The status page's data, as /status.json answers it and every server-sent event carries it.

// StatusView is the status page's data: what /status.json answers and every server-sent event
// carries.
type StatusView struct {
	// Interceptor is the pod name of the interceptor that serves the page; other replicas have
	// counts of their own.
	Interceptor string `json:"interceptor"`
	// UnixMilli is when the view was built, in milliseconds since the Unix epoch.
	UnixMilli int64 `json:"unixMilli"`
	// Routes are every routed object, sorted by key.
	Routes []StatusRoute `json:"routes"`
}

// StatusRoute is one routed object on the status page.
type StatusRoute struct {
	// Key is the object's "namespace/name".
	Key string `json:"key"`
	// State is cold, waking or warm.
	State string `json:"state"`
	// Ready is the number of ready endpoints of the target.
	Ready int `json:"readyEndpoints"`
	// Held, InFlight, Open and Requests are the counts /queue and the push stream show.
	Held     int64  `json:"held"`
	InFlight int64  `json:"inFlight"`
	Open     int64  `json:"open"`
	Requests uint64 `json:"requests"`
	// RatePerSecond is requests per second over the last minute (or since the interceptor started
	// routing the object, when that is shorter).
	RatePerSecond float64 `json:"ratePerSecond"`
	// ColdStart is the timeline of the last cold start this interceptor saw, or nil.
	ColdStart *ColdStart `json:"coldStart,omitempty"`
}

// ColdStart is the timeline of one cold start as one interceptor saw it.
type ColdStart struct {
	// UnderWay is true until the target has a ready endpoint (or the cold start was given up).
	UnderWay bool `json:"underWay"`
	// Steps are the steps seen so far, in order.
	Steps []Step `json:"steps"`
}

// Step is one step of a cold start.
type Step struct {
	// Name is one of StepArrived, StepPushed, StepReady, StepAnswered.
	Name string `json:"name"`
	// UnixMilli is when the step happened, in milliseconds since the Unix epoch.
	UnixMilli int64 `json:"unixMilli"`
	// SinceArrivedMillis is the time from the request's arrival, in milliseconds (fractional).
	SinceArrivedMillis float64 `json:"sinceArrivedMillis"`
}

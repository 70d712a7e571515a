package admin

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/lobby-http/lobby/internal/stream"
)

// This file follows cold starts: the two steps after the activation (the first ready endpoint,
// the first answer) are watched by one goroutine per cold start, outside the request path.

// Steps of a cold start's timeline, in order.
const (
	// StepArrived is when the stream's dispatcher took the route's idle→busy edge.
	StepArrived = "request arrived"
	// StepPushed is when the activate frame was handed to every stream subscriber.
	StepPushed = "activation pushed"
	// StepReady is when the target got an endpoint that may be picked.
	StepReady = "first endpoint ready"
	// StepAnswered is when the route's first request after that was answered.
	StepAnswered = "first answer"

	stepsPerStart = 4
)

// coldStartBound is how long a cold start is followed: a target that has no ready endpoint this
// long after the request that woke it is shown cold again, and a first answer that does not come
// within it is left off the timeline.
const coldStartBound = 10 * time.Minute

// answerPoll is the period at which a woken route's counters are read for its first answer: the
// precision of that step.
const answerPoll = 2 * time.Millisecond

// stepSeen is a step a route's cold-start follower saw.
type stepSeen struct {
	key   string
	start *coldStart
	name  string
	at    time.Time
	done  bool // the follower has returned
}

// coldStart is one cold start being followed or last followed.
type coldStart struct {
	names    [stepsPerStart]string
	at       [stepsPerStart]time.Time
	n        int
	underWay bool
	// completed is the route's requests answered or given up (received − held − in flight −
	// open) before its target was ready; the first answer is the first increase over it.
	completed atomic.Int64
}

// completed returns how many of a route's received requests have left it.
func completed(c stream.RouteCounts) int64 {
	return int64(c.Requests) - c.Held - c.InFlight - c.Open
}

// follow waits for the woken target's first ready endpoint, then for the route's first answer,
// and reports both steps to the producer.
func (s *Status) follow(ctx context.Context, key string, app App, cs *coldStart) {
	ctx, cancel := context.WithTimeout(ctx, coldStartBound)
	defer cancel()
	report := func(name string, at time.Time, done bool) {
		select {
		case s.steps <- stepSeen{key: key, start: cs, name: name, at: at, done: done}:
		case <-ctx.Done():
		}
	}
	if err := app.Target.Wait(ctx); err != nil {
		report("", time.Time{}, true)
		return
	}
	report(StepReady, s.opts.Clock.Now(), false)
	// The counters are read, not hooked: the request path pays nothing for this step.
	tick := time.NewTicker(answerPoll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			report("", time.Time{}, true)
			return
		case <-tick.C:
		}
		now := s.opts.Clock.Now()
		if completed(app.Counts.Counts(now)) > cs.completed.Load() {
			report(StepAnswered, now, true)
			return
		}
	}
}

// step records a step a follower saw.
func (s *Status) step(st stepSeen) {
	rs := s.routes[st.key]
	if rs == nil || rs.cold != st.start {
		return // the route is gone, or a newer cold start replaced this one
	}
	if st.name != "" {
		st.start.add(st.name, st.at)
	}
	if st.name == StepReady || st.done {
		st.start.underWay = false
	}
}

func (cs *coldStart) add(name string, at time.Time) {
	if cs.n < stepsPerStart {
		cs.names[cs.n], cs.at[cs.n] = name, at
		cs.n++
	}
}

// view returns the cold start's steps with their offsets from the arrival.
func (cs *coldStart) view() *ColdStart {
	out := &ColdStart{UnderWay: cs.underWay, Steps: make([]Step, cs.n)}
	for i := range cs.n {
		out.Steps[i] = Step{Name: cs.names[i], UnixMilli: cs.at[i].UnixMilli(),
			SinceArrivedMillis: float64(cs.at[i].Sub(cs.at[0]).Microseconds()) / 1e3}
	}
	return out
}

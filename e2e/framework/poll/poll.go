// Package poll is the end-to-end suite's one way to wait for a condition: Until checks it, with a
// growing interval, until it holds, the timeout passes or the context ends, and fails with the
// check's last error. It imports nothing of lobby's, so every e2e package can use it, the
// harness and the process kubelet's own tests included.
package poll

import (
	"context"
	"fmt"
	"time"
)

// Intervals: the first retry comes soon, for conditions that hold within milliseconds (a
// request held, a counter read), and the wait between checks doubles up to maxInterval: ten
// checks a second at most, so that a wait of minutes (KEDA scaling an app to zero) stays cheap on
// a machine the whole cluster shares, and a condition is seen at most 100 ms after it holds.
const (
	firstInterval = 10 * time.Millisecond
	maxInterval   = 100 * time.Millisecond
)

// Until calls check until it returns nil, and returns nil then. When timeout passes first, the
// error names what was awaited and wraps check's last error; when ctx ends first, it wraps ctx's
// cause (context.Cause: why a context with a cause ended, else its error) and check's last one. check runs at least once, whatever the timeout; it should bound its
// own calls (by ctx), since Until cannot interrupt it.
func Until(ctx context.Context, timeout time.Duration, what string, check func() error) error {
	deadline := time.Now().Add(timeout)
	interval := firstInterval
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		err := check()
		if err == nil {
			return nil
		}
		left := time.Until(deadline)
		if left <= 0 {
			return fmt.Errorf("waited %v for %s: %w", timeout, what, err)
		}
		timer.Reset(min(interval, left))
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w (last: %w)", what, context.Cause(ctx), err)
		case <-timer.C:
		}
		interval = min(2*interval, maxInterval)
	}
}

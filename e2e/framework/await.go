package framework

import (
	"context"
	"fmt"
	"time"
)

// Await intervals: the first retry comes soon, for conditions that hold within milliseconds (a
// request held, a counter read), and the wait between checks doubles up to awaitMaxInterval: ten
// checks a second at most, so that a wait of minutes (KEDA scaling an app to zero) stays cheap on
// a machine the whole cluster shares, and a condition is seen at most 100 ms after it holds.
const (
	awaitFirstInterval = 10 * time.Millisecond
	awaitMaxInterval   = 100 * time.Millisecond
)

// Await calls check until it returns nil, and returns nil then. When timeout passes first, the
// error names what was awaited and wraps check's last error; when ctx ends first, it wraps ctx's
// error and check's last one. check runs at least once, whatever the timeout; it should bound its
// own calls (by ctx), since Await cannot interrupt it.
func Await(ctx context.Context, timeout time.Duration, what string, check func() error) error {
	deadline := time.Now().Add(timeout)
	interval := awaitFirstInterval
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
			return fmt.Errorf("wait for %s: %w (last: %w)", what, ctx.Err(), err)
		case <-timer.C:
		}
		interval = min(2*interval, awaitMaxInterval)
	}
}

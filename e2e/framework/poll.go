package framework

import (
	"context"
	"fmt"
	"time"
)

// Poll calls check every interval until it returns nil, ctx ends or timeout passes. The error
// names what was awaited and wraps check's last error, or ctx's when ctx ended first.
func Poll(ctx context.Context, timeout, interval time.Duration, what string, check func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("wait %v for %s: %w", timeout, what, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w", what, ctx.Err())
		case <-time.After(interval):
		}
	}
}

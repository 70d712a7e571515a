package framework_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/lobby-http/lobby/e2e/framework"
)

func TestPollReturnsOnceCheckSucceeds(t *testing.T) {
	calls := 0
	err := framework.Poll(t.Context(), time.Minute, time.Millisecond, "the third call", func() error {
		if calls++; calls < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("Poll = %v after %d calls; want nil after 3", err, calls)
	}
}

func TestPollWrapsTheLastErrorAfterTheTimeout(t *testing.T) {
	last := errors.New("still down")
	err := framework.Poll(t.Context(), 0, time.Millisecond, "the server", func() error { return last })
	if !errors.Is(err, last) {
		t.Fatalf("Poll = %v; want it to wrap the check's last error", err)
	}
}

func TestPollStopsWhenTheContextEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	err := framework.Poll(ctx, time.Hour, time.Hour, "nothing", func() error { return errors.New("never") })
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Poll = %v; want context.Canceled", err)
	}
}

package poll_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/lobby-http/lobby/e2e/framework/poll"
)

func TestUntil(t *testing.T) {
	last := errors.New("still down")
	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	gone := errors.New("the server exited")
	ended, end := context.WithCancelCause(t.Context())
	end(gone)
	cases := []struct {
		name    string
		ctx     context.Context
		timeout time.Duration
		// succeedAt is the call that returns nil; 0: none does.
		succeedAt int
		wantCalls int
		wantErr   []error
		wantText  string
	}{
		{name: "It returns nil once the check succeeds.", ctx: t.Context(), timeout: time.Minute, succeedAt: 3, wantCalls: 3},
		{name: "It checks once even with no time left.", ctx: t.Context(), timeout: 0, succeedAt: 1, wantCalls: 1},
		{name: "After the timeout it fails with the check's last error and names what it awaited.", ctx: t.Context(),
			timeout: 30 * time.Millisecond, wantErr: []error{last}, wantText: "the server"},
		{name: "It stops when the context ends, with the context's error and the check's last one.", ctx: cancelled,
			timeout: time.Hour, wantCalls: 1, wantErr: []error{context.Canceled, last}, wantText: "the server"},
		{name: "It gives the cause of a context that ended with one.", ctx: ended,
			timeout: time.Hour, wantCalls: 1, wantErr: []error{gone, last}, wantText: "the server"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			calls := 0
			err := poll.Until(c.ctx, c.timeout, "the server", func() error {
				calls++
				if calls == c.succeedAt {
					return nil
				}
				return last
			})
			if c.wantErr == nil && err != nil {
				t.Fatalf("Until = %v; want nil", err)
			}
			for _, want := range c.wantErr {
				if !errors.Is(err, want) {
					t.Errorf("Until = %v; want it to wrap %v", err, want)
				}
			}
			if err != nil && !strings.Contains(err.Error(), c.wantText) {
				t.Errorf("Until = %q; want it to name %q", err, c.wantText)
			}
			if c.wantCalls != 0 && calls != c.wantCalls {
				t.Errorf("check ran %d times; want %d", calls, c.wantCalls)
			}
		})
	}
}

func TestUntilBacksOff(t *testing.T) {
	calls := 0
	start := time.Now()
	err := poll.Until(t.Context(), 600*time.Millisecond, "nothing", func() error {
		calls++
		return errors.New("never")
	})
	if err == nil {
		t.Fatal("Until = nil; want the timeout's error")
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Until took %v past a timeout of 600ms", took)
	}
	// 0, 10, 30, 70, 150, 250, ... 550 ms, then the deadline: about ten checks, not sixty.
	if calls < 4 || calls > 12 {
		t.Errorf("check ran %d times in 600ms; want the interval to double from 10ms to 100ms", calls)
	}
}

// Package env loads a binary's configuration from environment variables: it reads each variable
// with its default, validates it, and collects every mistake so that one start reports them all.
//
// An empty variable counts as unset, because that is how Helm renders an unset value.
package env

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
)

// Loader reads variables through a lookup function and collects their errors. Each reading
// method returns a usable value even when the variable is wrong (the default, or the value as
// read), so a binary can go on validating the rest; Err then reports everything at once.
type Loader struct {
	lookup func(string) (string, bool)
	errs   []error
}

// NewLoader returns a Loader that reads variables through lookup: os.LookupEnv in a binary, a
// map in tests.
func NewLoader(lookup func(string) (string, bool)) *Loader {
	return &Loader{lookup: lookup}
}

// Fail records that the variable name is wrong, and why. Binaries use it for the rules that
// involve several variables.
func (l *Loader) Fail(name string, err error) {
	l.errs = append(l.errs, fmt.Errorf("%s: %w", name, err))
}

// Err returns every recorded failure joined and wrapped as "load configuration: ...", or nil when
// there is none.
func (l *Loader) Err() error {
	if err := errors.Join(l.errs...); err != nil {
		return fmt.Errorf("load configuration: %w", err)
	}
	return nil
}

// Get returns the variable's value, or ok false when it is unset or empty.
func (l *Loader) Get(name string) (v string, ok bool) {
	v, ok = l.lookup(name)
	return v, ok && v != ""
}

// String returns the variable's value, or def when it is unset or empty.
func (l *Loader) String(name, def string) string {
	if v, ok := l.Get(name); ok {
		return v
	}
	return def
}

// Addr returns the listen address in the variable, or def, and records a failure unless it is
// host:port or :port with a port from 1 to 65535.
func (l *Loader) Addr(name, def string) string {
	v := l.String(name, def)
	if _, port, err := net.SplitHostPort(v); err != nil {
		l.Fail(name, fmt.Errorf("parse address %q: want host:port or :port: %w", v, err))
	} else if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		l.Fail(name, fmt.Errorf("parse address %q: port must be a number from 1 to 65535", v))
	}
	return v
}

// Namespace returns the namespace in the variable, or "" when it is unset, and records a failure
// unless it is a valid namespace name.
func (l *Loader) Namespace(name string) string {
	v := l.String(name, "")
	if v == "" {
		return ""
	}
	l.CheckNamespace(name, v)
	return v
}

// CheckNamespace records a failure against the variable name unless v is a valid namespace name
// (a DNS-1123 label). It is for values that come from more than one variable.
func (l *Loader) CheckNamespace(name, v string) {
	if msgs := validation.IsDNS1123Label(v); len(msgs) > 0 {
		l.Fail(name, fmt.Errorf("invalid namespace %q: %s", v, msgs[0]))
	}
}

// DurationCheck returns why d is not acceptable, or "" when it is.
type DurationCheck func(d time.Duration) string

// Positive accepts durations greater than zero.
func Positive(d time.Duration) string {
	if d <= 0 {
		return "must be positive"
	}
	return ""
}

// NonNegative accepts zero and durations greater than zero.
func NonNegative(d time.Duration) string {
	if d < 0 {
		return "must not be negative"
	}
	return ""
}

// AtLeast returns a check that accepts durations of min or more.
func AtLeast(min time.Duration) DurationCheck {
	return func(d time.Duration) string {
		if d < min {
			return "must be at least " + min.String()
		}
		return ""
	}
}

// Duration returns the Go duration in the variable, or def when it is unset. A value that does
// not parse records a failure and gives def; a value that fails one of checks records a failure
// per failed check, naming the value as written, and is returned as parsed.
func (l *Loader) Duration(name string, def time.Duration, checks ...DurationCheck) time.Duration {
	v, ok := l.Get(name)
	if !ok {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		l.Fail(name, fmt.Errorf("parse duration %q: want a Go duration such as 30s or 1m30s", v))
		return def
	}
	for _, check := range checks {
		if why := check(d); why != "" {
			l.Fail(name, fmt.Errorf("%s, got %s", why, v))
		}
	}
	return d
}

// Int returns the decimal integer in the variable, or def when it is unset. A value that does not
// parse records a failure and gives def; a value below min records a failure and is returned as
// parsed.
func (l *Loader) Int(name string, def, min int) int {
	v, ok := l.Get(name)
	if !ok {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		l.Fail(name, fmt.Errorf("parse integer %q", v))
		return def
	}
	if n < min {
		l.Fail(name, fmt.Errorf("must be at least %d, got %d", min, n))
	}
	return n
}

// Bool returns the boolean in the variable (as strconv.ParseBool reads it, surrounding spaces
// ignored), or def when it is unset or does not parse; the latter records a failure.
func (l *Loader) Bool(name string, def bool) bool {
	v, ok := l.Get(name)
	if !ok {
		return def
	}
	b, err := strconv.ParseBool(strings.TrimSpace(v))
	if err != nil {
		l.Fail(name, fmt.Errorf("parse boolean %q: want true or false", v))
		return def
	}
	return b
}

// Parse returns the variable's value as p reads it, or def when it is unset. When p fails, its
// error is recorded against the variable as it is, so p's message should name what to fix, and
// def is returned.
func Parse[T any](l *Loader, name string, def T, p func(string) (T, error)) T {
	v, ok := l.Get(name)
	if !ok {
		return def
	}
	t, err := p(v)
	if err != nil {
		l.Fail(name, err)
		return def
	}
	return t
}

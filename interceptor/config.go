package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/lobby-http/lobby/internal/logging"
)

// Config is everything the interceptor is configured with, loaded from environment variables
// once at start. docs/configuration.md describes each variable and why its default is what it is.
type Config struct {
	// ProxyAddr is where the proxy listens (LOBBY_PROXY_ADDR).
	ProxyAddr string
	// AdminAddr is where the admin server listens (LOBBY_ADMIN_ADDR).
	AdminAddr string
	// WatchNamespace restricts the watched HTTPScaledObjects, Services and EndpointSlices to one
	// namespace; empty watches all (LOBBY_WATCH_NAMESPACE).
	WatchNamespace string

	// ColdStartTimeout is how long a request is held for a ready endpoint when its route says
	// nothing (LOBBY_COLD_START_TIMEOUT).
	ColdStartTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for the target's response headers when the route says
	// nothing (LOBBY_RESPONSE_HEADER_TIMEOUT).
	ResponseHeaderTimeout time.Duration
	// RequestTimeout bounds a whole forwarded exchange when the route says nothing; zero means
	// unbounded (LOBBY_REQUEST_TIMEOUT).
	RequestTimeout time.Duration
	// MaxPendingRequests is the most requests held at once per route when the route says nothing
	// (LOBBY_MAX_PENDING_REQUESTS).
	MaxPendingRequests int64

	// StreamInterval is the period of the push stream's counts frames (LOBBY_STREAM_INTERVAL).
	StreamInterval time.Duration
	// StreamWriteTimeout is how long a stream subscriber may take to accept one frame before it is
	// disconnected (LOBBY_STREAM_WRITE_TIMEOUT).
	StreamWriteTimeout time.Duration

	// DrainDelay is how long the interceptor keeps serving with a failing /readyz after SIGTERM,
	// so that endpoints controllers and ingresses stop sending to it (LOBBY_DRAIN_DELAY).
	DrainDelay time.Duration
	// DrainTimeout bounds the graceful shutdown that follows: requests still running after it are
	// cut off (LOBBY_DRAIN_TIMEOUT).
	DrainTimeout time.Duration

	// MaxHeaderBytes bounds the size of request headers (LOBBY_MAX_HEADER_BYTES).
	MaxHeaderBytes int
	// ReadHeaderTimeout bounds the time to read request headers (LOBBY_READ_HEADER_TIMEOUT).
	ReadHeaderTimeout time.Duration
	// IdleTimeout is how long an idle keep-alive connection is kept open (LOBBY_IDLE_TIMEOUT).
	IdleTimeout time.Duration

	// LogLevel is how much is logged (LOBBY_LOG_LEVEL).
	LogLevel logging.Level
	// LogFormat is how it is written (LOBBY_LOG_FORMAT).
	LogFormat logging.Format

	// PodName names this interceptor in the push stream; the host name when unset (POD_NAME).
	PodName string
	// Kubeconfig is the kubeconfig path list; empty means the in-cluster configuration
	// (KUBECONFIG).
	Kubeconfig string
}

// loadConfig reads the configuration through lookup (os.LookupEnv outside tests), applying
// defaults and validating every value. The error names each variable that is wrong.
func loadConfig(lookup func(string) (string, bool)) (Config, error) {
	l := loader{lookup: lookup}
	c := Config{
		ProxyAddr:      l.addr("LOBBY_PROXY_ADDR", ":8080"),
		AdminAddr:      l.addr("LOBBY_ADMIN_ADDR", ":9090"),
		WatchNamespace: l.namespace("LOBBY_WATCH_NAMESPACE"),

		ColdStartTimeout:      l.duration("LOBBY_COLD_START_TIMEOUT", 30*time.Second, positive),
		ResponseHeaderTimeout: l.duration("LOBBY_RESPONSE_HEADER_TIMEOUT", 60*time.Second, positive),
		RequestTimeout:        l.duration("LOBBY_REQUEST_TIMEOUT", 0, nonNegative),
		MaxPendingRequests:    int64(l.integer("LOBBY_MAX_PENDING_REQUESTS", 1000, 1)),

		StreamInterval:     l.duration("LOBBY_STREAM_INTERVAL", time.Second, atLeast(10*time.Millisecond)),
		StreamWriteTimeout: l.duration("LOBBY_STREAM_WRITE_TIMEOUT", 10*time.Second, positive),

		DrainDelay:   l.duration("LOBBY_DRAIN_DELAY", 5*time.Second, nonNegative),
		DrainTimeout: l.duration("LOBBY_DRAIN_TIMEOUT", 40*time.Second, positive),

		MaxHeaderBytes:    l.integer("LOBBY_MAX_HEADER_BYTES", 1<<20, 4096),
		ReadHeaderTimeout: l.duration("LOBBY_READ_HEADER_TIMEOUT", 10*time.Second, positive),
		IdleTimeout:       l.duration("LOBBY_IDLE_TIMEOUT", 90*time.Second, positive),

		PodName:    l.str("POD_NAME", ""),
		Kubeconfig: l.str("KUBECONFIG", ""),
	}
	c.LogLevel = parse(&l, "LOBBY_LOG_LEVEL", logging.LevelInfo, logging.ParseLevel)
	c.LogFormat = parse(&l, "LOBBY_LOG_FORMAT", logging.FormatJSON, logging.ParseFormat)

	if c.ProxyAddr == c.AdminAddr && c.ProxyAddr != "" {
		l.fail("LOBBY_ADMIN_ADDR", fmt.Errorf("must differ from LOBBY_PROXY_ADDR (%q): the admin port is never exposed with the proxy", c.ProxyAddr))
	}
	if c.PodName == "" {
		h, err := os.Hostname()
		if err != nil {
			l.fail("POD_NAME", fmt.Errorf("unset, and the host name is unknown: %w", err))
		}
		c.PodName = h
	}
	if err := errors.Join(l.errs...); err != nil {
		return Config{}, fmt.Errorf("load configuration: %w", err)
	}
	return c, nil
}

// loader reads variables and collects their errors, so that one start reports every mistake.
type loader struct {
	lookup func(string) (string, bool)
	errs   []error
}

func (l *loader) fail(name string, err error) {
	l.errs = append(l.errs, fmt.Errorf("%s: %w", name, err))
}

// get returns the variable's value, or ok false when it is unset or empty (an empty variable is
// how Helm renders an unset value, so it means "default" too).
func (l *loader) get(name string) (string, bool) {
	v, ok := l.lookup(name)
	return v, ok && v != ""
}

func (l *loader) str(name, def string) string {
	if v, ok := l.get(name); ok {
		return v
	}
	return def
}

func (l *loader) addr(name, def string) string {
	v := l.str(name, def)
	if _, port, err := net.SplitHostPort(v); err != nil {
		l.fail(name, fmt.Errorf("parse address %q: want host:port or :port: %w", v, err))
	} else if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		l.fail(name, fmt.Errorf("parse address %q: port must be a number from 1 to 65535", v))
	}
	return v
}

func (l *loader) namespace(name string) string {
	v := l.str(name, "")
	if v == "" {
		return ""
	}
	if msgs := validation.IsDNS1123Label(v); len(msgs) > 0 {
		l.fail(name, fmt.Errorf("invalid namespace %q: %s", v, msgs[0]))
	}
	return v
}

// durationCheck returns why d is not acceptable, or "".
type durationCheck func(d time.Duration) string

func positive(d time.Duration) string {
	if d <= 0 {
		return "must be positive"
	}
	return ""
}

func nonNegative(d time.Duration) string {
	if d < 0 {
		return "must not be negative"
	}
	return ""
}

func atLeast(min time.Duration) durationCheck {
	return func(d time.Duration) string {
		if d < min {
			return "must be at least " + min.String()
		}
		return ""
	}
}

func (l *loader) duration(name string, def time.Duration, check durationCheck) time.Duration {
	v, ok := l.get(name)
	if !ok {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		l.fail(name, fmt.Errorf("parse duration %q: want a Go duration such as 30s or 1m30s", v))
		return def
	}
	if why := check(d); why != "" {
		l.fail(name, fmt.Errorf("%s, got %s", why, v))
	}
	return d
}

func (l *loader) integer(name string, def, min int) int {
	v, ok := l.get(name)
	if !ok {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		l.fail(name, fmt.Errorf("parse integer %q", v))
		return def
	}
	if n < min {
		l.fail(name, fmt.Errorf("must be at least %d, got %d", min, n))
	}
	return n
}

func parse[T any](l *loader, name string, def T, p func(string) (T, error)) T {
	v, ok := l.get(name)
	if !ok {
		return def
	}
	t, err := p(v)
	if err != nil {
		l.fail(name, err)
		return def
	}
	return t
}

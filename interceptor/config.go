package main

import (
	"fmt"
	"os"
	"time"

	"github.com/lobby-http/lobby/internal/env"
	"github.com/lobby-http/lobby/internal/logging"
	"github.com/lobby-http/lobby/internal/memlimit"
)

// The proxy's connection cap, when not configured, is what the container's memory holds. Under a
// connection flood almost every connection is idle after its answer or holds one request:
// TestOverload measured about 20 KiB per idle keep-alive connection at its peak (an 8 KiB
// goroutine stack and 12 KiB of heap), and BenchmarkHeldMemory 16 KiB per held request on its own
// connection. Each connection is budgeted connectionBudget, the measured cost and about 60% more
// of room for the collector to work in (at the cap, what is live is about two thirds of the soft
// limit), after baseReserve for the rest of the interceptor: route table, informer caches, the
// runtime and the requests in flight to pods. The default 512Mi limit holds 12,697 connections.
const (
	connectionBudget = 32 << 10
	baseReserve      = 64 << 20
	// minMaxConnections is the smallest derived cap: a container too small for the reserve still
	// serves some connections rather than none.
	minMaxConnections = 256
)

// maxConnectionsFor returns the connection cap for a container memory limit of limit bytes: what
// the Go soft limit memlimit gives that container holds after baseReserve, at connectionBudget
// each, and at least minMaxConnections. No known limit gives 0, no cap.
func maxConnectionsFor(limit int64) int {
	if limit <= 0 {
		return 0
	}
	soft := memlimit.Decide(limit, false).Soft
	return int(max((soft-baseReserve)/connectionBudget, minMaxConnections))
}

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
	// nothing; zero holds it until the client goes away (LOBBY_COLD_START_TIMEOUT).
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
	// AddOnColdStartHeader sends the KEDA HTTP Add-on's X-KEDA-HTTP-Cold-Start header on proxied
	// responses, beside lobby's own (LOBBY_ADDON_COLD_START_HEADER).
	AddOnColdStartHeader bool

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

	// MemoryLimit is the container's memory limit in bytes, 0 when unknown (LOBBY_MEMORY_LIMIT).
	// main hands it to the Go runtime through memlimit; here it sizes the default MaxConnections.
	MemoryLimit int64
	// MaxConnections is the most client connections the proxy keeps open at once; more wait in
	// the listen backlog. 0 is no cap. Unset, it is what MemoryLimit holds (maxConnectionsFor)
	// (LOBBY_MAX_CONNECTIONS).
	MaxConnections int

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
	l := env.NewLoader(lookup)
	c := Config{
		ProxyAddr:      l.Addr("LOBBY_PROXY_ADDR", ":8080"),
		AdminAddr:      l.Addr("LOBBY_ADMIN_ADDR", ":9090"),
		WatchNamespace: l.Namespace("LOBBY_WATCH_NAMESPACE"),

		// The add-on's defaults, so that what worked behind it works behind lobby: no bound on
		// the hold but the client's (and the hold queue's cap), 300 s for response headers.
		ColdStartTimeout:      l.Duration("LOBBY_COLD_START_TIMEOUT", 0, env.NonNegative),
		ResponseHeaderTimeout: l.Duration("LOBBY_RESPONSE_HEADER_TIMEOUT", 300*time.Second, env.Positive),
		RequestTimeout:        l.Duration("LOBBY_REQUEST_TIMEOUT", 0, env.NonNegative),
		MaxPendingRequests:    int64(l.Int("LOBBY_MAX_PENDING_REQUESTS", 1000, 1)),
		AddOnColdStartHeader:  l.Bool("LOBBY_ADDON_COLD_START_HEADER", false),

		StreamInterval:     l.Duration("LOBBY_STREAM_INTERVAL", time.Second, env.AtLeast(10*time.Millisecond)),
		StreamWriteTimeout: l.Duration("LOBBY_STREAM_WRITE_TIMEOUT", 10*time.Second, env.Positive),

		DrainDelay:   l.Duration("LOBBY_DRAIN_DELAY", 5*time.Second, env.NonNegative),
		DrainTimeout: l.Duration("LOBBY_DRAIN_TIMEOUT", 40*time.Second, env.Positive),

		MaxHeaderBytes:    l.Int("LOBBY_MAX_HEADER_BYTES", 1<<20, 4096),
		ReadHeaderTimeout: l.Duration("LOBBY_READ_HEADER_TIMEOUT", 10*time.Second, env.Positive),
		IdleTimeout:       l.Duration("LOBBY_IDLE_TIMEOUT", 90*time.Second, env.Positive),

		MemoryLimit: env.Parse(l, memlimit.Variable, 0, memlimit.Parse),

		PodName:    l.String("POD_NAME", ""),
		Kubeconfig: l.String("KUBECONFIG", ""),
	}
	c.LogLevel = env.Parse(l, "LOBBY_LOG_LEVEL", logging.LevelInfo, logging.ParseLevel)
	c.LogFormat = env.Parse(l, "LOBBY_LOG_FORMAT", logging.FormatJSON, logging.ParseFormat)
	c.MaxConnections = l.Int("LOBBY_MAX_CONNECTIONS", maxConnectionsFor(c.MemoryLimit), 0)

	if c.ProxyAddr == c.AdminAddr && c.ProxyAddr != "" {
		l.Fail("LOBBY_ADMIN_ADDR", fmt.Errorf("must differ from LOBBY_PROXY_ADDR (%q): the admin port is never exposed with the proxy", c.ProxyAddr))
	}
	if c.PodName == "" {
		h, err := os.Hostname()
		if err != nil {
			l.Fail("POD_NAME", fmt.Errorf("unset, and the host name is unknown: %w", err))
		}
		c.PodName = h
	}
	if err := l.Err(); err != nil {
		return Config{}, err
	}
	return c, nil
}

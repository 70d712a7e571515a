package main

import (
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/lobby-http/lobby/interceptor/internal/routing"
	"github.com/lobby-http/lobby/internal/env"
	"github.com/lobby-http/lobby/internal/logging"
	"github.com/lobby-http/lobby/internal/memlimit"
	"github.com/lobby-http/lobby/internal/tracing"
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

// maxHeldRequestsFor returns the cap on requests held over all routes for a container memory limit
// of limit bytes: half of the connection cap that limit gives. Every held request occupies a slot
// of the connection cap (its HTTP/1.1 connection's, or its HTTP/2 stream's), so the memory model
// already counts it; the held cap keeps half of the slots for requests that are being served, so
// that a flood of requests for apps at zero cannot take every slot from warm routes. No known
// limit gives 0, no cap.
func maxHeldRequestsFor(limit int64) int {
	return maxConnectionsFor(limit) / 2
}

// defaultMaxConcurrentStreams is the most streams an HTTP/2 client may run at once on one
// connection, unless configured: the least RFC 9113 recommends, as nginx (128) and Envoy (100 by
// default for downstreams behind a cap) do, against Go's 250.
const defaultMaxConcurrentStreams = 100

// Config is everything the interceptor is configured with, loaded from environment variables
// once at start. docs/configuration.md describes each variable and why its default is what it is.
type Config struct {
	// ProxyAddr is where the proxy listens (LOBBY_PROXY_ADDR).
	ProxyAddr string
	// AdminAddr is where the admin server listens (LOBBY_ADMIN_ADDR).
	AdminAddr string
	// ProxyTLSAddr is where the proxy also listens for HTTPS; empty serves no TLS
	// (LOBBY_PROXY_TLS_ADDR).
	ProxyTLSAddr string
	// ProxyTLSCertDirs are the folders of the proxy's TLS key pairs (tls.crt and tls.key each); the
	// first is the default for clients whose server name no pair names
	// (LOBBY_PROXY_TLS_CERT_DIRS, comma-separated).
	ProxyTLSCertDirs []string
	// ProxyTLSMinVersion is the oldest TLS version the proxy accepts (LOBBY_PROXY_TLS_MIN_VERSION).
	ProxyTLSMinVersion uint16
	// ProxyTLSCipherSuites restricts the TLS 1.2 cipher suites; nil means Go's defaults
	// (LOBBY_PROXY_TLS_CIPHER_SUITES).
	ProxyTLSCipherSuites []uint16
	// TLSReloadInterval is how often the key pair files and the upstream CA bundle are checked
	// for changes (LOBBY_TLS_RELOAD_INTERVAL).
	TLSReloadInterval time.Duration

	// UpstreamCAFile is a PEM bundle of the CAs that sign the certificates of apps served over
	// HTTPS, read again when it changes; empty means the system's roots (LOBBY_UPSTREAM_CA_FILE).
	UpstreamCAFile string
	// ClusterDomain is the cluster's DNS domain, which completes the Service names an app's
	// certificate is verified against (LOBBY_CLUSTER_DOMAIN).
	ClusterDomain string

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
	// ColdStartMode is the cold-start mode of routes that set none: Hold, Placeholder or Auto.
	ColdStartMode routing.ColdStartMode
	// AddOnColdStartHeader sends the KEDA HTTP Add-on's X-KEDA-HTTP-Cold-Start header on proxied
	// responses, beside lobby's own (LOBBY_ADDON_COLD_START_HEADER).
	AddOnColdStartHeader bool

	// StreamInterval is the period of the push stream's counts frames (LOBBY_STREAM_INTERVAL).
	StreamInterval time.Duration
	// StreamWriteTimeout is how long a stream subscriber may take to accept one frame before it is
	// disconnected (LOBBY_STREAM_WRITE_TIMEOUT).
	StreamWriteTimeout time.Duration

	// StreamMaxSubscribers is the most push-stream subscribers served at once; one more is
	// refused with 503 (LOBBY_STREAM_MAX_SUBSCRIBERS).
	StreamMaxSubscribers int

	// AdminTokenAudience is the audience the ServiceAccount tokens sent to /stream and /queue must
	// be issued for (LOBBY_ADMIN_TOKEN_AUDIENCE).
	AdminTokenAudience string
	// AdminAllowedServiceAccounts are the ServiceAccounts, as namespace/name, whose tokens may read
	// /stream and /queue; none when empty (LOBBY_ADMIN_ALLOWED_SERVICE_ACCOUNTS, comma-separated).
	AdminAllowedServiceAccounts []string
	// AdminAuthCacheTTL is how long an accepted token is trusted without a new TokenReview
	// (LOBBY_ADMIN_AUTH_CACHE_TTL).
	AdminAuthCacheTTL time.Duration
	// AdminAuthNegativeTTL is how long a rejected token is rejected without a new TokenReview
	// (LOBBY_ADMIN_AUTH_NEGATIVE_TTL).
	AdminAuthNegativeTTL time.Duration

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
	// MaxHeldRequests is the most requests held at once over all routes; more get what a full
	// hold queue gives. 0 is no cap. Unset, it is half of what MemoryLimit holds
	// (maxHeldRequestsFor) (LOBBY_MAX_HELD_REQUESTS).
	MaxHeldRequests int
	// MaxConcurrentStreams is the most HTTP/2 streams a client may run at once on one connection
	// (LOBBY_MAX_CONCURRENT_STREAMS). Each running stream also takes a slot of MaxConnections.
	MaxConcurrentStreams int
	// BodyIdleTimeout cuts a request whose body makes no progress for that long once it is being
	// read; 0 turns it off (LOBBY_BODY_IDLE_TIMEOUT).
	BodyIdleTimeout time.Duration
	// WriteIdleTimeout closes a client connection that takes nothing of what is written to it
	// for that long; 0 turns it off (LOBBY_WRITE_IDLE_TIMEOUT).
	WriteIdleTimeout time.Duration

	// Tracing says whether and where spans are exported, from OpenTelemetry's standard
	// variables (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_TRACES_SAMPLER, ...; see tracing.Load). Off
	// unless an OTLP endpoint is set.
	Tracing tracing.Options

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

		ProxyTLSCertDirs:     env.Parse(l, "LOBBY_PROXY_TLS_CERT_DIRS", nil, parseDirs),
		ProxyTLSMinVersion:   env.Parse(l, "LOBBY_PROXY_TLS_MIN_VERSION", tls.VersionTLS12, parseTLSVersion),
		ProxyTLSCipherSuites: env.Parse(l, "LOBBY_PROXY_TLS_CIPHER_SUITES", nil, parseCipherSuites),
		TLSReloadInterval:    l.Duration("LOBBY_TLS_RELOAD_INTERVAL", 10*time.Second, env.AtLeast(100*time.Millisecond)),

		UpstreamCAFile: l.String("LOBBY_UPSTREAM_CA_FILE", ""),
		ClusterDomain:  env.Parse(l, "LOBBY_CLUSTER_DOMAIN", "cluster.local", parseDomain),

		// The add-on's defaults, so that what worked behind it works behind lobby: no bound on
		// the hold but the client's (and the hold queue's cap), 300 s for response headers.
		ColdStartTimeout:      l.Duration("LOBBY_COLD_START_TIMEOUT", 0, env.NonNegative),
		ResponseHeaderTimeout: l.Duration("LOBBY_RESPONSE_HEADER_TIMEOUT", 300*time.Second, env.Positive),
		RequestTimeout:        l.Duration("LOBBY_REQUEST_TIMEOUT", 0, env.NonNegative),
		MaxPendingRequests:    int64(l.Int("LOBBY_MAX_PENDING_REQUESTS", 1000, 1)),
		AddOnColdStartHeader:  l.Bool("LOBBY_ADDON_COLD_START_HEADER", false),
		ColdStartMode:         env.Parse(l, "LOBBY_COLD_START_MODE", routing.ColdStartHold, routing.ParseColdStartMode),

		StreamInterval:     l.Duration("LOBBY_STREAM_INTERVAL", time.Second, env.AtLeast(10*time.Millisecond)),
		StreamWriteTimeout: l.Duration("LOBBY_STREAM_WRITE_TIMEOUT", 10*time.Second, env.Positive),
		// Two scaler replicas, one more during their rolling update, each possibly holding a
		// stream the interceptor has not yet noticed is dead, and room for tools: see
		// docs/stream.md. The chart derives it from its scaler replicas.
		StreamMaxSubscribers: l.Int("LOBBY_STREAM_MAX_SUBSCRIBERS", 32, 1),

		AdminTokenAudience:          env.Parse(l, "LOBBY_ADMIN_TOKEN_AUDIENCE", "lobby-interceptor", parseAudience),
		AdminAllowedServiceAccounts: env.Parse(l, "LOBBY_ADMIN_ALLOWED_SERVICE_ACCOUNTS", nil, parseServiceAccounts),
		AdminAuthCacheTTL:           l.Duration("LOBBY_ADMIN_AUTH_CACHE_TTL", time.Minute, env.AtLeast(time.Second)),
		AdminAuthNegativeTTL:        l.Duration("LOBBY_ADMIN_AUTH_NEGATIVE_TTL", 10*time.Second, env.AtLeast(time.Second)),

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
	c.MaxHeldRequests = l.Int("LOBBY_MAX_HELD_REQUESTS", maxHeldRequestsFor(c.MemoryLimit), 0)
	c.MaxConcurrentStreams = l.Int("LOBBY_MAX_CONCURRENT_STREAMS", defaultMaxConcurrentStreams, 1)
	// nginx's client_body_timeout and send_timeout, which mean the same: time between two
	// successive reads or writes, not for the whole body.
	c.BodyIdleTimeout = l.Duration("LOBBY_BODY_IDLE_TIMEOUT", 60*time.Second, env.NonNegative)
	c.WriteIdleTimeout = l.Duration("LOBBY_WRITE_IDLE_TIMEOUT", 60*time.Second, env.NonNegative)
	c.Tracing = tracing.Load(lookup, "lobby-interceptor", l.Fail)

	if c.ProxyAddr == c.AdminAddr && c.ProxyAddr != "" {
		l.Fail("LOBBY_ADMIN_ADDR", fmt.Errorf("must differ from LOBBY_PROXY_ADDR (%q): the admin port is never exposed with the proxy", c.ProxyAddr))
	}
	if _, ok := l.Get("LOBBY_PROXY_TLS_ADDR"); ok {
		c.ProxyTLSAddr = l.Addr("LOBBY_PROXY_TLS_ADDR", "")
		if c.ProxyTLSAddr == c.ProxyAddr || c.ProxyTLSAddr == c.AdminAddr {
			l.Fail("LOBBY_PROXY_TLS_ADDR", fmt.Errorf("must differ from LOBBY_PROXY_ADDR and LOBBY_ADMIN_ADDR"))
		}
		if len(c.ProxyTLSCertDirs) == 0 {
			l.Fail("LOBBY_PROXY_TLS_CERT_DIRS", fmt.Errorf("unset, but LOBBY_PROXY_TLS_ADDR asks for TLS: name at least one folder holding tls.crt and tls.key"))
		}
	} else if len(c.ProxyTLSCertDirs) > 0 {
		l.Fail("LOBBY_PROXY_TLS_CERT_DIRS", fmt.Errorf("set, but LOBBY_PROXY_TLS_ADDR is not: say where to serve TLS"))
	}
	if c.ProxyTLSMinVersion == tls.VersionTLS13 && c.ProxyTLSCipherSuites != nil {
		l.Fail("LOBBY_PROXY_TLS_CIPHER_SUITES", fmt.Errorf("set, but LOBBY_PROXY_TLS_MIN_VERSION is 1.3, whose cipher suites are not configurable"))
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

// parseDirs reads a comma-separated list of absolute folders.
func parseDirs(v string) ([]string, error) {
	var dirs []string
	for _, d := range strings.Split(v, ",") {
		d = strings.TrimSpace(d)
		if d == "" {
			continue
		}
		if !filepath.IsAbs(d) {
			return nil, fmt.Errorf("folder %q: want an absolute path", d)
		}
		dirs = append(dirs, filepath.Clean(d))
	}
	return dirs, nil
}

// parseAudience reads a token audience: any non-empty string without spaces or commas.
func parseAudience(v string) (string, error) {
	v = strings.TrimSpace(v)
	if v == "" || strings.ContainsAny(v, " ,\t") {
		return "", fmt.Errorf("invalid audience %q: want one word such as lobby-interceptor", v)
	}
	return v, nil
}

// parseServiceAccounts reads a comma-separated list of ServiceAccounts as namespace/name.
func parseServiceAccounts(v string) ([]string, error) {
	var sas []string
	for _, sa := range strings.Split(v, ",") {
		sa = strings.TrimSpace(sa)
		if sa == "" {
			continue
		}
		ns, name, ok := strings.Cut(sa, "/")
		if !ok {
			return nil, fmt.Errorf("ServiceAccount %q: want namespace/name, such as lobby/lobby-scaler", sa)
		}
		if msgs := validation.IsDNS1123Label(ns); len(msgs) > 0 {
			return nil, fmt.Errorf("ServiceAccount %q: invalid namespace: %s", sa, msgs[0])
		}
		if msgs := validation.IsDNS1123Subdomain(name); len(msgs) > 0 {
			return nil, fmt.Errorf("ServiceAccount %q: invalid name: %s", sa, msgs[0])
		}
		sas = append(sas, sa)
	}
	return sas, nil
}

// parseTLSVersion reads "1.2" or "1.3".
func parseTLSVersion(v string) (uint16, error) {
	switch strings.TrimPrefix(strings.ToLower(v), "tls") {
	case "1.2":
		return tls.VersionTLS12, nil
	case "1.3":
		return tls.VersionTLS13, nil
	}
	return 0, fmt.Errorf("parse TLS version %q: want 1.2 or 1.3", v)
}

// parseCipherSuites reads a comma-separated list of TLS 1.2 cipher suite names as Go and IANA
// spell them (TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256). Suites Go deems insecure are refused.
func parseCipherSuites(v string) ([]uint16, error) {
	byName := map[string]*tls.CipherSuite{}
	for _, s := range tls.CipherSuites() {
		byName[s.Name] = s
	}
	insecure := map[string]bool{}
	for _, s := range tls.InsecureCipherSuites() {
		insecure[s.Name] = true
	}
	var ids []uint16
	for _, n := range strings.Split(v, ",") {
		n = strings.TrimSpace(n)
		if n == "" {
			continue
		}
		s := byName[n]
		switch {
		case insecure[n]:
			return nil, fmt.Errorf("cipher suite %s is insecure", n)
		case s == nil:
			return nil, fmt.Errorf("unknown cipher suite %q: want names such as TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", n)
		case !supportsTLS12(s):
			return nil, fmt.Errorf("cipher suite %s is a TLS 1.3 suite, which is not configurable", n)
		}
		ids = append(ids, s.ID)
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("no cipher suite in %q", v)
	}
	return ids, nil
}

func supportsTLS12(s *tls.CipherSuite) bool {
	for _, v := range s.SupportedVersions {
		if v == tls.VersionTLS12 {
			return true
		}
	}
	return false
}

// parseDomain reads a DNS domain such as cluster.local, without dots at either end.
func parseDomain(v string) (string, error) {
	d := strings.Trim(strings.ToLower(v), ".")
	if msgs := validation.IsDNS1123Subdomain(d); len(msgs) > 0 {
		return "", fmt.Errorf("invalid cluster domain %q: %s", v, msgs[0])
	}
	return d, nil
}

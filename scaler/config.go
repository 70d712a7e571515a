package main

import (
	"errors"
	"fmt"
	"os"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/lobby-http/lobby/internal/env"
	"github.com/lobby-http/lobby/internal/logging"
	"github.com/lobby-http/lobby/internal/memlimit"
)

// Config is everything the scaler is configured with, loaded from environment variables once at
// start. docs/scaler.md describes each variable.
type Config struct {
	// GRPCAddr is where the ExternalScaler and health gRPC services listen (LOBBY_GRPC_ADDR).
	GRPCAddr string
	// AdminAddr is where the HTTP admin server (/livez, /readyz, /metrics) listens
	// (LOBBY_ADMIN_ADDR).
	AdminAddr string

	// InterceptorService is the name of the interceptor admin Service whose EndpointSlices list
	// the interceptor pods (LOBBY_INTERCEPTOR_SERVICE).
	InterceptorService string
	// InterceptorNamespace is that Service's namespace (LOBBY_INTERCEPTOR_NAMESPACE, else
	// POD_NAMESPACE).
	InterceptorNamespace string
	// InterceptorPortName is the name of the Service port of the interceptor admin server
	// (LOBBY_INTERCEPTOR_PORT_NAME).
	InterceptorPortName string
	// WatchNamespace restricts the watched HTTPScaledObjects to one namespace; empty watches all
	// (LOBBY_WATCH_NAMESPACE).
	WatchNamespace string
	// InterceptorTokenFile is the ServiceAccount token, issued for the interceptors' admin
	// audience, that the scaler presents to their push streams; read again for every connection,
	// as the kubelet rotates it (LOBBY_INTERCEPTOR_TOKEN_FILE).
	InterceptorTokenFile string
	// StreamGrace is how long the last counts of an interceptor whose stream broke still count
	// (LOBBY_STREAM_GRACE).
	StreamGrace time.Duration

	// TLSCertFile and TLSKeyFile, when set, make the gRPC server speak TLS
	// (LOBBY_TLS_CERT_FILE, LOBBY_TLS_KEY_FILE).
	TLSCertFile, TLSKeyFile string
	// TLSClientCAFile, when set, makes the gRPC server require client certificates signed by
	// these CAs (LOBBY_TLS_CLIENT_CA_FILE).
	TLSClientCAFile string

	// LogLevel is how much is logged (LOBBY_LOG_LEVEL).
	LogLevel logging.Level
	// LogFormat is how it is written (LOBBY_LOG_FORMAT).
	LogFormat logging.Format
	// MemoryLimit is the container's memory limit in bytes, 0 when unknown (LOBBY_MEMORY_LIMIT);
	// main gives the Go runtime its soft limit from it (internal/memlimit).
	MemoryLimit int64
	// Kubeconfig is the kubeconfig path list; empty means the in-cluster configuration
	// (KUBECONFIG).
	Kubeconfig string
	// PodName names this scaler in logs (POD_NAME).
	PodName string
}

// DefaultTokenFile is where the chart mounts the scaler's projected token for the interceptors.
const DefaultTokenFile = "/var/run/secrets/lobby/interceptor/token"

// loadConfig reads the configuration through lookup (os.LookupEnv outside tests), applying
// defaults and validating every value. The error names each variable that is wrong.
func loadConfig(lookup func(string) (string, bool)) (Config, error) {
	l := env.NewLoader(lookup)
	c := Config{
		GRPCAddr:             l.Addr("LOBBY_GRPC_ADDR", ":9090"),
		AdminAddr:            l.Addr("LOBBY_ADMIN_ADDR", ":9091"),
		InterceptorService:   l.String("LOBBY_INTERCEPTOR_SERVICE", ""),
		InterceptorNamespace: l.String("LOBBY_INTERCEPTOR_NAMESPACE", l.String("POD_NAMESPACE", "")),
		InterceptorPortName:  l.String("LOBBY_INTERCEPTOR_PORT_NAME", "admin"),
		WatchNamespace:       l.String("LOBBY_WATCH_NAMESPACE", ""),
		InterceptorTokenFile: l.String("LOBBY_INTERCEPTOR_TOKEN_FILE", DefaultTokenFile),
		StreamGrace:          env.Parse(l, "LOBBY_STREAM_GRACE", 10*time.Second, parseGrace),
		TLSCertFile:          l.String("LOBBY_TLS_CERT_FILE", ""),
		TLSKeyFile:           l.String("LOBBY_TLS_KEY_FILE", ""),
		TLSClientCAFile:      l.String("LOBBY_TLS_CLIENT_CA_FILE", ""),
		Kubeconfig:           l.String("KUBECONFIG", ""),
		PodName:              l.String("POD_NAME", ""),
	}
	c.LogLevel = env.Parse(l, "LOBBY_LOG_LEVEL", logging.LevelInfo, logging.ParseLevel)
	c.LogFormat = env.Parse(l, "LOBBY_LOG_FORMAT", logging.FormatJSON, logging.ParseFormat)
	c.MemoryLimit = env.Parse(l, memlimit.Variable, 0, memlimit.Parse)

	switch {
	case c.InterceptorService == "":
		l.Fail("LOBBY_INTERCEPTOR_SERVICE", errors.New("required: the name of the interceptor admin Service"))
	default:
		if msgs := validation.IsDNS1035Label(c.InterceptorService); len(msgs) > 0 {
			l.Fail("LOBBY_INTERCEPTOR_SERVICE", fmt.Errorf("invalid Service name %q: %s", c.InterceptorService, msgs[0]))
		}
	}
	if c.InterceptorNamespace == "" {
		l.Fail("LOBBY_INTERCEPTOR_NAMESPACE", errors.New("required (or POD_NAMESPACE): the namespace of the interceptor admin Service"))
	} else {
		l.CheckNamespace("LOBBY_INTERCEPTOR_NAMESPACE", c.InterceptorNamespace)
	}
	if c.WatchNamespace != "" {
		l.CheckNamespace("LOBBY_WATCH_NAMESPACE", c.WatchNamespace)
	}
	if msgs := validation.IsValidPortName(c.InterceptorPortName); len(msgs) > 0 {
		l.Fail("LOBBY_INTERCEPTOR_PORT_NAME", fmt.Errorf("invalid port name %q: %s", c.InterceptorPortName, msgs[0]))
	}
	if c.StreamGrace <= 0 {
		l.Fail("LOBBY_STREAM_GRACE", fmt.Errorf("must be positive, got %s", c.StreamGrace))
	}
	if c.GRPCAddr == c.AdminAddr {
		l.Fail("LOBBY_ADMIN_ADDR", fmt.Errorf("must differ from LOBBY_GRPC_ADDR (%q)", c.GRPCAddr))
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		l.Fail("LOBBY_TLS_KEY_FILE", errors.New("LOBBY_TLS_CERT_FILE and LOBBY_TLS_KEY_FILE are set together or not at all"))
	}
	if c.TLSClientCAFile != "" && c.TLSCertFile == "" {
		l.Fail("LOBBY_TLS_CLIENT_CA_FILE", errors.New("needs LOBBY_TLS_CERT_FILE and LOBBY_TLS_KEY_FILE: client certificates are verified only over TLS"))
	}
	if _, err := os.Stat(c.InterceptorTokenFile); err != nil {
		l.Fail("LOBBY_INTERCEPTOR_TOKEN_FILE", fmt.Errorf("read %s: %w: mount a projected ServiceAccount token issued for the interceptors' audience there, as the chart does (see docs/stream.md)",
			c.InterceptorTokenFile, err))
	}
	for _, v := range []struct{ name, path string }{
		{"LOBBY_TLS_CERT_FILE", c.TLSCertFile}, {"LOBBY_TLS_KEY_FILE", c.TLSKeyFile}, {"LOBBY_TLS_CLIENT_CA_FILE", c.TLSClientCAFile},
	} {
		if v.path == "" {
			continue
		}
		if _, err := os.Stat(v.path); err != nil {
			l.Fail(v.name, fmt.Errorf("read %s: %w", v.path, err))
		}
	}
	if err := l.Err(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// parseGrace reads LOBBY_STREAM_GRACE; whether it is positive is checked with the other rules.
func parseGrace(v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("parse duration %q: want a Go duration such as 10s or 1m", v)
	}
	return d, nil
}

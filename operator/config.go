package main

import (
	"errors"
	"fmt"
	"net"
	"strconv"

	// Aliased: the package tests use env as the name of their lookup helper.
	envvar "github.com/lobby-http/lobby/internal/env"
	"github.com/lobby-http/lobby/internal/logging"
	"github.com/lobby-http/lobby/internal/memlimit"
	"github.com/lobby-http/lobby/operator/internal/resources"
)

// Config is everything the operator is configured with, loaded from environment variables once at
// start. docs/operator.md describes each variable.
type Config struct {
	// ScalerAddress is the host:port KEDA dials for lobby's scaler, written into every
	// ScaledObject's trigger (LOBBY_SCALER_ADDRESS, required).
	ScalerAddress string
	// ScalerTLS makes KEDA dial the scaler with TLS: every trigger gets enableTLS: "true"
	// (LOBBY_SCALER_TLS).
	ScalerTLS bool
	// ScalerTriggerAuth, when set, is the KEDA TriggerAuthentication or
	// ClusterTriggerAuthentication every trigger names as its authenticationRef, which gives KEDA
	// the scaler's CA and a client key pair (LOBBY_SCALER_TRIGGER_AUTH, Kind/name). It needs
	// ScalerTLS.
	ScalerTriggerAuth resources.AuthenticationRef
	// MetricsAddr is where the Prometheus metrics endpoint listens (LOBBY_METRICS_ADDR).
	MetricsAddr string
	// HealthAddr is where /healthz and /readyz listen (LOBBY_HEALTH_ADDR).
	HealthAddr string
	// LeaderElect runs leader election, so that one replica of several reconciles
	// (LOBBY_LEADER_ELECT).
	LeaderElect bool
	// LeaderElectionNamespace holds the election Lease (LOBBY_LEADER_ELECTION_NAMESPACE, default
	// POD_NAMESPACE).
	LeaderElectionNamespace string
	// WatchNamespace restricts the operator to one namespace; empty watches all
	// (LOBBY_WATCH_NAMESPACE).
	WatchNamespace string

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
}

// loadConfig reads the configuration through lookup (os.LookupEnv outside tests), applying
// defaults and validating every value. The error names each variable that is wrong.
func loadConfig(lookup func(string) (string, bool)) (Config, error) {
	l := envvar.NewLoader(lookup)
	c := Config{
		ScalerAddress:  readScalerAddress(l, "LOBBY_SCALER_ADDRESS"),
		ScalerTLS:      l.Bool("LOBBY_SCALER_TLS", false),
		MetricsAddr:    l.Addr("LOBBY_METRICS_ADDR", ":8080"),
		HealthAddr:     l.Addr("LOBBY_HEALTH_ADDR", ":8081"),
		LeaderElect:    l.Bool("LOBBY_LEADER_ELECT", true),
		WatchNamespace: l.Namespace("LOBBY_WATCH_NAMESPACE"),
		Kubeconfig:     l.String("KUBECONFIG", ""),
	}
	c.ScalerTriggerAuth = envvar.Parse(l, "LOBBY_SCALER_TRIGGER_AUTH", resources.AuthenticationRef{}, resources.ParseAuthenticationRef)
	if _, set := l.Get("LOBBY_SCALER_TRIGGER_AUTH"); set && !c.ScalerTLS {
		// KEDA takes the authentication's caCert and client key pair as TLS settings; a
		// reference without TLS is a half-finished setup that would still dial in plain text
		// wherever the object lacks them.
		l.Fail("LOBBY_SCALER_TRIGGER_AUTH", errors.New("needs LOBBY_SCALER_TLS=true: the authentication only gives KEDA TLS settings (caCert, tlsClientCert, tlsClientKey)"))
	}
	c.LeaderElectionNamespace = l.Namespace("LOBBY_LEADER_ELECTION_NAMESPACE")
	if c.LeaderElectionNamespace == "" {
		c.LeaderElectionNamespace = l.Namespace("POD_NAMESPACE")
	}
	if c.LeaderElect && c.LeaderElectionNamespace == "" {
		l.Fail("LOBBY_LEADER_ELECTION_NAMESPACE", errors.New("unset, and so is POD_NAMESPACE: name the namespace of the election Lease, or set LOBBY_LEADER_ELECT=false"))
	}
	c.LogLevel = envvar.Parse(l, "LOBBY_LOG_LEVEL", logging.LevelInfo, logging.ParseLevel)
	c.LogFormat = envvar.Parse(l, "LOBBY_LOG_FORMAT", logging.FormatJSON, logging.ParseFormat)
	c.MemoryLimit = envvar.Parse(l, memlimit.Variable, 0, memlimit.Parse)
	if c.MetricsAddr == c.HealthAddr {
		l.Fail("LOBBY_HEALTH_ADDR", fmt.Errorf("must differ from LOBBY_METRICS_ADDR (%q)", c.MetricsAddr))
	}
	if err := l.Err(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// trigger returns how the ScaledObjects' triggers reach the scaler.
func (c Config) trigger() resources.Trigger {
	return resources.Trigger{ScalerAddress: c.ScalerAddress, TLS: c.ScalerTLS, Auth: c.ScalerTriggerAuth}
}

// readScalerAddress reads the required host:port of the scaler; KEDA dials it from its own pod, so
// the host must be a name or address, not empty.
func readScalerAddress(l *envvar.Loader, name string) string {
	v, ok := l.Get(name)
	if !ok {
		l.Fail(name, errors.New("required: the host:port KEDA dials for lobby's scaler, such as lobby-scaler.lobby.svc.cluster.local:9090"))
		return ""
	}
	host, port, err := net.SplitHostPort(v)
	if err != nil || host == "" {
		l.Fail(name, fmt.Errorf("parse address %q: want host:port, such as lobby-scaler.lobby.svc.cluster.local:9090", v))
		return v
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		l.Fail(name, fmt.Errorf("parse address %q: port must be a number from 1 to 65535", v))
	}
	return v
}

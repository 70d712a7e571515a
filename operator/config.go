package main

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/lobby-http/lobby/internal/logging"
)

// Config is everything the operator is configured with, loaded from environment variables once at
// start. docs/operator.md describes each variable.
type Config struct {
	// ScalerAddress is the host:port KEDA dials for lobby's scaler, written into every
	// ScaledObject's trigger (LOBBY_SCALER_ADDRESS, required).
	ScalerAddress string
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
	// Kubeconfig is the kubeconfig path list; empty means the in-cluster configuration
	// (KUBECONFIG).
	Kubeconfig string
}

// loadConfig reads the configuration through lookup (os.LookupEnv outside tests), applying
// defaults and validating every value. The error names each variable that is wrong.
func loadConfig(lookup func(string) (string, bool)) (Config, error) {
	l := loader{lookup: lookup}
	c := Config{
		ScalerAddress:  l.scalerAddress("LOBBY_SCALER_ADDRESS"),
		MetricsAddr:    l.addr("LOBBY_METRICS_ADDR", ":8080"),
		HealthAddr:     l.addr("LOBBY_HEALTH_ADDR", ":8081"),
		LeaderElect:    l.boolean("LOBBY_LEADER_ELECT", true),
		WatchNamespace: l.namespace("LOBBY_WATCH_NAMESPACE"),
		Kubeconfig:     l.str("KUBECONFIG", ""),
	}
	c.LeaderElectionNamespace = l.namespace("LOBBY_LEADER_ELECTION_NAMESPACE")
	if c.LeaderElectionNamespace == "" {
		c.LeaderElectionNamespace = l.namespace("POD_NAMESPACE")
	}
	if c.LeaderElect && c.LeaderElectionNamespace == "" {
		l.fail("LOBBY_LEADER_ELECTION_NAMESPACE", errors.New("unset, and so is POD_NAMESPACE: name the namespace of the election Lease, or set LOBBY_LEADER_ELECT=false"))
	}
	c.LogLevel = parse(&l, "LOBBY_LOG_LEVEL", logging.LevelInfo, logging.ParseLevel)
	c.LogFormat = parse(&l, "LOBBY_LOG_FORMAT", logging.FormatJSON, logging.ParseFormat)
	if c.MetricsAddr == c.HealthAddr {
		l.fail("LOBBY_HEALTH_ADDR", fmt.Errorf("must differ from LOBBY_METRICS_ADDR (%q)", c.MetricsAddr))
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

// scalerAddress reads the required host:port of the scaler; KEDA dials it from its own pod, so
// the host must be a name or address, not empty.
func (l *loader) scalerAddress(name string) string {
	v, ok := l.get(name)
	if !ok {
		l.fail(name, errors.New("required: the host:port KEDA dials for lobby's scaler, such as lobby-scaler.lobby.svc.cluster.local:9090"))
		return ""
	}
	host, port, err := net.SplitHostPort(v)
	if err != nil || host == "" {
		l.fail(name, fmt.Errorf("parse address %q: want host:port, such as lobby-scaler.lobby.svc.cluster.local:9090", v))
		return v
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		l.fail(name, fmt.Errorf("parse address %q: port must be a number from 1 to 65535", v))
	}
	return v
}

func (l *loader) boolean(name string, def bool) bool {
	v, ok := l.get(name)
	if !ok {
		return def
	}
	b, err := strconv.ParseBool(strings.TrimSpace(v))
	if err != nil {
		l.fail(name, fmt.Errorf("parse boolean %q: want true or false", v))
		return def
	}
	return b
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

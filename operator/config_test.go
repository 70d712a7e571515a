package main

import (
	"strings"
	"testing"

	"github.com/lobby-http/lobby/internal/logging"
	"github.com/lobby-http/lobby/operator/internal/resources"
)

func env(vars map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := vars[k]
		return v, ok
	}
}

func TestLoadConfig(t *testing.T) {
	t.Run("the defaults apply when only the required variables are set", func(t *testing.T) {
		got, err := loadConfig(env(map[string]string{
			"LOBBY_SCALER_ADDRESS": "lobby-scaler.lobby.svc.cluster.local:9090",
			"POD_NAMESPACE":        "lobby",
			"LOBBY_METRICS_ADDR":   "", // Empty means unset, as Helm renders it.
		}))
		if err != nil {
			t.Fatal(err)
		}
		want := Config{
			ScalerAddress:           "lobby-scaler.lobby.svc.cluster.local:9090",
			MetricsAddr:             ":8080",
			HealthAddr:              ":8081",
			LeaderElect:             true,
			LeaderElectionNamespace: "lobby",
			LogLevel:                logging.LevelInfo,
			LogFormat:               logging.FormatJSON,
		}
		if got != want {
			t.Errorf("loadConfig() = %+v, want %+v", got, want)
		}
	})

	t.Run("every variable is read", func(t *testing.T) {
		got, err := loadConfig(env(map[string]string{
			"LOBBY_SCALER_ADDRESS":            "10.0.0.1:9000",
			"LOBBY_SCALER_TLS":                "true",
			"LOBBY_SCALER_TRIGGER_AUTH":       "ClusterTriggerAuthentication/lobby-scaler-tls",
			"LOBBY_METRICS_ADDR":              "127.0.0.1:9100",
			"LOBBY_HEALTH_ADDR":               ":9101",
			"LOBBY_LEADER_ELECT":              "false",
			"LOBBY_LEADER_ELECTION_NAMESPACE": "elect",
			"POD_NAMESPACE":                   "lobby",
			"LOBBY_WATCH_NAMESPACE":           "apps",
			"LOBBY_LOG_LEVEL":                 "debug",
			"LOBBY_LOG_FORMAT":                "console",
			"KUBECONFIG":                      "/tmp/kubeconfig",
			"LOBBY_MEMORY_LIMIT":              "268435456",
		}))
		if err != nil {
			t.Fatal(err)
		}
		want := Config{
			ScalerAddress: "10.0.0.1:9000",
			ScalerTLS:     true,
			ScalerTriggerAuth: resources.AuthenticationRef{
				Kind: resources.KindClusterTriggerAuthentication, Name: "lobby-scaler-tls",
			},
			MetricsAddr:             "127.0.0.1:9100",
			HealthAddr:              ":9101",
			LeaderElect:             false,
			LeaderElectionNamespace: "elect",
			WatchNamespace:          "apps",
			LogLevel:                logging.LevelDebug,
			LogFormat:               logging.FormatConsole,
			Kubeconfig:              "/tmp/kubeconfig",
			MemoryLimit:             256 << 20,
		}
		if got != want {
			t.Errorf("loadConfig() = %+v, want %+v", got, want)
		}
	})

	t.Run("TLS may be turned on without an authentication", func(t *testing.T) {
		got, err := loadConfig(env(map[string]string{"LOBBY_SCALER_ADDRESS": "s:1", "POD_NAMESPACE": "lobby", "LOBBY_SCALER_TLS": "true"}))
		if err != nil {
			t.Fatal(err)
		}
		if want := (resources.Trigger{ScalerAddress: "s:1", TLS: true}); got.trigger() != want {
			t.Errorf("trigger() = %+v, want %+v", got.trigger(), want)
		}
	})

	t.Run("leader election may run without a namespace only when it is off", func(t *testing.T) {
		if _, err := loadConfig(env(map[string]string{"LOBBY_SCALER_ADDRESS": "s:1", "LOBBY_LEADER_ELECT": "false"})); err != nil {
			t.Errorf("loadConfig() without election = %v, want no error", err)
		}
	})

	tests := []struct {
		name string
		vars map[string]string
		want []string
	}{
		{"a missing scaler address is named", map[string]string{"POD_NAMESPACE": "lobby"},
			[]string{"LOBBY_SCALER_ADDRESS: required"}},
		{"a scaler address without a host is refused", map[string]string{"LOBBY_SCALER_ADDRESS": ":9090", "POD_NAMESPACE": "lobby"},
			[]string{"LOBBY_SCALER_ADDRESS", "want host:port"}},
		{"a scaler address with a bad port is refused", map[string]string{"LOBBY_SCALER_ADDRESS": "scaler:http", "POD_NAMESPACE": "lobby"},
			[]string{"LOBBY_SCALER_ADDRESS", "port must be a number"}},
		{"leader election without a namespace is refused", map[string]string{"LOBBY_SCALER_ADDRESS": "s:1"},
			[]string{"LOBBY_LEADER_ELECTION_NAMESPACE: unset, and so is POD_NAMESPACE"}},
		{"every wrong variable is reported at once", map[string]string{
			"LOBBY_SCALER_ADDRESS": "s:1", "POD_NAMESPACE": "lobby",
			"LOBBY_LEADER_ELECT": "maybe", "LOBBY_WATCH_NAMESPACE": "Not_A_Namespace", "LOBBY_LOG_LEVEL": "loud",
			"LOBBY_METRICS_ADDR": "8080", "LOBBY_HEALTH_ADDR": ":0",
		}, []string{"LOBBY_LEADER_ELECT: parse boolean", "LOBBY_WATCH_NAMESPACE: invalid namespace", "LOBBY_LOG_LEVEL",
			"LOBBY_METRICS_ADDR", "LOBBY_HEALTH_ADDR"}},
		{"an authentication without TLS is refused", map[string]string{
			"LOBBY_SCALER_ADDRESS": "s:1", "POD_NAMESPACE": "lobby", "LOBBY_SCALER_TRIGGER_AUTH": "TriggerAuthentication/lobby",
		}, []string{"LOBBY_SCALER_TRIGGER_AUTH: needs LOBBY_SCALER_TLS=true"}},
		{"an authentication with TLS turned off is refused", map[string]string{
			"LOBBY_SCALER_ADDRESS": "s:1", "POD_NAMESPACE": "lobby", "LOBBY_SCALER_TLS": "false",
			"LOBBY_SCALER_TRIGGER_AUTH": "ClusterTriggerAuthentication/lobby",
		}, []string{"LOBBY_SCALER_TRIGGER_AUTH: needs LOBBY_SCALER_TLS=true"}},
		{"an authentication without its kind is refused", map[string]string{
			"LOBBY_SCALER_ADDRESS": "s:1", "POD_NAMESPACE": "lobby", "LOBBY_SCALER_TLS": "true", "LOBBY_SCALER_TRIGGER_AUTH": "lobby",
		}, []string{"LOBBY_SCALER_TRIGGER_AUTH: parse authentication reference", "ClusterTriggerAuthentication/<name>"}},
		{"a TLS switch that is not a boolean is refused", map[string]string{
			"LOBBY_SCALER_ADDRESS": "s:1", "POD_NAMESPACE": "lobby", "LOBBY_SCALER_TLS": "on please",
		}, []string{"LOBBY_SCALER_TLS: parse boolean"}},
		{"a memory limit that is no quantity is named", map[string]string{
			"LOBBY_SCALER_ADDRESS": "s:1", "POD_NAMESPACE": "lobby", "LOBBY_MEMORY_LIMIT": "half",
		}, []string{"LOBBY_MEMORY_LIMIT: parse memory limit"}},
		{"the metrics and health addresses must differ", map[string]string{
			"LOBBY_SCALER_ADDRESS": "s:1", "POD_NAMESPACE": "lobby", "LOBBY_METRICS_ADDR": ":9000", "LOBBY_HEALTH_ADDR": ":9000",
		}, []string{"LOBBY_HEALTH_ADDR: must differ from LOBBY_METRICS_ADDR"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := loadConfig(env(tt.vars))
			if err == nil {
				t.Fatal("loadConfig() succeeded, want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("loadConfig() error = %q, want it to contain %q", err, w)
				}
			}
		})
	}
}

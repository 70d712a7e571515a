package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadConfig(t *testing.T) {
	existing := filepath.Join(t.TempDir(), "tls.crt")
	if err := os.WriteFile(existing, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := map[string]string{"LOBBY_INTERCEPTOR_SERVICE": "lobby-interceptor-admin", "POD_NAMESPACE": "lobby", "LOBBY_INTERCEPTOR_TOKEN_FILE": existing}
	tests := []struct {
		name    string
		env     map[string]string
		wantErr []string
		check   func(t *testing.T, c Config)
	}{
		{name: "the defaults are the contract's", env: base, check: func(t *testing.T, c Config) {
			if c.GRPCAddr != ":9090" || c.AdminAddr != ":9091" || c.InterceptorPortName != "admin" || c.StreamGrace != 10*time.Second ||
				c.InterceptorNamespace != "lobby" || c.WatchNamespace != "" || c.TLSCertFile != "" {
				t.Fatalf("got %+v", c)
			}
		}},
		{name: "the interceptor namespace overrides the pod namespace",
			env: merge(base, map[string]string{"LOBBY_INTERCEPTOR_SERVICE": "s", "LOBBY_INTERCEPTOR_NAMESPACE": "edge"}),
			check: func(t *testing.T, c Config) {
				if c.InterceptorNamespace != "edge" {
					t.Fatalf("InterceptorNamespace = %q", c.InterceptorNamespace)
				}
			}},
		{name: "empty variables count as unset", env: merge(base, map[string]string{"LOBBY_INTERCEPTOR_SERVICE": "s", "LOBBY_GRPC_ADDR": "", "LOBBY_STREAM_GRACE": ""}),
			check: func(t *testing.T, c Config) {
				if c.GRPCAddr != ":9090" || c.StreamGrace != 10*time.Second {
					t.Fatalf("got %+v", c)
				}
			}},
		{name: "the interceptor token file is the chart's mount unless set", env: merge(base, map[string]string{"LOBBY_INTERCEPTOR_TOKEN_FILE": ""}),
			wantErr: []string{"LOBBY_INTERCEPTOR_TOKEN_FILE: read " + DefaultTokenFile, "projected ServiceAccount token"}},
		{name: "the interceptor token file is read from its variable", env: base, check: func(t *testing.T, c Config) {
			if c.InterceptorTokenFile != existing {
				t.Fatalf("InterceptorTokenFile = %q, want %q", c.InterceptorTokenFile, existing)
			}
		}},
		{name: "the interceptor Service and its namespace are required", env: map[string]string{},
			wantErr: []string{"LOBBY_INTERCEPTOR_SERVICE: required", "LOBBY_INTERCEPTOR_NAMESPACE: required"}},
		{name: "every bad value is named", env: map[string]string{
			"LOBBY_INTERCEPTOR_SERVICE": "Bad_Name", "LOBBY_INTERCEPTOR_NAMESPACE": "-x", "LOBBY_GRPC_ADDR": "9090",
			"LOBBY_ADMIN_ADDR": ":0", "LOBBY_STREAM_GRACE": "soon", "LOBBY_INTERCEPTOR_PORT_NAME": "way_too_long_port_name",
			"LOBBY_LOG_LEVEL": "loud", "LOBBY_WATCH_NAMESPACE": "A",
		}, wantErr: []string{"LOBBY_INTERCEPTOR_SERVICE", "LOBBY_INTERCEPTOR_NAMESPACE", "LOBBY_GRPC_ADDR", "LOBBY_ADMIN_ADDR",
			"LOBBY_STREAM_GRACE", "LOBBY_INTERCEPTOR_PORT_NAME", "LOBBY_LOG_LEVEL", "LOBBY_WATCH_NAMESPACE"}},
		{name: "a memory limit that is no quantity is named", env: merge(base, map[string]string{"LOBBY_MEMORY_LIMIT": "half"}),
			wantErr: []string{"LOBBY_MEMORY_LIMIT: parse memory limit"}},
		{name: "the memory limit is read in bytes", env: merge(base, map[string]string{"LOBBY_MEMORY_LIMIT": "256Mi"}),
			check: func(t *testing.T, c Config) {
				if c.MemoryLimit != 256<<20 {
					t.Fatalf("MemoryLimit = %d", c.MemoryLimit)
				}
			}},
		{name: "a grace period must be positive", env: merge(base, map[string]string{"LOBBY_STREAM_GRACE": "0s"}),
			wantErr: []string{"LOBBY_STREAM_GRACE: must be positive"}},
		{name: "the two servers need two addresses", env: merge(base, map[string]string{"LOBBY_ADMIN_ADDR": ":9090"}),
			wantErr: []string{"LOBBY_ADMIN_ADDR: must differ from LOBBY_GRPC_ADDR"}},
		{name: "a certificate needs its key", env: merge(base, map[string]string{"LOBBY_TLS_CERT_FILE": existing}),
			wantErr: []string{"LOBBY_TLS_KEY_FILE: LOBBY_TLS_CERT_FILE and LOBBY_TLS_KEY_FILE are set together"}},
		{name: "client CAs need a server certificate", env: merge(base, map[string]string{"LOBBY_TLS_CLIENT_CA_FILE": existing}),
			wantErr: []string{"LOBBY_TLS_CLIENT_CA_FILE: needs LOBBY_TLS_CERT_FILE"}},
		{name: "missing TLS files are named", env: merge(base, map[string]string{"LOBBY_TLS_CERT_FILE": existing, "LOBBY_TLS_KEY_FILE": "/nonexistent/tls.key"}),
			wantErr: []string{"LOBBY_TLS_KEY_FILE: read /nonexistent/tls.key"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := loadConfig(func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok })
			if len(tt.wantErr) > 0 {
				if err == nil {
					t.Fatal("no error")
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not contain %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, c)
		})
	}
}

func merge(a, b map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

package main

import (
	"crypto/tls"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/lobby-http/lobby/interceptor/internal/routing"
	"github.com/lobby-http/lobby/internal/logging"
	"github.com/lobby-http/lobby/internal/tracing"
)

func TestLoadConfig(t *testing.T) {
	host, _ := os.Hostname()
	defaults := Config{
		ProxyAddr:             ":8080",
		AdminAddr:             ":9090",
		ColdStartTimeout:      0,                 // no bound but the client's, as in the KEDA HTTP Add-on
		ResponseHeaderTimeout: 300 * time.Second, // the add-on's
		MaxPendingRequests:    1000,
		StreamInterval:        time.Second,
		StreamWriteTimeout:    10 * time.Second,
		StreamMaxSubscribers:  32,
		AdminTokenAudience:    "lobby-interceptor",
		AdminAuthCacheTTL:     time.Minute,
		AdminAuthNegativeTTL:  10 * time.Second,
		DrainDelay:            5 * time.Second,
		DrainTimeout:          40 * time.Second,
		MaxHeaderBytes:        1 << 20,
		ReadHeaderTimeout:     10 * time.Second,
		IdleTimeout:           90 * time.Second,
		MaxConcurrentStreams:  100,
		BodyIdleTimeout:       60 * time.Second,
		WriteIdleTimeout:      60 * time.Second,
		LogLevel:              logging.LevelInfo,
		LogFormat:             logging.FormatJSON,
		PodName:               host,

		ProxyTLSMinVersion: tls.VersionTLS12,
		TLSReloadInterval:  10 * time.Second,
		ClusterDomain:      "cluster.local",
		Tracing:            tracing.Options{Protocol: tracing.HTTPProtobuf, Sampler: sdktrace.ParentBased(sdktrace.AlwaysSample()), ServiceName: "lobby-interceptor"},
	}
	tests := []struct {
		name string
		env  map[string]string
		// change turns the defaults into the expected configuration.
		change func(*Config)
		// wantErr lists substrings of the expected error; empty means success.
		wantErr []string
	}{
		{name: "No variables give the defaults.", change: func(*Config) {}},
		{name: "Empty variables count as unset.", env: map[string]string{"LOBBY_PROXY_ADDR": "", "LOBBY_COLD_START_TIMEOUT": ""}, change: func(*Config) {}},
		{
			name: "Every variable is read.",
			env: map[string]string{
				"LOBBY_PROXY_ADDR": "127.0.0.1:8000", "LOBBY_ADMIN_ADDR": ":9000", "LOBBY_WATCH_NAMESPACE": "apps",
				"LOBBY_COLD_START_TIMEOUT": "2m", "LOBBY_RESPONSE_HEADER_TIMEOUT": "5s", "LOBBY_REQUEST_TIMEOUT": "10m",
				"LOBBY_MAX_PENDING_REQUESTS": "50", "LOBBY_STREAM_INTERVAL": "500ms", "LOBBY_STREAM_WRITE_TIMEOUT": "3s",
				"LOBBY_DRAIN_DELAY": "0s", "LOBBY_DRAIN_TIMEOUT": "1m", "LOBBY_MAX_HEADER_BYTES": "65536",
				"LOBBY_READ_HEADER_TIMEOUT": "2s", "LOBBY_IDLE_TIMEOUT": "30s", "LOBBY_LOG_LEVEL": "DEBUG",
				"LOBBY_LOG_FORMAT": "console", "POD_NAME": "interceptor-7", "KUBECONFIG": "/a:/b",
				"LOBBY_MEMORY_LIMIT": "1073741824", "LOBBY_MAX_CONNECTIONS": "5000",
				"LOBBY_ADDON_COLD_START_HEADER": "true", "LOBBY_COLD_START_MODE": "Auto", "LOBBY_STREAM_MAX_SUBSCRIBERS": "6",
				"LOBBY_ADMIN_TOKEN_AUDIENCE": "lobby-admin", "LOBBY_ADMIN_ALLOWED_SERVICE_ACCOUNTS": "lobby/lobby-scaler, ops/probe",
				"LOBBY_ADMIN_AUTH_CACHE_TTL": "5m", "LOBBY_ADMIN_AUTH_NEGATIVE_TTL": "2s",
				"LOBBY_MAX_HELD_REQUESTS": "3000", "LOBBY_MAX_CONCURRENT_STREAMS": "16",
				"LOBBY_BODY_IDLE_TIMEOUT": "20s", "LOBBY_WRITE_IDLE_TIMEOUT": "0",
				"LOBBY_PROXY_TLS_ADDR": ":8443", "LOBBY_PROXY_TLS_CERT_DIRS": "/etc/lobby/tls/a, /etc/lobby/tls/b/",
				"LOBBY_PROXY_TLS_MIN_VERSION": "1.2", "LOBBY_TLS_RELOAD_INTERVAL": "1m",
				"LOBBY_PROXY_TLS_CIPHER_SUITES": "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
				"LOBBY_UPSTREAM_CA_FILE":        "/etc/lobby/upstream/ca.crt", "LOBBY_CLUSTER_DOMAIN": "Corp.Example.",
				"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_TRACES_SAMPLER": "always_on",
			},
			change: func(c *Config) {
				*c = Config{
					ProxyAddr: "127.0.0.1:8000", AdminAddr: ":9000", WatchNamespace: "apps",
					ColdStartTimeout: 2 * time.Minute, ResponseHeaderTimeout: 5 * time.Second, RequestTimeout: 10 * time.Minute,
					MaxPendingRequests: 50, StreamInterval: 500 * time.Millisecond, StreamWriteTimeout: 3 * time.Second,
					DrainDelay: 0, DrainTimeout: time.Minute, MaxHeaderBytes: 65536,
					ReadHeaderTimeout: 2 * time.Second, IdleTimeout: 30 * time.Second, LogLevel: logging.LevelDebug,
					LogFormat: logging.FormatConsole, PodName: "interceptor-7", Kubeconfig: "/a:/b",
					MemoryLimit: 1 << 30, MaxConnections: 5000, AddOnColdStartHeader: true, ColdStartMode: routing.ColdStartAuto, StreamMaxSubscribers: 6,
					AdminTokenAudience: "lobby-admin", AdminAllowedServiceAccounts: []string{"lobby/lobby-scaler", "ops/probe"},
					AdminAuthCacheTTL: 5 * time.Minute, AdminAuthNegativeTTL: 2 * time.Second,
					MaxHeldRequests: 3000, MaxConcurrentStreams: 16, BodyIdleTimeout: 20 * time.Second,
					ProxyTLSAddr: ":8443", ProxyTLSCertDirs: []string{"/etc/lobby/tls/a", "/etc/lobby/tls/b"},
					ProxyTLSMinVersion: tls.VersionTLS12, TLSReloadInterval: time.Minute,
					ProxyTLSCipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384},
					UpstreamCAFile:       "/etc/lobby/upstream/ca.crt", ClusterDomain: "corp.example",
					Tracing: tracing.Options{Enabled: true, Protocol: tracing.GRPC, Sampler: sdktrace.AlwaysSample(), ServiceName: "lobby-interceptor"},
				}
			},
		},
		{name: "A duration without a unit is rejected by name.", env: map[string]string{"LOBBY_COLD_START_TIMEOUT": "30"}, wantErr: []string{"LOBBY_COLD_START_TIMEOUT", `"30"`}},
		{name: "A zero cold-start timeout holds until the client gives up, the default.", env: map[string]string{"LOBBY_COLD_START_TIMEOUT": "0s"}, change: func(*Config) {}},
		{name: "A negative cold-start timeout is rejected.", env: map[string]string{"LOBBY_COLD_START_TIMEOUT": "-1s"}, wantErr: []string{"LOBBY_COLD_START_TIMEOUT: must not be negative"}},
		{name: "A zero response header timeout is rejected.", env: map[string]string{"LOBBY_RESPONSE_HEADER_TIMEOUT": "0s"}, wantErr: []string{"LOBBY_RESPONSE_HEADER_TIMEOUT: must be positive"}},
		{name: "An add-on header switch that is not a boolean is rejected.", env: map[string]string{"LOBBY_ADDON_COLD_START_HEADER": "yes please"}, wantErr: []string{"LOBBY_ADDON_COLD_START_HEADER"}},
		{name: "A negative request timeout is rejected.", env: map[string]string{"LOBBY_REQUEST_TIMEOUT": "-1s"}, wantErr: []string{"LOBBY_REQUEST_TIMEOUT: must not be negative"}},
		{name: "A zero request timeout means unbounded.", env: map[string]string{"LOBBY_REQUEST_TIMEOUT": "0"}, change: func(*Config) {}},
		{name: "An unknown cold-start mode is rejected, naming the modes.", env: map[string]string{"LOBBY_COLD_START_MODE": "Browser"}, wantErr: []string{"LOBBY_COLD_START_MODE", "Hold, Placeholder and Auto"}},
		{name: "An unbounded hold queue is rejected.", env: map[string]string{"LOBBY_MAX_PENDING_REQUESTS": "0"}, wantErr: []string{"LOBBY_MAX_PENDING_REQUESTS: must be at least 1"}},
		{name: "A non-numeric queue size is rejected.", env: map[string]string{"LOBBY_MAX_PENDING_REQUESTS": "many"}, wantErr: []string{"LOBBY_MAX_PENDING_REQUESTS"}},
		{name: "A stream interval below 10ms is rejected.", env: map[string]string{"LOBBY_STREAM_INTERVAL": "1ms"}, wantErr: []string{"LOBBY_STREAM_INTERVAL: must be at least 10ms"}},
		{name: "An address without a port is rejected.", env: map[string]string{"LOBBY_PROXY_ADDR": "localhost"}, wantErr: []string{"LOBBY_PROXY_ADDR"}},
		{name: "An address with port zero is rejected.", env: map[string]string{"LOBBY_ADMIN_ADDR": ":0"}, wantErr: []string{"LOBBY_ADMIN_ADDR"}},
		{name: "The admin and proxy addresses must differ.", env: map[string]string{"LOBBY_ADMIN_ADDR": ":8080"}, wantErr: []string{"LOBBY_ADMIN_ADDR: must differ"}},
		{name: "An invalid namespace is rejected.", env: map[string]string{"LOBBY_WATCH_NAMESPACE": "Apps_1"}, wantErr: []string{"LOBBY_WATCH_NAMESPACE"}},
		{name: "Tiny header limits are rejected.", env: map[string]string{"LOBBY_MAX_HEADER_BYTES": "100"}, wantErr: []string{"LOBBY_MAX_HEADER_BYTES: must be at least 4096"}},
		{
			name: "The default 512Mi memory limit caps connections at what it holds.", env: map[string]string{"LOBBY_MEMORY_LIMIT": "536870912"},
			change: func(c *Config) { c.MemoryLimit, c.MaxConnections, c.MaxHeldRequests = 512<<20, 12697, 6348 },
		},
		{
			name: "A memory limit written as a quantity is read in bytes.", env: map[string]string{"LOBBY_MEMORY_LIMIT": "2Gi"},
			change: func(c *Config) { c.MemoryLimit, c.MaxConnections, c.MaxHeldRequests = 2<<30, 56934, 28467 },
		},
		{
			name: "A memory limit too small for the reserve still allows the minimum cap.", env: map[string]string{"LOBBY_MEMORY_LIMIT": "64Mi"},
			change: func(c *Config) { c.MemoryLimit, c.MaxConnections, c.MaxHeldRequests = 64<<20, 256, 128 },
		},
		{
			name: "An explicit cap wins over the memory limit's.", env: map[string]string{"LOBBY_MEMORY_LIMIT": "512Mi", "LOBBY_MAX_CONNECTIONS": "20000"},
			change: func(c *Config) { c.MemoryLimit, c.MaxConnections, c.MaxHeldRequests = 512<<20, 20000, 6348 },
		},
		{
			name: "A cap of zero turns the cap off whatever the memory limit.", env: map[string]string{"LOBBY_MEMORY_LIMIT": "512Mi", "LOBBY_MAX_CONNECTIONS": "0"},
			change: func(c *Config) { c.MemoryLimit, c.MaxHeldRequests = 512<<20, 6348 },
		},
		{
			name: "A held cap of zero turns it off whatever the memory limit.", env: map[string]string{"LOBBY_MEMORY_LIMIT": "512Mi", "LOBBY_MAX_HELD_REQUESTS": "0"},
			change: func(c *Config) { c.MemoryLimit, c.MaxConnections = 512<<20, 12697 },
		},
		{name: "A negative held cap is rejected.", env: map[string]string{"LOBBY_MAX_HELD_REQUESTS": "-1"}, wantErr: []string{"LOBBY_MAX_HELD_REQUESTS: must be at least 0"}},
		{name: "Zero streams per connection are rejected.", env: map[string]string{"LOBBY_MAX_CONCURRENT_STREAMS": "0"}, wantErr: []string{"LOBBY_MAX_CONCURRENT_STREAMS: must be at least 1"}},
		{name: "A negative body idle timeout is rejected.", env: map[string]string{"LOBBY_BODY_IDLE_TIMEOUT": "-1s"}, wantErr: []string{"LOBBY_BODY_IDLE_TIMEOUT: must not be negative"}},
		{name: "Zero idle timeouts turn them off.", env: map[string]string{"LOBBY_BODY_IDLE_TIMEOUT": "0", "LOBBY_WRITE_IDLE_TIMEOUT": "0s"}, change: func(c *Config) { c.BodyIdleTimeout, c.WriteIdleTimeout = 0, 0 }},
		{name: "A negative cap is rejected.", env: map[string]string{"LOBBY_MAX_CONNECTIONS": "-1"}, wantErr: []string{"LOBBY_MAX_CONNECTIONS: must be at least 0"}},
		{name: "A memory limit that is no quantity is rejected.", env: map[string]string{"LOBBY_MEMORY_LIMIT": "half"}, wantErr: []string{"LOBBY_MEMORY_LIMIT"}},
		{
			name: "TLS 1.3 alone may be asked for.", env: map[string]string{"LOBBY_PROXY_TLS_ADDR": ":8443", "LOBBY_PROXY_TLS_CERT_DIRS": "/tls", "LOBBY_PROXY_TLS_MIN_VERSION": "1.3"},
			change: func(c *Config) {
				c.ProxyTLSAddr, c.ProxyTLSCertDirs, c.ProxyTLSMinVersion = ":8443", []string{"/tls"}, tls.VersionTLS13
			},
		},
		{name: "A TLS address without key pairs is rejected.", env: map[string]string{"LOBBY_PROXY_TLS_ADDR": ":8443"}, wantErr: []string{"LOBBY_PROXY_TLS_CERT_DIRS: unset"}},
		{name: "Key pairs without a TLS address are rejected.", env: map[string]string{"LOBBY_PROXY_TLS_CERT_DIRS": "/tls"}, wantErr: []string{"LOBBY_PROXY_TLS_CERT_DIRS: set, but LOBBY_PROXY_TLS_ADDR is not"}},
		{name: "The TLS address must differ from the others.", env: map[string]string{"LOBBY_PROXY_TLS_ADDR": ":8080", "LOBBY_PROXY_TLS_CERT_DIRS": "/tls"}, wantErr: []string{"LOBBY_PROXY_TLS_ADDR: must differ"}},
		{name: "A relative key pair folder is rejected.", env: map[string]string{"LOBBY_PROXY_TLS_ADDR": ":8443", "LOBBY_PROXY_TLS_CERT_DIRS": "tls"}, wantErr: []string{"LOBBY_PROXY_TLS_CERT_DIRS", "absolute"}},
		{name: "TLS 1.1 is rejected.", env: map[string]string{"LOBBY_PROXY_TLS_MIN_VERSION": "1.1"}, wantErr: []string{"LOBBY_PROXY_TLS_MIN_VERSION", "want 1.2 or 1.3"}},
		{name: "An insecure cipher suite is rejected.", env: map[string]string{"LOBBY_PROXY_TLS_CIPHER_SUITES": "TLS_RSA_WITH_RC4_128_SHA"}, wantErr: []string{"LOBBY_PROXY_TLS_CIPHER_SUITES", "insecure"}},
		{name: "An unknown cipher suite is rejected.", env: map[string]string{"LOBBY_PROXY_TLS_CIPHER_SUITES": "TLS_FAST"}, wantErr: []string{"LOBBY_PROXY_TLS_CIPHER_SUITES", "unknown"}},
		{name: "A TLS 1.3 cipher suite is rejected.", env: map[string]string{"LOBBY_PROXY_TLS_CIPHER_SUITES": "TLS_AES_128_GCM_SHA256"}, wantErr: []string{"TLS 1.3 suite"}},
		{
			name: "Cipher suites with TLS 1.3 as the minimum are rejected.", env: map[string]string{"LOBBY_PROXY_TLS_MIN_VERSION": "1.3", "LOBBY_PROXY_TLS_CIPHER_SUITES": "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"},
			wantErr: []string{"LOBBY_PROXY_TLS_CIPHER_SUITES: set, but LOBBY_PROXY_TLS_MIN_VERSION is 1.3"},
		},
		{name: "A cluster domain that is no DNS name is rejected.", env: map[string]string{"LOBBY_CLUSTER_DOMAIN": "cluster_local"}, wantErr: []string{"LOBBY_CLUSTER_DOMAIN"}},
		{name: "A tracing variable the interceptor cannot use is rejected by name.", env: map[string]string{"OTEL_TRACES_SAMPLER": "sometimes"}, wantErr: []string{"OTEL_TRACES_SAMPLER"}},
		{name: "An allowed ServiceAccount without a namespace is rejected.", env: map[string]string{"LOBBY_ADMIN_ALLOWED_SERVICE_ACCOUNTS": "lobby-scaler"}, wantErr: []string{"LOBBY_ADMIN_ALLOWED_SERVICE_ACCOUNTS", "want namespace/name"}},
		{name: "An allowed ServiceAccount with an invalid name is rejected.", env: map[string]string{"LOBBY_ADMIN_ALLOWED_SERVICE_ACCOUNTS": "lobby/Scaler_1"}, wantErr: []string{"LOBBY_ADMIN_ALLOWED_SERVICE_ACCOUNTS", "invalid name"}},
		{name: "An audience of two words is rejected.", env: map[string]string{"LOBBY_ADMIN_TOKEN_AUDIENCE": "a,b"}, wantErr: []string{"LOBBY_ADMIN_TOKEN_AUDIENCE"}},
		{name: "A stream without room for one subscriber is rejected.", env: map[string]string{"LOBBY_STREAM_MAX_SUBSCRIBERS": "0"}, wantErr: []string{"LOBBY_STREAM_MAX_SUBSCRIBERS: must be at least 1"}},
		{name: "An unknown log level is rejected.", env: map[string]string{"LOBBY_LOG_LEVEL": "trace"}, wantErr: []string{"LOBBY_LOG_LEVEL"}},
		{name: "An unknown log format is rejected.", env: map[string]string{"LOBBY_LOG_FORMAT": "text"}, wantErr: []string{"LOBBY_LOG_FORMAT"}},
		{
			name:    "Every wrong variable is reported at once.",
			env:     map[string]string{"LOBBY_DRAIN_DELAY": "soon", "LOBBY_IDLE_TIMEOUT": "-5s"},
			wantErr: []string{"LOBBY_DRAIN_DELAY", "LOBBY_IDLE_TIMEOUT"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := loadConfig(func(k string) (string, bool) {
				v, ok := tt.env[k]
				return v, ok
			})
			if len(tt.wantErr) > 0 {
				if err == nil {
					t.Fatalf("loadConfig() = %+v, want an error", got)
				}
				for _, s := range tt.wantErr {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("loadConfig() error = %q, want it to contain %q", err, s)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("loadConfig() error = %v", err)
			}
			want := defaults
			tt.change(&want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("loadConfig() =\n%+v\nwant\n%+v", got, want)
			}
		})
	}
}

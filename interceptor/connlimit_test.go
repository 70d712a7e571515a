package main

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/client-go/rest"
)

// TestBuildCapsProxyConnections checks the wiring of the connection cap: the configured cap is
// the proxy server's, and its metrics are on the admin registry. The cap's behaviour is tested
// with the listener in internal/server.
func TestBuildCapsProxyConnections(t *testing.T) {
	cfg, err := loadConfig(func(k string) (string, bool) {
		v, ok := map[string]string{"LOBBY_MEMORY_LIMIT": "512Mi", "POD_NAME": "interceptor-test"}[k]
		return v, ok
	})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	// Nothing is started, so the API server is never dialled.
	noDial := func(context.Context, string, string) (net.Conn, error) { return nil, net.ErrClosed }
	ic, err := build(cfg, logr.Discard(), &rest.Config{Host: "https://127.0.0.1:1"}, reg, noDial)
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	if ic.proxy.Limit == nil || ic.proxy.Limit.Max() != 12697 {
		t.Fatalf("proxy connection limit %v, want a cap of 12697 for 512Mi", ic.proxy.Limit)
	}
	if ic.proxy.Limit.WriteIdleTimeout != time.Minute {
		t.Errorf("proxy write idle timeout %v, want the default minute", ic.proxy.Limit.WriteIdleTimeout)
	}
	if h2 := ic.proxy.HTTP.HTTP2; h2 == nil || h2.MaxConcurrentStreams != 100 {
		t.Errorf("proxy HTTP/2 settings %+v, want 100 concurrent streams", h2)
	}
	if ic.adminServer.Limit != nil {
		t.Error("the admin server has a connection cap; only the proxy's connections are client traffic")
	}
	const want = `
# HELP lobby_interceptor_proxy_max_connections Most client connections kept open at once; more wait in the listen backlog. 0 is no cap.
# TYPE lobby_interceptor_proxy_max_connections gauge
lobby_interceptor_proxy_max_connections 12697
# HELP lobby_interceptor_proxy_open_connections Client connections accepted and not yet closed, hijacked ones (such as WebSockets) included.
# TYPE lobby_interceptor_proxy_open_connections gauge
lobby_interceptor_proxy_open_connections 0
# HELP lobby_interceptor_max_held_requests Most requests held at once over all routes (LOBBY_MAX_HELD_REQUESTS); more are refused as a full hold queue refuses them. 0 is no cap.
# TYPE lobby_interceptor_max_held_requests gauge
lobby_interceptor_max_held_requests 6348
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"lobby_interceptor_proxy_max_connections", "lobby_interceptor_proxy_open_connections", "lobby_interceptor_max_held_requests"); err != nil {
		t.Error(err)
	}
}

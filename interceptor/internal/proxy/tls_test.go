package proxy_test

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func newTLSBackend(t *testing.T, h http.Handler) *httptest.Server {
	s := httptest.NewTLSServer(h)
	t.Cleanup(s.Close)
	return s
}

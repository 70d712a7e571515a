package server

import (
	"bytes"
	"log"

	"github.com/go-logr/logr"
)

// ErrorLog returns a standard-library logger for http.Server.ErrorLog that hands each line to l
// at V(1). The lines it gets (failed TLS handshakes, malformed requests, accept retries) are about
// single connections, which is too much detail for the info level.
func ErrorLog(l logr.Logger) *log.Logger {
	return log.New(errorWriter{l.V(1)}, "", 0)
}

type errorWriter struct{ log logr.Logger }

func (w errorWriter) Write(p []byte) (int, error) {
	w.log.Info("http server error", "error", string(bytes.TrimSpace(p)))
	return len(p), nil
}

// Package server runs an http.Server as a runnable: Start listens and serves until its context
// ends, then shuts the server down gracefully within a bounded time.
package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/go-logr/logr"
)

// Server runs one http.Server.
type Server struct {
	// HTTP is the server to run. Its Addr is where Start listens unless Listener is set. When its
	// TLSConfig is not nil the server speaks TLS with the certificates that configuration gives
	// (Certificates or GetCertificate).
	HTTP *http.Server
	// Listener, when not nil, is served instead of listening on HTTP.Addr (tests pass one on an
	// ephemeral port to learn its address).
	Listener net.Listener
	// Limit, when not nil, caps the connections served at once (see ConnLimit); nil serves as
	// many as the listener accepts.
	Limit *ConnLimit
	// ShutdownTimeout bounds the graceful shutdown that follows the end of Start's context: active
	// requests get that long to finish before their connections are closed.
	ShutdownTimeout time.Duration
	// Log receives the server's lifecycle messages.
	Log logr.Logger
}

// Start serves until ctx ends, then stops accepting connections, waits up to ShutdownTimeout for
// active requests, and closes what remains. It returns nil after a shutdown that ctx asked for,
// and the error otherwise.
func (s *Server) Start(ctx context.Context) error {
	ln := s.Listener
	if ln == nil {
		var err error
		if ln, err = (&net.ListenConfig{}).Listen(ctx, "tcp", s.HTTP.Addr); err != nil {
			return fmt.Errorf("listen on %s: %w", s.HTTP.Addr, err)
		}
	}
	maxConns := 0 // No cap.
	if s.Limit != nil {
		ln = s.Limit.Listener(ln)
		maxConns = s.Limit.Max()
	}
	s.Log.Info("serving", "addr", ln.Addr().String(), "maxConnections", maxConns, "tls", s.HTTP.TLSConfig != nil)

	errc := make(chan error, 1)
	go func() {
		if s.HTTP.TLSConfig != nil {
			errc <- s.HTTP.ServeTLS(ln, "", "")
			return
		}
		errc <- s.HTTP.Serve(ln)
	}()

	select {
	case err := <-errc:
		return fmt.Errorf("serve on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}

	s.Log.Info("shutting down", "timeout", s.ShutdownTimeout)
	// The parent context has ended already; the shutdown gets its own deadline.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.ShutdownTimeout)
	defer cancel()
	err := s.HTTP.Shutdown(sctx)
	if errors.Is(err, context.DeadlineExceeded) {
		s.Log.Info("shutdown timed out, closing remaining connections")
		err = s.HTTP.Close()
	}
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) {
		return fmt.Errorf("serve on %s: %w", ln.Addr(), serr)
	}
	if err != nil {
		return fmt.Errorf("shut down server on %s: %w", ln.Addr(), err)
	}
	s.Log.Info("shut down")
	return nil
}

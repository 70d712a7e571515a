package admin

import (
	_ "embed"
	"errors"
	"net/http"
	"time"
)

// Paths of the status page on the admin port.
const (
	// StatusPath serves the status page, an HTML document that follows StatusEventsPath.
	StatusPath = "/status"
	// StatusJSONPath serves the page's data once, as JSON, for scripts.
	StatusJSONPath = "/status.json"
	// StatusEventsPath serves the page's data as server-sent events: the current view at once,
	// then every new one.
	StatusEventsPath = "/status/events"
)

//go:embed status.html
var statusPage []byte

// ServePage serves the status page itself.
func (s *Status) ServePage(w http.ResponseWriter, _ *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	// Everything the page needs is inline; nothing may be loaded from elsewhere.
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(statusPage)
}

// ServeJSON answers the latest view as JSON.
func (s *Status) ServeJSON(w http.ResponseWriter, _ *http.Request) {
	view, _, _ := s.current()
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(view)
	_, _ = w.Write([]byte{'\n'})
}

// ServeEvents streams views as server-sent events (event "status", the JSON view as data): the
// latest at once, then each new one, until the client goes away, a write times out, or the
// producer stops. Viewers beyond the cap get 503. A viewer that is slow gets the latest view when
// it is ready for one, never a backlog.
func (s *Status) ServeEvents(w http.ResponseWriter, r *http.Request) {
	if err := s.join(); err != nil {
		w.Header().Set("Retry-After", "10")
		http.Error(w, "too many status page viewers: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	defer s.leave()
	log := s.opts.Log.WithValues("remote", r.RemoteAddr)
	log.V(1).Info("status viewer connected")
	defer log.V(1).Info("status viewer gone")

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	for {
		view, changed, closed := s.current()
		if closed {
			return
		}
		if err := rc.SetWriteDeadline(time.Now().Add(s.opts.WriteTimeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
			return
		}
		// A view is one line of JSON, so it is one data line.
		if _, err := w.Write(eventHead); err != nil {
			return
		}
		if _, err := w.Write(view); err != nil {
			return
		}
		if _, err := w.Write(eventTail); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-changed:
		}
	}
}

var (
	eventHead = []byte("event: status\ndata: ")
	eventTail = []byte("\n\n")
)

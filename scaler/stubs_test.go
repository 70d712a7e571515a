package main

import (
	"cmp"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/lobby-http/lobby/internal/stream"
)

// stubInterceptor serves the push stream as an interceptor does, with the real stream.Encoder:
// a snapshot on connect, then the activate and counts frames the test sends.
type stubInterceptor struct {
	name string
	srv  *httptest.Server

	mu     sync.Mutex
	routes map[string]stream.RouteCounts
	subs   map[chan stream.Frame]struct{}
	// hang makes new subscribers get their snapshot and then nothing more, as an interceptor
	// that stopped mid-stream.
	hang bool
}

func newStubInterceptor(t *testing.T, name string) *stubInterceptor {
	t.Helper()
	s := &stubInterceptor{name: name, routes: map[string]stream.RouteCounts{}, subs: map[chan stream.Frame]struct{}{}}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(func() {
		s.srv.CloseClientConnections()
		s.srv.Close()
	})
	return s
}

// port returns the stub's loopback port.
func (s *stubInterceptor) port() int32 {
	_, p, _ := net.SplitHostPort(s.srv.Listener.Addr().String())
	n, _ := strconv.Atoi(p)
	return int32(n)
}

func (s *stubInterceptor) snapshotLocked() []stream.RouteCounts {
	out := make([]stream.RouteCounts, 0, len(s.routes))
	for _, c := range s.routes {
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b stream.RouteCounts) int { return cmp.Compare(a.Key, b.Key) })
	return out
}

// stubToken is the token the scalers under test present; the stub interceptors refuse others, as
// the admin API does.
const stubToken = "scaler-token"

func (s *stubInterceptor) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != stream.Path {
		http.NotFound(w, r)
		return
	}
	if r.Header.Get("Authorization") != "Bearer "+stubToken {
		http.Error(w, "no or wrong bearer token", http.StatusUnauthorized)
		return
	}
	ch := make(chan stream.Frame, 64)
	s.mu.Lock()
	snap := s.snapshotLocked()
	hang := s.hang
	if !hang {
		s.subs[ch] = struct{}{}
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.subs, ch)
		s.mu.Unlock()
	}()
	w.Header().Set("Content-Type", stream.ContentType)
	w.WriteHeader(http.StatusOK)
	enc := stream.NewEncoder(w)
	rc := http.NewResponseController(w)
	seq := uint64(1)
	if err := enc.Encode(&stream.Frame{Kind: stream.KindSnapshot, Seq: seq, Interceptor: s.name, UnixMilli: time.Now().UnixMilli(), Routes: snap}); err != nil {
		return
	}
	_ = rc.Flush()
	if hang {
		<-r.Context().Done()
		return
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case f := <-ch:
			seq++
			f.Seq = seq
			if err := enc.Encode(&f); err != nil {
				return
			}
			if err := rc.Flush(); err != nil {
				return
			}
		}
	}
}

func (s *stubInterceptor) publishLocked(kind stream.Kind, routes []stream.RouteCounts) {
	for ch := range s.subs {
		ch <- stream.Frame{Kind: kind, Interceptor: s.name, UnixMilli: time.Now().UnixMilli(), Routes: routes}
	}
}

// activate sets c as the route's counts and sends an activate frame, as the interceptor does on
// the route's idle→busy edge.
func (s *stubInterceptor) activate(c stream.RouteCounts) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.routes[c.Key] = c
	s.publishLocked(stream.KindActivate, []stream.RouteCounts{c})
}

// counts sets the given route counts and sends a counts frame of every route.
func (s *stubInterceptor) counts(cs ...stream.RouteCounts) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range cs {
		s.routes[c.Key] = c
	}
	s.publishLocked(stream.KindCounts, s.snapshotLocked())
}

// blackHole accepts TCP connections and never answers.
func blackHole(t *testing.T) (port int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return int32(ln.Addr().(*net.TCPAddr).Port)
}

package netns

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// TestRelay runs both sides of the relay in one process: the parent's side listens on loopback
// and the program's side dials the targets, as they do across a namespace's boundary.
func TestRelay(t *testing.T) {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s", r.Host)
	}))
	defer app.Close()
	// A target nothing listens on.
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gone := closed.Addr().String()
	closed.Close()

	parent, child, err := newRelayPair()
	if err != nil {
		t.Fatal(err)
	}
	// The program's end goes through the environment, as RunInside hands it over; the relay
	// owns a duplicate of the descriptor.
	fd, err := syscall.Dup(int(child.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	child.Close()
	t.Setenv(relayFDEnv, strconv.Itoa(fd))

	stop := make(chan struct{})
	served := make(chan struct{})
	go func() {
		defer close(served)
		(&relay{conn: parent, host: "127.0.0.1"}).serve(stop)
	}()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	addrs, err := Expose(ctx, Exposed{Addr: app.Listener.Addr().String()}, Exposed{Addr: gone})
	if err != nil {
		t.Fatal(err)
	}
	if len(addrs) != 2 {
		t.Fatalf("Expose = %q, want two addresses", addrs)
	}
	if _, err := Expose(ctx, Exposed{Addr: gone}); err == nil {
		t.Error("a second Expose succeeded; the relay serves one")
	}

	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for i := range 3 {
		resp, err := client.Get("http://" + addrs[0] + "/")
		if err != nil {
			t.Fatalf("request %d through the relay: %v", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := "hello " + addrs[0]; string(body) != want {
			t.Errorf("request %d got %q, want %q", i, body, want)
		}
	}
	if resp, err := client.Get("http://" + addrs[1] + "/"); err == nil {
		resp.Body.Close()
		t.Errorf("a request to a target nothing listens on got %s, want a closed connection", resp.Status)
	}
	// The relay still serves after a failed dial.
	if resp, err := client.Get("http://" + addrs[0] + "/"); err != nil {
		t.Errorf("request after a failed dial: %v", err)
	} else {
		resp.Body.Close()
	}

	close(stop)
	select {
	case <-served:
	case <-time.After(5 * time.Second):
		t.Fatal("the relay did not stop within 5 s of the program's exit")
	}
	if c, err := net.DialTimeout("tcp", addrs[0], time.Second); err == nil {
		c.Close()
		t.Errorf("%s still accepts connections after the relay stopped", addrs[0])
	}
}

// TestExposeWithoutRelay says what is wrong when the program does not run under RunInside.
func TestExposeWithoutRelay(t *testing.T) {
	if os.Getenv(relayFDEnv) != "" {
		t.Skip("runs under a relay")
	}
	if _, err := exposeConn(""); err == nil {
		t.Error("opening a relay without a descriptor succeeded")
	}
}

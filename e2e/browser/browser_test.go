package browser_test

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/lobby-http/lobby/e2e/browser"
)

// TestBrowser opens a page that changes itself and then moves to another URL, as a waiting page
// does, and checks every call of the harness against it.
func TestBrowser(t *testing.T) {
	if _, err := browser.Find(); err != nil {
		t.Skip(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/wait", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, `<!doctype html><title>waiting</title><p id="p">starting</p>
<script>setTimeout(function () { document.getElementById("p").textContent = "almost"; }, 200);
setTimeout(function () { location.href = "/ready"; }, 400);</script>`)
	})
	mux.HandleFunc("/ready", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, `<!doctype html><title>ready</title><h1>hello from the app</h1>`)
	})
	ts := httptest.NewServer(mux)
	defer ts.Close()

	ctx := t.Context()
	b, err := browser.Start(ctx, browser.Options{Width: 640, Height: 480})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := b.Close(); err != nil {
			t.Error(err)
		}
	}()
	if err := b.Open(ctx, ts.URL+"/wait"); err != nil {
		t.Fatal(err)
	}
	if text, err := b.Text(ctx); err != nil || text != "starting" {
		t.Errorf("Text() = %q, %v; want %q", text, err, "starting")
	}
	if _, err := b.WaitText(ctx, 5*time.Second, "almost"); err != nil {
		t.Error(err)
	}
	if u, err := b.WaitURL(ctx, 5*time.Second, "/ready"); err != nil || u != ts.URL+"/ready" {
		t.Errorf("WaitURL() = %q, %v; want %s/ready", u, err, ts.URL)
	}
	if _, err := b.WaitText(ctx, 5*time.Second, "hello from the app"); err != nil {
		t.Error(err)
	}
	if title, err := browser.Eval[string](ctx, b, "document.title"); err != nil || title != "ready" {
		t.Errorf("Eval(document.title) = %q, %v; want ready", title, err)
	}
	if _, err := b.WaitText(ctx, 300*time.Millisecond, "never shown"); err == nil {
		t.Error("WaitText for text the page never shows succeeded")
	}
	shot := filepath.Join(t.TempDir(), "shots", "ready.png")
	if err := b.Screenshot(ctx, shot); err != nil {
		t.Fatal(err)
	}
	png, err := os.ReadFile(shot)
	if err != nil || !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) {
		t.Errorf("screenshot %s: %v, %d bytes, want a PNG", shot, err, len(png))
	}
}

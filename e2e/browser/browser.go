// Package browser drives a headless Chromium for end-to-end tests: open a URL, wait for text or a
// URL, read the page, take a screenshot. Chromium is Debian's package (`make deps` installs it);
// the tests run it inside their network namespace as root, so it runs without its sandbox, and
// with a profile of its own that is removed when the browser closes. Nothing is downloaded.
package browser

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/chromedp/chromedp"
)

// Candidates are the names Chromium's binary is looked up by, in order.
var Candidates = []string{"chromium", "chromium-browser", "google-chrome"}

// Options configure a Browser.
type Options struct {
	// Width and Height are the window's size in pixels; zero means 1280×800.
	Width, Height int
	// Log receives Chromium's own output; nil discards it.
	Log io.Writer
	// Hosts maps host names to the address ("ip" or "ip:port") Chromium connects to for them,
	// as DNS would: the page keeps its host in the address bar and in its Host header, the way
	// a person reaches an app through an ingress.
	Hosts map[string]string
}

// Browser is one headless Chromium process. Close it.
type Browser struct {
	ctx     context.Context // the browser's first tab; its cancel ends the process
	cancel  context.CancelFunc
	stopAll context.CancelFunc
	profile string
}

// Find returns the path of the Chromium binary, or an error that says how to install it.
func Find() (string, error) {
	for _, name := range Candidates {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", errors.New("find Chromium: none of " + strings.Join(Candidates, ", ") + " is on PATH; run `make deps` (installs Debian's chromium)")
}

// Start starts Chromium headless, without its sandbox (tests run it as root), with a fresh
// profile. The browser lives until Close or until ctx ends.
func Start(ctx context.Context, o Options) (*Browser, error) {
	bin, err := Find()
	if err != nil {
		return nil, err
	}
	if o.Width <= 0 || o.Height <= 0 {
		o.Width, o.Height = 1280, 800
	}
	profile, err := os.MkdirTemp("", "lobby-chromium-")
	if err != nil {
		return nil, fmt.Errorf("create Chromium profile: %w", err)
	}
	log := o.Log
	if log == nil {
		log = io.Discard
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(bin),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(profile),
		chromedp.WindowSize(o.Width, o.Height),
		chromedp.CombinedOutput(log),
		// /dev/shm is small in containers and network namespaces; shared memory goes to /tmp.
		chromedp.Flag("disable-dev-shm-usage", true),
		// Nothing may be fetched from the Internet: no updates, sync, or background traffic.
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-proxy-server", true),
		chromedp.Flag("hide-scrollbars", true),
	}
	if rules := resolverRules(o.Hosts); rules != "" {
		opts = append(opts, chromedp.Flag("host-resolver-rules", rules))
	}
	actx, stopAll := chromedp.NewExecAllocator(ctx, opts...)
	tab, cancel := chromedp.NewContext(actx)
	b := &Browser{ctx: tab, cancel: cancel, stopAll: stopAll, profile: profile}
	// The first action starts the process.
	if err := chromedp.Do(tab); err != nil {
		b.Close()
		return nil, fmt.Errorf("start Chromium %s: %w", bin, err)
	}
	return b, nil
}

// resolverRules is Chromium's --host-resolver-rules for hosts, in a stable order.
func resolverRules(hosts map[string]string) string {
	rules := make([]string, 0, len(hosts))
	for _, h := range slices.Sorted(maps.Keys(hosts)) {
		rules = append(rules, "MAP "+h+" "+hosts[h])
	}
	return strings.Join(rules, ", ")
}

// Close ends the browser and removes its profile.
func (b *Browser) Close() error {
	b.cancel()
	b.stopAll()
	if err := os.RemoveAll(b.profile); err != nil {
		return fmt.Errorf("remove Chromium profile: %w", err)
	}
	return nil
}

// within runs f on the browser's tab, ended when ctx ends (an action cut short leaves the tab
// usable).
func (b *Browser) within(ctx context.Context, f func(tab context.Context) error) error {
	tab, cancel := context.WithCancel(b.ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, cancel)
	defer stop()
	if err := f(tab); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return err
	}
	return nil
}

// Open loads url in the tab and waits for the page's load event.
func (b *Browser) Open(ctx context.Context, url string) error {
	return b.within(ctx, func(tab context.Context) error {
		if err := chromedp.Do(tab, chromedp.Navigate(url)); err != nil {
			return fmt.Errorf("open %s: %w", url, err)
		}
		return nil
	})
}

// Text returns the visible text of the page's body.
func (b *Browser) Text(ctx context.Context) (string, error) {
	var text string
	err := b.within(ctx, func(tab context.Context) (err error) {
		text, err = chromedp.Run(tab, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
		return err
	})
	if err != nil {
		return "", fmt.Errorf("read the page's text: %w", err)
	}
	return text, nil
}

// URL returns the tab's current URL.
func (b *Browser) URL(ctx context.Context) (string, error) {
	var u string
	err := b.within(ctx, func(tab context.Context) (err error) {
		u, err = chromedp.Run(tab, chromedp.Location())
		return err
	})
	return u, err
}

// Eval evaluates a JavaScript expression in b's page and returns its JSON value decoded as a T.
func Eval[T any](ctx context.Context, b *Browser, expression string) (T, error) {
	var v T
	err := b.within(ctx, func(tab context.Context) (err error) {
		v, err = chromedp.Run(tab, chromedp.Evaluate[T](expression))
		return err
	})
	if err != nil {
		return v, fmt.Errorf("evaluate %q: %w", expression, err)
	}
	return v, nil
}

// WaitText waits until the page's visible text contains text, polling every 50 ms: it follows
// pages that change themselves (live updates, reloads, redirects). It returns the page's text.
func (b *Browser) WaitText(ctx context.Context, timeout time.Duration, text string) (string, error) {
	return b.wait(ctx, timeout, "the text "+fmt.Sprintf("%q", text), func(ctx context.Context) (string, bool, error) {
		t, err := b.Text(ctx)
		return t, strings.Contains(t, text), err
	})
}

// WaitURL waits until the tab's URL contains part, and returns the URL.
func (b *Browser) WaitURL(ctx context.Context, timeout time.Duration, part string) (string, error) {
	return b.wait(ctx, timeout, "a URL containing "+fmt.Sprintf("%q", part), func(ctx context.Context) (string, bool, error) {
		u, err := b.URL(ctx)
		return u, strings.Contains(u, part), err
	})
}

// WaitEval waits until a JavaScript expression is true in the page.
func (b *Browser) WaitEval(ctx context.Context, timeout time.Duration, expression string) error {
	_, err := b.wait(ctx, timeout, "the page to satisfy "+expression, func(ctx context.Context) (string, bool, error) {
		ok, err := Eval[bool](ctx, b, "!!("+expression+")")
		return "", ok, err
	})
	return err
}

// wait calls check every 50 ms, each bounded by 5 seconds, until it reports done, timeout passes,
// or ctx ends. Errors while a page loads (its context is being replaced) are retried; the last one
// is reported on timeout.
func (b *Browser) wait(ctx context.Context, timeout time.Duration, what string, check func(context.Context) (string, bool, error)) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		v, ok, err := check(cctx)
		cancel()
		if err == nil && ok {
			return v, nil
		}
		if ctx.Err() != nil {
			return v, ctx.Err()
		}
		if time.Now().After(deadline) {
			if err != nil {
				return v, fmt.Errorf("wait %v for %s: %w", timeout, what, err)
			}
			return v, fmt.Errorf("wait %v for %s: last seen %.300q", timeout, what, v)
		}
		select {
		case <-ctx.Done():
			return v, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Screenshot writes a PNG of the whole page to path, creating its folder.
func (b *Browser) Screenshot(ctx context.Context, path string) error {
	var png []byte
	err := b.within(ctx, func(tab context.Context) (err error) {
		png, err = chromedp.Run(tab, chromedp.FullScreenshot(100))
		return err
	})
	if err != nil {
		return fmt.Errorf("take a screenshot: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("write screenshot: %w", err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		return fmt.Errorf("write screenshot: %w", err)
	}
	return nil
}

//go:build e2e

package system

import (
	"bufio"
	"context"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lobby-http/lobby/e2e/deploy"
	"github.com/lobby-http/lobby/e2e/framework/poll"
)

// Counted loads: a claim that no request is lost under a fault is a count. Every request a load
// sends is answered 200, answered with another status, ended by a transport error, or still
// unanswered when the load's drain bound passes after it stopped; the four add up to what was
// sent, and a load that loses nothing has no request outside the first. The requests go through
// an nginx of the test's own with retries off (noRetryIngress), so that a request the
// interceptors drop is not hidden by nginx sending it again; and the interceptors' own counters
// of the route are checked against what the clients saw (serverCounts).

// loadDrain bounds the wait for a stopped load's requests still on their way. The loads target
// warm apps that answer within milliseconds (100 ms at most with a response delay), so a request
// without an answer this long after the load stopped is lost, not slow.
const loadDrain = 15 * time.Second

// loadDuration and loadRequests cap every load, so that one nobody stops ends by itself: it
// stops sending after this long (longer than a control-plane scenario's watch, which lasts until
// a change made after the outage has taken effect) or this many requests.
const (
	loadDuration = 10 * time.Minute
	loadRequests = 50000
)

// load is clients sending requests in a loop until stopped, every request counted.
type load struct {
	stopSending context.CancelFunc
	// abandon ends the requests still on their way once the drain bound has passed.
	abandon context.CancelFunc
	wg      sync.WaitGroup
	once    sync.Once

	mu sync.Mutex
	// onTheirWay are the requests sent and not yet answered.
	onTheirWay int
	// closed is set when the load is counted: answers that come later are not.
	closed bool
	tally  tally
}

// tally is what a load counted.
type tally struct {
	// sent is the number of requests sent.
	sent int
	// codes counts the answers by status code.
	codes map[int]int
	// errors counts the requests that ended without an HTTP answer.
	errors int
	// unanswered counts the requests still on their way when the drain bound passed.
	unanswered int
	// failures describes the first few requests that were not answered 200.
	failures []string
	// slowest is the longest a request took to be answered 200.
	slowest time.Duration
	// got holds every answer and transport error, in the order they came.
	got []response
}

// startLoad starts clients sending GET url with the Host header host, one request after another
// each, with pause between a client's requests.
func startLoad(ctx context.Context, clients int, pause time.Duration, url, host string) *load {
	sendCtx, stopSending := context.WithTimeout(ctx, loadDuration)
	reqCtx, abandon := context.WithCancel(context.WithoutCancel(ctx))
	l := &load{stopSending: stopSending, abandon: abandon, tally: tally{codes: map[int]int{}}}
	for range clients {
		l.wg.Go(func() {
			for sendCtx.Err() == nil {
				l.mu.Lock()
				if l.tally.sent >= loadRequests {
					l.mu.Unlock()
					return
				}
				l.tally.sent++
				l.onTheirWay++
				l.mu.Unlock()
				start := time.Now()
				// The request runs to its answer even once the load is stopped: a stop ends the
				// sending, not the requests sent.
				r := send(reqCtx, http.MethodGet, url, host, nil)
				l.record(r, r.at.Sub(start))
				sleepCtx(sendCtx, pause)
			}
		})
	}
	return l
}

// record counts one answer, unless the load was counted already.
func (l *load) record(r response, took time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	l.onTheirWay--
	c := &l.tally
	c.got = append(c.got, r)
	switch {
	case r.err != nil:
		c.errors++
	default:
		c.codes[r.code]++
	}
	if r.err == nil && r.code == http.StatusOK {
		c.slowest = max(c.slowest, took)
		return
	}
	if len(c.failures) < 5 {
		c.failures = append(c.failures, fmt.Sprintf("%s after %v: %d %q (%v)", r.at.Format("15:04:05.000"), took.Round(time.Millisecond), r.code, r.body, r.err))
	}
}

// stop ends the sending, waits up to loadDrain for the requests on their way, and counts; the
// requests still unanswered then are counted as such and abandoned. Later calls return the same.
func (l *load) stop() tally {
	l.once.Do(func() {
		l.stopSending()
		done := make(chan struct{})
		go func() { l.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(loadDrain):
		}
		l.mu.Lock()
		l.closed = true
		l.tally.unanswered = l.onTheirWay
		l.mu.Unlock()
		l.abandon()
		<-done
	})
	l.mu.Lock()
	defer l.mu.Unlock()
	t := l.tally
	t.codes = maps.Clone(t.codes)
	t.got = slices.Clone(t.got)
	return t
}

// ok is the number of requests answered 200.
func (c tally) ok() int { return c.codes[http.StatusOK] }

// String sums the tally up: sent = answered 200 + failed, and the failures by kind.
func (c tally) String() string {
	return fmt.Sprintf("%d sent = %d answered 200 + %d failed (answers by code %v, %d transport errors, %d unanswered %v after the load stopped); slowest 200 in %v",
		c.sent, c.ok(), c.sent-c.ok(), c.codes, c.errors, c.unanswered, loadDrain, c.slowest.Round(time.Millisecond))
}

// check fails t unless the load sent requests and every one of them is accounted for and was
// answered 200.
func (c tally) check(t *testing.T, what string) {
	t.Helper()
	answered := 0
	for _, n := range c.codes {
		answered += n
	}
	switch {
	case c.sent == 0:
		t.Errorf("%s: no request was sent", what)
	case answered+c.errors+c.unanswered != c.sent:
		t.Errorf("%s: %d sent but %d answered, %d transport errors and %d unanswered: the count lost requests of its own", what, c.sent, answered, c.errors, c.unanswered)
	case c.ok() != c.sent:
		t.Errorf("%s: %v; want every request answered 200; first failures: %v", what, c, c.failures)
	}
}

// noRetryIngress starts an nginx of t's own, configured as the suite's but with retries off, in
// front of the release's interceptors (read at each reload); it stops when t ends.
func noRetryIngress(t *testing.T) *ingress {
	t.Helper()
	c := suite.cluster
	in, err := startNginx(t.Context(), c, "nginx.conf.tmpl", func() []string { return proxyAddrs(suite.lobby.Instances("interceptor"), "http") },
		map[string]any{"NoRetry": true})
	if err != nil {
		t.Fatalf("start nginx without retries: %v", err)
	}
	t.Cleanup(func() { _ = in.proc.Stop() })
	return in
}

// routeCounters are one route's counters on one interceptor: the requests answered, by status
// code, and the failed exchanges with the app, by reason.
type routeCounters struct {
	codes    map[int]float64
	upstream map[string]float64
}

// serverCounts follows one route's counters on the release's interceptors, from when it was
// made, so that what the interceptors answered can be checked against what the clients saw.
type serverCounts struct {
	route string
	base  map[string]routeCounters

	mu sync.Mutex
	// last are the final counters of interceptors that exit (see keepLast), and ended closes
	// when the interceptor stops answering.
	last  map[string]routeCounters
	ended map[string]chan struct{}
}

// watchServerCounts reads route's counters on every interceptor.
func watchServerCounts(t *testing.T, route string) *serverCounts {
	t.Helper()
	s := &serverCounts{route: route, base: map[string]routeCounters{}, last: map[string]routeCounters{}, ended: map[string]chan struct{}{}}
	for _, in := range suite.lobby.Instances("interceptor") {
		c, err := readRouteCounters(in.URL("admin"), route)
		if err != nil {
			t.Fatal(err)
		}
		s.base[in.Process.Name] = c
	}
	return s
}

// keepLast reads in's counters every 50 ms until it stops answering, and keeps the last read: an
// interceptor that is stopped drains its proxy before its admin server stops, so the last read
// made after the route's last request there ended holds that request.
func (s *serverCounts) keepLast(in *deploy.Instance) {
	ended := make(chan struct{})
	s.mu.Lock()
	s.ended[in.Process.Name] = ended
	s.mu.Unlock()
	go func() {
		defer close(ended)
		for {
			c, err := readRouteCounters(in.URL("admin"), s.route)
			if err != nil {
				return
			}
			s.mu.Lock()
			s.last[in.Process.Name] = c
			s.mu.Unlock()
			time.Sleep(50 * time.Millisecond)
		}
	}()
}

// sum returns the route's counters summed over the interceptors since watchServerCounts: the
// running ones read now, the exited ones as keepLast last read them.
func (s *serverCounts) sum() (routeCounters, error) {
	total := routeCounters{codes: map[int]float64{}, upstream: map[string]float64{}}
	add := func(name string, now routeCounters) {
		base := s.base[name] // zero for an interceptor started since
		for code, n := range now.codes {
			if d := n - base.codes[code]; d != 0 {
				total.codes[code] += d
			}
		}
		for reason, n := range now.upstream {
			if d := n - base.upstream[reason]; d != 0 {
				total.upstream[reason] += d
			}
		}
	}
	seen := map[string]bool{}
	for _, in := range suite.lobby.Instances("interceptor") {
		c, err := readRouteCounters(in.URL("admin"), s.route)
		if err != nil {
			return total, err
		}
		add(in.Process.Name, c)
		seen[in.Process.Name] = true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for name := range s.base {
		if seen[name] {
			continue
		}
		last, ok := s.last[name]
		if !ok {
			return total, fmt.Errorf("interceptor %s is gone and its counters were not kept", name)
		}
		add(name, last)
	}
	return total, nil
}

// agree fails t unless, within a few seconds, the interceptors answered the route's requests
// with exactly the codes the clients saw and had no failed exchange with the app. Every request
// of the tally went through an nginx without retries to one interceptor, and the route had no
// other traffic since watchServerCounts.
func (s *serverCounts) agree(t *testing.T, what string, c tally) {
	t.Helper()
	got := s.await(t, what, c.codes)
	if len(got.upstream) > 0 {
		t.Errorf("%s: the interceptors counted failed exchanges with the app: %v", what, got.upstream)
	}
}

// await fails t unless, within a few seconds (a counter is incremented when the interceptor's
// handler returns, which may come just after the client has its answer), the interceptors'
// answers of the route since watchServerCounts are exactly want, by status code; it returns their
// counters.
func (s *serverCounts) await(t *testing.T, what string, want map[int]int) routeCounters {
	t.Helper()
	got := routeCounters{codes: map[int]float64{}, upstream: map[string]float64{}}
	s.mu.Lock()
	ended := slices.Collect(maps.Values(s.ended))
	s.mu.Unlock()
	for _, e := range ended {
		select {
		case <-e:
		case <-time.After(loadDrain):
			t.Errorf("%s: an interceptor whose counters are kept still answers %v later", what, loadDrain)
			return got
		}
	}
	wanted := map[int]float64{}
	for code, n := range want {
		if n != 0 {
			wanted[code] = float64(n)
		}
	}
	err := poll.Until(t.Context(), 5*time.Second, "the interceptors' counters of "+s.route+" to agree with the clients", func() error {
		var err error
		if got, err = s.sum(); err != nil {
			return err
		}
		if !maps.Equal(got.codes, wanted) {
			return fmt.Errorf("the interceptors answered %v, the clients saw %v", got.codes, wanted)
		}
		return nil
	})
	if err != nil {
		t.Errorf("%s: %v", what, err)
	}
	return got
}

// readRouteCounters reads route's counters from an interceptor's /metrics.
func readRouteCounters(adminURL, route string) (routeCounters, error) {
	c := routeCounters{codes: map[int]float64{}, upstream: map[string]float64{}}
	resp, err := http.Get(adminURL + "/metrics")
	if err != nil {
		return c, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return c, fmt.Errorf("GET %s/metrics: %s", adminURL, resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		name, labels, value, ok := parseSample(sc.Text())
		if !ok || labels["route"] != route {
			continue
		}
		switch name {
		case "lobby_interceptor_requests_total":
			code, err := strconv.Atoi(labels["code"])
			if err != nil {
				return c, fmt.Errorf("%s: code %q: %w", name, labels["code"], err)
			}
			c.codes[code] += value
		case "lobby_interceptor_upstream_errors_total":
			c.upstream[labels["reason"]] += value
		}
	}
	return c, sc.Err()
}

// parseSample parses a line of Prometheus' text format that holds a sample with labels:
// name{k="v",...} value.
func parseSample(line string) (name string, labels map[string]string, value float64, ok bool) {
	name, rest, found := strings.Cut(line, "{")
	if !found || strings.HasPrefix(line, "#") {
		return "", nil, 0, false
	}
	labels = map[string]string{}
	for {
		rest = strings.TrimPrefix(rest, ",")
		if strings.HasPrefix(rest, "}") {
			break
		}
		k, after, found := strings.Cut(rest, "=")
		if !found {
			return "", nil, 0, false
		}
		v, err := strconv.QuotedPrefix(after)
		if err != nil {
			return "", nil, 0, false
		}
		if labels[k], err = strconv.Unquote(v); err != nil {
			return "", nil, 0, false
		}
		rest = after[len(v):]
	}
	value, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimPrefix(rest, "}")), 64)
	if err != nil {
		return "", nil, 0, false
	}
	return name, labels, value, true
}

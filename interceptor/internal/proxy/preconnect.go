package proxy

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lobby-http/lobby/interceptor/internal/endpoints"
)

// preconnectWait bounds how long requests released together wait for the connections opened
// ahead of them: past it they go, and take whatever connections are open by then.
const preconnectWait = 25 * time.Millisecond

// preconnectKeep is how long a connection opened ahead is kept for a request; past it, unused,
// it is closed. It is short, since an app may close a connection that idles before its first
// request, and a request sent on one that it closed would fail.
const preconnectKeep = time.Second

// warmUp is the opening of connections to one endpoint ahead of the requests released to it
// after a hold; done is closed when it has ended, or preconnectWait after it began.
type warmUp struct {
	done chan struct{}
	once sync.Once
}

// release lets the requests waiting for the warm-up go.
func (w *warmUp) release() { w.once.Do(func() { close(w.done) }) }

// preconnects holds the warm-ups of the endpoints that held requests were released to, and the
// connections they opened that no request has taken yet.
type preconnects struct {
	mu     sync.Mutex
	warmUp map[*endpoints.Endpoint]*warmUp
	conns  map[string][]preconn
	// n counts the connections in conns, so that a dial finds none without taking the lock.
	n atomic.Int64
}

// preconn is a connection opened ahead, and when it was opened.
type preconn struct {
	c  net.Conn
	at time.Time
}

// warm is called by every request that was held before Forward: the first for an endpoint opens
// connections to it, up to the number of requests the route holds or has in flight and
// MaxPreconnectsPerHost, at most MaxDialsPerHost at a time (one for h2c targets, whose requests
// share connections as streams); the others wait until it is done, or preconnectWait at most, so
// that they find the connections open instead of all dialing at once.
func (f *Forwarder) warm(ctx context.Context, x *Exchange, h2 bool) {
	p := &f.pre
	p.mu.Lock()
	w := p.warmUp[x.ep]
	if w != nil {
		p.mu.Unlock()
		select {
		case <-w.done:
		case <-ctx.Done():
		}
		return
	}
	w = &warmUp{done: make(chan struct{})}
	p.warmUp[x.ep] = w
	p.mu.Unlock()
	// One timer for all the waiters, in case a dial outlasts its context.
	t := time.AfterFunc(preconnectWait, w.release)
	defer t.Stop()
	defer w.release()
	ep := x.ep
	time.AfterFunc(preconnectKeep, func() {
		p.mu.Lock()
		delete(p.warmUp, ep)
		p.mu.Unlock()
	})

	n := 1
	if !h2 && x.route.Counts != nil {
		c := x.route.Counts.Counts(time.Now())
		n = int(min(c.Held+c.InFlight, int64(f.opts.MaxPreconnectsPerHost)))
	}
	if n > 0 {
		f.preconnect(ep.Host, n)
	}
}

// preconnect opens n connections to addr, at most MaxDialsPerHost at a time, and keeps them for
// the dials of the requests about to be sent there. It stops at the first failed dial: the
// requests then find the endpoint as it is.
func (f *Forwarder) preconnect(addr string, n int) {
	ctx, cancel := context.WithTimeout(context.Background(), preconnectWait)
	defer cancel()
	var next atomic.Int64
	var failed atomic.Bool
	var wg sync.WaitGroup
	for range min(n, f.opts.MaxDialsPerHost) {
		wg.Go(func() {
			for next.Add(1) <= int64(n) && !failed.Load() {
				c, err := f.opts.Dial(ctx, "tcp", addr)
				if err != nil {
					failed.Store(true)
					return
				}
				f.pre.put(addr, c)
			}
		})
	}
	wg.Wait()
	if f.pre.n.Load() > 0 {
		time.AfterFunc(preconnectKeep, func() { f.pre.expire(addr) })
	}
}

// put keeps c, a connection to addr opened ahead.
func (p *preconnects) put(addr string, c net.Conn) {
	p.mu.Lock()
	p.conns[addr] = append(p.conns[addr], preconn{c: c, at: time.Now()})
	p.n.Add(1)
	p.mu.Unlock()
}

// take returns a connection to addr opened ahead, or nil when there is none.
func (p *preconnects) take(addr string) net.Conn {
	if p.n.Load() == 0 {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	cs := p.conns[addr]
	if len(cs) == 0 {
		return nil
	}
	c := cs[len(cs)-1]
	cs[len(cs)-1] = preconn{}
	if cs = cs[:len(cs)-1]; len(cs) == 0 {
		delete(p.conns, addr)
	} else {
		p.conns[addr] = cs
	}
	p.n.Add(-1)
	return c.c
}

// expire closes the connections to addr opened ahead longer than preconnectKeep ago.
func (p *preconnects) expire(addr string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	cs := p.conns[addr]
	keep := cs[:0]
	for _, c := range cs {
		if time.Since(c.at) >= preconnectKeep {
			c.c.Close()
			p.n.Add(-1)
			continue
		}
		keep = append(keep, c)
	}
	clear(cs[len(keep):])
	if len(keep) == 0 {
		delete(p.conns, addr)
	} else {
		p.conns[addr] = keep
	}
}

package counts

import (
	"sync/atomic"
	"time"
)

// ring counts requests in buckets of one granularity each, covering the route's window, without a
// lock. Each bucket packs the number of its period (the clock divided by the granularity, modulo
// 2³²) in its high 32 bits and its count in the low 32 bits, so a writer that finds a stale bucket
// resets and counts it in one compare-and-swap, and a reader can tell stale buckets apart.
type ring struct {
	window      time.Duration
	granularity time.Duration
	// span is len(buckets) × granularity, the time the rate is averaged over; it equals window
	// unless window is not a multiple of granularity.
	span    time.Duration
	buckets []atomic.Uint64
}

func newRing(window, granularity time.Duration) *ring {
	n := int((window + granularity - 1) / granularity)
	return &ring{
		window:      window,
		granularity: granularity,
		span:        time.Duration(n) * granularity,
		buckets:     make([]atomic.Uint64, n),
	}
}

// period returns the number of the granularity-long period that contains t, modulo 2³².
func (g *ring) period(t time.Time) uint32 {
	return uint32(t.UnixNano() / int64(g.granularity))
}

// add counts one request at now.
func (g *ring) add(now time.Time) {
	p := g.period(now)
	b := &g.buckets[int(p%uint32(len(g.buckets)))]
	for {
		old := b.Load()
		next := uint64(p)<<32 | 1
		if uint32(old>>32) == p && uint32(old) != ^uint32(0) {
			next = old + 1
		} else if uint32(old>>32) == p {
			return // The bucket is saturated; 4 billion requests a period is beyond any real rate.
		}
		if b.CompareAndSwap(old, next) {
			return
		}
	}
}

// perSecond returns the requests per second over the span that ends with now's period.
func (g *ring) perSecond(now time.Time) float64 {
	p := g.period(now)
	n := uint32(len(g.buckets))
	var sum uint64
	for i := range g.buckets {
		v := g.buckets[i].Load()
		// Unsigned distance: buckets of periods after now (a clock step back) look far away.
		if p-uint32(v>>32) < n {
			sum += v & 0xffffffff
		}
	}
	return float64(sum) / g.span.Seconds()
}

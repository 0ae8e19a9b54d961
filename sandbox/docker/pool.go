package docker

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// pool keeps started containers of one language with the default limits, each attached
// and waiting in runbox-init for its one program. It is sized by demand: it wants
// PoolStart boxes at first, one more (up to PoolSize) each time a program finds it empty,
// and one fewer (down to PoolMin) for each PoolIdle without a program of its language. A
// language nobody uses ends with PoolMin boxes; a busy one keeps PoolSize.
//
// PoolSize fillers run per pool; filler i keeps one box while the pool wants more than i,
// so a drained pool refills in parallel, up to what it wants. Fillers of every language
// take turns (first come, first served) for at most PoolStarts container starts at once:
// a busy language's refills never starve the others.
type pool struct {
	r      *Runner
	rt     *runtime
	limits boxLimits
	ready  chan *box
	idleN  atomic.Int64 // started boxes waiting for a program: in ready or held by the filler

	mu      sync.Mutex
	want    int           // boxes wanted: PoolMin..PoolSize
	used    time.Time     // the last program that asked, or the last shrink
	changed chan struct{} // closed when want changes
}

// newPool returns a pool; it holds as many boxes as its fillers hold: each holds the box
// it started until a program takes it (ready is unbuffered).
func newPool(r *Runner, rt *runtime) *pool {
	return &pool{
		r: r, rt: rt, limits: boxLimitsOf(r.cfg.Defaults, rt.lang.Compiled()), ready: make(chan *box),
		want: min(r.cfg.PoolStart, r.cfg.PoolSize), used: time.Now(), changed: make(chan struct{}),
	}
}

// fits reports whether a pooled box can serve a program that needs a box of want: of
// the same limits, but for the memory of a program that does not compile, which the
// Runner sets at runbox-init's gate.
func (p *pool) fits(want boxLimits, compiles bool) bool {
	have := p.limits
	if !compiles {
		have.Memory = want.Memory
	}
	return have == want
}

// idle is how many started boxes wait for a program (at most the pool size).
func (p *pool) idle() int { return int(p.idleN.Load()) }

// wanted is how many boxes the pool wants now, and the channel closed when that changes.
func (p *pool) wanted() (int, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.want, p.changed
}

// setWantLocked changes want and wakes the fillers.
func (p *pool) setWantLocked(n int) {
	if n == p.want {
		return
	}
	p.want = n
	close(p.changed)
	p.changed = make(chan struct{})
}

// get returns a waiting box, or nil when none is ready (the caller starts its own, and
// the pool grows by one). Boxes older than PoolMaxAge are retired on the way.
func (p *pool) get() *box {
	p.mu.Lock()
	p.used = time.Now()
	p.mu.Unlock()
	for {
		select {
		case b := <-p.ready:
			p.idleN.Add(-1)
			if time.Since(b.started) > p.r.cfg.PoolMaxAge {
				p.r.remove(b)
				continue
			}
			return b
		default:
			p.mu.Lock()
			p.setWantLocked(min(p.want+1, p.r.cfg.PoolSize))
			p.mu.Unlock()
			return nil
		}
	}
}

// shrink gives up one wanted box when no program asked for PoolIdle.
func (p *pool) shrink(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.want > p.r.cfg.PoolMin && now.Sub(p.used) >= p.r.cfg.PoolIdle {
		p.setWantLocked(p.want - 1)
		p.used = now
	}
}

// govern shrinks the pools of languages that go unused until ctx ends.
func (r *Runner) govern(ctx context.Context, pools []*pool) {
	tick := time.NewTicker(max(r.cfg.PoolIdle/4, time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			for _, p := range pools {
				p.shrink(now)
			}
		}
	}
}

// run is filler i: fill until ctx ends. A panic in fill is logged with its stack (no
// program waits on a filler) and fill starts again after a backoff that doubles with each
// panic in a row, up to maxBackoff.
func (p *pool) run(ctx context.Context, i int, delay time.Duration) {
	backoff := minBackoff
	for {
		if !p.fillRecovering(ctx, i, delay) || ctx.Err() != nil {
			return
		}
		p.r.log.Warn("warm pool: filler restarts", "language", p.rt.lang.Name, "after", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff, delay = min(2*backoff, maxBackoff), 0
	}
}

// Backoffs of a filler: after a failed start or a panic.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 30 * time.Second
)

// fillRecovering runs fill and reports whether it panicked.
func (p *pool) fillRecovering(ctx context.Context, i int, delay time.Duration) (panicked bool) {
	defer func() {
		if v := recover(); v != nil {
			p.r.recovered("warm pool filler ("+p.rt.lang.Name+")", v)
			panicked = true
		}
	}()
	p.fill(ctx, i, delay)
	return false
}

// fill starts boxes and hands them to the pool until ctx ends, while the pool wants more
// than i boxes; the first one after delay. Failures back off exponentially (the engine
// may be busy or restarting) and are logged once per streak.
func (p *pool) fill(ctx context.Context, i int, delay time.Duration) {
	if delay > 0 {
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
	}
	backoff := minBackoff
	for ctx.Err() == nil {
		if !p.waitWanted(ctx, i) {
			return
		}
		b, err := p.start(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if backoff == minBackoff {
				p.r.log.Warn("warm pool: start container", "language", p.rt.lang.Name, "err", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, maxBackoff)
			continue
		}
		backoff = minBackoff
		p.idleN.Add(1)
		if !p.hold(ctx, i, b) {
			return
		}
	}
}

// waitWanted waits until the pool wants more than i boxes; false when ctx ended first.
func (p *pool) waitWanted(ctx context.Context, i int) bool {
	for {
		want, changed := p.wanted()
		if i < want {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-changed:
		}
	}
}

// start starts a box when the Runner's turn for pooled starts comes.
func (p *pool) start(ctx context.Context) (*box, error) {
	select {
	case p.r.poolStarts <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-p.r.poolStarts }()
	return p.r.startBox(ctx, p.rt, p.limits, true)
}

// hold offers b to programs until one takes it, it grows too old, the pool no longer
// wants it, or ctx ends (then hold returns false).
func (p *pool) hold(ctx context.Context, i int, b *box) bool {
	retire := time.NewTimer(p.r.cfg.PoolMaxAge)
	defer retire.Stop()
	for {
		want, changed := p.wanted()
		if i >= want { // the pool shrank
			p.idleN.Add(-1)
			p.r.remove(b)
			return true
		}
		select {
		case p.ready <- b:
			return true
		case <-retire.C:
			p.idleN.Add(-1)
			p.r.remove(b) // waited too long: start a fresh one
			return true
		case <-changed:
		case <-ctx.Done():
			p.idleN.Add(-1)
			p.r.remove(b)
			return false
		}
	}
}

// drain removes the waiting boxes; call after the filler stopped.
func (p *pool) drain() {
	for {
		select {
		case b := <-p.ready:
			p.idleN.Add(-1)
			p.r.remove(b)
		default:
			return
		}
	}
}

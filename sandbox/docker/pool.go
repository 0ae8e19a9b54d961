package docker

import (
	"context"
	"sync/atomic"
	"time"
)

// pool keeps started containers of one language with the default limits, each attached
// and waiting in runbox-init for its one program. PoolSize fillers run per pool, each
// starting one container at a time, so a drained pool refills in parallel.
type pool struct {
	r      *Runner
	rt     *runtime
	limits boxLimits
	ready  chan *box
	idleN  atomic.Int64 // started boxes waiting for a program: in ready or held by the filler
}

// newPool returns a pool; it holds as many boxes as fillers run: each filler holds the
// box it started until a program takes it (ready is unbuffered).
func newPool(r *Runner, rt *runtime) *pool {
	return &pool{r: r, rt: rt, limits: boxLimitsOf(r.cfg.Defaults), ready: make(chan *box)}
}

// idle is how many started boxes wait for a program (at most the pool size).
func (p *pool) idle() int { return int(p.idleN.Load()) }

// get returns a waiting box, or nil when none is ready (the caller starts its own).
// Boxes older than PoolMaxAge are retired on the way.
func (p *pool) get() *box {
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
			return nil
		}
	}
}

// run is one filler: fill until ctx ends. A panic in fill is logged with its stack (no
// program waits on a filler) and fill starts again after a backoff that doubles with each
// panic in a row, up to maxBackoff.
func (p *pool) run(ctx context.Context, delay time.Duration) {
	backoff := minBackoff
	for {
		if !p.fillRecovering(ctx, delay) || ctx.Err() != nil {
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
func (p *pool) fillRecovering(ctx context.Context, delay time.Duration) (panicked bool) {
	defer func() {
		if v := recover(); v != nil {
			p.r.recovered("warm pool filler ("+p.rt.lang.Name+")", v)
			panicked = true
		}
	}()
	p.fill(ctx, delay)
	return false
}

// fill starts boxes and hands them to the pool until ctx ends, the first one after delay.
// Failures back off exponentially (the engine may be busy or restarting) and are logged
// once per streak.
func (p *pool) fill(ctx context.Context, delay time.Duration) {
	if delay > 0 {
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
	}
	backoff := minBackoff
	for ctx.Err() == nil {
		b, err := p.r.startBox(ctx, p.rt, p.limits, p.r.cfg.PoolWarm)
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
		retire := time.NewTimer(p.r.cfg.PoolMaxAge)
		select {
		case p.ready <- b:
			retire.Stop()
		case <-retire.C:
			p.idleN.Add(-1)
			p.r.remove(b) // waited too long: start a fresh one
		case <-ctx.Done():
			p.idleN.Add(-1)
			retire.Stop()
			p.r.remove(b)
			return
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

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
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		b, err := p.r.startBox(ctx, p.rt, p.limits, p.r.cfg.PoolWarm)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if backoff == 100*time.Millisecond {
				p.r.log.Warn("warm pool: start container", "language", p.rt.lang.Name, "err", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 30*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
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

package docker

import (
	"context"
	"time"

	"github.com/docker/docker/api/types/container"

	"runbox/sandbox"
)

// containerWaiter is the SDK method Plain calls beyond dockerAPI.
type containerWaiter interface {
	ContainerWait(ctx context.Context, id string, cond container.WaitCondition) (<-chan container.WaitResponse, <-chan error)
}

var _ sandbox.Runner = (*Plain)(nil)

// Plain runs each program by the plain container cycle, what `docker run --rm -i` does:
// create a container (the Runner's image and hardened config), attach, start, send the
// program to runbox-init, read its output and result, wait for the container to exit and
// remove it, all before Run returns. No warm pool, no background removal. It is the
// baseline that `runbox bench --baseline` compares the cluster with.
type Plain struct {
	r *Runner
}

// NewPlain connects to the engine like New, with no warm pool (cfg.PoolSize is ignored).
func NewPlain(ctx context.Context, cfg Config) (*Plain, error) {
	cfg.PoolSize = 0
	r, err := New(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return &Plain{r: r}, nil
}

// Engine describes the engine the plain cycle uses (Runner.Engine).
func (p *Plain) Engine() EngineInfo { return p.r.Engine() }

// Close cancels the Runs in flight and removes what they left; later Runs return
// sandbox.ErrClosed.
func (p *Plain) Close() error { return p.r.Close() }

// Run implements sandbox.Runner. A panic while running fails the run with a
// *sandbox.PanicError, and the container is removed all the same.
func (p *Plain) Run(ctx context.Context, spec sandbox.Spec, streams *sandbox.Streams) (res sandbox.Result, err error) {
	r := p.r
	defer func() {
		if v := recover(); v != nil {
			res, err = sandbox.Result{ExitCode: -1}, r.recovered("sandbox run", v)
		}
	}()
	fail := sandbox.Result{ExitCode: -1}
	ctx, rt, lim, end, err := r.admit(ctx, spec)
	if err != nil {
		return fail, err
	}
	defer end()

	trace := &sandbox.Trace{}
	t0 := time.Now()
	b, err := r.startBox(ctx, rt, boxLimitsOf(lim, compiles(rt.lang, spec)), false) // create, attach, start
	trace.Acquire = time.Since(t0)
	if err != nil {
		if ctx.Err() != nil {
			return fail, ctx.Err()
		}
		return fail, err
	}
	answered := false
	defer func() {
		// Wait for the container to stop (runbox-init exits after its result; a sandbox
		// that did not answer is not waited for long), then remove it.
		cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer ccancel()
		if w, ok := r.api.(containerWaiter); ok && answered {
			wctx, wcancel := context.WithTimeout(cctx, 5*time.Second)
			waitc, errc := w.ContainerWait(wctx, b.id, container.WaitConditionNotRunning)
			select {
			case <-waitc:
			case <-errc:
			}
			wcancel()
		}
		if rerr := removeRetrying(cctx, r.api, b.id); rerr != nil {
			r.log.Warn("remove container", "id", shortID(b.id), "err", rerr)
		}
	}()
	res, err = r.runIn(ctx, b, rt, spec, lim, streams, trace)
	res.Trace = trace
	answered = err == nil
	return res, err
}

package transport

// The slave process's side: it dials the master, registers, beats and serves the job
// streams the master opens. The master's side is in remote.go.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/hashicorp/yamux"

	"runbox/sandbox"
	"runbox/scheduler"
)

// Slave serves jobs from a master on a local Runner. It dials the master (no inbound port),
// registers, beats, runs what the master sends, and reconnects with backoff when the
// master goes away.
type Slave struct {
	cfg    SlaveConfig
	runner sandbox.Runner
	log    *slog.Logger

	mu      sync.Mutex
	running int
	changed chan struct{} // closed, and replaced, when running changes
}

// NewSlave returns a Slave that runs jobs on runner.
func NewSlave(cfg SlaveConfig, runner sandbox.Runner) (*Slave, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Slave{cfg: cfg, runner: runner, changed: make(chan struct{}), log: log.With("component", "slave", "node", cfg.Node, "master", cfg.Master)}, nil
}

// Run serves until ctx ends. Then it tells the master it drains, lets the programs it
// runs finish (their results still reach the master), and returns nil. Errors that no
// retry can fix (refused credentials, a wrong protocol version) end it at once.
func (sl *Slave) Run(ctx context.Context) error {
	backoff := sl.cfg.Backoff
	for {
		connected, err := sl.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, ErrUnauthorized) || errors.Is(err, ErrVersion) {
			return err
		}
		if connected {
			backoff = sl.cfg.Backoff
		}
		var refused registrationRefused
		if errors.As(err, &refused) {
			// name_taken (a live node has this name: wait for it to go), or any other
			// refusal: it may pass, so wait longer each time, never give up.
			sl.log.Warn("the master refused this slave's registration, retrying", "code", refused.code, "err", refused.err, "in", backoff)
		} else {
			sl.log.Warn("master unreachable, retrying", "err", err, "in", backoff)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, sl.cfg.MaxBackoff)
	}
}

// registrationRefused is the master's answer to a registration it refused, with its wire
// code (e.g. name_taken; a code this side does not know is internal, and its message
// names it).
type registrationRefused struct {
	code string
	err  error
}

func (e registrationRefused) Error() string { return "registration refused: " + e.err.Error() }
func (e registrationRefused) Unwrap() error { return e.err }

// Running returns how many programs the slave runs now.
func (sl *Slave) Running() int {
	sl.mu.Lock()
	defer sl.mu.Unlock()
	return sl.running
}

// addRunning adds n to the programs running and tells waitIdle.
func (sl *Slave) addRunning(n int) {
	sl.mu.Lock()
	defer sl.mu.Unlock()
	sl.running += n
	close(sl.changed)
	sl.changed = make(chan struct{})
}

// waitIdle returns once no program runs and grace has passed.
func (sl *Slave) waitIdle(grace time.Duration) {
	t := time.NewTimer(grace)
	defer t.Stop()
	over := false
	for {
		sl.mu.Lock()
		n, changed := sl.running, sl.changed
		sl.mu.Unlock()
		if n == 0 && over {
			return
		}
		select {
		case <-changed:
		case <-t.C:
			over = true
		}
	}
}

// session runs one connection to the master until it breaks or ctx ends.
func (sl *Slave) session(ctx context.Context) (connected bool, err error) {
	sess, _, err := dial(ctx, sl.cfg.Master, sl.cfg.Client)
	if err != nil {
		return false, err
	}
	defer sess.Close()
	ctl, err := sess.OpenStream()
	if err != nil {
		return false, err
	}
	defer ctl.Close()
	if err := writeJSON(ctl, FrameRegister, scheduler.NodeSpec{Name: sl.cfg.Node, Capacity: sl.cfg.Capacity, Languages: sl.cfg.Languages}); err != nil {
		return false, err
	}
	ctl.SetReadDeadline(time.Now().Add(sl.cfg.FrameTimeout))
	typ, payload, err := ReadFrame(ctl, MaxFrame)
	if err != nil {
		return false, fmt.Errorf("register: %w", err)
	}
	if err := decodeReply(typ, payload, FrameAccepted, nil); err != nil {
		if typ != FrameError {
			return false, fmt.Errorf("register: %w", err)
		}
		return false, registrationRefused{code: Code(err), err: err}
	}
	ctl.SetReadDeadline(time.Time{})
	sl.log.Info("registered with the master", "capacity", sl.cfg.Capacity)

	var wg sync.WaitGroup
	defer wg.Wait()
	jobsCtx, cancelJobs := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelJobs()

	// Heartbeats.
	beatErr := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer func() { // a panic (in Load, say) ends this session; the slave reconnects
			if r := recover(); r != nil {
				sl.log.Error("panic", "in", "heartbeat", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
				beatErr <- fmt.Errorf("%w: heartbeat: %v", scheduler.ErrInternal, r)
			}
		}()
		t := time.NewTicker(sl.cfg.LoadInterval)
		defer t.Stop()
		for {
			var load scheduler.Load
			if sl.cfg.Load != nil {
				load = sl.cfg.Load()
			}
			if err := writeJSON(ctl, FrameLoad, load); err != nil {
				beatErr <- err
				return
			}
			select {
			case <-t.C:
			case <-jobsCtx.Done():
				return
			}
		}
	}()

	// Jobs.
	accepted := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			st, err := sess.AcceptStream()
			if err != nil {
				accepted <- err
				return
			}
			sl.addRunning(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer sl.addRunning(-1)
				defer st.Close()
				defer sl.recoverJob(st, "job stream")
				sl.serveJob(jobsCtx, st)
			}()
		}
	}()

	select {
	case err = <-accepted:
	case err = <-beatErr:
	case <-ctx.Done():
		// Drain: take nothing new, finish what runs, then leave. A job the master placed
		// before it read the drain frame may still be on its way: wait a load interval
		// for its stream before deciding nothing runs.
		writeJSON(ctl, FrameCapacity, Capacity{Capacity: 0, Draining: true})
		sl.log.Info("draining", "running", sl.Running())
		sl.waitIdle(sl.cfg.LoadInterval)
		err = ctx.Err()
	}
	cancelJobs()
	sess.Close()
	return true, err
}

// run runs spec on the slave's Runner; a panic in it is the job's internal error.
func (sl *Slave) run(ctx context.Context, spec sandbox.Spec, streams *sandbox.Streams) (res sandbox.Result, err error) {
	defer func() {
		if r := recover(); r != nil {
			sl.log.Error("panic", "in", "runner", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			res, err = sandbox.Result{ExitCode: -1}, fmt.Errorf("%w: the slave %s failed while running the job (a bug, logged)", scheduler.ErrInternal, sl.cfg.Node)
		}
	}()
	return sl.runner.Run(ctx, spec, streams)
}

// recoverJob, deferred, turns a panic into an error log and, when st is set, an internal
// error frame on it: the job ends, the slave serves on.
func (sl *Slave) recoverJob(st io.Writer, in string) {
	if r := recover(); r != nil {
		sl.log.Error("panic", "in", in, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
		if st != nil {
			writeError(st, fmt.Errorf("%w: the slave %s failed while handling the job (a bug, logged)", scheduler.ErrInternal, sl.cfg.Node))
		}
	}
}

// serveJob runs one job sent by the master and streams its progress back.
func (sl *Slave) serveJob(ctx context.Context, st *yamux.Stream) {
	st.SetReadDeadline(time.Now().Add(sl.cfg.FrameTimeout))
	typ, payload, err := ReadFrame(st, MaxRequestFrame)
	if err != nil || typ != FrameSubmit {
		return
	}
	st.SetReadDeadline(time.Time{})
	var sub Submit
	if err := json.Unmarshal(payload, &sub); err != nil {
		writeError(st, fmt.Errorf("%w: bad submit: %v", sandbox.ErrInvalidRequest, err))
		return
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var input chan []byte // the program's live stdin; the reader below owns its closing
	if sub.Interactive {
		input = make(chan []byte, 16)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() { // the master's side: stdin, cancel, or the stream going away
		defer wg.Done()
		defer cancel()
		defer sl.recoverJob(nil, "job stream reader")
		stdin := input
		defer func() {
			if stdin != nil {
				close(stdin)
			}
		}()
		for {
			typ, payload, err := ReadFrame(st, MaxFrame)
			if err != nil {
				if ctx.Err() == nil {
					cancel() // the master is gone: its scheduler runs the job elsewhere
				}
				return
			}
			switch typ {
			case FrameStdin:
				if stdin != nil {
					select {
					case stdin <- payload:
					case <-ctx.Done():
						return
					}
				}
			case FrameStdinEnd:
				if stdin != nil {
					close(stdin)
					stdin = nil
				}
			case FrameCancel:
				cancel()
				return
			}
		}
	}()
	var wmu sync.Mutex
	send := func(typ byte, payload []byte) {
		wmu.Lock()
		defer wmu.Unlock()
		WriteFrame(st, typ, payload)
	}
	streams := &sandbox.Streams{
		Started: func() {
			b, _ := json.Marshal(Started{Node: sl.cfg.Node})
			send(FrameStarted, b)
		},
		Output: func(c sandbox.Chunk) { send(outputFrame(c.Stream), c.Data) },
	}
	if input != nil {
		streams.Stdin = input
	}
	res, err := sl.run(ctx, sub.Spec, streams)
	wmu.Lock()
	if err != nil {
		writeError(st, err)
	} else {
		res.Node = sl.cfg.Node
		writeJSON(st, FrameResult, resultToWire(&res))
	}
	wmu.Unlock()
	st.Close()
	st.SetReadDeadline(time.Now().Add(sl.cfg.FrameTimeout)) // frees the reader if the master never closes
}

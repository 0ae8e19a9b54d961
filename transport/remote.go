package transport

// The master's side of a slave: its control stream (registration, heartbeats, capacity)
// and the remote runner through which the scheduler sends it jobs. The slave process's
// side is in slave.go.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/hashicorp/yamux"

	"runbox/sandbox"
	"runbox/scheduler"
)

// serveSlave handles a slave's session on the master: registration, heartbeats, and the
// remote runner through which the scheduler sends it jobs.
func (s *Server) serveSlave(sess *yamux.Session, hello Hello, log *slog.Logger) {
	ctx, cancel := context.WithTimeoutCause(s.ctx, s.cfg.FirstFrameTimeout, fmt.Errorf("none within %v", s.cfg.FirstFrameTimeout))
	ctl, err := acceptStream(ctx, sess)
	cancel()
	if err != nil {
		log.Debug("slave sent no control stream", "err", err)
		return
	}
	defer ctl.Close()
	ctl.SetReadDeadline(time.Now().Add(s.cfg.FirstFrameTimeout))
	typ, payload, err := ReadFrame(ctl, MaxFrame)
	if err != nil {
		return
	}
	var spec scheduler.NodeSpec
	if typ != FrameRegister || json.Unmarshal(payload, &spec) != nil {
		writeError(ctl, fmt.Errorf("%w: a slave's first frame must register it", ErrProtocol))
		return
	}
	if spec.Name == "" {
		spec.Name = hello.Name
	}
	remote := &remoteRunner{sess: sess, node: spec.Name, log: log, grace: s.cfg.CancelGrace}
	handle, err := s.sched.AddNode(spec, remote, func(error) { sess.Close() })
	if err != nil {
		writeError(ctl, err)
		return
	}
	log.Info("slave registered", "node", spec.Name, "capacity", spec.Capacity)
	defer func() { // a panic here loses the node (its jobs run elsewhere), not the master
		if r := recover(); r != nil {
			log.Error("panic", "in", "slave session", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			handle.Lost(fmt.Errorf("%w: the master failed while serving this slave", scheduler.ErrInternal))
		}
	}()
	if err := writeJSON(ctl, FrameAccepted, Accepted{ID: spec.Name}); err != nil {
		handle.Lost(err)
		return
	}
	// Heartbeats: the scheduler declares the node lost when they stop; a read deadline of
	// a few heartbeat timeouts only frees this goroutine from a peer that stopped forever.
	for {
		ctl.SetReadDeadline(time.Now().Add(s.cfg.ControlTimeout))
		typ, payload, err := ReadFrame(ctl, MaxFrame)
		if err != nil {
			handle.Lost(fmt.Errorf("control stream: %v", err))
			return
		}
		switch typ {
		case FrameLoad:
			var load scheduler.Load
			if json.Unmarshal(payload, &load) == nil {
				handle.Heartbeat(load)
			}
		case FrameCapacity:
			var c Capacity
			if json.Unmarshal(payload, &c) == nil {
				if c.Draining {
					handle.Drain()
				}
				handle.SetCapacity(c.Capacity)
			}
		default:
			handle.Lost(fmt.Errorf("%w: unexpected control frame %q", ErrProtocol, typ))
			return
		}
	}
}

// acceptStream accepts the session's next stream; when ctx ends first it closes the
// session (which unblocks the accept) and returns ctx's cause.
func acceptStream(ctx context.Context, sess *yamux.Session) (*yamux.Stream, error) {
	stop := context.AfterFunc(ctx, func() { sess.Close() })
	st, err := sess.AcceptStream()
	if !stop() { // ctx ended: the session is closing
		if st != nil {
			st.Close()
		}
		return nil, fmt.Errorf("no stream: %w", context.Cause(ctx))
	}
	return st, err
}

// remoteRunner runs jobs on a slave through its session: it is the slave seen as a
// sandbox.Runner by the scheduler. A slave is not trusted more than a client: what it
// sends is capped and checked (see Run).
type remoteRunner struct {
	sess *yamux.Session
	node string
	log  *slog.Logger
	// grace is how long Run waits, once its ctx ended, for the slave to answer (zero:
	// DefaultServerConfig's CancelGrace, for a remoteRunner built by hand).
	grace time.Duration
}

var _ sandbox.Runner = (*remoteRunner)(nil)

// Bounds on what a slave sends back for one job.
const (
	// outputSlack is how far past the job's output limit a slave's output may go (the
	// sandbox stops a program within a chunk or two of it).
	outputSlack = 2 * ChunkSize
	// maxResultText caps a result's (and each case's) message and diff.
	maxResultText = 4 << 10
)

// Run implements sandbox.Runner. A broken stream or session, and a slave that breaks the
// protocol, is scheduler.ErrNodeLost (the scheduler runs the job elsewhere and drops the
// node): output past the job's output limit plus outputSlack (what came over it is
// neither kept nor forwarded), a result that is not one a sandbox could give (see
// checkResult), a frame out of place. When ctx ends, Run returns within its grace
// whatever the slave does.
func (r *remoteRunner) Run(ctx context.Context, spec sandbox.Spec, streams *sandbox.Streams) (res sandbox.Result, err error) {
	fail := sandbox.Result{ExitCode: -1}
	defer func() { // a panic here (in a callback, say) ends this job, not the master
		if p := recover(); p != nil {
			r.log.Error("panic", "in", "remote runner", "node", r.node, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			res, err = fail, fmt.Errorf("%w: the master failed while running the job on %s", scheduler.ErrInternal, r.node)
		}
	}()
	if streams == nil {
		streams = &sandbox.Streams{}
	}
	sub, err := encodeSubmit(spec, streams.Stdin != nil)
	if err != nil {
		return fail, err
	}
	st, err := r.sess.OpenStream()
	if err != nil {
		return fail, fmt.Errorf("%w: %s: open stream: %v", scheduler.ErrNodeLost, r.node, err)
	}
	defer st.Close()
	// A slave that stops reading, or never answers, holds nothing once ctx ends.
	stop := context.AfterFunc(ctx, func() {
		d := time.Now().Add(r.cancelGrace())
		st.SetReadDeadline(d)
		st.SetWriteDeadline(d)
	})
	defer stop()
	lost := func(format string, a ...any) (sandbox.Result, error) {
		if ctx.Err() != nil {
			return fail, ctx.Err()
		}
		return fail, fmt.Errorf("%w: %s: %s", scheduler.ErrNodeLost, r.node, fmt.Sprintf(format, a...))
	}
	if err := WriteFrame(st, FrameSubmit, sub); err != nil {
		return lost("send: %v", err)
	}

	done := make(chan struct{})
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(done)
	wg.Add(1)
	go func() {
		defer wg.Done()
		sendInput(ctx, st, streams.Stdin, done, r.cancelGrace())
	}()

	limit := spec.Limits.WithDefaults(sandbox.DefaultLimits()).Output + outputSlack
	out := map[sandbox.Stream][]byte{}
	started := false
	w, refused, err := readJob(st, jobFrames{
		started: func(Started) error {
			if started {
				return errors.New("started the job twice")
			}
			started = true
			if streams.Started != nil {
				streams.Started()
			}
			return nil
		},
		output: func(c sandbox.Chunk) error {
			out[c.Stream] = append(out[c.Stream], c.Data...)
			if int64(len(out[sandbox.Stdout])+len(out[sandbox.Stderr])) > limit || int64(len(out[sandbox.Compile])) > limit {
				return fmt.Errorf("sent more output than the job's limit of %s", sandbox.FormatSize(limit-outputSlack))
			}
			if streams.Output != nil {
				streams.Output(c)
			}
			return nil
		},
	})
	switch {
	case err != nil:
		return lost("%v", err)
	case refused != nil:
		if ctx.Err() != nil {
			return fail, ctx.Err()
		}
		return fail, refused
	}
	if err := checkResult(w, spec, started); err != nil {
		return lost("impossible result: %v", err)
	}
	res = w.sandboxResult(out[sandbox.Stdout], out[sandbox.Stderr], out[sandbox.Compile])
	res.Node = r.node
	return res, nil
}

// cancelGrace is r.grace, or the default for a remoteRunner built without one.
func (r *remoteRunner) cancelGrace() time.Duration {
	if r.grace == 0 {
		return DefaultServerConfig().CancelGrace
	}
	return r.grace
}

// maxTracePhase bounds each phase of a slave's trace: a job's phases are seconds, a
// loaded engine's minutes; a day is made up.
const maxTracePhase = 24 * time.Hour

// checkResult reports what makes a slave's result for spec one that no sandbox gives: an
// unknown status or verdict, a program that ran (ok, runtime_error) without having
// started, an exit code outside -1..255, negative or absurd times and sizes, texts over
// maxResultText, verdict and cases on a run without tests, more cases than tests, a trace
// phase negative or over maxTracePhase.
func checkResult(w Result, spec sandbox.Spec, started bool) error {
	lim := spec.Limits.WithDefaults(sandbox.MaxLimits())
	// A judged run reports the largest of its cases' times; a killed one a little past
	// its limit. Anything past twice the limits and a minute is made up.
	maxRun, maxCompile := 2*lim.RunTime+time.Minute, 2*lim.CompileTime+time.Minute
	switch {
	case !w.Status.Valid():
		return fmt.Errorf("unknown status %q", w.Status)
	case !started && (w.Status == sandbox.StatusOK || w.Status == sandbox.StatusRuntimeError):
		return fmt.Errorf("status %s before the program started", w.Status)
	case w.ExitCode < -1 || w.ExitCode > 255:
		return fmt.Errorf("exit code %d", w.ExitCode)
	case w.Time < 0 || w.Time > maxRun || w.CPUTime < 0 || w.CPUTime > time.Duration(float64(maxRun)*max(lim.CPUs, 1)):
		return fmt.Errorf("run time %v, CPU time %v", w.Time, w.CPUTime)
	case w.CompileTime < 0 || w.CompileTime > maxCompile:
		return fmt.Errorf("compile time %v", w.CompileTime)
	case w.Memory < 0 || w.Memory > 4*lim.Memory:
		return fmt.Errorf("memory %d bytes", w.Memory)
	case len(w.Signal) > 32 || len(w.Message) > maxResultText:
		return fmt.Errorf("a signal or message over its size")
	case len(spec.Tests) == 0 && (w.Verdict != "" || len(w.Cases) > 0):
		return fmt.Errorf("a verdict for a run without tests")
	case len(spec.Tests) > 0 && !validVerdict(w.Verdict):
		return fmt.Errorf("verdict %q", w.Verdict)
	case len(w.Cases) > len(spec.Tests):
		return fmt.Errorf("%d cases for %d tests", len(w.Cases), len(spec.Tests))
	}
	if t := w.Trace; t != nil {
		for _, p := range t.All() {
			if p.Duration < 0 || p.Duration > maxTracePhase {
				return fmt.Errorf("a trace phase (%s) of %v", p.Name, p.Duration)
			}
		}
	}
	for _, c := range w.Cases {
		switch {
		case !validVerdict(c.Verdict):
			return fmt.Errorf("case verdict %q", c.Verdict)
		case c.ExitCode < -1 || c.ExitCode > 255 || c.Time < 0 || c.Time > maxRun || c.CPUTime < 0 || c.Memory < 0 || c.Memory > 4*lim.Memory:
			return fmt.Errorf("case %q: exit code, time or memory out of range", c.Name)
		case len(c.Name) > 128 || len(c.Signal) > 32 || len(c.Message) > maxResultText || len(c.Diff) > maxResultText || len(c.Stderr) > sandbox.MaxCaseStderr:
			return fmt.Errorf("case %q: a text over its size", c.Name)
		}
	}
	return nil
}

func validVerdict(v sandbox.Verdict) bool {
	return v == sandbox.VerdictAccepted || v == sandbox.VerdictWrongAnswer || sandbox.Status(v).Valid()
}

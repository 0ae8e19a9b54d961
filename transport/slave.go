package transport

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

// Frame types of the slave protocol. A slave opens one control stream after the
// handshake; the master opens one job stream per job on the same session.
const (
	FrameRegister byte = 'G' // slave → master, first frame of the control stream: JSON scheduler.NodeSpec
	FrameLoad     byte = 'L' // slave → master, control stream, every load interval: JSON scheduler.Load
	FrameCapacity byte = 'P' // slave → master, control stream: JSON Capacity (0 while draining)
)

// Capacity changes how many programs a slave takes.
type Capacity struct {
	Capacity int  `json:"capacity"`
	Draining bool `json:"draining,omitempty"`
}

// serveSlave handles a slave's session on the master: registration, heartbeats, and the
// remote runner through which the scheduler sends it jobs.
func (s *Server) serveSlave(sess *yamux.Session, hello Hello, log *slog.Logger) {
	ctl, err := acceptWithin(sess, s.cfg.FirstFrameTimeout)
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
	remote := &remoteRunner{sess: sess, node: spec.Name, log: log}
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
		ctl.SetReadDeadline(time.Now().Add(time.Minute))
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

func acceptWithin(sess *yamux.Session, d time.Duration) (*yamux.Stream, error) {
	type res struct {
		st  *yamux.Stream
		err error
	}
	ch := make(chan res, 1)
	go func() {
		st, err := sess.AcceptStream()
		ch <- res{st, err}
	}()
	select {
	case r := <-ch:
		return r.st, r.err
	case <-time.After(d):
		sess.Close() // unblocks AcceptStream
		r := <-ch
		if r.st != nil {
			r.st.Close()
		}
		return nil, fmt.Errorf("no stream within %v", d)
	}
}

// remoteRunner runs jobs on a slave through its session: it is the slave seen as a
// sandbox.Runner by the scheduler. A slave is not trusted more than a client: what it
// sends is capped and checked (see Run).
type remoteRunner struct {
	sess *yamux.Session
	node string
	log  *slog.Logger
}

var _ sandbox.Runner = (*remoteRunner)(nil)

// Bounds on what a slave sends back for one job.
const (
	// outputSlack is how far past the job's output limit a slave's output may go (the
	// sandbox stops a program within a chunk or two of it).
	outputSlack = 2 * ChunkSize
	// cancelGrace is how long Run waits, once its ctx ended, for the slave to answer.
	cancelGrace = time.Second
	// maxResultText caps a result's (and each case's) message and diff.
	maxResultText = 4 << 10
)

// Run implements sandbox.Runner. A broken stream or session, and a slave that breaks the
// protocol, is scheduler.ErrNodeLost (the scheduler runs the job elsewhere and drops the
// node): output past the job's output limit plus outputSlack (what came over it is
// neither kept nor forwarded), a result that is not one a sandbox could give (see
// checkResult), a frame out of place. When ctx ends, Run returns within cancelGrace
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
		d := time.Now().Add(cancelGrace)
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
		sendInput(ctx, st, streams.Stdin, done, cancelGrace)
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

// checkResult reports what makes a slave's result for spec one that no sandbox gives: an
// unknown status or verdict, a program that ran (ok, runtime_error) without having
// started, an exit code outside -1..255, negative or absurd times and sizes, texts over
// maxResultText, verdict and cases on a run without tests, more cases than tests.
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

// SlaveConfig configures a Slave.
type SlaveConfig struct {
	// Master is the master's address, host:port.
	Master string
	// Node is this slave's name in the cluster (unique).
	Node string
	// Capacity is how many programs it runs at once.
	Capacity int
	// Languages it serves, with their image versions.
	Languages map[string]string
	// Client holds the connection settings (token, TLS, timeouts); its Role is set to slave.
	Client ClientConfig
	// LoadInterval is how often the slave reports its load (its heartbeat).
	LoadInterval time.Duration
	// Load samples the slave's load; nil reports zeros (still a heartbeat).
	Load func() scheduler.Load
	// MaxBackoff caps the wait between reconnect attempts.
	MaxBackoff time.Duration
	// Logger receives the slave's logs; nil discards them.
	Logger *slog.Logger
}

// Slave serves jobs from a master on a local Runner. It dials the master (no inbound port),
// registers, beats, runs what the master sends, and reconnects with backoff when the
// master goes away.
type Slave struct {
	cfg    SlaveConfig
	runner sandbox.Runner
	log    *slog.Logger

	mu      sync.Mutex
	running int
}

// NewSlave returns a Slave that runs jobs on runner.
func NewSlave(cfg SlaveConfig, runner sandbox.Runner) (*Slave, error) {
	if cfg.Master == "" || cfg.Node == "" || cfg.Capacity < 1 {
		return nil, errors.New("transport: a slave needs a master address, a node name and a capacity of at least 1")
	}
	if cfg.LoadInterval <= 0 {
		cfg.LoadInterval = time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 10 * time.Second
	}
	cfg.Client.Role = RoleSlave
	cfg.Client.Name = cfg.Node
	if cfg.Client.DialTimeout <= 0 {
		cfg.Client.DialTimeout = 5 * time.Second
	}
	if cfg.Client.KeepAlive <= 0 {
		cfg.Client.KeepAlive = 5 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Slave{cfg: cfg, runner: runner, log: log.With("component", "slave", "node", cfg.Node, "master", cfg.Master)}, nil
}

// Run serves until ctx ends. Then it tells the master it drains, lets the programs it
// runs finish (their results still reach the master), and returns nil. Errors that no
// retry can fix (refused credentials, a wrong protocol version) end it at once.
func (sl *Slave) Run(ctx context.Context) error {
	backoff := 100 * time.Millisecond
	for {
		connected, err := sl.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, ErrUnauthorized) || errors.Is(err, ErrVersion) {
			return err
		}
		if connected {
			backoff = 100 * time.Millisecond
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
	ctl.SetReadDeadline(time.Now().Add(10 * time.Second))
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
			sl.mu.Lock()
			sl.running++
			sl.mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { sl.mu.Lock(); sl.running--; sl.mu.Unlock() }()
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
		for grace := time.Now().Add(sl.cfg.LoadInterval); sl.Running() > 0 || time.Now().Before(grace); {
			time.Sleep(50 * time.Millisecond)
		}
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
	st.SetReadDeadline(time.Now().Add(10 * time.Second))
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
	st.SetReadDeadline(time.Now().Add(5 * time.Second)) // frees the reader if the master never closes
}

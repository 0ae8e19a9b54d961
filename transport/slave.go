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

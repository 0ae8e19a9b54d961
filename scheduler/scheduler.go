// Package scheduler owns the cluster's nouns: jobs and their event logs, the bounded
// queue, the journal that keeps accepted jobs, the nodes that run them and the decisions
// of where to run a job and when to scale. Subpackages wrap what the decisions need from
// outside: scheduler/bolt (the durable journal), scheduler/psutil (load), scheduler/docker
// and scheduler/swarm (provisioners).
//
// Where things are:
//   - scheduler.go: Config, the Scheduler, admission (Submit), Get, Cancel, Close.
//   - placement.go: choosing a node for a job (Place, pure, and the Candidate it reads).
//   - dispatch.go: the queue's dispatch, one attempt's run under its lease and deadline,
//     its outcome (complete) and re-queueing.
//   - finish.go: a job's end (journal, slot, retention) and the retry of the journal.
//   - node.go: nodes, their load and heartbeats, joining, draining and loss (NodeHandle).
//   - snapshot.go: the cluster as status views see it (Snapshot, Totals).
//   - job.go: a job and its event log; journal.go: the Journal and MemJournal;
//     autoscale.go: the autoscaler's decisions and Provisioner; slavetemplate.go: what a
//     started slave is; errors.go: the sentinels and their wire codes.
package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"runbox/sandbox"
)

// Config configures a Scheduler.
type Config struct {
	// Node is the master's node name, reported in the node field of what it runs.
	Node string
	// MaxPrograms is how many programs the master runs at once on its own sandbox (the
	// --max-programs launch parameter); past it, jobs go to slaves.
	MaxPrograms int
	// CPUThreshold is the master's CPU percentage past which new jobs go to slaves even
	// when it has free slots (0: only MaxPrograms counts).
	CPUThreshold float64
	// Queue bounds how many accepted jobs wait for a slot; past it Submit answers ErrBusy.
	Queue int
	// MaxLimits are the largest limits a request may ask for.
	MaxLimits sandbox.Limits
	// Retain, RetainBytes and RetainAge bound the finished jobs kept in memory for
	// clients that come back for their result by id (older ones are still answered from
	// the journal while it has them): at most Retain jobs, holding at most RetainBytes of
	// output and results (a finished job's inputs are dropped), none older than RetainAge
	// (0: no age bound). The oldest go first. A job whose end the journal has not taken
	// yet stays, whatever the bounds.
	Retain      int
	RetainBytes int64
	RetainAge   time.Duration
	// HeartbeatTimeout: a slave that reported no load for this long is lost, and its jobs
	// run again elsewhere.
	HeartbeatTimeout time.Duration
	// MaxAttempts caps how often a job is dispatched when its nodes keep dying, hang, or
	// the master itself dies while it runs (attempts are journaled when each starts); past
	// it the job ends with ErrCrashedNode (a program that kills every node is stopped).
	MaxAttempts int
	// DispatchGrace is added to a job's compile and run limits to make the deadline of one
	// dispatch; CaseGrace is added per wave of a judged job's cases. A node that has not
	// answered by then (its engine hangs, or it never answers) loses the attempt: it is
	// cancelled and the job runs again, up to MaxAttempts.
	DispatchGrace time.Duration
	CaseGrace     time.Duration
	// Observer, when set, hears of every finished job and node event (for metrics).
	Observer Observer
	// Logger receives the scheduler's logs; nil discards them.
	Logger *slog.Logger
}

// Observer hears what the scheduler does. Its methods are called without the scheduler's
// locks held, from the goroutine that made the change; they must not block.
type Observer interface {
	// JobFinished is called once per job that ended: res is nil when err says why it
	// could not run. wait is the time from submission to its last dispatch.
	JobFinished(info Info, res *sandbox.Result, err error, wait time.Duration)
	// JobRejected is called when Submit answers ErrBusy.
	JobRejected()
	// NodeChanged is called when a node joins, drains or is lost.
	NodeChanged(e NodeEvent)
}

// DefaultConfig returns the defaults of `runbox master`.
func DefaultConfig() Config {
	return Config{Node: "master", MaxPrograms: 2, Queue: 100, MaxLimits: sandbox.MaxLimits(), Retain: 1000,
		RetainBytes: DefaultRetainBytes, RetainAge: 24 * time.Hour,
		HeartbeatTimeout: 3 * time.Second, MaxAttempts: 3, DispatchGrace: 30 * time.Second, CaseGrace: 2 * time.Second}
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	switch {
	case c.Node == "":
		return errors.New("scheduler: empty node name")
	case c.MaxPrograms < 0:
		return fmt.Errorf("scheduler: max programs %d, want 0 or more (0: the master only delegates)", c.MaxPrograms)
	case c.CPUThreshold < 0 || c.CPUThreshold > 100:
		return fmt.Errorf("scheduler: cpu threshold %g, want 0..100", c.CPUThreshold)
	case c.Queue < 0:
		return fmt.Errorf("scheduler: queue %d, want 0 or more", c.Queue)
	case c.Retain < 0:
		return fmt.Errorf("scheduler: retain %d, want 0 or more", c.Retain)
	case c.RetainBytes < 0:
		return fmt.Errorf("scheduler: retain bytes %d, want 0 or more", c.RetainBytes)
	case c.RetainAge < 0:
		return fmt.Errorf("scheduler: retain age %v, want 0 (no age bound) or more", c.RetainAge)
	case c.DispatchGrace <= 0 || c.CaseGrace < 0:
		return errors.New("scheduler: dispatch grace must be positive, case grace 0 or more")
	case c.HeartbeatTimeout <= 0:
		return errors.New("scheduler: heartbeat timeout must be positive")
	case c.MaxAttempts < 1:
		return fmt.Errorf("scheduler: max attempts %d, want at least 1", c.MaxAttempts)
	}
	return nil
}

// Scheduler accepts jobs, journals them, queues them and places them on the master's
// own sandbox or on slaves. It is safe for concurrent use.
type Scheduler struct {
	cfg     Config
	journal Journal
	log     *slog.Logger
	now     func() time.Time
	epoch   string // this scheduler's incarnation: job event logs restart with it

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // job goroutines and the heartbeat monitor

	// onOutput, when set (tests), is called with each chunk a node sends, before it is
	// logged.
	onOutput func(sandbox.Chunk)

	mu       sync.Mutex
	closed   bool
	local    *node
	nodes    []*node         // local first, then slaves in join order
	jobs     map[string]*Job // queued, running, and the retained finished ones
	queue    []*Job
	finished []*Job // retained finished jobs, oldest first
	// finishedBytes is what the retained finished jobs hold (Job.bytes).
	finishedBytes int64
	// unsynced are finished jobs whose end the journal has not taken yet (a full disk):
	// they stay in memory and the monitor retries.
	unsynced []*Job
	totals   Totals
	events   []NodeEvent // recent node joins and losses, newest last
	// pendingNotes are node events not yet told to the Observer (told once mu is released).
	pendingNotes []NodeEvent
	cands        []Candidate // scratch for placement
}

// New returns a Scheduler running jobs on local (the master's own sandbox) and re-queues
// the journal's pending jobs (those accepted by an earlier run and never finished). A
// pending job that already used its MaxAttempts dispatches was running each time a node
// (or the master itself) died: it ends with ErrCrashedNode instead of running again. A
// pending record that no longer passes validation ends with its error.
func New(cfg Config, local sandbox.Runner, journal Journal) (*Scheduler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Scheduler{cfg: cfg, journal: journal, log: log.With("component", "scheduler"),
		now: time.Now, jobs: map[string]*Job{}, totals: Totals{ByStatus: map[string]int{}}, epoch: newID(time.Now())}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.local = &node{NodeSpec: NodeSpec{Name: cfg.Node, Capacity: cfg.MaxPrograms}, role: RoleMaster, runner: local,
		running: map[*Job]bool{}, joined: s.now()}
	s.nodes = []*node{s.local}
	var pending []Record
	err := s.journalCall("read", func() (err error) { pending, err = journal.Pending(); return err })
	if err != nil {
		return nil, fmt.Errorf("read journal: %w", err)
	}
	type ending struct {
		j   *Job
		err error
	}
	var ends []ending
	s.mu.Lock()
	requeued := 0
	for _, rec := range pending {
		if rec.ID == "" || s.jobs[rec.ID] != nil {
			s.log.Error("journal: pending record skipped: no id, or an id seen before", "job", rec.ID)
			continue
		}
		// An interactive job's live input is gone with its client: it reruns with the
		// input it was submitted with.
		j := newJob(rec.ID, rec.Owner, rec.Spec, false, rec.Submitted)
		j.attempts = max(rec.Attempts, 0)
		j.accepted = true
		s.jobs[j.ID] = j
		switch err := validate(rec.Spec, cfg.MaxLimits); {
		case err != nil:
			ends = append(ends, ending{j, fmt.Errorf("journaled job no longer valid: %w", err)})
		case j.attempts >= cfg.MaxAttempts:
			ends = append(ends, ending{j, fmt.Errorf("%w: the job was running each time a node died, %d times (the last time the master itself stopped); it is not run again, the program may be what kills them",
				ErrCrashedNode, j.attempts)})
		default:
			s.queue = append(s.queue, j)
			requeued++
		}
	}
	if requeued > 0 {
		s.log.Info("re-queued jobs from the journal", "count", requeued)
	}
	s.mu.Unlock()
	for _, e := range ends {
		s.log.Warn("journaled job ends at restart", "job", e.j.ID, "attempts", e.j.attempts, "err", e.err)
		s.finish(e.j, sandbox.Result{ExitCode: -1}, e.err)
	}
	s.mu.Lock()
	s.dispatchLocked()
	s.mu.Unlock()
	s.wg.Add(1)
	go s.monitor()
	return s, nil
}

func validate(spec sandbox.Spec, max sandbox.Limits) error {
	if err := spec.Validate(); err != nil {
		return err
	}
	return spec.Limits.Check(max)
}

// Epoch identifies this scheduler's run: a job's event log is only valid within one
// epoch (after a master restart, a pending job's log starts again from its first event).
func (s *Scheduler) Epoch() string { return s.epoch }

// Submit validates and accepts a job: it is journaled, then either started or queued.
// When every slot and the queue are full it returns ErrBusy at once; when the journal
// cannot take it, ErrStorageFull. An interactive job takes live input through
// Job.SendStdin.
func (s *Scheduler) Submit(spec sandbox.Spec, interactive bool) (*Job, error) {
	return s.SubmitAs("", spec, interactive)
}

// SubmitAs is Submit for a job that owner submitted (Job.Owner, journaled with it).
func (s *Scheduler) SubmitAs(owner string, spec sandbox.Spec, interactive bool) (*Job, error) {
	if err := validate(spec, s.cfg.MaxLimits); err != nil {
		return nil, err
	}
	now := s.now()
	j := newJob(newID(now), owner, spec, interactive, now)

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrShuttingDown
	}
	// Slots, not jobs: a judged job holds up to sandbox.MaxParallelCases of them.
	capacity, used, biggest := s.capacityLocked()
	queued := 0
	for _, q := range s.queue {
		queued += needLocked(q, biggest)
	}
	if queued+needLocked(j, biggest) > max(capacity-used, 0)+s.cfg.Queue {
		s.totals.Rejected++
		jobs := len(s.queue)
		s.mu.Unlock()
		s.observe(func(o Observer) { o.JobRejected() })
		// used counts program slots: a judged job runs several programs at once.
		return nil, fmt.Errorf("%w: %d program(s) running and %d queued, the limit; try another server or retry later", ErrBusy, used, jobs)
	}
	// Hold the place in the queue while the journal writes; dispatch skips the job until
	// it is accepted.
	s.jobs[j.ID] = j
	s.queue = append(s.queue, j)
	s.mu.Unlock()

	err := s.journalCall("accept", func() error {
		return s.journal.Accept(s.ctx, Record{ID: j.ID, Owner: owner, Spec: spec, Interactive: interactive, Submitted: now})
	})
	if err != nil {
		s.mu.Lock()
		s.removeQueuedLocked(j)
		delete(s.jobs, j.ID)
		s.dispatchLocked()
		s.mu.Unlock()
		switch {
		case errors.Is(err, ErrStorageFull):
			s.log.Warn("job refused: the journal is full", "err", err)
			return nil, fmt.Errorf("accept job: %w", err)
		case s.ctx.Err() != nil: // closed while the journal waited
			return nil, ErrShuttingDown
		}
		return nil, fmt.Errorf("%w: journal: %v", ErrInternal, err)
	}
	s.mu.Lock()
	j.accepted = true
	s.totals.Accepted++
	s.dispatchLocked()
	s.mu.Unlock()
	return j, nil
}

// journalCall runs one journal operation; a panic in it (a damaged file can make a
// storage library panic) becomes an ErrInternal error, not the process's end.
func (s *Scheduler) journalCall(op string, f func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("panic in the journal", "op", op, "panic", p, "stack", string(debug.Stack()))
			err = fmt.Errorf("%w: journal %s: panic: %v", ErrInternal, op, p)
		}
	}()
	return f()
}

// observe tells the Observer, if any; a panic in it is logged, never the process's end.
func (s *Scheduler) observe(f func(Observer)) {
	if s.cfg.Observer == nil {
		return
	}
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("panic in the observer", "panic", p, "stack", string(debug.Stack()))
		}
	}()
	f(s.cfg.Observer)
}

// Get returns a job by id: a live one, or a finished one rebuilt from the journal.
func (s *Scheduler) Get(id string) (*Job, error) {
	s.mu.Lock()
	j, ok := s.jobs[id]
	s.mu.Unlock()
	if ok {
		return j, nil
	}
	var rec Record
	err := s.journalCall("get", func() (err error) { rec, err = s.journal.Get(id); return err })
	if err != nil || !rec.Done || rec.ID != id {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return jobFromRecord(rec), nil
}

// jobFromRecord rebuilds a finished job's event log from its record.
func jobFromRecord(rec Record) *Job {
	j := newJob(rec.ID, rec.Owner, rec.Spec, false, rec.Submitted)
	j.state, j.attempts, j.finished = StateDone, rec.Attempts, rec.Finished
	j.ending, j.ended = true, true
	if rec.Result != nil {
		j.node = rec.Result.Node
		j.appendOutput(sandbox.Compile, rec.Result.CompileOutput)
		j.appendOutput(sandbox.Stdout, rec.Result.Stdout)
		j.appendOutput(sandbox.Stderr, rec.Result.Stderr)
		j.events = append(j.events, Event{Kind: EventDone, Result: rec.Result})
	} else {
		j.events = append(j.events, Event{Kind: EventDone, Err: ErrorOf(rec.ErrCode, rec.ErrMessage)})
	}
	close(j.doneCh)
	return j
}

// Cancel stops a job: a queued one leaves the queue, a running one is killed (its
// container removed). Cancelling a finished job does nothing.
func (s *Scheduler) Cancel(id string) error {
	j, err := s.Get(id)
	if err != nil {
		return err
	}
	s.mu.Lock()
	queued := s.removeQueuedLocked(j)
	if queued {
		s.dispatchLocked()
	}
	s.mu.Unlock()
	j.mu.Lock()
	j.cancelled = true
	cancel := j.cancel
	j.mu.Unlock()
	if queued {
		s.finish(j, sandbox.Result{ExitCode: -1}, ErrCancelled)
	} else if cancel != nil {
		cancel()
	}
	return nil
}

// monitor declares slaves lost when their heartbeats stop, drops retained jobs past
// their age and retries the journal for finished jobs it has not taken.
func (s *Scheduler) monitor() {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.HeartbeatTimeout / 4)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		now := s.now()
		var calls []func()
		s.mu.Lock()
		for _, n := range slices.Clone(s.nodes) {
			if n.role == RoleSlave && now.Sub(n.lastBeat) > s.cfg.HeartbeatTimeout {
				calls = append(calls, s.loseLocked(n, fmt.Errorf("no heartbeat for %v", now.Sub(n.lastBeat).Round(time.Millisecond))))
			}
		}
		s.trimLocked(now) // age bound
		s.unlockAndNotify()
		for _, f := range calls {
			f()
		}
		s.syncFinished()
	}
}

// Close stops accepting jobs and cancels the running ones, which stay pending in the
// journal (a restarted master runs them again). It waits for the job goroutines.
func (s *Scheduler) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
	s.syncFinished()
	s.mu.Lock()
	for _, j := range s.unsynced {
		s.log.Error("journal never took this finished job: it runs again after a restart", "job", j.ID)
	}
	s.mu.Unlock()
	return nil
}

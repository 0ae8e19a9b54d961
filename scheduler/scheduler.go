// Package scheduler owns the cluster's nouns: jobs and their event logs, the bounded
// queue, the journal that keeps accepted jobs, the nodes that run them and the decisions
// of where to run a job and when to scale. Subpackages wrap what the decisions need from
// outside: scheduler/bolt (the durable journal), scheduler/psutil (load), scheduler/docker
// and scheduler/swarm (provisioners).
package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"runbox/sandbox"
)

// Config configures a Scheduler.
type Config struct {
	// Node is the local node's name, reported in each result's node field.
	Node string
	// MaxPrograms is how many programs run at once on the local sandbox (the --max-programs
	// launch parameter).
	MaxPrograms int
	// Queue bounds how many accepted jobs wait for a slot; past it Submit answers ErrBusy.
	Queue int
	// MaxLimits are the largest limits a request may ask for.
	MaxLimits sandbox.Limits
	// Retain is how many finished jobs stay in memory for clients that come back for their
	// result by id (older ones are still answered from the journal while it has them).
	Retain int
	// Logger receives the scheduler's logs; nil discards them.
	Logger *slog.Logger
}

// DefaultConfig returns the defaults of `runbox master`.
func DefaultConfig() Config {
	return Config{Node: "master", MaxPrograms: 2, Queue: 100, MaxLimits: sandbox.MaxLimits(), Retain: 1000}
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	switch {
	case c.Node == "":
		return errors.New("scheduler: empty node name")
	case c.MaxPrograms < 1:
		return fmt.Errorf("scheduler: max programs %d, want at least 1", c.MaxPrograms)
	case c.Queue < 0:
		return fmt.Errorf("scheduler: queue %d, want 0 or more", c.Queue)
	case c.Retain < 0:
		return fmt.Errorf("scheduler: retain %d, want 0 or more", c.Retain)
	}
	return nil
}

// Scheduler accepts jobs, journals them, queues them and runs them. It is safe for
// concurrent use.
type Scheduler struct {
	cfg     Config
	local   sandbox.Runner
	journal Journal
	log     *slog.Logger
	now     func() time.Time

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // running jobs

	mu       sync.Mutex
	closed   bool
	jobs     map[string]*Job // queued, running, and the last Retain finished
	queue    []*Job
	running  int
	finished []*Job // retained finished jobs, oldest first
	totals   Totals
}

// Totals counts what the scheduler did since it started.
type Totals struct {
	Accepted int            `json:"accepted"`
	Rejected int            `json:"rejected"` // busy
	Finished int            `json:"finished"`
	Failed   int            `json:"failed"` // ended with an error, not a result
	ByStatus map[string]int `json:"by_status"`
}

// New returns a Scheduler running jobs on local and re-queues the journal's pending jobs
// (those accepted by an earlier run and never finished).
func New(cfg Config, local sandbox.Runner, journal Journal) (*Scheduler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Scheduler{cfg: cfg, local: local, journal: journal, log: log.With("component", "scheduler"),
		now: time.Now, jobs: map[string]*Job{}, totals: Totals{ByStatus: map[string]int{}}}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	pending, err := journal.Pending()
	if err != nil {
		return nil, fmt.Errorf("read journal: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, rec := range pending {
		// An interactive job's live input is gone with its client: it reruns with the
		// input it was submitted with.
		j := newJob(rec.ID, rec.Spec, false, rec.Submitted)
		j.attempts = rec.Attempts
		s.jobs[j.ID] = j
		s.queue = append(s.queue, j)
	}
	if len(pending) > 0 {
		s.log.Info("re-queued jobs from the journal", "count", len(pending))
	}
	s.dispatchLocked()
	return s, nil
}

// Submit validates and accepts a job: it is journaled, then either started or queued.
// When every slot and the queue are full it returns ErrBusy at once. An interactive job
// takes live input through Job.SendStdin.
func (s *Scheduler) Submit(spec sandbox.Spec, interactive bool) (*Job, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	if err := spec.Limits.Check(s.cfg.MaxLimits); err != nil {
		return nil, err
	}
	now := s.now()
	j := newJob(newID(now), spec, interactive, now)

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrShuttingDown
	}
	if s.running >= s.cfg.MaxPrograms && len(s.queue) >= s.cfg.Queue {
		s.totals.Rejected++
		running, queued := s.running, len(s.queue)
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: %d program(s) running and %d queued, the limit; try another server or retry later", ErrBusy, running, queued)
	}
	// Hold the place (a slot or the queue's tail) while the journal writes.
	s.jobs[j.ID] = j
	s.queue = append(s.queue, j)
	s.mu.Unlock()

	if err := s.journal.Accept(Record{ID: j.ID, Spec: spec, Interactive: interactive, Submitted: now}); err != nil {
		s.mu.Lock()
		s.removeQueuedLocked(j)
		delete(s.jobs, j.ID)
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: journal: %v", ErrInternal, err)
	}
	s.mu.Lock()
	s.totals.Accepted++
	s.dispatchLocked()
	s.mu.Unlock()
	return j, nil
}

// dispatchLocked starts queued jobs while there are free slots, then tells the jobs still
// waiting their new positions.
func (s *Scheduler) dispatchLocked() {
	if s.closed {
		return
	}
	moved := false
	for s.running < s.cfg.MaxPrograms && len(s.queue) > 0 {
		j := s.queue[0]
		s.queue = s.queue[1:]
		s.running++
		s.launchLocked(j)
		moved = true
	}
	for i, j := range s.queue {
		j.mu.Lock()
		last := lastPosition(j.events)
		if moved || last == 0 {
			if last != i+1 {
				j.appendLocked(Event{Kind: EventQueued, Position: i + 1})
			}
		}
		j.mu.Unlock()
	}
}

func lastPosition(events []Event) int {
	for i := len(events) - 1; i >= 0; i-- {
		if events[i].Kind == EventQueued {
			return events[i].Position
		}
	}
	return 0
}

func (s *Scheduler) removeQueuedLocked(j *Job) bool {
	for i, q := range s.queue {
		if q == j {
			s.queue = append(s.queue[:i], s.queue[i+1:]...)
			return true
		}
	}
	return false
}

// launchLocked runs j on the local sandbox in a goroutine the scheduler owns.
func (s *Scheduler) launchLocked(j *Job) {
	ctx, cancel := context.WithCancel(s.ctx)
	j.mu.Lock()
	j.state = StateRunning
	j.node = s.cfg.Node
	j.attempts++
	j.started = s.now()
	j.cancel = cancel
	j.appendLocked(Event{Kind: EventStarted, Node: s.cfg.Node})
	j.mu.Unlock()

	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer cancel()
		streams := &sandbox.Streams{
			Output: func(c sandbox.Chunk) { j.appendOutput(c.Stream, c.Data) },
		}
		if j.stdin != nil {
			streams.Stdin = j.stdin
		}
		res, err := s.local.Run(ctx, j.Spec, streams)
		j.mu.Lock()
		cancelled := j.cancelled
		j.mu.Unlock()
		switch {
		case cancelled:
			err = ErrCancelled
		case s.ctx.Err() != nil:
			return // shutting down: the journal still has the job as pending
		}
		s.finish(j, res, err)
	}()
}

// finish ends a job: journal, event, slot.
func (s *Scheduler) finish(j *Job, res sandbox.Result, err error) {
	now := s.now()
	j.mu.Lock()
	res.Node, res.Attempts = j.node, j.attempts
	rec := Record{ID: j.ID, Spec: j.Spec, Interactive: j.Interactive, Submitted: j.Submitted, Done: true, Attempts: j.attempts, Finished: now}
	if err != nil {
		rec.ErrCode, rec.ErrMessage = CodeOf(err), err.Error()
	} else {
		rec.Result = &res
	}
	j.mu.Unlock()

	if jerr := s.journal.Finish(rec); jerr != nil {
		s.log.Error("journal finish", "job", j.ID, "err", jerr)
	}

	// Free the slot before the result is visible: a client that saw its result and
	// submits again finds the slot free.
	j.mu.Lock()
	wasRunning := j.state == StateRunning
	j.state = StateDone
	j.finished = now
	j.mu.Unlock()

	s.mu.Lock()
	if wasRunning {
		s.running--
	}
	s.totals.Finished++
	if err != nil {
		s.totals.Failed++
	} else {
		s.totals.ByStatus[string(res.Status)]++
	}
	s.finished = append(s.finished, j)
	for len(s.finished) > s.cfg.Retain {
		delete(s.jobs, s.finished[0].ID)
		s.finished = s.finished[1:]
	}
	if s.cfg.Retain == 0 {
		delete(s.jobs, j.ID)
	}
	s.dispatchLocked()
	s.mu.Unlock()

	j.mu.Lock()
	e := Event{Kind: EventDone, Err: err}
	if err == nil {
		e.Result = &res
	}
	j.appendLocked(e)
	close(j.doneCh)
	j.mu.Unlock()
}

// Get returns a job by id: a live one, or a finished one rebuilt from the journal.
func (s *Scheduler) Get(id string) (*Job, error) {
	s.mu.Lock()
	j, ok := s.jobs[id]
	s.mu.Unlock()
	if ok {
		return j, nil
	}
	rec, err := s.journal.Get(id)
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if !rec.Done {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return jobFromRecord(rec), nil
}

// jobFromRecord rebuilds a finished job's event log from its record.
func jobFromRecord(rec Record) *Job {
	j := newJob(rec.ID, rec.Spec, false, rec.Submitted)
	j.state, j.attempts, j.finished = StateDone, rec.Attempts, rec.Finished
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
		s.finish(j, sandbox.Result{}, ErrCancelled)
	} else if cancel != nil {
		cancel()
	}
	return nil
}

// Snapshot is the cluster as the scheduler sees it.
type Snapshot struct {
	Nodes   []NodeInfo `json:"nodes"`
	Running []Info     `json:"running"`
	Queued  []Info     `json:"queued"`
	Recent  []Info     `json:"recent"`
	Totals  Totals     `json:"totals"`
}

// NodeInfo describes a node for status views.
type NodeInfo struct {
	Name     string `json:"name"`
	Role     string `json:"role"` // "master" or "slave"
	Capacity int    `json:"capacity"`
	Running  int    `json:"running"`
}

// Snapshot returns the current state; Recent holds up to recent finished jobs, newest first.
func (s *Scheduler) Snapshot(recent int) Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	snap := Snapshot{
		Nodes:  []NodeInfo{{Name: s.cfg.Node, Role: "master", Capacity: s.cfg.MaxPrograms, Running: s.running}},
		Totals: s.totals,
	}
	snap.Totals.ByStatus = make(map[string]int, len(s.totals.ByStatus))
	for k, v := range s.totals.ByStatus {
		snap.Totals.ByStatus[k] = v
	}
	for _, j := range s.jobs {
		if in := j.Info(); in.State == StateRunning {
			snap.Running = append(snap.Running, in)
		}
	}
	for _, j := range s.queue {
		snap.Queued = append(snap.Queued, j.Info())
	}
	for i := len(s.finished) - 1; i >= 0 && len(snap.Recent) < recent; i-- {
		snap.Recent = append(snap.Recent, s.finished[i].Info())
	}
	return snap
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
	return nil
}

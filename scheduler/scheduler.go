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

// Totals counts what the scheduler did since it started.
type Totals struct {
	Accepted int            `json:"accepted"`
	Rejected int            `json:"rejected"` // busy
	Finished int            `json:"finished"`
	Failed   int            `json:"failed"`  // ended with an error, not a result
	Retried  int            `json:"retried"` // dispatches repeated after a node was lost
	ByStatus map[string]int `json:"by_status"`
}

// NodeEvent records a node joining or leaving, for status views.
type NodeEvent struct {
	At     time.Time `json:"at"`
	Node   string    `json:"node"`
	Kind   string    `json:"kind"` // joined, lost, left, draining
	Reason string    `json:"reason,omitempty"`
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

// capacityLocked is the number of program slots of the nodes that take jobs, how many
// slots every node's running jobs hold, and the largest capacity of one node.
func (s *Scheduler) capacityLocked() (capacity, used, biggest int) {
	for _, n := range s.nodes {
		if !n.gone && !n.draining {
			capacity += n.Capacity
			biggest = max(biggest, n.Capacity)
		}
		used += n.used
	}
	return capacity, used, biggest
}

// needLocked is the slots a job counts for in the queue's accounting: its Slots, but no
// more than the largest node has (such a job runs alone on a node).
func needLocked(j *Job, biggest int) int {
	return min(j.slots, max(biggest, 1))
}

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
		return s.journal.Accept(Record{ID: j.ID, Owner: owner, Spec: spec, Interactive: interactive, Submitted: now})
	})
	if err != nil {
		s.mu.Lock()
		s.removeQueuedLocked(j)
		delete(s.jobs, j.ID)
		s.dispatchLocked()
		s.mu.Unlock()
		if errors.Is(err, ErrStorageFull) {
			s.log.Warn("job refused: the journal is full", "err", err)
			return nil, fmt.Errorf("accept job: %w", err)
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

// dispatchLocked places queued jobs while some node has room, oldest first (a job no
// free node can take waits without holding back the others), then tells the jobs still
// waiting their positions.
func (s *Scheduler) dispatchLocked() {
	if s.closed {
		return
	}
	moved := false
	kept := s.queue[:0]
	for i, j := range s.queue {
		if !j.accepted {
			kept = append(kept, j)
			continue
		}
		n := s.placeLocked(j)
		if n == nil {
			kept = append(kept, j)
			if capacity, used, _ := s.capacityLocked(); used >= capacity {
				kept = append(kept, s.queue[i+1:]...)
				break
			}
			continue
		}
		s.launchLocked(j, n)
		moved = true
	}
	clear(s.queue[len(kept):])
	s.queue = kept
	for i, j := range s.queue {
		j.mu.Lock()
		last := lastPosition(j.events)
		if (moved || last == 0) && last != i+1 && j.state == StateQueued {
			j.appendLocked(Event{Kind: EventQueued, Position: i + 1})
		}
		j.mu.Unlock()
	}
}

// placeLocked picks a node for j, or nil.
func (s *Scheduler) placeLocked(j *Job) *node {
	lang, _ := sandbox.Lookup(j.Spec.Language)
	s.cands = s.cands[:0]
	for _, n := range s.nodes {
		s.cands = append(s.cands, Candidate{
			Local: n == s.local, Running: n.used, Capacity: n.Capacity, CPU: n.load.CPU,
			Eligible: !n.gone && !n.draining && n.serves(lang.Name),
		})
	}
	if i := Place(s.cands, j.slots, s.cfg.CPUThreshold); i >= 0 {
		return s.nodes[i]
	}
	return nil
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
	if i := slices.Index(s.queue, j); i >= 0 {
		s.queue = slices.Delete(s.queue, i, i+1)
		return true
	}
	return false
}

// launchLocked runs j on n in a goroutine the scheduler owns, under a new lease and a
// deadline (attemptTimeout).
func (s *Scheduler) launchLocked(j *Job, n *node) {
	timeout := attemptTimeout(j.Spec, n.Capacity, s.cfg.DispatchGrace, s.cfg.CaseGrace)
	ctx, cancel := context.WithTimeout(s.ctx, timeout)
	j.mu.Lock()
	j.state = StateRunning
	j.node = n.Name
	j.attempts++
	j.lease++
	a := attempt{j: j, n: n, lease: j.lease, number: j.attempts, spec: j.Spec, timeout: timeout,
		rec: Record{ID: j.ID, Submitted: j.Submitted, Attempts: j.attempts}}
	j.started = s.now()
	j.cancel = cancel
	j.appendLocked(Event{Kind: EventStarted, Node: n.Name})
	j.mu.Unlock()
	n.add(j)

	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer cancel()
		s.run(ctx, cancel, a)
	}()
}

// attempt is one dispatch of a job.
type attempt struct {
	j       *Job
	n       *node
	lease   int
	number  int
	spec    sandbox.Spec
	timeout time.Duration
	rec     Record // for Journal.Dispatch
}

// run is one attempt, in its own goroutine: journal the attempt, run it under its
// deadline, hand the outcome to complete. A panic in the runner or in the output path
// ends the job with ErrInternal.
func (s *Scheduler) run(ctx context.Context, cancel context.CancelFunc, a attempt) {
	j := a.j
	defer func() {
		if p := recover(); p != nil {
			err := panicError("handling the job", p)
			s.log.Error("panic while handling a job", "job", j.ID, "panic", p, "stack", string(debug.Stack()))
			s.abandon(j, a.n, a.lease)
			s.finish(j, sandbox.Result{ExitCode: -1}, err)
		}
	}()
	// The attempt is durable before the run starts: a master that dies while it runs
	// counts it on restart.
	if err := s.journalCall("dispatch", func() error { return s.journal.Dispatch(a.rec) }); err != nil {
		s.log.Error("journal the attempt", "job", j.ID, "attempt", a.number, "err", err)
	}

	// At the deadline the attempt is given up on, whether or not the runner returns.
	expired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(expired)
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			s.expire(a)
		}
	})

	var (
		outMu    sync.Mutex
		out      int64
		dropped  int64
		panicked error
	)
	budget := outputBudget(a.spec)
	streams := &sandbox.Streams{
		Output: func(c sandbox.Chunk) {
			defer func() {
				if p := recover(); p != nil {
					s.log.Error("panic in a job's output", "job", j.ID, "panic", p, "stack", string(debug.Stack()))
					outMu.Lock()
					if panicked == nil {
						panicked = panicError("handling the job's output", p)
					}
					outMu.Unlock()
					cancel()
				}
			}()
			if s.onOutput != nil {
				s.onOutput(c)
			}
			outMu.Lock()
			data := c.Data[:min(int64(len(c.Data)), max(budget-out, 0))]
			out += int64(len(data))
			if len(data) < len(c.Data) {
				if dropped == 0 {
					s.log.Warn("node sent more output than the job's limits allow: the rest is dropped",
						"job", j.ID, "node", a.n.Name, "budget", budget)
				}
				dropped += int64(len(c.Data) - len(data))
			}
			outMu.Unlock()
			if len(data) > 0 {
				j.appendOutputLease(a.lease, c.Stream, data)
			}
		},
	}
	if j.stdin != nil {
		streams.Stdin = j.stdin
	}
	res, err := runSafely(ctx, a.n.runner, a.spec, streams)
	if err != nil && errors.Is(err, ErrInternal) {
		s.log.Error("runner failed", "job", j.ID, "node", a.n.Name, "err", err)
	}
	if !stop() {
		<-expired // the deadline passed: expire ran (or decided not to)
	}
	outMu.Lock()
	if panicked != nil {
		res, err = sandbox.Result{ExitCode: -1}, panicked
	}
	outMu.Unlock()
	s.complete(ctx, a, clipResult(res, a.spec), err)
}

// runSafely calls r.Run; a panic in it becomes an ErrInternal error that names it.
func runSafely(ctx context.Context, r sandbox.Runner, spec sandbox.Spec, streams *sandbox.Streams) (res sandbox.Result, err error) {
	defer func() {
		if p := recover(); p != nil {
			res, err = sandbox.Result{ExitCode: -1}, fmt.Errorf("%w (stack: %s)", panicError("running the job", p), firstFrames(debug.Stack()))
		}
	}()
	if r == nil {
		return sandbox.Result{ExitCode: -1}, fmt.Errorf("%w: no runner", ErrInternal)
	}
	return r.Run(ctx, spec, streams)
}

func panicError(while string, p any) error {
	return fmt.Errorf("%w: panic while %s: %v", ErrInternal, while, p)
}

// firstFrames keeps the start of a stack trace for an error message.
func firstFrames(stack []byte) string {
	const n = 1 << 10
	if len(stack) > n {
		stack = stack[:n]
	}
	return string(stack)
}

// abandon frees the slot of an attempt that ends abnormally (a panic).
func (s *Scheduler) abandon(j *Job, n *node, lease int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if j.currentLease(lease) {
		n.remove(j)
	}
}

// expire gives up on an attempt whose deadline passed: the job runs again (up to
// MaxAttempts) and what the attempt still reports is stale.
func (s *Scheduler) expire(a attempt) {
	s.mu.Lock()
	if !a.n.running[a.j] || !a.j.currentLease(a.lease) || s.ctx.Err() != nil {
		s.mu.Unlock()
		return
	}
	a.n.remove(a.j)
	s.log.Warn("dispatch deadline passed", "job", a.j.ID, "node", a.n.Name, "timeout", a.timeout, "attempt", a.number)
	s.requeueLocked(a.j, fmt.Sprintf("node %s gave no result within %v (the job's compile and run limits plus %v grace)", a.n.Name, a.timeout, s.cfg.DispatchGrace))
	s.dispatchLocked()
	s.unlockAndNotify()
}

// complete handles the end of one dispatch: a stale lease is dropped, a lost node's job
// or an attempt past its deadline runs again (up to MaxAttempts), anything else finishes
// the job.
func (s *Scheduler) complete(ctx context.Context, a attempt, res sandbox.Result, err error) {
	j, n := a.j, a.n
	s.mu.Lock()
	if !n.running[j] || !j.currentLease(a.lease) {
		s.mu.Unlock()
		return // the node was declared lost or the attempt expired: this result is stale
	}
	n.remove(j)
	n.done++
	j.mu.Lock()
	cancelled := j.cancelled
	j.mu.Unlock()
	switch {
	case cancelled:
		err = ErrCancelled
	case s.ctx.Err() != nil:
		s.mu.Unlock()
		// Shutting down: the journal still has the job as pending, and the attempt it
		// was cut short in is given back (a stop is no crash).
		a.rec.Attempts--
		if jerr := s.journalCall("dispatch", func() error { return s.journal.Dispatch(a.rec) }); jerr != nil {
			s.log.Warn("give back an interrupted attempt", "job", j.ID, "err", jerr)
		}
		return
	case errors.Is(err, ErrNodeLost):
		// The node's connection broke: take it out now, before the job (or any other) is
		// placed on it again and fails at once, burning its attempts.
		lost := func() {}
		if !n.gone && n != s.local {
			lost = s.loseLocked(n, err)
		}
		s.requeueLocked(j, fmt.Sprintf("node %s lost: %v", n.Name, err))
		s.dispatchLocked()
		s.unlockAndNotify()
		lost()
		return
	case errors.Is(err, sandbox.ErrUnavailable) && a.number < s.cfg.MaxAttempts:
		// The node could not run the program this time (its engine refused or lost a
		// container, or the sandbox ended without a result): that is the node's failure,
		// not the program's outcome, and another attempt, there or on another node, may
		// run it. The attempt counts, so a program that breaks its sandbox every time
		// ends after MaxAttempts with the node's error.
		s.requeueLocked(j, fmt.Sprintf("node %s could not run it: %v", n.Name, err))
		s.dispatchLocked()
		s.unlockAndNotify()
		return
	case err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded):
		s.requeueLocked(j, fmt.Sprintf("node %s gave no result within %v (the job's compile and run limits plus %v grace): %v", n.Name, a.timeout, s.cfg.DispatchGrace, err))
		s.dispatchLocked()
		s.unlockAndNotify()
		return
	}
	s.mu.Unlock()
	s.finish(j, res, err)
}

// requeueLocked puts a job whose node was lost back at the head of the queue, or ends it
// with ErrCrashedNode once it used its attempts.
func (s *Scheduler) requeueLocked(j *Job, why string) {
	j.mu.Lock()
	attempts := j.attempts
	j.lease++ // whatever the old dispatch still says is stale now
	if j.cancel != nil {
		j.cancel()
	}
	if attempts >= s.cfg.MaxAttempts || j.cancelled {
		j.mu.Unlock()
		err := fmt.Errorf("%w: %s, on each of %d attempts; the program may be what kills or hangs its nodes", ErrCrashedNode, why, attempts)
		if j.cancelled {
			err = ErrCancelled
		}
		s.wg.Add(1)
		go func() { defer s.wg.Done(); s.finish(j, sandbox.Result{ExitCode: -1}, err) }()
		return
	}
	j.state = StateQueued
	j.node = ""
	j.mu.Unlock()
	s.totals.Retried++
	s.log.Info("job re-queued", "job", j.ID, "attempt", attempts, "why", why)
	s.queue = append([]*Job{j}, s.queue...)
}

// finish ends a job, once: journal (a failure keeps the result in memory and retries),
// slot, retention, event. A panic on the way still ends the job, with ErrInternal.
func (s *Scheduler) finish(j *Job, res sandbox.Result, err error) {
	j.mu.Lock()
	if j.ending {
		j.mu.Unlock()
		return
	}
	j.ending = true
	j.mu.Unlock()
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("panic while finishing a job", "job", j.ID, "panic", p, "stack", string(debug.Stack()))
			s.forceEnd(j, panicError("finishing the job", p))
		}
	}()

	now := s.now()
	j.mu.Lock()
	res.Node, res.Attempts = j.node, j.attempts
	rec := Record{ID: j.ID, Owner: j.Owner, Spec: WithoutInputs(j.Spec), Interactive: j.Interactive, Submitted: j.Submitted,
		Done: true, Attempts: j.attempts, Finished: now}
	j.mu.Unlock()
	if err != nil {
		rec.ErrCode, rec.ErrMessage = CodeOf(err), err.Error()
	} else {
		rec.Result = &res
	}
	var unsynced *Record
	if jerr := s.journalCall("finish", func() error { return s.journal.Finish(rec) }); jerr != nil {
		s.log.Error("journal finish: the result stays in memory and the journal is retried", "job", j.ID, "err", jerr)
		unsynced = &rec
	}

	// Free the slot before the result is visible: a client that saw its result and
	// submits again finds the slot free.
	func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		j.mu.Lock()
		j.Spec = rec.Spec // the inputs go
		j.state = StateDone
		j.finished = now
		j.bytes = j.bytesLocked() + ResultBytes(res)
		j.mu.Unlock()
		s.totals.Finished++
		if err != nil {
			s.totals.Failed++
		} else {
			s.totals.ByStatus[string(res.Status)]++
		}
		if unsynced != nil {
			j.unsynced, j.finishErr = unsynced, "" // logged above
			s.unsynced = append(s.unsynced, j)
		}
		s.finished = append(s.finished, j)
		s.finishedBytes += j.bytes
		s.trimLocked(now)
		s.dispatchLocked()
	}()

	j.mu.Lock()
	e := Event{Kind: EventDone, Err: err}
	if err == nil {
		e.Result = &res
	}
	if !j.ended {
		j.ended = true
		j.appendLocked(e)
		close(j.doneCh)
	}
	j.mu.Unlock()
	s.observe(func(o Observer) {
		info := j.Info()
		var wait time.Duration
		if !info.Started.IsZero() {
			wait = info.Started.Sub(info.Submitted)
		}
		o.JobFinished(info, e.Result, err, wait)
	})
}

// forceEnd ends a job whose finish panicked: it gets its EventDone with err, whatever
// else was done.
func (s *Scheduler) forceEnd(j *Job, err error) {
	now := s.now()
	j.mu.Lock()
	if !j.ended {
		j.ended = true
		j.state = StateDone
		j.finished = now
		j.appendLocked(Event{Kind: EventDone, Err: err})
		close(j.doneCh)
	}
	j.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !slices.Contains(s.finished, j) {
		s.finished = append(s.finished, j)
		s.totals.Finished++
		s.totals.Failed++
	}
}

// trimLocked drops the oldest retained finished jobs past the bounds (Retain,
// RetainBytes, RetainAge); a job the journal has not taken yet stays.
func (s *Scheduler) trimLocked(now time.Time) {
	var cutoff time.Time
	if s.cfg.RetainAge > 0 {
		cutoff = now.Add(-s.cfg.RetainAge)
	}
	kept := s.finished[:0]
	for i, j := range s.finished {
		left := len(kept) + len(s.finished) - i
		j.mu.Lock()
		old := j.finished.Before(cutoff)
		j.mu.Unlock()
		if left <= s.cfg.Retain && s.finishedBytes <= s.cfg.RetainBytes && !old {
			kept = append(kept, s.finished[i:]...)
			break
		}
		if j.unsynced != nil {
			kept = append(kept, j)
			continue
		}
		if s.jobs[j.ID] == j {
			delete(s.jobs, j.ID)
		}
		s.finishedBytes -= j.bytes
	}
	clear(s.finished[len(kept):])
	s.finished = kept
}

// syncFinished retries the journal for the finished jobs it has not taken yet.
func (s *Scheduler) syncFinished() {
	s.mu.Lock()
	jobs := slices.Clone(s.unsynced)
	s.mu.Unlock()
	if len(jobs) == 0 {
		return
	}
	for _, j := range jobs {
		s.mu.Lock()
		rec := j.unsynced
		s.mu.Unlock()
		if rec == nil {
			continue
		}
		err := s.journalCall("finish", func() error { return s.journal.Finish(*rec) })
		s.mu.Lock()
		if err == nil {
			j.unsynced = nil
			s.unsynced = slices.DeleteFunc(s.unsynced, func(x *Job) bool { return x == j })
			s.log.Info("journal took a finished job at last", "job", j.ID)
		} else if err.Error() != j.finishErr {
			j.finishErr = err.Error()
			s.log.Error("journal finish, retried", "job", j.ID, "err", err)
		}
		s.mu.Unlock()
	}
	s.mu.Lock()
	s.trimLocked(s.now())
	s.mu.Unlock()
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

// AddNode registers a slave that runs jobs through runner. onLost, when set, is called
// (without locks held) when the scheduler declares the node lost (missed heartbeats), so
// its owner can close the connection. A live node with the same name makes it
// ErrNameTaken: registering under a live node's name must not evict it (and take its
// jobs). The name is free again once that node is lost.
func (s *Scheduler) AddNode(spec NodeSpec, runner sandbox.Runner, onLost func(reason error)) (*NodeHandle, error) {
	if spec.Name == "" || spec.Capacity < 0 {
		return nil, fmt.Errorf("%w: a node needs a name and a capacity of 0 or more", sandbox.ErrInvalidRequest)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrShuttingDown
	}
	if spec.Name == s.local.Name {
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: node name %q is the master's", sandbox.ErrInvalidRequest, spec.Name)
	}
	for _, old := range s.nodes {
		if old.Name == spec.Name && !old.gone {
			s.mu.Unlock()
			s.log.Warn("node refused: its name is a live node's", "node", spec.Name)
			return nil, fmt.Errorf("%w: a live node is registered as %q (joined %s); a node may take the name once that one is lost",
				ErrNameTaken, spec.Name, old.joined.Format(time.RFC3339))
		}
	}
	n := &node{NodeSpec: spec, role: RoleSlave, runner: runner, running: map[*Job]bool{}, lastBeat: s.now(), joined: s.now(), onLost: onLost}
	s.nodes = append(s.nodes, n)
	s.noteLocked(n.Name, "joined", fmt.Sprintf("capacity %d", spec.Capacity))
	s.log.Info("node joined", "node", n.Name, "capacity", spec.Capacity)
	s.dispatchLocked()
	s.unlockAndNotify()
	return &NodeHandle{s: s, n: n}, nil
}

// loseLocked marks n gone and re-queues its jobs; it returns the onLost call to make
// once the lock is released.
func (s *Scheduler) loseLocked(n *node, reason error) func() {
	n.gone = true
	s.nodes = slices.DeleteFunc(s.nodes, func(x *node) bool { return x == n })
	jobs := make([]*Job, 0, len(n.running))
	for j := range n.running {
		jobs = append(jobs, j)
	}
	slices.SortFunc(jobs, func(a, b *Job) int { return b.Submitted.Compare(a.Submitted) })
	clear(n.running)
	n.used = 0
	for _, j := range jobs { // newest first, so the oldest ends up at the head
		s.requeueLocked(j, fmt.Sprintf("node %s lost: %v", n.Name, reason))
	}
	if n.draining && len(jobs) == 0 {
		s.noteLocked(n.Name, "left", reason.Error()) // a drained slave going away is no loss
		s.log.Info("node left", "node", n.Name)
	} else {
		s.noteLocked(n.Name, "lost", reason.Error())
		s.log.Warn("node lost", "node", n.Name, "reason", reason, "requeued", len(jobs))
	}
	s.dispatchLocked()
	if n.onLost == nil {
		return func() {}
	}
	return func() { n.onLost(reason) }
}

func (s *Scheduler) noteLocked(name, kind, reason string) {
	e := NodeEvent{At: s.now(), Node: name, Kind: kind, Reason: reason}
	if s.cfg.Observer != nil {
		s.pendingNotes = append(s.pendingNotes, e)
	}
	s.events = append(s.events, e)
	if len(s.events) > 100 {
		s.events = slices.Delete(s.events, 0, len(s.events)-100)
	}
}

// DrainNode stops placing jobs on the named slave; what it runs finishes. It reports
// whether such a slave is registered.
func (s *Scheduler) DrainNode(name string) bool {
	s.mu.Lock()
	defer s.unlockAndNotify()
	for _, n := range s.nodes {
		if n.Name == name && n.role == RoleSlave {
			if !n.draining {
				n.draining = true
				s.noteLocked(n.Name, "draining", "")
			}
			return true
		}
	}
	return false
}

// noteExternal records a node event decided outside the scheduler (the autoscaler's).
func (s *Scheduler) noteExternal(name, kind, reason string) {
	s.mu.Lock()
	s.noteLocked(name, kind, reason)
	s.unlockAndNotify()
}

// unlockAndNotify releases mu and tells the Observer the node events noted meanwhile.
func (s *Scheduler) unlockAndNotify() {
	notes := s.pendingNotes
	s.pendingNotes = nil
	s.mu.Unlock()
	for _, e := range notes {
		s.observe(func(o Observer) { o.NodeChanged(e) })
	}
}

// NodeHandle is a registered slave's side of the scheduler.
type NodeHandle struct {
	s *Scheduler
	n *node
}

// Heartbeat records the node's load; it also proves the node alive.
func (h *NodeHandle) Heartbeat(load Load) {
	h.s.mu.Lock()
	defer h.s.mu.Unlock()
	h.n.load = load
	h.n.lastBeat = h.s.now()
}

// SetCapacity changes how many programs the node takes (0 while it drains).
func (h *NodeHandle) SetCapacity(capacity int) {
	h.s.mu.Lock()
	defer h.s.mu.Unlock()
	h.n.Capacity = max(capacity, 0)
	h.s.dispatchLocked()
}

// Drain stops placing jobs on the node; the ones it runs finish. Running reports how many
// are left.
func (h *NodeHandle) Drain() {
	h.s.mu.Lock()
	defer h.s.unlockAndNotify()
	if !h.n.draining {
		h.n.draining = true
		h.s.noteLocked(h.n.Name, "draining", "")
	}
}

// Running is how many jobs run on the node now.
func (h *NodeHandle) Running() int {
	h.s.mu.Lock()
	defer h.s.mu.Unlock()
	return len(h.n.running)
}

// Lost reports the node gone (its connection closed): its jobs run again elsewhere.
func (h *NodeHandle) Lost(reason error) {
	h.s.mu.Lock()
	if h.n.gone {
		h.s.mu.Unlock()
		return
	}
	f := h.s.loseLocked(h.n, reason)
	h.s.unlockAndNotify()
	f()
}

// ReportLoad records the master's own load (sampled by its owner, e.g. every second).
func (s *Scheduler) ReportLoad(load Load) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.local.load = load
	s.local.lastBeat = s.now()
	s.dispatchLocked()
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

// Snapshot is the cluster as the scheduler sees it.
type Snapshot struct {
	Nodes      []NodeInfo  `json:"nodes"`
	Running    []Info      `json:"running"`
	Queued     []Info      `json:"queued"`
	Recent     []Info      `json:"recent"`
	NodeEvents []NodeEvent `json:"node_events,omitempty"`
	Totals     Totals      `json:"totals"`
}

// NodeInfo describes a node for status views.
type NodeInfo struct {
	Name      string    `json:"name"`
	Role      string    `json:"role"` // "master" or "slave"
	State     string    `json:"state"`
	Capacity  int       `json:"capacity"`
	Running   int       `json:"running"`        // jobs
	Used      int       `json:"used,omitempty"` // program slots they hold (a judged job: several)
	Done      int       `json:"done"`
	Load      Load      `json:"load"`
	LastBeat  time.Time `json:"last_beat,omitzero"`
	Joined    time.Time `json:"joined"`
	Languages []string  `json:"languages,omitempty"`
}

// Snapshot returns the current state; Recent holds up to recent finished jobs, newest first.
func (s *Scheduler) Snapshot(recent int) Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Empty lists, not nil: JSON readers get [] rather than null.
	snap := Snapshot{Totals: s.totals, NodeEvents: slices.Clone(s.events),
		Nodes: []NodeInfo{}, Running: []Info{}, Queued: []Info{}, Recent: []Info{}}
	snap.Totals.ByStatus = make(map[string]int, len(s.totals.ByStatus))
	for k, v := range s.totals.ByStatus {
		snap.Totals.ByStatus[k] = v
	}
	for _, n := range s.nodes {
		state := NodeReady
		if n.draining {
			state = NodeDraining
		}
		in := NodeInfo{Name: n.Name, Role: n.role, State: state, Capacity: n.Capacity, Running: len(n.running), Used: n.used, Done: n.done,
			Load: n.load, LastBeat: n.lastBeat, Joined: n.joined}
		for l := range n.Languages {
			in.Languages = append(in.Languages, l)
		}
		slices.Sort(in.Languages)
		snap.Nodes = append(snap.Nodes, in)
		for j := range n.running {
			snap.Running = append(snap.Running, j.Info())
		}
	}
	slices.SortFunc(snap.Running, func(a, b Info) int { return a.Started.Compare(b.Started) })
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
	s.syncFinished()
	s.mu.Lock()
	for _, j := range s.unsynced {
		s.log.Error("journal never took this finished job: it runs again after a restart", "job", j.ID)
	}
	s.mu.Unlock()
	return nil
}

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
	// Retain is how many finished jobs stay in memory for clients that come back for their
	// result by id (older ones are still answered from the journal while it has them).
	Retain int
	// HeartbeatTimeout: a slave that reported no load for this long is lost, and its jobs
	// run again elsewhere.
	HeartbeatTimeout time.Duration
	// MaxAttempts caps how often a job is dispatched when its nodes keep dying; past it the
	// job ends with ErrCrashedNode (a program that kills every node is stopped).
	MaxAttempts int
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
		HeartbeatTimeout: 3 * time.Second, MaxAttempts: 3}
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

	mu       sync.Mutex
	closed   bool
	local    *node
	nodes    []*node         // local first, then slaves in join order
	jobs     map[string]*Job // queued, running, and the last Retain finished
	queue    []*Job
	finished []*Job // retained finished jobs, oldest first
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
// the journal's pending jobs (those accepted by an earlier run and never finished).
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
	pending, err := journal.Pending()
	if err != nil {
		return nil, fmt.Errorf("read journal: %w", err)
	}
	s.mu.Lock()
	for _, rec := range pending {
		// An interactive job's live input is gone with its client: it reruns with the
		// input it was submitted with.
		j := newJob(rec.ID, rec.Owner, rec.Spec, false, rec.Submitted)
		j.attempts = rec.Attempts
		j.accepted = true
		s.jobs[j.ID] = j
		s.queue = append(s.queue, j)
	}
	if len(pending) > 0 {
		s.log.Info("re-queued jobs from the journal", "count", len(pending))
	}
	s.dispatchLocked()
	s.mu.Unlock()
	s.wg.Add(1)
	go s.monitor()
	return s, nil
}

// Epoch identifies this scheduler's run: a job's event log is only valid within one
// epoch (after a master restart, a pending job's log starts again from its first event).
func (s *Scheduler) Epoch() string { return s.epoch }

// capacityLocked is the number of programs the cluster runs at once, and how many run.
func (s *Scheduler) capacityLocked() (capacity, running int) {
	for _, n := range s.nodes {
		if !n.gone && !n.draining {
			capacity += n.Capacity
		}
		running += len(n.running)
	}
	return capacity, running
}

// Submit validates and accepts a job: it is journaled, then either started or queued.
// When every slot and the queue are full it returns ErrBusy at once. An interactive job
// takes live input through Job.SendStdin.
func (s *Scheduler) Submit(spec sandbox.Spec, interactive bool) (*Job, error) {
	return s.SubmitAs("", spec, interactive)
}

// SubmitAs is Submit for a job that owner submitted (Job.Owner, journaled with it).
func (s *Scheduler) SubmitAs(owner string, spec sandbox.Spec, interactive bool) (*Job, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	if err := spec.Limits.Check(s.cfg.MaxLimits); err != nil {
		return nil, err
	}
	now := s.now()
	j := newJob(newID(now), owner, spec, interactive, now)

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrShuttingDown
	}
	capacity, running := s.capacityLocked()
	if len(s.queue) >= max(capacity-running, 0)+s.cfg.Queue {
		s.totals.Rejected++
		queued := len(s.queue)
		s.mu.Unlock()
		if s.cfg.Observer != nil {
			s.cfg.Observer.JobRejected()
		}
		return nil, fmt.Errorf("%w: %d program(s) running and %d queued, the limit; try another server or retry later", ErrBusy, running, queued)
	}
	// Hold the place in the queue while the journal writes; dispatch skips the job until
	// it is accepted.
	s.jobs[j.ID] = j
	s.queue = append(s.queue, j)
	s.mu.Unlock()

	if err := s.journal.Accept(Record{ID: j.ID, Owner: owner, Spec: spec, Interactive: interactive, Submitted: now}); err != nil {
		s.mu.Lock()
		s.removeQueuedLocked(j)
		delete(s.jobs, j.ID)
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: journal: %v", ErrInternal, err)
	}
	s.mu.Lock()
	j.accepted = true
	s.totals.Accepted++
	s.dispatchLocked()
	s.mu.Unlock()
	return j, nil
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
			if capacity, running := s.capacityLocked(); running >= capacity {
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
			Local: n == s.local, Running: len(n.running), Capacity: n.Capacity, CPU: n.load.CPU,
			Eligible: !n.gone && !n.draining && n.serves(lang.Name),
		})
	}
	if i := Place(s.cands, s.cfg.CPUThreshold); i >= 0 {
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

// launchLocked runs j on n in a goroutine the scheduler owns, under a new lease.
func (s *Scheduler) launchLocked(j *Job, n *node) {
	ctx, cancel := context.WithCancel(s.ctx)
	j.mu.Lock()
	j.state = StateRunning
	j.node = n.Name
	j.attempts++
	j.lease++
	lease := j.lease
	j.started = s.now()
	j.cancel = cancel
	j.appendLocked(Event{Kind: EventStarted, Node: n.Name})
	j.mu.Unlock()
	n.running[j] = true

	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer cancel()
		streams := &sandbox.Streams{
			Output: func(c sandbox.Chunk) {
				if j.currentLease(lease) {
					j.appendOutput(c.Stream, c.Data)
				}
			},
		}
		if j.stdin != nil {
			streams.Stdin = j.stdin
		}
		res, err := n.runner.Run(ctx, j.Spec, streams)
		s.complete(j, n, lease, res, err)
	}()
}

// complete handles the end of one dispatch: a stale lease is dropped, a lost node's job
// runs again (up to MaxAttempts), anything else finishes the job.
func (s *Scheduler) complete(j *Job, n *node, lease int, res sandbox.Result, err error) {
	s.mu.Lock()
	if !n.running[j] || !j.currentLease(lease) {
		s.mu.Unlock()
		return // the node was declared lost and the job moved on: this result is stale
	}
	delete(n.running, j)
	n.done++
	j.mu.Lock()
	cancelled := j.cancelled
	j.mu.Unlock()
	switch {
	case cancelled:
		err = ErrCancelled
	case s.ctx.Err() != nil:
		s.mu.Unlock()
		return // shutting down: the journal still has the job as pending
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
		err := fmt.Errorf("%w: %s, on each of %d attempts; the program may be what kills its nodes", ErrCrashedNode, why, attempts)
		if j.cancelled {
			err = ErrCancelled
		}
		s.wg.Add(1)
		go func() { defer s.wg.Done(); s.finish(j, sandbox.Result{}, err) }()
		return
	}
	j.state = StateQueued
	j.node = ""
	j.mu.Unlock()
	s.totals.Retried++
	s.log.Info("job re-queued", "job", j.ID, "attempt", attempts, "why", why)
	s.queue = append([]*Job{j}, s.queue...)
}

// finish ends a job: journal, slot, event.
func (s *Scheduler) finish(j *Job, res sandbox.Result, err error) {
	now := s.now()
	j.mu.Lock()
	res.Node, res.Attempts = j.node, j.attempts
	rec := Record{ID: j.ID, Owner: j.Owner, Spec: j.Spec, Interactive: j.Interactive, Submitted: j.Submitted, Done: true, Attempts: j.attempts, Finished: now}
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
	j.state = StateDone
	j.finished = now
	j.mu.Unlock()

	s.mu.Lock()
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
	if s.cfg.Observer != nil {
		info := j.Info()
		var wait time.Duration
		if !info.Started.IsZero() {
			wait = info.Started.Sub(info.Submitted)
		}
		s.cfg.Observer.JobFinished(info, e.Result, err, wait)
	}
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
	if err != nil || !rec.Done {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return jobFromRecord(rec), nil
}

// jobFromRecord rebuilds a finished job's event log from its record.
func jobFromRecord(rec Record) *Job {
	j := newJob(rec.ID, rec.Owner, rec.Spec, false, rec.Submitted)
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

// AddNode registers a slave that runs jobs through runner. onLost, when set, is called
// (without locks held) when the scheduler declares the node lost (missed heartbeats), so
// its owner can close the connection. A live node with the same name is replaced: its
// jobs run again.
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
	var lost []func()
	for _, old := range s.nodes {
		if old.Name == spec.Name && !old.gone {
			lost = append(lost, s.loseLocked(old, errors.New("replaced by a new connection")))
		}
	}
	n := &node{NodeSpec: spec, role: RoleSlave, runner: runner, running: map[*Job]bool{}, lastBeat: s.now(), joined: s.now(), onLost: onLost}
	s.nodes = append(s.nodes, n)
	s.noteLocked(n.Name, "joined", fmt.Sprintf("capacity %d", spec.Capacity))
	s.log.Info("node joined", "node", n.Name, "capacity", spec.Capacity)
	s.dispatchLocked()
	s.unlockAndNotify()
	for _, f := range lost {
		f()
	}
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
		s.cfg.Observer.NodeChanged(e)
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

// monitor declares slaves lost when their heartbeats stop.
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
		s.unlockAndNotify()
		for _, f := range calls {
			f()
		}
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
	Running   int       `json:"running"`
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
		in := NodeInfo{Name: n.Name, Role: n.role, State: state, Capacity: n.Capacity, Running: len(n.running), Done: n.done,
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
	return nil
}

package scheduler

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"runbox/sandbox"
)

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
	j.started = s.now()
	a := attempt{j: j, n: n, lease: j.lease, number: j.attempts, spec: j.Spec, timeout: timeout,
		queued: max(j.started.Sub(j.Submitted), 0), rec: Record{ID: j.ID, Submitted: j.Submitted, Attempts: j.attempts}}
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
	queued  time.Duration // from the job's admission to this dispatch
	rec     Record        // for Journal.Dispatch
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
	// counts it on restart. An attempt cancelled before then does not run: it is not
	// counted.
	if err := s.journalCall("dispatch", func() error { return s.journal.Dispatch(ctx, a.rec) }); err != nil && ctx.Err() == nil {
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
		if jerr := s.journalCall("dispatch", func() error { return s.journal.Dispatch(context.WithoutCancel(ctx), a.rec) }); jerr != nil {
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
	s.finish(j, withQueue(res, a.queued), err)
}

// withQueue returns res with its Trace's Queue phase set to queued, the wait between the
// job's admission and its dispatch to the node that answered (earlier attempts' runs
// count as waiting). The node's Trace is copied, not changed; a node that sent none gets
// one with the Queue phase alone.
func withQueue(res sandbox.Result, queued time.Duration) sandbox.Result {
	var t sandbox.Trace
	if res.Trace != nil {
		t = *res.Trace
	}
	t.Queue = queued
	res.Trace = &t
	return res
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

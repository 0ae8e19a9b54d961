package scheduler

import (
	"context"
	"runtime/debug"
	"slices"
	"time"

	"runbox/sandbox"
)

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
	// A job's end is written even while the scheduler shuts down.
	if jerr := s.journalCall("finish", func() error { return s.journal.Finish(context.WithoutCancel(s.ctx), rec) }); jerr != nil {
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
		err := s.journalCall("finish", func() error { return s.journal.Finish(context.WithoutCancel(s.ctx), *rec) })
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

package scheduler

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"runbox/sandbox"
	"runbox/sandbox/sandboxtest"
)

// runnerFunc adapts a function to sandbox.Runner.
type runnerFunc func(context.Context, sandbox.Spec, *sandbox.Streams) (sandbox.Result, error)

func (f runnerFunc) Run(ctx context.Context, spec sandbox.Spec, streams *sandbox.Streams) (sandbox.Result, error) {
	return f(ctx, spec, streams)
}

func lastEvent(t *testing.T, j *Job) Event {
	t.Helper()
	evs := wait(t, j)
	return evs[len(evs)-1]
}

// TestDispatchJournalsAttempts: each dispatch's attempt count is in the journal before
// the run starts; a graceful stop gives back the attempt it interrupted.
func TestDispatchJournalsAttempts(t *testing.T) {
	t.Parallel()
	journal := NewMemJournal(10)
	local := newGate("master")
	s, err := New(DefaultConfig(), local, journal)
	if err != nil {
		t.Fatal(err)
	}
	j, _ := s.Submit(prog("job"), false)
	<-local.started
	rec, _ := journal.Get(j.ID)
	if rec.Attempts != 1 {
		t.Errorf("journaled attempts while the first dispatch runs: %d, want 1", rec.Attempts)
	}
	s.Close() // a stop, not a crash
	if rec, _ := journal.Get(j.ID); rec.Attempts != 0 || rec.Done {
		t.Errorf("after a graceful stop: attempts %d done %v, want 0 and pending", rec.Attempts, rec.Done)
	}
}

// TestRestartStopsCrashLoop: a pending job that used its attempts (the master died while
// it ran, each time) ends as crashed_node at restart instead of running again; one under
// the cap runs.
func TestRestartStopsCrashLoop(t *testing.T) {
	t.Parallel()
	journal := NewMemJournal(10)
	now := time.Now()
	journal.Accept(t.Context(), Record{ID: "killer", Spec: prog("out again"), Submitted: now, Attempts: 3})
	journal.Accept(t.Context(), Record{ID: "unlucky", Spec: prog("out again"), Submitted: now.Add(time.Millisecond), Attempts: 2})
	fake := &sandboxtest.Fake{Node: "m"}
	s, err := New(DefaultConfig(), fake, journal)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	killer, err := s.Get("killer")
	if err != nil {
		t.Fatal(err)
	}
	e := lastEvent(t, killer)
	if !errors.Is(e.Err, ErrCrashedNode) || !strings.Contains(e.Err.Error(), "running each time a node died") {
		t.Errorf("killer ended with %v, want crashed_node saying it was running each time a node died", e.Err)
	}
	if rec, _ := journal.Get("killer"); !rec.Done || rec.ErrCode != "crashed_node" {
		t.Errorf("journal: %+v", rec)
	}
	unlucky, _ := s.Get("unlucky")
	if e := lastEvent(t, unlucky); e.Result == nil || e.Result.Attempts != 3 {
		t.Errorf("unlucky: %+v", e)
	}
	if runs, _ := fake.Runs(); runs != 1 {
		t.Errorf("%d runs, want 1 (the killer must not run)", runs)
	}
}

// TestRestartRefusesBadRecord: a pending record that does not validate (the journal is
// outside input) ends with its error, never reaches a runner.
func TestRestartRefusesBadRecord(t *testing.T) {
	t.Parallel()
	journal := NewMemJournal(10)
	journal.Accept(t.Context(), Record{ID: "bad", Spec: sandbox.Spec{Language: "cobol", Files: []sandbox.File{{Content: []byte("x")}}}, Submitted: time.Now()})
	journal.Accept(t.Context(), Record{ID: "", Spec: prog("out x"), Submitted: time.Now()})
	s, _ := newSched(t, nil, journal)
	j, err := s.Get("bad")
	if err != nil {
		t.Fatal(err)
	}
	if e := lastEvent(t, j); !errors.Is(e.Err, sandbox.ErrUnknownLanguage) {
		t.Errorf("bad record ended with %+v", e)
	}
}

// TestRunnerPanicEndsJob: a Runner that panics ends its job with ErrInternal naming the
// panic; the scheduler (and the process) go on.
func TestRunnerPanicEndsJob(t *testing.T) {
	t.Parallel()
	panicky := runnerFunc(func(ctx context.Context, spec sandbox.Spec, _ *sandbox.Streams) (sandbox.Result, error) {
		if string(spec.Files[0].Content) == "boom" {
			var b []byte
			_ = b[len(spec.Files[0].Content)] // index out of range, like the judge's excerpt bug
		}
		return sandbox.Result{Status: sandbox.StatusOK}, nil
	})
	s, err := New(DefaultConfig(), panicky, NewMemJournal(10))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	j, _ := s.Submit(prog("boom"), false)
	e := lastEvent(t, j)
	if !errors.Is(e.Err, ErrInternal) || !strings.Contains(e.Err.Error(), "panic") || !strings.Contains(e.Err.Error(), "index out of range") {
		t.Errorf("ended with %v, want internal naming the panic", e.Err)
	}
	next, _ := s.Submit(prog("fine"), false)
	if e := lastEvent(t, next); e.Err != nil || e.Result.Status != sandbox.StatusOK {
		t.Errorf("next job: %+v", e)
	}
	if snap := s.Snapshot(0); snap.Nodes[0].Running != 0 || snap.Nodes[0].Used != 0 {
		t.Errorf("slot not freed: %+v", snap.Nodes[0])
	}
}

// TestUnavailableRunsAgain: a node that could not run a program (sandbox.ErrUnavailable:
// its engine refused a container under load, the sandbox ended without a result) does not
// end the job: it runs again, and only a node that fails it MaxAttempts times ends it, with
// the node's error.
func TestUnavailableRunsAgain(t *testing.T) {
	t.Parallel()
	var calls sync.Map // program → attempts seen
	flaky := runnerFunc(func(ctx context.Context, spec sandbox.Spec, _ *sandbox.Streams) (sandbox.Result, error) {
		src := string(spec.Files[0].Content)
		n, _ := calls.LoadOrStore(src, new(atomic.Int32))
		if k := n.(*atomic.Int32).Add(1); src == "always" || k == 1 {
			return sandbox.Result{}, fmt.Errorf("%w: create container: the engine is busy", sandbox.ErrUnavailable)
		}
		return sandbox.Result{Status: sandbox.StatusOK, Stdout: []byte(src)}, nil
	})
	s, err := New(DefaultConfig(), flaky, NewMemJournal(10))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	once, _ := s.Submit(prog("once"), false)
	if e := lastEvent(t, once); e.Err != nil || e.Result.Status != sandbox.StatusOK || e.Result.Attempts != 2 {
		t.Errorf("a job whose node failed it once: %+v %v", e.Result, e.Err)
	}
	always, _ := s.Submit(prog("always"), false)
	e := lastEvent(t, always)
	if !errors.Is(e.Err, sandbox.ErrUnavailable) || !strings.Contains(e.Err.Error(), "engine is busy") {
		t.Errorf("a job its node can never run ended with %v, want the node's unavailable error", e.Err)
	}
	if in := always.Info(); in.Attempts != DefaultConfig().MaxAttempts {
		t.Errorf("%d attempts, want %d", in.Attempts, DefaultConfig().MaxAttempts)
	}
}

// TestOutputPanicEndsJob: a panic in the output path (called from a runner's goroutine)
// ends the job with ErrInternal.
func TestOutputPanicEndsJob(t *testing.T) {
	t.Parallel()
	s, _ := newSched(t, nil, nil)
	s.onOutput = func(c sandbox.Chunk) {
		if bytes.Contains(c.Data, []byte("poison")) {
			panic("poisoned chunk")
		}
	}
	j, _ := s.Submit(prog("out poison\nsleep 10s"), false)
	if e := lastEvent(t, j); !errors.Is(e.Err, ErrInternal) || !strings.Contains(e.Err.Error(), "poisoned chunk") {
		t.Errorf("ended with %v", e.Err)
	}
}

// panicObserver panics on every call.
type panicObserver struct{}

func (panicObserver) JobFinished(Info, *sandbox.Result, error, time.Duration) { panic("observer") }
func (panicObserver) JobRejected()                                            { panic("observer") }
func (panicObserver) NodeChanged(NodeEvent)                                   { panic("observer") }

// panicJournal panics in Finish while armed.
type panicJournal struct {
	*MemJournal
	mu    sync.Mutex
	armed bool
}

func (p *panicJournal) Finish(ctx context.Context, rec Record) error {
	p.mu.Lock()
	armed := p.armed
	p.mu.Unlock()
	if armed {
		panic("journal page out of range")
	}
	return p.MemJournal.Finish(ctx, rec)
}

// TestFinishPanics: a panicking journal or observer while a job finishes still ends the
// job with its result; the journal is retried.
func TestFinishPanics(t *testing.T) {
	t.Parallel()
	journal := &panicJournal{MemJournal: NewMemJournal(10), armed: true}
	s, _ := newSched(t, func(c *Config) { c.Observer = panicObserver{}; c.HeartbeatTimeout = 40 * time.Millisecond }, journal)
	h, err := s.AddNode(NodeSpec{Name: "s1", Capacity: 0}, &sandboxtest.Fake{}, nil) // NodeChanged panics
	if err != nil {
		t.Fatal(err)
	}
	h.Heartbeat(Load{})
	j, _ := s.Submit(prog("out x"), false)
	if e := lastEvent(t, j); e.Err != nil || string(e.Result.Stdout) != "x\n" {
		t.Errorf("ended with %+v", e)
	}
	journal.mu.Lock()
	journal.armed = false
	journal.mu.Unlock()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if rec, _ := journal.Get(j.ID); rec.Done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the journal never got the finished job")
		}
	}
}

// faultJournal fails as told: Accept with ErrStorageFull, Finish with ENOSPC-like errors.
type faultJournal struct {
	*MemJournal
	mu         sync.Mutex
	fullAccept bool
	failFinish bool
	finishes   int
}

func (f *faultJournal) set(accept, finish bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fullAccept, f.failFinish = accept, finish
}

func (f *faultJournal) Accept(ctx context.Context, rec Record) error {
	f.mu.Lock()
	full := f.fullAccept
	f.mu.Unlock()
	if full {
		return fmt.Errorf("%w: journal accept: write journal.db: no space left on device", ErrStorageFull)
	}
	return f.MemJournal.Accept(ctx, rec)
}

func (f *faultJournal) Finish(ctx context.Context, rec Record) error {
	f.mu.Lock()
	fail := f.failFinish
	f.finishes++
	f.mu.Unlock()
	if fail {
		return fmt.Errorf("%w: journal finish: no space left on device", ErrStorageFull)
	}
	return f.MemJournal.Finish(ctx, rec)
}

// TestStorageFull: a full journal refuses new jobs with ErrStorageFull (storage_full);
// a job whose Finish fails keeps its result in memory (whatever the retention says), is
// answered, and reaches the journal once it has room again.
func TestStorageFull(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		journal := &faultJournal{MemJournal: NewMemJournal(10)}
		cfg := DefaultConfig()
		cfg.Retain = 0 // nothing retained in memory: only the journal answers
		s, err := New(cfg, &sandboxtest.Fake{}, journal)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		journal.set(false, true)
		j, err := s.Submit(prog("out kept"), false)
		if err != nil {
			t.Fatal(err)
		}
		if e := lastEvent(t, j); e.Err != nil || string(e.Result.Stdout) != "kept\n" {
			t.Fatalf("ended with %+v", e)
		}
		journal.set(true, true)
		_, err = s.Submit(prog("out refused"), false)
		if !errors.Is(err, ErrStorageFull) || CodeOf(err) != "storage_full" {
			t.Fatalf("submit on a full journal: %v (code %s)", err, CodeOf(err))
		}
		// Not in the journal, not forgotten: it is still answered by id.
		time.Sleep(10 * time.Second)
		if got, err := s.Get(j.ID); err != nil || got != j {
			t.Errorf("unjournaled job: %v", err)
		}
		if rec, _ := journal.Get(j.ID); rec.Done {
			t.Fatal("journal took it while full")
		}
		journal.set(false, false)
		time.Sleep(cfg.HeartbeatTimeout) // the monitor retries
		if rec, _ := journal.Get(j.ID); !rec.Done || string(rec.Result.Stdout) != "kept\n" {
			t.Errorf("journal after the disk has room: %+v", rec)
		}
		s.mu.Lock()
		_, inMemory := s.jobs[j.ID]
		s.mu.Unlock()
		if inMemory {
			t.Error("a journaled job past retention is still in memory")
		}
		if _, err := s.Submit(prog("out again"), false); err != nil {
			t.Errorf("submit once the journal has room: %v", err)
		}
	})
}

// TestFinishedJobsDropInputs: a finished job keeps its result and drops its stdin, files'
// contents and tests' data, in memory and in the journal.
func TestFinishedJobsDropInputs(t *testing.T) {
	t.Parallel()
	journal := NewMemJournal(10)
	s, _ := newSched(t, nil, journal)
	spec := prog("cat")
	spec.Stdin = bytes.Repeat([]byte("i"), 1<<20)
	j, _ := s.Submit(spec, false)
	e := lastEvent(t, j)
	if e.Result == nil || len(e.Result.Stdout) != 1<<20 {
		t.Fatalf("result: %+v", e)
	}
	if in := InputBytes(j.Spec); in != 0 || j.Spec.Language != "python" || len(j.Spec.Files) != 1 {
		t.Errorf("finished job's spec keeps %d input bytes: %+v", in, j.Spec.Files)
	}
	rec, _ := journal.Get(j.ID)
	if InputBytes(rec.Spec) != 0 || rec.Spec.Stdin != nil || len(rec.Result.Stdout) != 1<<20 {
		t.Errorf("journal record keeps inputs (%d bytes) or lost the result", InputBytes(rec.Spec))
	}
	tests := WithoutInputs(sandbox.Spec{Language: "python", Tests: []sandbox.TestCase{{Name: "a", Stdin: []byte("x"), Expected: []byte("y")}}})
	if len(tests.Tests) != 1 || tests.Tests[0].Name != "a" || tests.Tests[0].Stdin != nil || tests.Tests[0].Expected != nil || tests.Slots() != 1 {
		t.Errorf("tests without inputs: %+v", tests.Tests)
	}
}

// TestRetentionBytes: finished jobs stay in memory up to RetainBytes; older ones are
// answered from the journal.
func TestRetentionBytes(t *testing.T) {
	t.Parallel()
	journal := NewMemJournal(100)
	s, _ := newSched(t, func(c *Config) { c.MaxPrograms = 1; c.RetainBytes = 3 << 20 }, journal)
	big := prog("cat")
	big.Stdin = bytes.Repeat([]byte("o"), 1<<20)
	var jobs []*Job
	for i := 0; i < 5; i++ {
		j, err := s.Submit(big, false)
		if err != nil {
			t.Fatal(err)
		}
		<-j.Done()
		jobs = append(jobs, j)
	}
	s.mu.Lock()
	kept, bytes := len(s.finished), s.finishedBytes
	_, firstInMemory := s.jobs[jobs[0].ID]
	s.mu.Unlock()
	// Each holds its output twice (events and result): 2 MiB.
	if kept != 1 || bytes > 3<<20 || firstInMemory {
		t.Errorf("%d jobs (%d bytes) retained, first in memory %v; want 1 under 3 MiB", kept, bytes, firstInMemory)
	}
	old, err := s.Get(jobs[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	if e := lastEvent(t, old); e.Result == nil || len(e.Result.Stdout) != 1<<20 {
		t.Errorf("old job from the journal: %+v", e.Err)
	}
}

// TestRetentionAge: finished jobs older than RetainAge leave memory, and the MemJournal.
func TestRetentionAge(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		journal, err := NewMemJournalWith(MemJournalConfig{KeepFinished: 10, RetainBytes: 1 << 20, RetainAge: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		cfg := DefaultConfig()
		cfg.RetainAge = time.Minute
		s, _ := New(cfg, &sandboxtest.Fake{}, journal)
		defer s.Close()
		old, _ := s.Submit(prog("out old"), false)
		<-old.Done()
		time.Sleep(2 * time.Minute)
		if len(s.Snapshot(10).Recent) != 0 {
			t.Error("a job past the retention age is still in memory")
		}
		recent, _ := s.Submit(prog("out recent"), false) // its Finish trims the journal
		<-recent.Done()
		if _, err := s.Get(old.ID); !errors.Is(err, ErrNotFound) {
			t.Errorf("old job: %v, want not found", err)
		}
		if _, err := s.Get(recent.ID); err != nil {
			t.Error(err)
		}
	})
}

// TestDispatchDeadline: a node that never answers (its runner returns only when its ctx
// ends, or not even then) loses the attempt at compile+run limits plus the grace; the job
// runs again, and ends as crashed_node after MaxAttempts.
func TestDispatchDeadline(t *testing.T) {
	for _, obeysCtx := range []bool{true, false} {
		t.Run(fmt.Sprint("obeys ctx ", obeysCtx), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				release := make(chan struct{})
				var mu sync.Mutex
				var ctxErrs []error
				hung := runnerFunc(func(ctx context.Context, _ sandbox.Spec, _ *sandbox.Streams) (sandbox.Result, error) {
					if obeysCtx {
						<-ctx.Done()
						mu.Lock()
						ctxErrs = append(ctxErrs, ctx.Err())
						mu.Unlock()
						return sandbox.Result{ExitCode: -1}, ctx.Err()
					}
					<-release
					return sandbox.Result{Status: sandbox.StatusOK}, nil // late and stale
				})
				cfg := DefaultConfig()
				cfg.HeartbeatTimeout = time.Hour
				cfg.DispatchGrace = 10 * time.Second
				s, _ := New(cfg, hung, NewMemJournal(10))
				spec := prog("x")
				spec.Limits.CompileTime, spec.Limits.RunTime = 2*time.Second, 3*time.Second
				start := time.Now()
				j, _ := s.Submit(spec, false)
				<-j.Done()
				took := time.Since(start)
				e := lastEvent(t, j)
				if !errors.Is(e.Err, ErrCrashedNode) || !strings.Contains(e.Err.Error(), "gave no result within 15s") {
					t.Errorf("ended with %v", e.Err)
				}
				if in := j.Info(); in.Attempts != 3 {
					t.Errorf("%d attempts", in.Attempts)
				}
				if want := 3 * 15 * time.Second; took != want {
					t.Errorf("ended after %v, want 3 deadlines of 15s = %v", took, want)
				}
				close(release)
				s.Close()
				if obeysCtx {
					for _, err := range ctxErrs {
						if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
							t.Errorf("runner's ctx ended with %v", err)
						}
					}
				}
				if snap := s.Snapshot(0); snap.Nodes[0].Used != 0 {
					t.Errorf("slots still held: %+v", snap.Nodes[0])
				}
			})
		})
	}
}

func TestAttemptTimeout(t *testing.T) {
	t.Parallel()
	lim := sandbox.Limits{CompileTime: 10 * time.Second, RunTime: 2 * time.Second}
	judged := func(cases int) sandbox.Spec {
		s := sandbox.Spec{Limits: lim}
		for i := 0; i < cases; i++ {
			s.Tests = append(s.Tests, sandbox.TestCase{})
		}
		return s
	}
	for _, c := range []struct {
		name     string
		spec     sandbox.Spec
		parallel int
		want     time.Duration
	}{
		{"plain", sandbox.Spec{Limits: lim}, 4, 12*time.Second + 30*time.Second},
		{"defaults", sandbox.Spec{}, 4, 15*time.Second + 30*time.Second},
		{"10 cases by 4", judged(10), 4, 10*time.Second + 3*(2*time.Second+time.Second) + 30*time.Second},
		{"10 cases by 1", judged(10), 1, 10*time.Second + 10*(3*time.Second) + 30*time.Second},
		{"parallel capped at 4", judged(8), 16, 10*time.Second + 2*(3*time.Second) + 30*time.Second},
		{"no capacity counts 1", judged(2), 0, 10*time.Second + 2*(3*time.Second) + 30*time.Second},
	} {
		if got := attemptTimeout(c.spec, c.parallel, 30*time.Second, time.Second); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

// TestOutputCapped: a node that floods output past the job's limits fills the job's log
// only up to the output cap, the compiler output's cap and some slack; its result is cut
// the same way.
func TestOutputCapped(t *testing.T) {
	t.Parallel()
	chunk := bytes.Repeat([]byte("x"), 32<<10)
	flood := runnerFunc(func(ctx context.Context, _ sandbox.Spec, st *sandbox.Streams) (sandbox.Result, error) {
		for i := 0; i < 1000; i++ { // 32 MiB
			st.Output(sandbox.Chunk{Stream: sandbox.Stdout, Data: chunk})
			st.Output(sandbox.Chunk{Stream: sandbox.Compile, Data: chunk[:100]})
		}
		return sandbox.Result{Status: sandbox.StatusOK, Stdout: bytes.Repeat(chunk, 100), Cases: make([]sandbox.CaseResult, 500)}, nil
	})
	s, _ := New(DefaultConfig(), flood, NewMemJournal(10))
	defer s.Close()
	spec := prog("flood")
	spec.Limits.Output = 4 << 10
	j, _ := s.Submit(spec, false)
	evs := wait(t, j)
	var logged int64
	for _, e := range evs {
		logged += int64(len(e.Chunk.Data))
	}
	if max := 2*spec.Limits.Output + outputSlack; logged > max || logged == 0 {
		t.Errorf("%d bytes of output logged, want at most %d", logged, max)
	}
	res := evs[len(evs)-1].Result
	if int64(len(res.Stdout)) > spec.Limits.Output+outputSlack || len(res.Cases) != 0 {
		t.Errorf("result keeps %d bytes of stdout and %d cases", len(res.Stdout), len(res.Cases))
	}
}

func judgedProg(cases int) sandbox.Spec {
	spec := prog("judged")
	for i := 0; i < cases; i++ {
		spec.Tests = append(spec.Tests, sandbox.TestCase{Expected: []byte("judged\n")})
	}
	return spec
}

// TestJudgedJobHoldsSlots: a judged job holds Spec.Slots program slots: what else runs
// beside it, the queue's accounting, and a job bigger than the node runs alone.
func TestJudgedJobHoldsSlots(t *testing.T) {
	t.Parallel()
	local := newGate("master")
	s, _ := New(func() Config { c := DefaultConfig(); c.MaxPrograms = 4; c.Queue = 4; return c }(), local, NewMemJournal(10))
	defer s.Close()
	judged, err := s.Submit(judgedProg(6), false) // 4 slots: the whole master
	if err != nil {
		t.Fatal(err)
	}
	<-local.started
	plain, _ := s.Submit(prog("plain"), false)
	if in := plain.Info(); in.State != StateQueued {
		t.Errorf("a plain job beside a 4-slot judged one on 4 slots: %s", in.State)
	}
	if snap := s.Snapshot(0); snap.Nodes[0].Used != 4 || snap.Running[0].Slots != 4 {
		t.Errorf("snapshot: %+v %+v", snap.Nodes[0], snap.Running)
	}
	// The queue counts slots: 1 queued + 4 more is past Queue 4.
	if _, err := s.Submit(judgedProg(4), false); !errors.Is(err, ErrBusy) {
		t.Errorf("a second judged job past the queue's slots: %v", err)
	}
	if _, err := s.Submit(judgedProg(3), false); err != nil {
		t.Errorf("3 more slots fit the queue: %v", err)
	}
	local.release <- nil
	if e := lastEvent(t, judged); e.Err != nil {
		t.Fatal(e.Err)
	}
	<-local.started // plain, then the 3-slot one, side by side
	<-local.started
	local.release <- nil
	local.release <- nil
	wait(t, plain)

	// A node with 2 slots runs a 4-slot job alone.
	local = newGate("small")
	small, _ := New(func() Config { c := DefaultConfig(); c.MaxPrograms = 2; c.Queue = 0; return c }(), local, NewMemJournal(10))
	defer small.Close()
	big, err := small.Submit(judgedProg(4), false)
	if err != nil {
		t.Fatalf("a judged job bigger than the only node: %v", err)
	}
	<-local.started
	if _, err := small.Submit(prog("beside"), false); !errors.Is(err, ErrBusy) {
		t.Errorf("beside an oversize job with no queue: %v", err)
	}
	local.release <- nil
	wait(t, big)
}

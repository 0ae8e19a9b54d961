package scheduler

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"runbox/sandbox"
	"runbox/sandbox/sandboxtest"
)

func prog(src string) sandbox.Spec { return sandboxtest.Program("python", src) }

func newSched(t *testing.T, mod func(*Config), j Journal) (*Scheduler, *sandboxtest.Fake) {
	t.Helper()
	cfg := DefaultConfig()
	if mod != nil {
		mod(&cfg)
	}
	if j == nil {
		j = NewMemJournal(100)
	}
	fake := &sandboxtest.Fake{Node: "x"}
	s, err := New(cfg, fake, j)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, fake
}

// wait collects a job's events until it is done.
func wait(t *testing.T, j *Job) []Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var all []Event
	for {
		evs, done, err := j.Events(ctx, len(all))
		if err != nil {
			t.Fatalf("job %s: %v after %d events", j.ID, err, len(all))
		}
		all = append(all, evs...)
		if done {
			return all
		}
	}
}

func TestRunsAndStreams(t *testing.T) {
	t.Parallel()
	s, _ := newSched(t, nil, nil)
	j, err := s.Submit(prog("out hello\nerr warn\nexit 3"), false)
	if err != nil {
		t.Fatal(err)
	}
	evs := wait(t, j)
	if evs[0].Kind != EventStarted || evs[0].Node != "master" {
		t.Errorf("first event %+v", evs[0])
	}
	last := evs[len(evs)-1]
	if last.Err != nil || last.Result.Status != sandbox.StatusRuntimeError || last.Result.ExitCode != 3 || string(last.Result.Stdout) != "hello\n" {
		t.Fatalf("done event %+v", last)
	}
	if last.Result.Node != "master" || last.Result.Attempts != 1 {
		t.Errorf("node %q attempts %d", last.Result.Node, last.Result.Attempts)
	}
	var out string
	for _, e := range evs {
		if e.Kind == EventOutput && e.Chunk.Stream == sandbox.Stdout {
			out += string(e.Chunk.Data)
		}
	}
	if out != "hello\n" {
		t.Errorf("live stdout %q", out)
	}
}

func TestBusyWhenSlotsAndQueueFull(t *testing.T) {
	t.Parallel()
	s, _ := newSched(t, func(c *Config) { c.MaxPrograms = 1; c.Queue = 0 }, nil)
	first, err := s.Submit(prog("sleep 300ms\nout first"), false)
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Submit(prog("out second"), false)
	if !errors.Is(err, ErrBusy) {
		t.Fatalf("second submit: err = %v, want ErrBusy", err)
	}
	if last := wait(t, first); last[len(last)-1].Result.Status != sandbox.StatusOK {
		t.Error("first job failed")
	}
	// The slot is free again.
	if _, err := s.Submit(prog("out third"), false); err != nil {
		t.Errorf("after the first finished: %v", err)
	}
	if s.Snapshot(0).Totals.Rejected != 1 {
		t.Error("rejection not counted")
	}
}

func TestQueuePositions(t *testing.T) {
	t.Parallel()
	s, fake := newSched(t, func(c *Config) { c.MaxPrograms = 1; c.Queue = 3 }, nil)
	a, _ := s.Submit(prog("sleep 200ms"), false)
	b, _ := s.Submit(prog("out b"), false)
	c, _ := s.Submit(prog("out c"), false)
	evs := wait(t, c)
	var positions []int
	for _, e := range evs {
		if e.Kind == EventQueued {
			positions = append(positions, e.Position)
		}
	}
	if len(positions) != 2 || positions[0] != 2 || positions[1] != 1 {
		t.Errorf("c saw positions %v, want [2 1]", positions)
	}
	wait(t, a)
	wait(t, b)
	if _, peak := fake.Runs(); peak != 1 {
		t.Errorf("%d programs ran at once, max-programs is 1", peak)
	}
}

func TestCancelQueuedAndRunning(t *testing.T) {
	t.Parallel()
	s, _ := newSched(t, func(c *Config) { c.MaxPrograms = 1; c.Queue = 5 }, nil)
	running, _ := s.Submit(prog("sleep 30s"), false)
	queued, _ := s.Submit(prog("out never"), false)
	if err := s.Cancel(queued.ID); err != nil {
		t.Fatal(err)
	}
	if evs := wait(t, queued); !errors.Is(evs[len(evs)-1].Err, ErrCancelled) {
		t.Errorf("queued job ended with %+v", evs[len(evs)-1])
	}
	if err := s.Cancel(running.ID); err != nil {
		t.Fatal(err)
	}
	if evs := wait(t, running); !errors.Is(evs[len(evs)-1].Err, ErrCancelled) {
		t.Errorf("running job ended with %+v", evs[len(evs)-1])
	}
	if snap := s.Snapshot(10); len(snap.Running) != 0 || len(snap.Queued) != 0 || snap.Nodes[0].Running != 0 {
		t.Errorf("snapshot after cancels: %+v", snap)
	}
}

func TestBadRequestsAreRefused(t *testing.T) {
	t.Parallel()
	s, _ := newSched(t, nil, nil)
	if _, err := s.Submit(sandboxtest.Program("cobol", "x"), false); !errors.Is(err, sandbox.ErrUnknownLanguage) {
		t.Errorf("unknown language: %v", err)
	}
	if _, err := s.Submit(prog(""), false); !errors.Is(err, sandbox.ErrInvalidRequest) {
		t.Errorf("empty program: %v", err)
	}
	sp := prog("out x")
	sp.Limits.Memory = 100 * sandbox.GiB
	if _, err := s.Submit(sp, false); !errors.Is(err, sandbox.ErrInvalidRequest) {
		t.Errorf("limits above max: %v", err)
	}
}

func TestInteractiveStdin(t *testing.T) {
	t.Parallel()
	s, _ := newSched(t, nil, nil)
	j, _ := s.Submit(prog("cat"), true)
	ctx := context.Background()
	j.SendStdin(ctx, []byte("a"))
	j.SendStdin(ctx, []byte("b"))
	j.CloseStdin()
	j.SendStdin(ctx, []byte("after close is dropped"))
	evs := wait(t, j)
	if got := string(evs[len(evs)-1].Result.Stdout); got != "ab" {
		t.Errorf("stdout %q", got)
	}
}

func TestRestartRequeuesPendingAndServesFinished(t *testing.T) {
	t.Parallel()
	journal := NewMemJournal(100)
	done := Record{ID: "done1", Spec: prog("out x"), Done: true, Submitted: time.Now(), Attempts: 1,
		Result: &sandbox.Result{Status: sandbox.StatusOK, Stdout: []byte("x\n"), Node: "old"}}
	journal.Accept(t.Context(), done)
	journal.Finish(t.Context(), done)
	journal.Accept(t.Context(), Record{ID: "pend1", Spec: prog("out again"), Submitted: time.Now()})

	s, _ := newSched(t, nil, journal)
	j, err := s.Get("pend1")
	if err != nil {
		t.Fatal(err)
	}
	evs := wait(t, j)
	if r := evs[len(evs)-1].Result; r == nil || string(r.Stdout) != "again\n" || r.Attempts != 1 {
		t.Errorf("pending job after restart: %+v", evs[len(evs)-1])
	}
	old, err := s.Get("done1")
	if err != nil {
		t.Fatal(err)
	}
	evs = wait(t, old)
	if len(evs) != 2 || string(evs[0].Chunk.Data) != "x\n" || evs[1].Result.Node != "old" {
		t.Errorf("finished job from journal: %+v", evs)
	}
	if _, err := s.Get("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown id: %v", err)
	}
}

func TestCodesRoundTrip(t *testing.T) {
	t.Parallel()
	for _, c := range codes {
		err := ErrorOf(CodeOf(c.err), "msg")
		if !errors.Is(err, c.err) || err.Error() != "msg" {
			t.Errorf("%s: round trip gave %v", c.code, err)
		}
	}
	if err := ErrorOf("from_the_future", "m"); !errors.Is(err, ErrInternal) {
		t.Errorf("unknown code: %v", err)
	}
}

type recObserver struct {
	mu       sync.Mutex
	finished []Info
	rejected int
	nodes    []NodeEvent
}

func (o *recObserver) JobFinished(info Info, res *sandbox.Result, err error, wait time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.finished = append(o.finished, info)
}
func (o *recObserver) JobRejected() { o.mu.Lock(); o.rejected++; o.mu.Unlock() }
func (o *recObserver) NodeChanged(e NodeEvent) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.nodes = append(o.nodes, e)
}

func TestObserver(t *testing.T) {
	t.Parallel()
	obs := &recObserver{}
	s, _ := newSched(t, func(c *Config) { c.MaxPrograms = 1; c.Queue = 0; c.Observer = obs; c.HeartbeatTimeout = time.Hour }, nil)
	j, _ := s.Submit(prog("sleep 100ms\nout x"), false)
	s.Submit(prog("out y"), false) // busy
	wait(t, j)
	h, _ := s.AddNode(NodeSpec{Name: "s1", Capacity: 1}, &sandboxtest.Fake{}, nil)
	h.Lost(errors.New("gone"))
	// The observer hears of a job just after its client does.
	deadline := time.Now().Add(10 * time.Second)
	for {
		obs.mu.Lock()
		n := len(obs.finished)
		obs.mu.Unlock()
		if n > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if len(obs.finished) != 1 || obs.finished[0].Status != sandbox.StatusOK || obs.rejected != 1 {
		t.Errorf("finished %+v rejected %d", obs.finished, obs.rejected)
	}
	if len(obs.nodes) != 2 || obs.nodes[0].Kind != "joined" || obs.nodes[1].Kind != "lost" {
		t.Errorf("node events %+v", obs.nodes)
	}
}

package scheduler

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"runbox/sandbox"
	"runbox/sandbox/sandboxtest"
)

// gate is a Runner whose runs block until released or cancelled; it records who ran.
type gate struct {
	name    string
	mu      sync.Mutex
	started chan string
	release chan error
}

func newGate(name string) *gate {
	return &gate{name: name, started: make(chan string, 100), release: make(chan error, 100)}
}

func (g *gate) Run(ctx context.Context, spec sandbox.Spec, _ *sandbox.Streams) (sandbox.Result, error) {
	g.started <- string(spec.Files[0].Content)
	select {
	case err := <-g.release:
		if err != nil {
			return sandbox.Result{ExitCode: -1}, err
		}
		return sandbox.Result{Status: sandbox.StatusOK, Stdout: []byte(g.name)}, nil
	case <-ctx.Done():
		return sandbox.Result{ExitCode: -1}, ctx.Err()
	}
}

func TestDelegatesPastMaxPrograms(t *testing.T) {
	t.Parallel()
	local := newGate("master")
	s, err := New(func() Config { c := DefaultConfig(); c.MaxPrograms = 1; c.HeartbeatTimeout = time.Hour; return c }(), local, NewMemJournal(100))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	slave := newGate("s1")
	if _, err := s.AddNode(NodeSpec{Name: "s1", Capacity: 2}, slave, nil); err != nil {
		t.Fatal(err)
	}
	a, _ := s.Submit(prog("a"), false)
	<-local.started
	b, _ := s.Submit(prog("b"), false)
	<-slave.started
	c, _ := s.Submit(prog("c"), false)
	<-slave.started
	d, _ := s.Submit(prog("d"), false) // everything full: queued
	if in := d.Info(); in.State != StateQueued {
		t.Errorf("d is %s, want queued", in.State)
	}
	local.release <- nil
	<-local.started // d takes the master's freed slot
	local.release <- nil
	slave.release <- nil
	slave.release <- nil
	for j, node := range map[*Job]string{a: "master", b: "s1", c: "s1", d: "master"} {
		evs := wait(t, j)
		if r := evs[len(evs)-1].Result; r == nil || r.Node != node {
			t.Errorf("job %s ran on %+v, want %s", j.Spec.Files[0].Content, evs[len(evs)-1], node)
		}
	}
}

func TestCPUThresholdDelegates(t *testing.T) {
	t.Parallel()
	s, _ := New(func() Config { c := DefaultConfig(); c.MaxPrograms = 4; c.CPUThreshold = 50; return c }(), &sandboxtest.Fake{}, NewMemJournal(100))
	defer s.Close()
	h, _ := s.AddNode(NodeSpec{Name: "s1", Capacity: 1}, &sandboxtest.Fake{}, nil)
	h.Heartbeat(Load{CPU: 5})
	s.ReportLoad(Load{CPU: 90})
	j, _ := s.Submit(prog("out x"), false)
	if evs := wait(t, j); evs[len(evs)-1].Result.Node != "s1" {
		t.Errorf("ran on %s with the master at 90%% CPU", evs[len(evs)-1].Result.Node)
	}
	s.ReportLoad(Load{CPU: 10})
	j, _ = s.Submit(prog("out x"), false)
	if evs := wait(t, j); evs[len(evs)-1].Result.Node != "master" {
		t.Errorf("ran on %s with the master at 10%% CPU", evs[len(evs)-1].Result.Node)
	}
}

func TestLostNodeJobsRunElsewhere(t *testing.T) {
	t.Parallel()
	local := newGate("master")
	s, _ := New(func() Config { c := DefaultConfig(); c.MaxPrograms = 1; c.HeartbeatTimeout = time.Hour; return c }(), local, NewMemJournal(100))
	defer s.Close()
	dead := newGate("s1")
	lost := make(chan error, 1)
	h, _ := s.AddNode(NodeSpec{Name: "s1", Capacity: 1}, dead, func(err error) { lost <- err })
	first, _ := s.Submit(prog("first"), false)
	<-local.started
	second, _ := s.Submit(prog("second"), false)
	<-dead.started
	h.Lost(errors.New("connection closed"))
	<-lost
	// The stale dispatch finishing late must not count.
	dead.release <- nil
	local.release <- nil
	if evs := wait(t, first); evs[len(evs)-1].Result.Node != "master" {
		t.Fatal("first job failed")
	}
	<-local.started // second runs again, on the master
	local.release <- nil
	evs := wait(t, second)
	r := evs[len(evs)-1].Result
	if r == nil || r.Node != "master" || r.Attempts != 2 || string(r.Stdout) != "master" {
		t.Errorf("second job: %+v", evs[len(evs)-1])
	}
	var started []string
	for _, e := range evs {
		if e.Kind == EventStarted {
			started = append(started, e.Node)
		}
	}
	if fmt.Sprint(started) != "[s1 master]" {
		t.Errorf("started events %v", started)
	}
	if snap := s.Snapshot(0); snap.Totals.Retried != 1 || len(snap.Nodes) != 1 {
		t.Errorf("snapshot %+v", snap)
	}
}

func TestJobThatKillsEveryNodeStops(t *testing.T) {
	t.Parallel()
	s, _ := New(func() Config {
		c := DefaultConfig()
		c.MaxPrograms = 0
		c.MaxAttempts = 3
		c.HeartbeatTimeout = time.Hour
		return c
	}(), nil, NewMemJournal(100))
	defer s.Close()
	killer := lostRunner{}
	for i := 0; i < 5; i++ {
		s.AddNode(NodeSpec{Name: fmt.Sprintf("s%d", i), Capacity: 1}, killer, nil)
	}
	j, _ := s.Submit(prog("kill"), false)
	evs := wait(t, j)
	if err := evs[len(evs)-1].Err; !errors.Is(err, ErrCrashedNode) {
		t.Fatalf("ended with %v, want ErrCrashedNode", err)
	}
	if in := j.Info(); in.Attempts != 3 {
		t.Errorf("%d attempts, want 3", in.Attempts)
	}
	if CodeOf(ErrCrashedNode) != "crashed_node" {
		t.Error("code")
	}
}

type lostRunner struct{}

func (lostRunner) Run(context.Context, sandbox.Spec, *sandbox.Streams) (sandbox.Result, error) {
	return sandbox.Result{ExitCode: -1}, fmt.Errorf("%w: stream reset", ErrNodeLost)
}

// TestHeartbeatTimeout runs in a synctest bubble: the clock is fake, so the timing is exact.
func TestHeartbeatTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.MaxPrograms = 0
		cfg.HeartbeatTimeout = 3 * time.Second
		s, _ := New(cfg, nil, NewMemJournal(10))
		defer s.Close()
		hung := newGate("hung")
		lost := make(chan error, 1)
		h, _ := s.AddNode(NodeSpec{Name: "hung", Capacity: 1}, hung, func(err error) { lost <- err })
		alive := newGate("alive")
		h2, _ := s.AddNode(NodeSpec{Name: "alive", Capacity: 0}, alive, nil) // no room yet
		j, _ := s.Submit(prog("job"), false)
		<-hung.started
		// Both beat for a while; then "hung" stops (SIGSTOP), "alive" goes on.
		for i := 0; i < 5; i++ {
			time.Sleep(time.Second)
			h.Heartbeat(Load{})
			h2.Heartbeat(Load{})
		}
		h2.SetCapacity(1)
		lastBeat := time.Now()
		go func() {
			for {
				select {
				case <-lost:
					return
				case <-time.After(time.Second):
					h2.Heartbeat(Load{})
				}
			}
		}()
		<-alive.started
		detected := time.Since(lastBeat)
		if detected <= cfg.HeartbeatTimeout || detected > cfg.HeartbeatTimeout+cfg.HeartbeatTimeout/4+time.Millisecond {
			t.Errorf("hung node detected %v after its last heartbeat; timeout %v, check period %v", detected, cfg.HeartbeatTimeout, cfg.HeartbeatTimeout/4)
		}
		alive.release <- nil
		evs := wait(t, j)
		if r := evs[len(evs)-1].Result; r == nil || r.Node != "alive" || r.Attempts != 2 {
			t.Errorf("job after hang: %+v", evs[len(evs)-1])
		}
	})
}

// TestNameTaken: a second node under a live node's name is refused (registering under its
// name must not evict it, nor take its jobs); once that node is lost the name is free.
func TestNameTaken(t *testing.T) {
	t.Parallel()
	s, _ := New(func() Config { c := DefaultConfig(); c.MaxPrograms = 0; c.HeartbeatTimeout = time.Hour; return c }(), nil, NewMemJournal(10))
	defer s.Close()
	first := newGate("s1")
	lost := make(chan error, 1)
	h, err := s.AddNode(NodeSpec{Name: "s1", Capacity: 1}, first, func(err error) { lost <- err })
	if err != nil {
		t.Fatal(err)
	}
	j, _ := s.Submit(prog("job"), false)
	<-first.started
	_, err = s.AddNode(NodeSpec{Name: "s1", Capacity: 1}, &sandboxtest.Fake{}, nil)
	if !errors.Is(err, ErrNameTaken) || CodeOf(err) != "name_taken" {
		t.Fatalf("second s1: %v (code %s), want ErrNameTaken", err, CodeOf(err))
	}
	select {
	case err := <-lost:
		t.Fatalf("the live node was evicted: %v", err)
	default:
	}
	if snap := s.Snapshot(0); len(snap.Nodes) != 2 || snap.Nodes[1].Running != 1 {
		t.Errorf("after the refused join: %+v", snap.Nodes)
	}
	first.release <- nil
	if evs := wait(t, j); evs[len(evs)-1].Result == nil || evs[len(evs)-1].Result.Node != "s1" {
		t.Errorf("the live node's job: %+v", evs[len(evs)-1])
	}

	h.Lost(errors.New("connection closed"))
	if _, err := s.AddNode(NodeSpec{Name: "s1", Capacity: 1}, &sandboxtest.Fake{}, nil); err != nil {
		t.Errorf("s1 again after the first was lost: %v", err)
	}
	if n := len(s.Snapshot(0).Nodes); n != 2 {
		t.Errorf("%d nodes, want master + one s1", n)
	}
	if _, err := s.AddNode(NodeSpec{Name: "master", Capacity: 1}, &sandboxtest.Fake{}, nil); !errors.Is(err, sandbox.ErrInvalidRequest) {
		t.Errorf("a slave named like the master: %v", err)
	}
}

func TestLanguageAwarePlacement(t *testing.T) {
	t.Parallel()
	s, _ := New(func() Config { c := DefaultConfig(); c.MaxPrograms = 0; c.HeartbeatTimeout = time.Hour; return c }(), nil, NewMemJournal(10))
	defer s.Close()
	s.AddNode(NodeSpec{Name: "py", Capacity: 1, Languages: map[string]string{"python": "v1"}}, &sandboxtest.Fake{Node: "py"}, nil)
	s.AddNode(NodeSpec{Name: "c", Capacity: 1, Languages: map[string]string{"c": "v1"}}, &sandboxtest.Fake{Node: "c"}, nil)
	j, _ := s.Submit(sandboxtest.Program("c", "out x"), false)
	if evs := wait(t, j); evs[len(evs)-1].Result.Node != "c" {
		t.Errorf("c job ran on %s", evs[len(evs)-1].Result.Node)
	}
}

// BenchmarkPlace1000: placement among 1,000 slaves (the goal: p99 under 100 µs).
func BenchmarkPlace1000(b *testing.B) {
	cands := make([]Candidate, 1001)
	cands[0] = Candidate{Local: true, Running: 2, Capacity: 2, Eligible: true}
	for i := 1; i < len(cands); i++ {
		cands[i] = Candidate{Running: i % 4, Capacity: 4, CPU: float64(i % 97), Eligible: i%10 != 0}
	}
	b.ResetTimer()
	for b.Loop() {
		if Place(cands, 1, 80) < 0 {
			b.Fatal("no place")
		}
	}
}

// BenchmarkDispatch1000Slaves: submit-to-dispatch through the whole scheduler with 1,000
// fake slaves registered; reports placement latency percentiles.
func BenchmarkDispatch1000Slaves(b *testing.B) {
	cfg := DefaultConfig()
	cfg.MaxPrograms = 0
	cfg.HeartbeatTimeout = time.Hour
	cfg.Queue = 1 << 20
	s, _ := New(cfg, nil, NewMemJournal(1000))
	defer s.Close()
	for i := 0; i < 1000; i++ {
		s.AddNode(NodeSpec{Name: fmt.Sprintf("s%04d", i), Capacity: 4}, &sandboxtest.Fake{}, nil)
	}
	spec := prog("out x")
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for b.Loop() {
		j, err := s.Submit(spec, false)
		if err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(j.Submitted))
		<-j.Done()
	}
	b.StopTimer()
	reportPercentiles(b, lat)
}

// BenchmarkHeartbeats1000: the cost of 1,000 slaves beating once a second, as a share of
// one core (ns per heartbeat × 1000 / 1e9).
func BenchmarkHeartbeats1000(b *testing.B) {
	cfg := DefaultConfig()
	cfg.HeartbeatTimeout = time.Hour
	s, _ := New(cfg, &sandboxtest.Fake{}, NewMemJournal(10))
	defer s.Close()
	var hs []*NodeHandle
	for i := 0; i < 1000; i++ {
		h, _ := s.AddNode(NodeSpec{Name: fmt.Sprintf("s%04d", i), Capacity: 4}, &sandboxtest.Fake{}, nil)
		hs = append(hs, h)
	}
	i := 0
	b.ResetTimer()
	for b.Loop() {
		hs[i%len(hs)].Heartbeat(Load{CPU: float64(i % 100)})
		i++
	}
	b.StopTimer()
	perBeat := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	b.ReportMetric(perBeat*1000/1e9*100, "%core-at-1000-slaves")
}

func reportPercentiles(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	sorted := slices.Sorted(slices.Values(lat))
	p := func(q float64) float64 { return float64(sorted[int(q*float64(len(sorted)-1))].Microseconds()) }
	b.ReportMetric(p(0.5), "p50-µs")
	b.ReportMetric(p(0.99), "p99-µs")
}

// TestBrokenNodeIsNotRetried: a slave whose connection broke fails every dispatch at once;
// the first failure takes it out, so the job runs elsewhere instead of burning its
// attempts on the dead node.
func TestBrokenNodeIsNotRetried(t *testing.T) {
	t.Parallel()
	local := newGate("master")
	s, _ := New(func() Config { c := DefaultConfig(); c.MaxPrograms = 1; c.HeartbeatTimeout = time.Hour; return c }(), local, NewMemJournal(100))
	defer s.Close()
	lost := make(chan error, 1)
	s.AddNode(NodeSpec{Name: "broken", Capacity: 4}, lostRunner{}, func(err error) { lost <- err })
	first, _ := s.Submit(prog("first"), false) // takes the master's slot
	<-local.started
	second, _ := s.Submit(prog("second"), false) // goes to "broken", which fails at once
	if err := <-lost; err == nil {
		t.Fatal("the broken node was not declared lost")
	}
	local.release <- nil
	<-local.started // second, on the master now
	local.release <- nil
	wait(t, first)
	evs := wait(t, second)
	if r := evs[len(evs)-1].Result; r == nil || r.Node != "master" || r.Attempts != 2 {
		t.Errorf("second job: %+v", evs[len(evs)-1])
	}
}

// TestNodeEventKinds: the events the scheduler notes carry the kinds NodeEventKinds lists
// (what metrics start series for), and the list has each kind once.
func TestNodeEventKinds(t *testing.T) {
	t.Parallel()
	kinds := NodeEventKinds()
	if got := slices.Compact(slices.Sorted(slices.Values(kinds))); len(got) != len(kinds) {
		t.Errorf("NodeEventKinds repeats a kind: %q", kinds)
	}
	s, _ := newSched(t, func(c *Config) { c.HeartbeatTimeout = time.Hour }, nil)
	a, err := s.AddNode(NodeSpec{Name: "a", Capacity: 1}, &sandboxtest.Fake{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	a.Drain()
	a.Lost(errors.New("stopped after draining"))
	b, err := s.AddNode(NodeSpec{Name: "b", Capacity: 1}, &sandboxtest.Fake{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	b.Lost(errors.New("connection closed"))
	s.noteExternal("c", NodeEventStarting, "queue")
	var got []NodeEventKind
	for _, e := range s.Snapshot(0).NodeEvents {
		got = append(got, e.Kind)
		if !slices.Contains(kinds, e.Kind) {
			t.Errorf("event %+v: kind not in NodeEventKinds", e)
		}
	}
	want := []NodeEventKind{NodeEventJoined, NodeEventDraining, NodeEventLeft, NodeEventJoined, NodeEventLost, NodeEventStarting}
	if !slices.Equal(got, want) {
		t.Errorf("node events %q, want %q", got, want)
	}
}

// tracer answers with a Trace of its own, as a Docker runner does.
type tracer struct{ *gate }

func (t tracer) Run(ctx context.Context, spec sandbox.Spec, st *sandbox.Streams) (sandbox.Result, error) {
	res, err := t.gate.Run(ctx, spec, st)
	res.Trace = &sandbox.Trace{Run: 7 * time.Millisecond}
	return res, err
}

// TestTraceQueue: a job's result says how long it waited between its admission and its
// dispatch to the node that answered (Trace.Queue); a node's own Trace keeps its phases,
// and a node that sent none gets one.
func TestTraceQueue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		local := newGate("master")
		s, err := New(func() Config { c := DefaultConfig(); c.MaxPrograms = 1; c.HeartbeatTimeout = time.Hour; return c }(), local, NewMemJournal(10))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		first, _ := s.Submit(prog("first"), false)
		<-local.started
		second, _ := s.Submit(prog("second"), false) // waits for the master's one slot
		time.Sleep(5 * time.Second)
		local.release <- nil
		if e := lastEvent(t, first); e.Result == nil || e.Result.Trace == nil || e.Result.Trace.Queue != 0 {
			t.Errorf("first job, dispatched at once: %+v", e)
		}
		<-local.started
		time.Sleep(2 * time.Second) // running is not waiting
		local.release <- nil
		if e := lastEvent(t, second); e.Result == nil || e.Result.Trace == nil || e.Result.Trace.Queue != 5*time.Second {
			t.Errorf("second job, queued 5 s: %+v", e)
		}

		// A retried job waited through its first attempt; the trace of the node that
		// answered keeps its phases.
		dies := newGate("dies")
		h, err := s.AddNode(NodeSpec{Name: "dies", Capacity: 1}, dies, nil)
		if err != nil {
			t.Fatal(err)
		}
		busy, _ := s.Submit(prog("busy"), false)
		<-local.started
		retried, _ := s.Submit(prog("retried"), false)
		<-dies.started
		time.Sleep(3 * time.Second)
		answers := tracer{newGate("answers")}
		if _, err := s.AddNode(NodeSpec{Name: "answers", Capacity: 1}, answers, nil); err != nil {
			t.Fatal(err)
		}
		h.Lost(errors.New("connection closed"))
		<-answers.started
		answers.release <- nil
		e := lastEvent(t, retried)
		if e.Result == nil || e.Result.Node != "answers" || e.Result.Attempts != 2 {
			t.Fatalf("retried job: %+v", e)
		}
		if tr := e.Result.Trace; tr == nil || tr.Queue != 3*time.Second || tr.Run != 7*time.Millisecond {
			t.Errorf("retried job's trace %+v: want the queue phase of 3 s and the node's run phase", tr)
		}
		local.release <- nil
		lastEvent(t, busy)
	})
}

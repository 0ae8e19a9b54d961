package scheduler

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"runbox/sandbox/sandboxtest"
)

func TestDecide(t *testing.T) {
	t.Parallel()
	p := DefaultScalePolicy()
	p.MaxSlaves, p.SlaveCapacity = 3, 2
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	reg := func(name string, running int, idleSince time.Time) ScaleSlave {
		return ScaleSlave{Name: name, Registered: true, Running: running, IdleSince: idleSince, Started: t0}
	}
	for _, c := range []struct {
		name string
		st   ScaleState
		want ScaleDecision
	}{
		{"calm: nothing", ScaleState{Now: at(time.Hour)}, ScaleDecision{}},
		{"blip: pressure too recent", ScaleState{Now: at(time.Hour), Queued: 5, PressureSince: at(time.Hour - 100*time.Millisecond)}, ScaleDecision{}},
		{"sustained queue: start for it", ScaleState{Now: at(time.Hour), Queued: 3, PressureSince: at(0)}, ScaleDecision{Start: 2}},
		{"capped at max", ScaleState{Now: at(time.Hour), Queued: 50, PressureSince: at(0)}, ScaleDecision{Start: 3}},
		{"counts the ones starting", ScaleState{Now: at(time.Hour), Queued: 3, PressureSince: at(0),
			Slaves: []ScaleSlave{{Name: "a", Started: at(time.Hour - time.Second)}}}, ScaleDecision{Start: 1}},
		{"up cooldown", ScaleState{Now: at(time.Hour), Queued: 3, PressureSince: at(0), LastUp: at(time.Hour - time.Second)}, ScaleDecision{}},
		{"cpu pressure alone: one", ScaleState{Now: at(time.Hour), MasterCPU: 95, MasterRunning: 2, PressureSince: at(0)}, ScaleDecision{Start: 1}},
		{"cpu of others (master idle): nothing", ScaleState{Now: at(time.Hour), MasterCPU: 95, PressureSince: at(0)}, ScaleDecision{}},
		{"cpu of others does not keep idle slaves", ScaleState{Now: at(time.Hour), MasterCPU: 99, Slaves: []ScaleSlave{reg("a", 0, at(0))}},
			ScaleDecision{Drain: []string{"a"}}},
		{"busy master's cpu keeps them", ScaleState{Now: at(time.Hour), MasterCPU: 99, MasterRunning: 1, PressureSince: at(time.Hour),
			Slaves: []ScaleSlave{reg("a", 0, at(0))}}, ScaleDecision{}},
		{"never registered: stopped", ScaleState{Now: at(time.Hour), Slaves: []ScaleSlave{{Name: "ghost", Started: at(0)}}}, ScaleDecision{Stop: []string{"ghost"}}},
		{"idle long enough: drain oldest idle", ScaleState{Now: at(time.Hour), Slaves: []ScaleSlave{
			reg("a", 0, at(time.Hour-time.Minute)), reg("b", 0, at(time.Hour-2*time.Minute)), reg("c", 1, time.Time{})}},
			ScaleDecision{Drain: []string{"b", "a"}}},
		{"idle but not long", ScaleState{Now: at(time.Hour), Slaves: []ScaleSlave{reg("a", 0, at(time.Hour-time.Second))}}, ScaleDecision{}},
		{"down cooldown after a scale-up", ScaleState{Now: at(time.Hour), LastUp: at(time.Hour - 10*time.Second),
			Slaves: []ScaleSlave{reg("a", 0, at(0))}}, ScaleDecision{}},
		{"no scale-down under pressure", ScaleState{Now: at(time.Hour), Queued: 1, PressureSince: at(time.Hour),
			Slaves: []ScaleSlave{reg("a", 2, time.Time{}), reg("b", 0, at(0))}}, ScaleDecision{}},
		{"drained and idle: stop", ScaleState{Now: at(time.Hour), Slaves: []ScaleSlave{{Name: "d", Registered: true, Draining: true}}}, ScaleDecision{Stop: []string{"d"}}},
		{"draining with a job: wait", ScaleState{Now: at(time.Hour), Slaves: []ScaleSlave{{Name: "d", Registered: true, Draining: true, Running: 1}}}, ScaleDecision{}},
	} {
		got := Decide(c.st, p)
		got.Why = ""
		if got.Start != c.want.Start || !slices.Equal(got.Drain, c.want.Drain) || !slices.Equal(got.Stop, c.want.Stop) {
			t.Errorf("%s: got %+v, want %+v", c.name, got, c.want)
		}
	}
	p.MinSlaves = 2
	if d := Decide(ScaleState{Now: at(time.Hour), Slaves: []ScaleSlave{reg("a", 0, at(0)), reg("b", 0, at(0))}}, p); len(d.Drain) != 0 {
		t.Errorf("drained below the minimum: %+v", d)
	}
	if d := Decide(ScaleState{Now: at(time.Hour)}, p); d.Start != 2 {
		t.Errorf("below the minimum: %+v", d)
	}
}

// fakeProv "starts" slaves as in-process nodes of the scheduler.
type fakeProv struct {
	s       *Scheduler
	mu      sync.Mutex
	handles map[string]*NodeHandle
	starts  []string
	stops   []string
}

func (f *fakeProv) Start(_ context.Context, name string) error {
	h, err := f.s.AddNode(NodeSpec{Name: name, Capacity: 2}, &sandboxtest.Fake{}, nil)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.handles[name] = h
	f.starts = append(f.starts, name)
	return err
}

func (f *fakeProv) Stop(_ context.Context, name string) error {
	f.mu.Lock()
	h := f.handles[name]
	delete(f.handles, name)
	f.stops = append(f.stops, name)
	f.mu.Unlock()
	if h != nil {
		h.Lost(fmt.Errorf("stopped"))
	}
	return nil
}

func (f *fakeProv) List(context.Context) ([]string, error) { return nil, nil }

// oneSlotScheduler is a scheduler whose master runs one program at a time on the Fake,
// closed when the test ends.
func oneSlotScheduler(t *testing.T) *Scheduler {
	cfg := DefaultConfig()
	cfg.MaxPrograms = 1
	cfg.HeartbeatTimeout = time.Hour
	s, err := New(cfg, &sandboxtest.Fake{}, NewMemJournal(100))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestAutoscalerScalesOutAndIn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := oneSlotScheduler(t)
		prov := &fakeProv{s: s, handles: map[string]*NodeHandle{}}
		p := DefaultScalePolicy()
		a, err := NewAutoscaler(s, prov, p, "auto", nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { a.Run(ctx, 250*time.Millisecond); close(done) }()

		var jobs []*Job
		for i := 0; i < 6; i++ {
			j, err := s.Submit(prog("sleep 2s\nout x"), false)
			if err != nil {
				t.Fatal(err)
			}
			jobs = append(jobs, j)
		}
		for _, j := range jobs {
			evs := wait(t, j)
			if evs[len(evs)-1].Result == nil {
				t.Fatalf("job failed: %+v", evs[len(evs)-1])
			}
		}
		prov.mu.Lock()
		started := len(prov.starts)
		prov.mu.Unlock()
		if started == 0 {
			t.Fatal("no slave started under load")
		}
		time.Sleep(p.DownCooldown + p.IdleAfter + 2*time.Second)
		synctest.Wait()
		prov.mu.Lock()
		stops := len(prov.stops)
		prov.mu.Unlock()
		if stops != started {
			t.Errorf("%d started, %d stopped after the load ended", started, stops)
		}
		if n := len(s.Snapshot(0).Nodes); n != 1 {
			t.Errorf("%d nodes left, want the master alone", n)
		}
		cancel()
		<-done
	})
}

// preparingProv is a fakeProv that is also a Preparer.
type preparingProv struct {
	fakeProv
	prepared  []string
	discarded int
}

func (p *preparingProv) Prepare(_ context.Context, name string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.prepared = append(p.prepared, name)
	return nil
}

func (p *preparingProv) Discard(context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.discarded++
	return nil
}

// The autoscaler has a Preparer get its next slave ready before any load, the following
// one after each start, and discards what is prepared when it stops.
func TestAutoscalerPreparesTheNextSlave(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := oneSlotScheduler(t)
		prov := &preparingProv{fakeProv: fakeProv{s: s, handles: map[string]*NodeHandle{}}}
		p := DefaultScalePolicy()
		p.MaxSlaves = 1
		a, err := NewAutoscaler(s, prov, p, "auto", nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { a.Run(ctx, 100*time.Millisecond); close(done) }()
		time.Sleep(time.Second)
		synctest.Wait()
		prov.mu.Lock()
		if !slices.Equal(prov.prepared, []string{"auto-1"}) {
			t.Errorf("before any load, prepared %q, want auto-1", prov.prepared)
		}
		prov.mu.Unlock()

		var jobs []*Job
		for range 3 {
			j, err := s.Submit(prog("sleep 2s\nout x"), false)
			if err != nil {
				t.Fatal(err)
			}
			jobs = append(jobs, j)
		}
		for _, j := range jobs {
			wait(t, j)
		}
		prov.mu.Lock()
		if !slices.Equal(prov.starts, []string{"auto-1"}) || !slices.Equal(prov.prepared, []string{"auto-1"}) {
			t.Errorf("at the most slaves: started %q, prepared %q (nothing more to prepare)", prov.starts, prov.prepared)
		}
		prov.mu.Unlock()
		time.Sleep(p.DownCooldown + p.IdleAfter + 2*time.Second) // auto-1 idles and goes
		synctest.Wait()
		prov.mu.Lock()
		if !slices.Equal(prov.stops, []string{"auto-1"}) || !slices.Equal(prov.prepared, []string{"auto-1", "auto-2"}) {
			t.Errorf("after the scale-in: stopped %q, prepared %q, want auto-2 prepared", prov.stops, prov.prepared)
		}
		prov.mu.Unlock()
		cancel()
		<-done
		if prov.discarded != 1 {
			t.Errorf("discarded %d times when the autoscaler stopped, want 1", prov.discarded)
		}
	})
}

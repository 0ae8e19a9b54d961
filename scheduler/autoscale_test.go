package scheduler

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
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
		p    func(*ScalePolicy) // changes to p for this case
	}{
		{"calm: nothing", ScaleState{Now: at(time.Hour)}, ScaleDecision{Reason: ReasonNoWait}, nil},
		{"blip: pressure too recent", ScaleState{Now: at(time.Hour), Queued: 5, OldestWait: 2 * time.Second, PressureSince: at(time.Hour - 100*time.Millisecond)},
			ScaleDecision{Reason: ReasonBlip}, func(p *ScalePolicy) { p.QueueWait = 0 }},
		{"sustained queue: start for it", ScaleState{Now: at(time.Hour), Queued: 3, OldestWait: 2 * time.Second, PressureSince: at(0)}, ScaleDecision{Start: 2, Reason: ReasonWaiting}, nil},
		{"capped at max", ScaleState{Now: at(time.Hour), Queued: 50, OldestWait: 2 * time.Second, PressureSince: at(0)}, ScaleDecision{Start: 3}, nil},
		{"at max: says so", ScaleState{Now: at(time.Hour), Queued: 50, OldestWait: 2 * time.Second, PressureSince: at(0),
			Slaves: []ScaleSlave{reg("a", 2, time.Time{}), reg("b", 2, time.Time{}), reg("c", 2, time.Time{})}}, ScaleDecision{Reason: ReasonMaxSlaves}, nil},
		{"counts the ones starting", ScaleState{Now: at(time.Hour), Queued: 3, OldestWait: 2 * time.Second, PressureSince: at(0),
			Slaves: []ScaleSlave{{Name: "a", Started: at(time.Hour - time.Second)}}}, ScaleDecision{Start: 1}, nil},
		{"the ones starting are enough", ScaleState{Now: at(time.Hour), Queued: 2, OldestWait: 2 * time.Second, PressureSince: at(0),
			Slaves: []ScaleSlave{{Name: "a", Started: at(time.Hour - time.Second)}}}, ScaleDecision{Reason: ReasonEnough}, nil},
		{"up cooldown", ScaleState{Now: at(time.Hour), Queued: 3, OldestWait: 2 * time.Second, PressureSince: at(0), LastUp: at(time.Hour - time.Second)},
			ScaleDecision{Reason: ReasonCooldown}, nil},
		{"cpu pressure alone: one", ScaleState{Now: at(time.Hour), MasterCPU: 95, MasterRunning: 2, PressureSince: at(0)}, ScaleDecision{Start: 1, Reason: ReasonCPU}, nil},
		{"cpu of others (master idle): nothing", ScaleState{Now: at(time.Hour), MasterCPU: 95, PressureSince: at(0)}, ScaleDecision{}, nil},
		{"cpu of others does not keep idle slaves", ScaleState{Now: at(time.Hour), MasterCPU: 99, Slaves: []ScaleSlave{reg("a", 0, at(0))}},
			ScaleDecision{Drain: []string{"a"}, Reason: ReasonIdle}, nil},
		{"busy master's cpu keeps them", ScaleState{Now: at(time.Hour), MasterCPU: 99, MasterRunning: 1, PressureSince: at(time.Hour),
			Slaves: []ScaleSlave{reg("a", 0, at(0))}}, ScaleDecision{}, nil},
		{"never registered: stopped", ScaleState{Now: at(time.Hour), Slaves: []ScaleSlave{{Name: "ghost", Started: at(0)}}}, ScaleDecision{Stop: []string{"ghost"}}, nil},
		{"idle long enough: drain oldest idle", ScaleState{Now: at(time.Hour), Slaves: []ScaleSlave{
			reg("a", 0, at(time.Hour-time.Minute)), reg("b", 0, at(time.Hour-2*time.Minute)), reg("c", 1, time.Time{})}},
			ScaleDecision{Drain: []string{"b", "a"}}, nil},
		{"idle but not long", ScaleState{Now: at(time.Hour), Slaves: []ScaleSlave{reg("a", 0, at(time.Hour-time.Second))}}, ScaleDecision{}, nil},
		{"down cooldown after a scale-up", ScaleState{Now: at(time.Hour), LastUp: at(time.Hour - 10*time.Second),
			Slaves: []ScaleSlave{reg("a", 0, at(0))}}, ScaleDecision{}, nil},
		{"no scale-down under pressure", ScaleState{Now: at(time.Hour), Queued: 1, OldestWait: 2 * time.Second, PressureSince: at(time.Hour),
			Slaves: []ScaleSlave{reg("a", 2, time.Time{}), reg("b", 0, at(0))}}, ScaleDecision{}, func(p *ScalePolicy) { p.QueueWait = 0 }},
		{"no scale-down while a job waits, even briefly", ScaleState{Now: at(time.Hour), Queued: 1, OldestWait: 10 * time.Millisecond,
			Slaves: []ScaleSlave{reg("a", 2, time.Time{}), reg("b", 0, at(0))}}, ScaleDecision{Reason: ReasonShortWait}, nil},
		{"drained and idle: stop", ScaleState{Now: at(time.Hour), Slaves: []ScaleSlave{{Name: "d", Registered: true, Draining: true}}}, ScaleDecision{Stop: []string{"d"}}, nil},
		{"draining with a job: wait", ScaleState{Now: at(time.Hour), Slaves: []ScaleSlave{{Name: "d", Registered: true, Draining: true, Running: 1}}}, ScaleDecision{}, nil},

		// Issue 15: scale out when it helps, not on one job queued for a moment.
		{"one job queued for a moment: nothing", ScaleState{Now: at(time.Hour), Queued: 1, OldestWait: 20 * time.Millisecond, PressureSince: at(0)},
			ScaleDecision{Reason: ReasonShortWait}, nil},
		{"many jobs, none waiting long: nothing", ScaleState{Now: at(time.Hour), Queued: 8, OldestWait: 999 * time.Millisecond, PressureSince: at(0)},
			ScaleDecision{Reason: ReasonShortWait}, nil},
		{"one job waited past the threshold: one slave", ScaleState{Now: at(time.Hour), Queued: 1, OldestWait: time.Second},
			ScaleDecision{Start: 1, Reason: ReasonWaiting}, nil}, // the wait itself is the persistence: no UpAfter on top
		{"threshold 0: any queued job, after UpAfter", ScaleState{Now: at(time.Hour), Queued: 1, PressureSince: at(0)},
			ScaleDecision{Start: 1, Reason: ReasonWaiting}, func(p *ScalePolicy) { p.QueueWait = 0 }},
		{"shared engine without headroom: nothing", ScaleState{Now: at(time.Hour), Queued: 4, OldestWait: 3 * time.Second, MasterCPU: 80, MasterRunning: 1, PressureSince: at(0)},
			ScaleDecision{Reason: ReasonNoHeadroom}, func(p *ScalePolicy) { p.SharedEngine = true }},
		{"shared engine with headroom: start", ScaleState{Now: at(time.Hour), Queued: 4, OldestWait: 3 * time.Second, MasterCPU: 70, MasterRunning: 1, PressureSince: at(0)},
			ScaleDecision{Start: 2, Reason: ReasonWaiting}, func(p *ScalePolicy) { p.SharedEngine = true }},
		{"shared engine: the master's cpu alone starts nothing", ScaleState{Now: at(time.Hour), MasterCPU: 95, MasterRunning: 2, PressureSince: at(0)},
			ScaleDecision{Reason: ReasonNoWait}, func(p *ScalePolicy) { p.SharedEngine = true }},
		{"shared engine, headroom 0: the cpu does not matter", ScaleState{Now: at(time.Hour), Queued: 1, OldestWait: 3 * time.Second, MasterCPU: 100, PressureSince: at(0)},
			ScaleDecision{Start: 1}, func(p *ScalePolicy) { p.SharedEngine, p.Headroom = true, 0 }},
		{"no slot anywhere: start without waiting for the threshold or headroom", ScaleState{Now: at(time.Hour), Queued: 1, MasterCPU: 100, PressureSince: at(0), Capacity: -1},
			ScaleDecision{Start: 1, Reason: ReasonNoSlot}, func(p *ScalePolicy) { p.SharedEngine = true }},
		{"no slot, but pressure too recent", ScaleState{Now: at(time.Hour), Queued: 1, PressureSince: at(time.Hour - 100*time.Millisecond), Capacity: -1},
			ScaleDecision{Reason: ReasonBlip}, nil},
	} {
		p := p
		if c.p != nil {
			c.p(&p)
		}
		switch c.st.Capacity {
		case 0:
			c.st.Capacity = 1 // the master's slot, unless the case says none (-1)
		case -1:
			c.st.Capacity = 0
		}
		got := Decide(c.st, p)
		if got.Start != c.want.Start || !slices.Equal(got.Drain, c.want.Drain) || !slices.Equal(got.Stop, c.want.Stop) ||
			(c.want.Reason != "" && got.Reason != c.want.Reason) {
			t.Errorf("%s: got %+v, want %+v", c.name, got, c.want)
		}
		if got.Reason == "" || got.Why == "" {
			t.Errorf("%s: no reason given: %+v", c.name, got)
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

// recordHandler keeps the log records it is given.
type recordHandler struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (h *recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.recs = append(h.recs, r.Clone())
	return nil
}
func (h *recordHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordHandler) WithGroup(string) slog.Handler      { return h }

// lines returns the records as "LEVEL message reason", in order.
func (h *recordHandler) lines() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, r := range h.recs {
		line := r.Level.String() + " " + r.Message
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "reason" {
				line += " " + a.Value.String()
			}
			return true
		})
		out = append(out, line)
	}
	return out
}

// The autoscaler on a shared engine: jobs queued for a moment start nothing, jobs that
// waited past the threshold start nothing while the engine's CPU is busy, and one slave
// once it has headroom; each reason is logged once when it changes, not at every tick.
func TestAutoscalerWaitsForWaitAndHeadroom(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := oneSlotScheduler(t)
		prov := &fakeProv{s: s, handles: map[string]*NodeHandle{}}
		p := DefaultScalePolicy()
		p.SharedEngine = true // QueueWait 1 s, Headroom 25 %
		logs := &recordHandler{}
		a, err := NewAutoscaler(s, prov, p, "auto", slog.New(logs))
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		tick := func(n int) {
			for range n {
				a.Step(ctx)
				time.Sleep(100 * time.Millisecond)
				synctest.Wait()
			}
		}
		s.ReportLoad(Load{CPU: 90})
		tick(5) // calm

		// One slot, three jobs of 5 s: two wait. For the first second, a short wait.
		var jobs []*Job
		for range 3 {
			j, err := s.Submit(prog("sleep 5s\nout x"), false)
			if err != nil {
				t.Fatal(err)
			}
			jobs = append(jobs, j)
		}
		tick(8)
		if d := a.Step(ctx); d.Start != 0 || d.Reason != ReasonShortWait {
			t.Errorf("jobs queued for 0.8 s: %+v", d)
		}
		// Past the threshold, but the engine's CPU is at 90 %: no slave on it.
		tick(20)
		if d := a.Step(ctx); d.Start != 0 || d.Reason != ReasonNoHeadroom {
			t.Errorf("waited 2.8 s on a busy engine: %+v", d)
		}
		// The engine calms down: one slave for the two waiting jobs (capacity 2).
		s.ReportLoad(Load{CPU: 40})
		tick(3)
		for _, j := range jobs {
			wait(t, j)
		}
		prov.mu.Lock()
		starts := slices.Clone(prov.starts)
		prov.mu.Unlock()
		if !slices.Equal(starts, []string{"auto-1"}) {
			t.Errorf("started %q, want auto-1 alone", starts)
		}

		var info []string
		for _, l := range logs.lines() {
			if strings.HasPrefix(l, "INFO") {
				info = append(info, l)
			}
		}
		want := []string{ // once per change of reason, though each lasted many ticks
			"INFO not starting a slave " + ReasonNoHeadroom,
			"INFO starting slave " + ReasonWaiting,
			"INFO not starting a slave " + ReasonNoWait, // the slave took both: calm again
		}
		if !slices.Equal(info, want) {
			t.Errorf("info logs %q, want %q", info, want)
		}
		if !slices.Contains(logs.lines(), "DEBUG not starting a slave "+ReasonShortWait) {
			t.Errorf("the short wait is not in the debug log: %q", logs.lines())
		}
	})
}

// Issue 15's case: one client sending programs one after another to a busy master on a
// shared engine. Its jobs never wait long, and the master's CPU is its own programs: no
// slave would help, and none starts.
func TestAutoscalerIgnoresASerialClient(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := oneSlotScheduler(t)
		prov := &fakeProv{s: s, handles: map[string]*NodeHandle{}}
		p := DefaultScalePolicy()
		p.SharedEngine = true
		a, err := NewAutoscaler(s, prov, p, "auto", nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { a.Run(ctx, 100*time.Millisecond); close(done) }()
		s.ReportLoad(Load{CPU: 97}) // the engine busy with this client's containers
		for range 30 {
			j, err := s.Submit(prog("sleep 700ms\nout x"), false)
			if err != nil {
				t.Fatal(err)
			}
			wait(t, j)
		}
		cancel()
		<-done
		if prov.starts != nil {
			t.Errorf("a serial client started slaves %q", prov.starts)
		}
	})
}

package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"
)

// ScalePolicy tunes the autoscaler.
type ScalePolicy struct {
	// MinSlaves and MaxSlaves bound the managed slaves.
	MinSlaves, MaxSlaves int
	// SlaveCapacity is the programs one new slave runs at once (to size a scale-up).
	SlaveCapacity int
	// UpAfter: the pressure (jobs waiting, or the master's CPU over CPUThreshold) must last
	// this long before slaves start, so that a blip starts nothing.
	UpAfter time.Duration
	// UpCooldown is the least time between two scale-ups (a started slave needs a moment
	// to register and take jobs).
	UpCooldown time.Duration
	// IdleAfter: a managed slave that ran nothing for this long, with nothing waiting, is
	// drained and then stopped.
	IdleAfter time.Duration
	// DownCooldown is the least time after a scale-up before any scale-down (no flapping).
	DownCooldown time.Duration
	// StartTimeout: a started slave that has not registered by then is stopped.
	StartTimeout time.Duration
	// CPUThreshold: the master's CPU percentage that counts as pressure while the master
	// runs programs itself (0: queue only). An idle master's CPU reading is other
	// processes' load (a container without a CPU quota sees the whole host): it neither
	// starts slaves nor keeps idle ones.
	CPUThreshold float64
}

// DefaultScalePolicy returns the defaults of `runbox master --autoscale`.
func DefaultScalePolicy() ScalePolicy {
	return ScalePolicy{MinSlaves: 0, MaxSlaves: 4, SlaveCapacity: 2, UpAfter: 300 * time.Millisecond,
		UpCooldown: 3 * time.Second, IdleAfter: 30 * time.Second, DownCooldown: 30 * time.Second,
		StartTimeout: 60 * time.Second, CPUThreshold: 80}
}

// Validate reports the first invalid field.
func (p ScalePolicy) Validate() error {
	switch {
	case p.MinSlaves < 0 || p.MaxSlaves < p.MinSlaves:
		return fmt.Errorf("autoscaler: want 0 <= min slaves (%d) <= max slaves (%d)", p.MinSlaves, p.MaxSlaves)
	case p.SlaveCapacity < 1:
		return errors.New("autoscaler: slave capacity must be at least 1")
	case p.UpCooldown < 0 || p.IdleAfter <= 0 || p.DownCooldown < 0 || p.StartTimeout <= 0 || p.UpAfter < 0:
		return errors.New("autoscaler: durations must be positive")
	}
	return nil
}

// ScaleSlave is a managed slave as the autoscaler sees it.
type ScaleSlave struct {
	Name string
	// Registered: it joined the scheduler; otherwise it is still starting.
	Registered bool
	Started    time.Time // when the provisioner started it
	Running    int
	Draining   bool
	// IdleSince is when it last ran something (or registered); zero while it runs.
	IdleSince time.Time
}

// ScaleState is what the autoscaler decides from.
type ScaleState struct {
	Now       time.Time
	Queued    int     // program slots that accepted jobs waiting for a slot need (a judged job: several)
	MasterCPU float64 // the master's CPU percentage
	// MasterRunning counts the programs the master runs itself.
	MasterRunning int
	Slaves        []ScaleSlave
	// PressureSince is when the pressure began (zero when there is none).
	PressureSince time.Time
	LastUp        time.Time
}

// ScaleDecision is what to do now.
type ScaleDecision struct {
	Start int      // slaves to start
	Drain []string // slaves to stop taking jobs (they finish what they run)
	Stop  []string // slaves to stop and remove (drained and idle, or never registered)
	Why   string
}

// Pressure reports whether st calls for more slaves: jobs waiting, or the master's CPU at
// the threshold while it runs programs.
func (st ScaleState) Pressure(p ScalePolicy) bool {
	return st.Queued > 0 || (p.CPUThreshold > 0 && st.MasterRunning > 0 && st.MasterCPU >= p.CPUThreshold)
}

// Decide is the autoscaler's pure decision function: scale on the queue and the master's
// CPU, not on CPU alone; never flap (pressure must last UpAfter, cooldowns after every
// move, a slave must idle for IdleAfter); never kill a running job (drain first, stop
// when it runs nothing).
func Decide(st ScaleState, p ScalePolicy) ScaleDecision {
	var d ScaleDecision
	live := 0 // managed slaves not draining
	starting := 0
	for _, s := range st.Slaves {
		switch {
		case !s.Registered && st.Now.Sub(s.Started) > p.StartTimeout:
			d.Stop = append(d.Stop, s.Name) // never came up
			continue
		case s.Draining && s.Running == 0:
			d.Stop = append(d.Stop, s.Name)
			continue
		case s.Draining:
			continue
		}
		live++
		if !s.Registered {
			starting++
		}
	}

	pressure := st.Pressure(p)
	if pressure && !st.PressureSince.IsZero() && st.Now.Sub(st.PressureSince) >= p.UpAfter && st.Now.Sub(st.LastUp) >= p.UpCooldown {
		// Enough slaves for what waits, counting the ones already starting.
		want := (st.Queued + p.SlaveCapacity - 1) / p.SlaveCapacity
		if want == 0 {
			want = 1 // CPU pressure alone: one more slave
		}
		n := min(want-starting, p.MaxSlaves-live)
		if n > 0 {
			d.Start = n
			d.Why = fmt.Sprintf("%d job(s) waiting, master CPU %.0f%%", st.Queued, st.MasterCPU)
		}
	}
	if live < p.MinSlaves {
		d.Start = max(d.Start, p.MinSlaves-live)
		if d.Why == "" {
			d.Why = fmt.Sprintf("below the minimum of %d slave(s)", p.MinSlaves)
		}
	}
	if d.Start > 0 || pressure || st.Now.Sub(st.LastUp) < p.DownCooldown {
		return d
	}
	// Scale down: the longest-idle slaves first, never below the minimum.
	idle := []ScaleSlave{}
	for _, s := range st.Slaves {
		if s.Registered && !s.Draining && s.Running == 0 && !s.IdleSince.IsZero() && st.Now.Sub(s.IdleSince) >= p.IdleAfter {
			idle = append(idle, s)
		}
	}
	slices.SortFunc(idle, func(a, b ScaleSlave) int { return a.IdleSince.Compare(b.IdleSince) })
	for _, s := range idle {
		if live <= p.MinSlaves {
			break
		}
		d.Drain = append(d.Drain, s.Name)
		live--
	}
	if len(d.Drain) > 0 {
		d.Why = fmt.Sprintf("idle for %v and nothing waiting", p.IdleAfter)
	}
	return d
}

// Provisioner starts and stops slaves somewhere (Docker containers, Swarm replicas).
type Provisioner interface {
	// Start starts a slave that will register with the given node name.
	Start(ctx context.Context, name string) error
	// Stop stops and removes the slave; stopping one that is gone is not an error.
	Stop(ctx context.Context, name string) error
	// List returns the names of the slaves this provisioner manages (after a master
	// restart, the ones it started before).
	List(ctx context.Context) ([]string, error)
}

// Preparer is a Provisioner that can make a slave ready ahead of time (for Docker, a
// created container that only needs starting): the autoscaler names the next slave it will
// start, so that the Start that follows a threshold crossing is quicker. Prepare of a new
// name replaces what was prepared; Discard removes it.
type Preparer interface {
	Prepare(ctx context.Context, name string) error
	Discard(ctx context.Context) error
}

// Autoscaler applies Decide to a Scheduler through a Provisioner.
type Autoscaler struct {
	s      *Scheduler
	prov   Provisioner
	policy ScalePolicy
	prefix string
	log    *slog.Logger

	mu            sync.Mutex
	managed       map[string]time.Time // name → started
	idleSince     map[string]time.Time
	pressureSince time.Time
	lastUp        time.Time
	seq           int
	prepared      string // the name last handed to Prepare

	prep sync.WaitGroup // Prepare calls in flight
}

// NewAutoscaler returns an autoscaler whose slaves are named prefix-N.
func NewAutoscaler(s *Scheduler, prov Provisioner, policy ScalePolicy, prefix string, log *slog.Logger) (*Autoscaler, error) {
	if err := policy.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Autoscaler{s: s, prov: prov, policy: policy, prefix: prefix, log: log.With("component", "autoscaler"),
		managed: map[string]time.Time{}, idleSince: map[string]time.Time{}}, nil
}

// Run adopts the provisioner's existing slaves (a restarted master finds them again: they
// reconnect by themselves) and then decides every interval until ctx ends.
func (a *Autoscaler) Run(ctx context.Context, interval time.Duration) error {
	names, err := a.prov.List(ctx)
	if err != nil {
		return fmt.Errorf("autoscaler: list slaves: %w", err)
	}
	now := time.Now()
	a.mu.Lock()
	for _, n := range names {
		a.managed[n] = now // adopted: given StartTimeout to register again
		a.seq = max(a.seq, seqOf(a.prefix, n))
	}
	a.mu.Unlock()
	if len(names) > 0 {
		a.log.Info("adopted slaves", "count", len(names), "names", strings.Join(names, ","))
	}
	if p, ok := a.prov.(Preparer); ok {
		defer func() {
			a.prep.Wait()
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			if err := p.Discard(dctx); err != nil {
				a.log.Warn("discard the prepared slave", "err", err)
			}
		}()
	}
	a.prepareNext(ctx)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		a.Step(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// prepareNext has a Preparer get the next slave ready, in the background, unless it was
// asked for that name already.
func (a *Autoscaler) prepareNext(ctx context.Context) {
	p, ok := a.prov.(Preparer)
	if !ok {
		return
	}
	a.mu.Lock()
	name := fmt.Sprintf("%s-%d", a.prefix, a.seq+1)
	if name == a.prepared || len(a.managed) >= a.policy.MaxSlaves {
		a.mu.Unlock()
		return
	}
	a.prepared = name
	a.mu.Unlock()
	a.prep.Add(1)
	go func() {
		defer a.prep.Done()
		if err := p.Prepare(ctx, name); err != nil && ctx.Err() == nil {
			a.log.Warn("prepare the next slave", "node", name, "err", err)
			a.mu.Lock()
			if a.prepared == name {
				a.prepared = "" // try again at the next start
			}
			a.mu.Unlock()
		}
	}()
}

func seqOf(prefix, name string) int {
	var n int
	if _, err := fmt.Sscanf(strings.TrimPrefix(name, prefix+"-"), "%d", &n); err == nil {
		return n
	}
	return 0
}

// Step makes one decision and applies it.
func (a *Autoscaler) Step(ctx context.Context) ScaleDecision {
	snap := a.s.Snapshot(0)
	now := time.Now()
	a.mu.Lock()
	st := ScaleState{Now: now, LastUp: a.lastUp}
	for _, q := range snap.Queued {
		st.Queued += max(q.Slots, 1)
	}
	registered := map[string]NodeInfo{}
	for _, n := range snap.Nodes {
		if n.Role == RoleMaster {
			st.MasterCPU, st.MasterRunning = n.Load.CPU, n.Running
		} else {
			registered[n.Name] = n
		}
	}
	pressure := st.Pressure(a.policy)
	switch {
	case !pressure:
		a.pressureSince = time.Time{}
	case a.pressureSince.IsZero():
		a.pressureSince = now
	}
	st.PressureSince = a.pressureSince
	for name, started := range a.managed {
		ss := ScaleSlave{Name: name, Started: started}
		if n, ok := registered[name]; ok {
			ss.Registered, ss.Running, ss.Draining = true, n.Running, n.State == NodeDraining
			if ss.Running > 0 {
				delete(a.idleSince, name)
			} else if _, ok := a.idleSince[name]; !ok {
				a.idleSince[name] = now
			}
			ss.IdleSince = a.idleSince[name]
		}
		st.Slaves = append(st.Slaves, ss)
	}
	slices.SortFunc(st.Slaves, func(x, y ScaleSlave) int { return strings.Compare(x.Name, y.Name) })
	d := Decide(st, a.policy)
	var starts []string
	for i := 0; i < d.Start; i++ {
		a.seq++
		name := fmt.Sprintf("%s-%d", a.prefix, a.seq)
		a.managed[name] = now
		starts = append(starts, name)
	}
	if d.Start > 0 {
		a.lastUp = now
	}
	for _, name := range d.Stop {
		delete(a.managed, name)
		delete(a.idleSince, name)
	}
	a.mu.Unlock()

	var wg sync.WaitGroup // the slaves start side by side
	for _, name := range starts {
		a.log.Info("starting slave", "node", name, "why", d.Why)
		a.s.noteExternal(name, "starting", d.Why)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.prov.Start(ctx, name); err != nil {
				a.log.Error("start slave", "node", name, "err", err)
				a.s.noteExternal(name, "start_failed", err.Error())
				a.mu.Lock()
				delete(a.managed, name)
				a.mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for _, name := range d.Drain {
		a.log.Info("draining slave", "node", name, "why", d.Why)
		a.s.DrainNode(name)
	}
	for _, name := range d.Stop {
		a.log.Info("stopping slave", "node", name)
		if err := a.prov.Stop(ctx, name); err != nil {
			a.log.Error("stop slave", "node", name, "err", err)
		}
		a.s.noteExternal(name, "stopped", "")
	}
	a.prepareNext(ctx) // a no-op unless a start or a stop changed what comes next
	return d
}

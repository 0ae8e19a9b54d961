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
	// QueueWait: jobs waiting count as pressure once the oldest of them has waited this
	// long (0: as soon as one waits). A job queued for a moment between two programs of a
	// client, or behind one that is about to end, starts nothing.
	QueueWait time.Duration
	// SharedEngine says the started slaves run on the master's own engine (Docker
	// autoscaling on one host): a slave there adds slots but no cores, so the master's CPU
	// alone starts nothing, and a start needs Headroom.
	SharedEngine bool
	// Headroom: with SharedEngine, the idle CPU percentage of the engine's host (100
	// minus the master's CPU reading) that a start needs (0: none). On a busy engine a
	// slave only adds container churn. When no node has a slot at all, a slave starts
	// whatever the headroom: otherwise nothing would ever run.
	Headroom float64
}

// DefaultScalePolicy returns the defaults of `runbox master --autoscale`.
func DefaultScalePolicy() ScalePolicy {
	return ScalePolicy{MinSlaves: 0, MaxSlaves: 4, SlaveCapacity: 2, UpAfter: 300 * time.Millisecond,
		UpCooldown: 3 * time.Second, IdleAfter: 30 * time.Second, DownCooldown: 30 * time.Second,
		StartTimeout: 60 * time.Second, CPUThreshold: 80, QueueWait: time.Second, Headroom: 25}
}

// Validate reports the first invalid field.
func (p ScalePolicy) Validate() error {
	switch {
	case p.MinSlaves < 0 || p.MaxSlaves < p.MinSlaves:
		return fmt.Errorf("autoscaler: want 0 <= min slaves (%d) <= max slaves (%d)", p.MinSlaves, p.MaxSlaves)
	case p.SlaveCapacity < 1:
		return errors.New("autoscaler: slave capacity must be at least 1")
	case p.UpCooldown < 0 || p.IdleAfter <= 0 || p.DownCooldown < 0 || p.StartTimeout <= 0 || p.UpAfter < 0 || p.QueueWait < 0:
		return errors.New("autoscaler: durations must be positive")
	case p.Headroom < 0 || p.Headroom > 100:
		return fmt.Errorf("autoscaler: headroom %.0f%%, want 0 to 100", p.Headroom)
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
	// OldestWait is how long the oldest waiting job has waited (0: none waits).
	OldestWait time.Duration
	// Capacity is the program slots of the ready nodes, the master's included (0: nothing
	// can run a job until a slave comes).
	Capacity int
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
	// Reason says in one stable word why slaves start or why none does (see the Reason
	// constants); Why says it with the figures. The autoscaler logs a decision when its
	// Reason changes, not at every tick.
	Reason string
	Why    string
}

// Reasons of a ScaleDecision.
const (
	ReasonNoWait     = "no_wait"     // nothing waits, nor is the master's CPU at its threshold
	ReasonShortWait  = "short_wait"  // jobs wait, but not for QueueWait yet
	ReasonBlip       = "blip"        // pressure, not for UpAfter yet
	ReasonCooldown   = "cooldown"    // pressure, but a slave started less than UpCooldown ago
	ReasonEnough     = "enough"      // pressure, and the slaves starting cover it
	ReasonMaxSlaves  = "max_slaves"  // pressure, at MaxSlaves
	ReasonNoHeadroom = "no_headroom" // pressure, but the shared engine has no CPU to spare
	ReasonWaiting    = "queue_wait"  // started: jobs waited past QueueWait
	ReasonNoSlot     = "no_slot"     // started: jobs wait and no node has a slot
	ReasonCPU        = "master_cpu"  // started: the busy master's CPU is at its threshold
	ReasonMinimum    = "min_slaves"  // started: below MinSlaves
	ReasonIdle       = "idle"        // slaves drained: idle for IdleAfter
)

// Pressure reports whether st calls for more slaves: jobs that waited QueueWait, jobs
// waiting while no node has a slot, or (unless the slaves share the master's engine) the
// master's CPU at the threshold while it runs programs.
func (st ScaleState) Pressure(p ScalePolicy) bool {
	return st.queuePressure(p) || st.noSlot() || st.cpuPressure(p)
}

func (st ScaleState) queuePressure(p ScalePolicy) bool {
	return st.Queued > 0 && st.OldestWait >= p.QueueWait
}

func (st ScaleState) noSlot() bool { return st.Queued > 0 && st.Capacity == 0 }

func (st ScaleState) cpuPressure(p ScalePolicy) bool {
	return !p.SharedEngine && p.CPUThreshold > 0 && st.MasterRunning > 0 && st.MasterCPU >= p.CPUThreshold
}

// Decide is the autoscaler's pure decision function: scale out when it helps, on the
// oldest job's wait and (for slaves on a separate engine) the master's CPU, never on one
// job queued for a moment nor onto an engine without CPU to spare; never flap (pressure
// must last UpAfter, cooldowns after every move, a slave must idle for IdleAfter); never
// kill a running job (drain first, stop when it runs nothing). Its Reason and Why say
// why it starts slaves or why it does not.
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
	engine := fmt.Sprintf("master CPU %.0f%%", st.MasterCPU)
	// Enough slaves for what waits, counting the ones already starting.
	want := max((st.Queued+p.SlaveCapacity-1)/p.SlaveCapacity, 1) // CPU pressure alone: one more
	n := min(want-starting, p.MaxSlaves-live)
	switch {
	case !pressure && st.Queued > 0:
		d.Reason, d.Why = ReasonShortWait, fmt.Sprintf("%d job(s) waiting, the oldest for %v, below %v", st.Queued, st.OldestWait.Round(time.Millisecond), p.QueueWait)
	case !pressure:
		d.Reason, d.Why = ReasonNoWait, "nothing waiting, "+engine
	case !(st.queuePressure(p) && p.QueueWait > 0 && p.QueueWait >= p.UpAfter) && // a wait that long is no blip
		(st.PressureSince.IsZero() || st.Now.Sub(st.PressureSince) < p.UpAfter):
		d.Reason, d.Why = ReasonBlip, fmt.Sprintf("pressure for less than %v", p.UpAfter)
	case st.Now.Sub(st.LastUp) < p.UpCooldown:
		d.Reason, d.Why = ReasonCooldown, fmt.Sprintf("a slave started less than %v ago", p.UpCooldown)
	case n <= 0 && live >= p.MaxSlaves:
		d.Reason, d.Why = ReasonMaxSlaves, fmt.Sprintf("%d job(s) waiting, at the most slaves (%d)", st.Queued, p.MaxSlaves)
	case n <= 0:
		d.Reason, d.Why = ReasonEnough, fmt.Sprintf("%d job(s) waiting, %d slave(s) starting for them", st.Queued, starting)
	case p.SharedEngine && !st.noSlot() && 100-st.MasterCPU < p.Headroom:
		d.Reason, d.Why = ReasonNoHeadroom, fmt.Sprintf("%d job(s) waiting, the oldest for %v, but %s leaves %.0f%% of the engine's CPU, below %.0f%%: a slave on this engine would add churn, not cores",
			st.Queued, st.OldestWait.Round(time.Millisecond), engine, max(100-st.MasterCPU, 0), p.Headroom)
	default:
		d.Start = n
		switch {
		case st.noSlot():
			d.Reason, d.Why = ReasonNoSlot, fmt.Sprintf("%d job(s) waiting and no node has a slot", st.Queued)
		case st.queuePressure(p):
			d.Reason, d.Why = ReasonWaiting, fmt.Sprintf("%d job(s) waiting, the oldest for %v (threshold %v), %s", st.Queued, st.OldestWait.Round(time.Millisecond), p.QueueWait, engine)
		default:
			d.Reason, d.Why = ReasonCPU, fmt.Sprintf("%s (threshold %.0f%%) while it runs %d program(s)", engine, p.CPUThreshold, st.MasterRunning)
		}
	}
	if live < p.MinSlaves {
		if d.Start == 0 {
			d.Reason, d.Why = ReasonMinimum, fmt.Sprintf("below the minimum of %d slave(s)", p.MinSlaves)
		}
		d.Start = max(d.Start, p.MinSlaves-live)
	}
	if d.Start > 0 || pressure || st.Queued > 0 || st.Now.Sub(st.LastUp) < p.DownCooldown {
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
		d.Reason, d.Why = ReasonIdle, fmt.Sprintf("idle for %v and nothing waiting", p.IdleAfter)
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
	reason        string // the last decision's Reason, logged when it changes

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

// quiet reports whether reason is one of the calm ones, where nothing waits long.
func quiet(reason string) bool {
	return reason == "" || reason == ReasonNoWait || reason == ReasonShortWait
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
		if !q.Submitted.IsZero() {
			st.OldestWait = max(st.OldestWait, now.Sub(q.Submitted))
		}
	}
	registered := map[string]NodeInfo{}
	for _, n := range snap.Nodes {
		if n.State == NodeReady {
			st.Capacity += n.Capacity
		}
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
	if d.Reason != a.reason { // once per change of reason, not at every tick
		// Jobs queued for a moment come and go with every program of a busy client:
		// between nothing waiting and a short wait, the change is a detail.
		level := slog.LevelInfo
		if quiet(a.reason) && quiet(d.Reason) {
			level = slog.LevelDebug
		}
		a.reason = d.Reason
		if d.Start == 0 && len(d.Drain) == 0 {
			a.log.Log(ctx, level, "not starting a slave", "reason", d.Reason, "why", d.Why)
		}
	}
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
		a.log.Info("starting slave", "node", name, "reason", d.Reason, "why", d.Why)
		a.s.noteExternal(name, NodeEventStarting, d.Why)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.prov.Start(ctx, name); err != nil {
				a.log.Error("start slave", "node", name, "err", err)
				a.s.noteExternal(name, NodeEventStartFailed, err.Error())
				a.mu.Lock()
				delete(a.managed, name)
				a.mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for _, name := range d.Drain {
		a.log.Info("draining slave", "node", name, "reason", d.Reason, "why", d.Why)
		a.s.DrainNode(name)
	}
	for _, name := range d.Stop {
		a.log.Info("stopping slave", "node", name)
		if err := a.prov.Stop(ctx, name); err != nil {
			a.log.Error("stop slave", "node", name, "err", err)
		}
		a.s.noteExternal(name, NodeEventStopped, "")
	}
	a.prepareNext(ctx) // a no-op unless a start or a stop changed what comes next
	return d
}

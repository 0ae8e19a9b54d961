package monitor

import (
	"encoding/json"
	"slices"
	"time"

	"runbox/sandbox"
	"runbox/scheduler"
)

// View is the cluster as the dashboard and /api/status show it: the scheduler's Snapshot,
// with what the Observer heard of finished jobs (time, memory, error code) and the rates
// the history gives.
type View struct {
	Title      string                `json:"title"`
	At         time.Time             `json:"at"`
	Ready      bool                  `json:"ready"` // a scheduler is attached
	Nodes      []scheduler.NodeInfo  `json:"nodes"`
	Running    []JobView             `json:"running"`
	Queued     []JobView             `json:"queued"`
	Recent     []JobView             `json:"recent"`
	NodeEvents []scheduler.NodeEvent `json:"node_events"` // newest first, with the autoscaler's
	Totals     scheduler.Totals      `json:"totals"`
	Capacity   int                   `json:"capacity"` // slots of the ready nodes
	Rates      Rates                 `json:"rates"`
}

// JobView is a job in the View.
type JobView struct {
	scheduler.Info
	// Outcome is the program's status, or the error code of a job that could not run
	// ("error" when the code was not heard).
	Outcome     string `json:"outcome,omitempty"`
	TimeMS      *int64 `json:"time_ms,omitempty"`      // run phase wall time, when it ran
	MemoryBytes *int64 `json:"memory_bytes,omitempty"` // run phase peak memory, when it ran
	CompileMS   *int64 `json:"compile_ms,omitempty"`   // compile phase wall time (compiled languages)
	WaitMS      *int64 `json:"wait_ms,omitempty"`
}

// Rates are per-second averages over the last minute of history (or what there is of it).
type Rates struct {
	Window   float64 `json:"window_s"` // seconds the rates cover
	Finished float64 `json:"finished_per_s"`
	Accepted float64 `json:"accepted_per_s"`
	Rejected float64 `json:"rejected_per_s"`
}

// Sample is the cluster at one moment, for the charts.
type Sample struct {
	At       int64                 `json:"t"` // Unix milliseconds
	Nodes    map[string]NodeSample `json:"nodes"`
	Running  int                   `json:"running"`
	Queued   int                   `json:"queued"`
	Capacity int                   `json:"capacity"`
	Finished int                   `json:"finished"` // totals, so that rates are differences
	Accepted int                   `json:"accepted"`
	Rejected int                   `json:"rejected"`
}

// NodeSample is one node's load in a Sample.
type NodeSample struct {
	CPU      float64 `json:"cpu"`
	MemUsed  uint64  `json:"mem_used"`
	MemTotal uint64  `json:"mem_total"`
}

// update is the payload of an "update" event: the view, and the new sample when the
// update comes from a tick.
type update struct {
	View   View    `json:"view"`
	Sample *Sample `json:"sample,omitempty"`
}

// historyEvent is the payload of the "history" event a stream starts with.
type historyEvent struct {
	IntervalMS int64    `json:"interval_ms"`
	WindowMS   int64    `json:"window_ms"`
	Samples    []Sample `json:"samples"`
}

// rateWindow is how far back Rates look.
const rateWindow = time.Minute

// sample takes a Sample of the cluster, appends it to the history (dropping what is
// older than Config.History) and publishes the view with it.
func (m *Monitor) sample(now time.Time) {
	snap, ok := m.snapshot(m.cfg.Recent)
	if !ok {
		m.publishSnapshot(now, snap, false, nil)
		return
	}
	s := sampleOf(now, snap)
	m.mu.Lock()
	m.history = append(m.history, s)
	m.trimLocked(now)
	m.mu.Unlock()
	m.publishSnapshot(now, snap, true, &s)
}

func sampleOf(now time.Time, snap scheduler.Snapshot) Sample {
	s := Sample{At: now.UnixMilli(), Nodes: make(map[string]NodeSample, len(snap.Nodes)),
		Running: len(snap.Running), Queued: len(snap.Queued), Capacity: capacityOf(snap),
		Finished: snap.Totals.Finished, Accepted: snap.Totals.Accepted, Rejected: snap.Totals.Rejected}
	for _, n := range snap.Nodes {
		s.Nodes[n.Name] = NodeSample{CPU: n.Load.CPU, MemUsed: n.Load.MemUsed, MemTotal: n.Load.MemTotal}
	}
	return s
}

// trimLocked drops the samples older than Config.History before now.
func (m *Monitor) trimLocked(now time.Time) {
	cut := now.Add(-m.cfg.History).UnixMilli()
	i := 0
	for i < len(m.history) && m.history[i].At < cut {
		i++
	}
	if i > 0 {
		// Move the rest down once the dropped part is large, so the backing array does
		// not grow without bound.
		m.history = m.history[i:]
		if cap(m.history) > 2*len(m.history)+64 {
			m.history = slices.Clone(m.history)
		}
	}
}

// History returns the samples of the last Config.History, oldest first.
func (m *Monitor) History() []Sample {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.history)
}

// publish builds the view from a fresh snapshot and wakes the streams.
func (m *Monitor) publish(s *Sample) {
	snap, ok := m.snapshot(m.cfg.Recent)
	m.publishSnapshot(m.now(), snap, ok, s)
}

func (m *Monitor) publishSnapshot(now time.Time, snap scheduler.Snapshot, ok bool, s *Sample) {
	data, err := json.Marshal(update{View: m.viewOf(now, snap, ok), Sample: s})
	if err != nil {
		m.log.Error("encode view", "err", err)
		return
	}
	m.mu.Lock()
	m.latest = data
	close(m.changed)
	m.changed = make(chan struct{})
	m.mu.Unlock()
}

// view returns the cluster's View now.
func (m *Monitor) view() View {
	snap, ok := m.snapshot(m.cfg.Recent)
	return m.viewOf(m.now(), snap, ok)
}

func (m *Monitor) viewOf(now time.Time, snap scheduler.Snapshot, ok bool) View {
	v := View{Title: m.cfg.Title, At: now, Ready: ok, Nodes: snap.Nodes, Totals: snap.Totals, Capacity: capacityOf(snap)}
	if v.Nodes == nil {
		v.Nodes = []scheduler.NodeInfo{}
	}
	if v.Totals.ByStatus == nil {
		v.Totals.ByStatus = map[string]int{}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	jobs := func(list []scheduler.Info) []JobView {
		out := make([]JobView, 0, len(list))
		for _, in := range list {
			out = append(out, m.jobViewLocked(in))
		}
		return out
	}
	v.Running, v.Queued, v.Recent = jobs(snap.Running), jobs(snap.Queued), jobs(snap.Recent)
	v.NodeEvents = append(slices.Clone(snap.NodeEvents), m.autoscale...)
	slices.SortStableFunc(v.NodeEvents, func(a, b scheduler.NodeEvent) int { return b.At.Compare(a.At) })
	if len(v.NodeEvents) > 50 {
		v.NodeEvents = v.NodeEvents[:50]
	}
	v.Rates = ratesLocked(m.history, now, snap)
	return v
}

func (m *Monitor) jobViewLocked(in scheduler.Info) JobView {
	jv := JobView{Info: in}
	if m.cfg.Token == "" {
		// Owners are token names: only the operator, who holds the token, sees them.
		jv.Owner = ""
	}
	if in.State != scheduler.StateDone {
		return jv
	}
	r, heard := m.results[in.ID]
	switch {
	case in.Status != "":
		jv.Outcome = string(in.Status)
	case heard:
		jv.Outcome = r.status
	default:
		jv.Outcome = "error"
	}
	if heard {
		ms := func(d time.Duration) *int64 { v := d.Milliseconds(); return &v }
		if in.Status != "" && in.Status != sandbox.StatusCompileError {
			mem := r.memory
			jv.TimeMS, jv.MemoryBytes = ms(r.time), &mem
		}
		if r.compile > 0 {
			jv.CompileMS = ms(r.compile)
		}
		if !in.Started.IsZero() {
			jv.WaitMS = ms(r.wait)
		}
	}
	return jv
}

// ratesLocked averages the totals' growth over the last rateWindow of history, ending
// with snap (taken at now).
func ratesLocked(history []Sample, now time.Time, snap scheduler.Snapshot) Rates {
	cut := now.Add(-rateWindow).UnixMilli()
	var first *Sample
	for i := range history {
		if history[i].At >= cut {
			first = &history[i]
			break
		}
	}
	if first == nil {
		return Rates{}
	}
	secs := float64(now.UnixMilli()-first.At) / 1000
	if secs < 1 {
		return Rates{}
	}
	per := func(now, then int) float64 { return float64(max(now-then, 0)) / secs }
	return Rates{Window: secs,
		Finished: per(snap.Totals.Finished, first.Finished),
		Accepted: per(snap.Totals.Accepted, first.Accepted),
		Rejected: per(snap.Totals.Rejected, first.Rejected)}
}

// capacityOf is the slots of the ready nodes.
func capacityOf(snap scheduler.Snapshot) int {
	c := 0
	for _, n := range snap.Nodes {
		if n.State == scheduler.NodeReady {
			c += n.Capacity
		}
	}
	return c
}

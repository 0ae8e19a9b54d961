package scheduler

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"runbox/sandbox"
)

// ErrNodeLost is what a Runner for a remote node returns when the node went away in the
// middle of a job (its connection broke): the scheduler runs the job again elsewhere.
var ErrNodeLost = errors.New("node lost")

// Load is a node's resource use, as sampled on the node (inside a container: against the
// container's own limits).
type Load struct {
	// CPU is the percentage of the node's CPU budget in use (0-100).
	CPU float64 `json:"cpu"`
	// MemUsed and MemTotal are bytes of memory in use and available to the node.
	MemUsed  uint64 `json:"mem_used"`
	MemTotal uint64 `json:"mem_total"`
}

// MemPercent is MemUsed as a percentage of MemTotal.
func (l Load) MemPercent() float64 {
	if l.MemTotal == 0 {
		return 0
	}
	return 100 * float64(l.MemUsed) / float64(l.MemTotal)
}

// NodeSpec is what a node declares when it joins.
type NodeSpec struct {
	// Name is unique in the cluster: a node joining with the name of a live one is refused
	// (ErrNameTaken) until that one is lost.
	Name string `json:"name"`
	// Capacity is how many programs the node runs at once.
	Capacity int `json:"capacity"`
	// Languages it serves (empty: all), with the runtime image version of each.
	Languages map[string]string `json:"languages,omitempty"`
}

// Node roles and states.
const (
	RoleMaster = "master"
	RoleSlave  = "slave"

	NodeReady    = "ready"
	NodeDraining = "draining"
)

// node is the scheduler's record of a place jobs run.
type node struct {
	NodeSpec
	role     string
	runner   sandbox.Runner
	running  map[*Job]bool // jobs whose current lease is here
	used     int           // program slots the running jobs hold (Spec.Slots each)
	load     Load
	lastBeat time.Time
	joined   time.Time
	draining bool
	gone     bool
	done     int // jobs finished here
	onLost   func(reason error)
}

// add and remove keep running and used in step.
func (n *node) add(j *Job) {
	if !n.running[j] {
		n.running[j] = true
		n.used += j.slots
	}
}

func (n *node) remove(j *Job) bool {
	if !n.running[j] {
		return false
	}
	delete(n.running, j)
	n.used -= j.slots
	return true
}

func (n *node) serves(lang string) bool {
	if len(n.Languages) == 0 {
		return true
	}
	_, ok := n.Languages[lang]
	return ok
}

// NodeEvent records a node joining or leaving, for status views.
type NodeEvent struct {
	At     time.Time     `json:"at"`
	Node   string        `json:"node"`
	Kind   NodeEventKind `json:"kind"`
	Reason string        `json:"reason,omitempty"`
}

// NodeEventKind says what happened to a node. Its values are part of the status JSON
// (node_events[].kind) and of the metrics' labels (runbox_node_events_total{kind}).
type NodeEventKind string

// Node event kinds: the scheduler notes the first four, the autoscaler the last three.
const (
	NodeEventJoined   NodeEventKind = "joined"   // a slave registered
	NodeEventLost     NodeEventKind = "lost"     // its connection broke or its heartbeats stopped; its jobs run again elsewhere
	NodeEventLeft     NodeEventKind = "left"     // a drained slave went away with nothing running: no loss
	NodeEventDraining NodeEventKind = "draining" // no job is placed on it any more; what it runs finishes

	NodeEventStarting    NodeEventKind = "starting"     // the autoscaler starts a slave
	NodeEventStartFailed NodeEventKind = "start_failed" // the autoscaler could not start it
	NodeEventStopped     NodeEventKind = "stopped"      // the autoscaler stopped a slave
)

// NodeEventKinds lists every kind the scheduler and its autoscaler note, in the order
// above (metrics start a series at zero for each).
func NodeEventKinds() []NodeEventKind {
	return []NodeEventKind{NodeEventJoined, NodeEventLost, NodeEventLeft, NodeEventDraining,
		NodeEventStarting, NodeEventStartFailed, NodeEventStopped}
}

// AddNode registers a slave that runs jobs through runner. onLost, when set, is called
// (without locks held) when the scheduler declares the node lost (missed heartbeats), so
// its owner can close the connection. A live node with the same name makes it
// ErrNameTaken: registering under a live node's name must not evict it (and take its
// jobs). The name is free again once that node is lost.
func (s *Scheduler) AddNode(spec NodeSpec, runner sandbox.Runner, onLost func(reason error)) (*NodeHandle, error) {
	if spec.Name == "" || spec.Capacity < 0 {
		return nil, fmt.Errorf("%w: a node needs a name and a capacity of 0 or more", sandbox.ErrInvalidRequest)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrShuttingDown
	}
	if spec.Name == s.local.Name {
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: node name %q is the master's", sandbox.ErrInvalidRequest, spec.Name)
	}
	for _, old := range s.nodes {
		if old.Name == spec.Name && !old.gone {
			s.mu.Unlock()
			s.log.Warn("node refused: its name is a live node's", "node", spec.Name)
			return nil, fmt.Errorf("%w: a live node is registered as %q (joined %s); a node may take the name once that one is lost",
				ErrNameTaken, spec.Name, old.joined.Format(time.RFC3339))
		}
	}
	n := &node{NodeSpec: spec, role: RoleSlave, runner: runner, running: map[*Job]bool{}, lastBeat: s.now(), joined: s.now(), onLost: onLost}
	s.nodes = append(s.nodes, n)
	s.noteLocked(n.Name, NodeEventJoined, fmt.Sprintf("capacity %d", spec.Capacity))
	s.log.Info("node joined", "node", n.Name, "capacity", spec.Capacity)
	s.dispatchLocked()
	s.unlockAndNotify()
	return &NodeHandle{s: s, n: n}, nil
}

// loseLocked marks n gone and re-queues its jobs; it returns the onLost call to make
// once the lock is released.
func (s *Scheduler) loseLocked(n *node, reason error) func() {
	n.gone = true
	s.nodes = slices.DeleteFunc(s.nodes, func(x *node) bool { return x == n })
	jobs := make([]*Job, 0, len(n.running))
	for j := range n.running {
		jobs = append(jobs, j)
	}
	slices.SortFunc(jobs, func(a, b *Job) int { return b.Submitted.Compare(a.Submitted) })
	clear(n.running)
	n.used = 0
	for _, j := range jobs { // newest first, so the oldest ends up at the head
		s.requeueLocked(j, fmt.Sprintf("node %s lost: %v", n.Name, reason))
	}
	if n.draining && len(jobs) == 0 {
		s.noteLocked(n.Name, NodeEventLeft, reason.Error()) // a drained slave going away is no loss
		s.log.Info("node left", "node", n.Name)
	} else {
		s.noteLocked(n.Name, NodeEventLost, reason.Error())
		s.log.Warn("node lost", "node", n.Name, "reason", reason, "requeued", len(jobs))
	}
	s.dispatchLocked()
	if n.onLost == nil {
		return func() {}
	}
	return func() { n.onLost(reason) }
}

func (s *Scheduler) noteLocked(name string, kind NodeEventKind, reason string) {
	e := NodeEvent{At: s.now(), Node: name, Kind: kind, Reason: reason}
	if s.cfg.Observer != nil {
		s.pendingNotes = append(s.pendingNotes, e)
	}
	s.events = append(s.events, e)
	if len(s.events) > 100 {
		s.events = slices.Delete(s.events, 0, len(s.events)-100)
	}
}

// DrainNode stops placing jobs on the named slave; what it runs finishes. It reports
// whether such a slave is registered.
func (s *Scheduler) DrainNode(name string) bool {
	s.mu.Lock()
	defer s.unlockAndNotify()
	for _, n := range s.nodes {
		if n.Name == name && n.role == RoleSlave {
			if !n.draining {
				n.draining = true
				s.noteLocked(n.Name, NodeEventDraining, "")
			}
			return true
		}
	}
	return false
}

// noteExternal records a node event decided outside the scheduler (the autoscaler's).
func (s *Scheduler) noteExternal(name string, kind NodeEventKind, reason string) {
	s.mu.Lock()
	s.noteLocked(name, kind, reason)
	s.unlockAndNotify()
}

// unlockAndNotify releases mu and tells the Observer the node events noted meanwhile.
func (s *Scheduler) unlockAndNotify() {
	notes := s.pendingNotes
	s.pendingNotes = nil
	s.mu.Unlock()
	for _, e := range notes {
		s.observe(func(o Observer) { o.NodeChanged(e) })
	}
}

// NodeHandle is a registered slave's side of the scheduler.
type NodeHandle struct {
	s *Scheduler
	n *node
}

// Heartbeat records the node's load; it also proves the node alive.
func (h *NodeHandle) Heartbeat(load Load) {
	h.s.mu.Lock()
	defer h.s.mu.Unlock()
	h.n.load = load
	h.n.lastBeat = h.s.now()
}

// SetCapacity changes how many programs the node takes (0 while it drains).
func (h *NodeHandle) SetCapacity(capacity int) {
	h.s.mu.Lock()
	defer h.s.mu.Unlock()
	h.n.Capacity = max(capacity, 0)
	h.s.dispatchLocked()
}

// Drain stops placing jobs on the node; the ones it runs finish. Running reports how many
// are left.
func (h *NodeHandle) Drain() {
	h.s.mu.Lock()
	defer h.s.unlockAndNotify()
	if !h.n.draining {
		h.n.draining = true
		h.s.noteLocked(h.n.Name, NodeEventDraining, "")
	}
}

// Running is how many jobs run on the node now.
func (h *NodeHandle) Running() int {
	h.s.mu.Lock()
	defer h.s.mu.Unlock()
	return len(h.n.running)
}

// Lost reports the node gone (its connection closed): its jobs run again elsewhere.
func (h *NodeHandle) Lost(reason error) {
	h.s.mu.Lock()
	if h.n.gone {
		h.s.mu.Unlock()
		return
	}
	f := h.s.loseLocked(h.n, reason)
	h.s.unlockAndNotify()
	f()
}

// ReportLoad records the master's own load (sampled by its owner, e.g. every second).
func (s *Scheduler) ReportLoad(load Load) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.local.load = load
	s.local.lastBeat = s.now()
	s.dispatchLocked()
}

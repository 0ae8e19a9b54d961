package scheduler

import (
	"slices"
	"time"
)

// Totals counts what the scheduler did since it started.
type Totals struct {
	Accepted int            `json:"accepted"`
	Rejected int            `json:"rejected"` // busy
	Finished int            `json:"finished"`
	Failed   int            `json:"failed"`  // ended with an error, not a result
	Retried  int            `json:"retried"` // dispatches repeated after a node was lost
	ByStatus map[string]int `json:"by_status"`
}

// Snapshot is the cluster as the scheduler sees it.
type Snapshot struct {
	Nodes      []NodeInfo  `json:"nodes"`
	Running    []Info      `json:"running"`
	Queued     []Info      `json:"queued"`
	Recent     []Info      `json:"recent"`
	NodeEvents []NodeEvent `json:"node_events,omitempty"`
	Totals     Totals      `json:"totals"`
}

// NodeInfo describes a node for status views.
type NodeInfo struct {
	Name      string    `json:"name"`
	Role      string    `json:"role"` // "master" or "slave"
	State     string    `json:"state"`
	Capacity  int       `json:"capacity"`
	Running   int       `json:"running"`        // jobs
	Used      int       `json:"used,omitempty"` // program slots they hold (a judged job: several)
	Done      int       `json:"done"`
	Load      Load      `json:"load"`
	LastBeat  time.Time `json:"last_beat,omitzero"`
	Joined    time.Time `json:"joined"`
	Languages []string  `json:"languages,omitempty"`
}

// Snapshot returns the current state; Recent holds up to recent finished jobs, newest first.
func (s *Scheduler) Snapshot(recent int) Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Empty lists, not nil: JSON readers get [] rather than null.
	snap := Snapshot{Totals: s.totals, NodeEvents: slices.Clone(s.events),
		Nodes: []NodeInfo{}, Running: []Info{}, Queued: []Info{}, Recent: []Info{}}
	snap.Totals.ByStatus = make(map[string]int, len(s.totals.ByStatus))
	for k, v := range s.totals.ByStatus {
		snap.Totals.ByStatus[k] = v
	}
	for _, n := range s.nodes {
		state := NodeReady
		if n.draining {
			state = NodeDraining
		}
		in := NodeInfo{Name: n.Name, Role: n.role, State: state, Capacity: n.Capacity, Running: len(n.running), Used: n.used, Done: n.done,
			Load: n.load, LastBeat: n.lastBeat, Joined: n.joined}
		for l := range n.Languages {
			in.Languages = append(in.Languages, l)
		}
		slices.Sort(in.Languages)
		snap.Nodes = append(snap.Nodes, in)
		for j := range n.running {
			snap.Running = append(snap.Running, j.Info())
		}
	}
	slices.SortFunc(snap.Running, func(a, b Info) int { return a.Started.Compare(b.Started) })
	for _, j := range s.queue {
		snap.Queued = append(snap.Queued, j.Info())
	}
	for i := len(s.finished) - 1; i >= 0 && len(snap.Recent) < recent; i-- {
		snap.Recent = append(snap.Recent, s.finished[i].Info())
	}
	return snap
}

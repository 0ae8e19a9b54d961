package scheduler

import (
	"errors"
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
	// Name is unique in the cluster; a node joining with the name of a live one replaces it.
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
	load     Load
	lastBeat time.Time
	joined   time.Time
	draining bool
	gone     bool
	done     int // jobs finished here
	onLost   func(reason error)
}

func (n *node) serves(lang string) bool {
	if len(n.Languages) == 0 {
		return true
	}
	_, ok := n.Languages[lang]
	return ok
}

// Candidate is a node as placement sees it.
type Candidate struct {
	Local    bool
	Running  int
	Capacity int
	CPU      float64
	// Eligible is false when the node cannot take this job (draining, wrong language).
	Eligible bool
}

// Place chooses where a job runs: the index of a candidate, or -1 when none has room.
// The master (Local) runs jobs itself while it has a free slot and its CPU is under
// cpuThreshold (0: no CPU threshold); past either, jobs go to the slave with the lowest
// share of its capacity in use, then the lowest CPU, then the lowest index. When no slave
// has room either, the master takes the job if it has a slot (CPU alone never stops it:
// a busy master is better than a queued job).
func Place(cands []Candidate, cpuThreshold float64) int {
	local := -1
	best := -1
	var bestShare, bestCPU float64
	for i, c := range cands {
		if !c.Eligible || c.Running >= c.Capacity {
			continue
		}
		if c.Local {
			if cpuThreshold <= 0 || c.CPU < cpuThreshold {
				return i
			}
			local = i
			continue
		}
		share := float64(c.Running) / float64(c.Capacity)
		if best < 0 || share < bestShare || (share == bestShare && c.CPU < bestCPU) {
			best, bestShare, bestCPU = i, share, c.CPU
		}
	}
	if best >= 0 {
		return best
	}
	return local
}

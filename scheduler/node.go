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

// Candidate is a node as placement sees it.
type Candidate struct {
	Local bool
	// Running is the program slots in use; Capacity the slots the node has.
	Running  int
	Capacity int
	CPU      float64
	// Eligible is false when the node cannot take this job (draining, wrong language).
	Eligible bool
}

// room reports whether c can take a job that needs need slots: it fits in the free
// slots, or (oversize) it needs more than the node has and the node runs nothing, so that
// a job bigger than every node still runs somewhere, alone.
func (c Candidate) room(need int, oversize bool) bool {
	if !c.Eligible || c.Capacity <= 0 {
		return false
	}
	if oversize {
		return need > c.Capacity && c.Running == 0
	}
	return c.Running+need <= c.Capacity
}

// Place chooses where a job that holds need program slots (its Spec.Slots; less than 1
// counts as 1) runs: the index of a candidate, or -1 when none has room. A node has room
// when the job fits in its free slots. The master (Local) runs jobs itself while it has
// room and its CPU is under cpuThreshold (0: no CPU threshold); past either, jobs go to
// the slave with the lowest share of its capacity in use, then the lowest CPU, then the
// lowest index. When no slave has room either, the master takes the job if it has room
// (CPU alone never stops it: a busy master is better than a queued job). A job that
// needs more slots than a node has fits nowhere; it then goes, by the same rules, to a
// node that runs nothing at all (so it is never stuck), and holds that node whole.
func Place(cands []Candidate, need int, cpuThreshold float64) int {
	need = max(need, 1)
	if i := place(cands, need, cpuThreshold, false); i >= 0 {
		return i
	}
	return place(cands, need, cpuThreshold, true)
}

func place(cands []Candidate, need int, cpuThreshold float64, oversize bool) int {
	local := -1
	best := -1
	var bestShare, bestCPU float64
	for i, c := range cands {
		if !c.room(need, oversize) {
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

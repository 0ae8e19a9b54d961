package scheduler

import (
	"runbox/sandbox"
)

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

// placeLocked picks a node for j, or nil: it describes every node as a Candidate (the
// ones that are gone, draining or without j's language are not eligible) and lets Place
// decide. dispatchLocked calls it for each queued job, oldest first.
func (s *Scheduler) placeLocked(j *Job) *node {
	lang, _ := sandbox.Lookup(j.Spec.Language)
	s.cands = s.cands[:0]
	for _, n := range s.nodes {
		s.cands = append(s.cands, Candidate{
			Local: n == s.local, Running: n.used, Capacity: n.Capacity, CPU: n.load.CPU,
			Eligible: !n.gone && !n.draining && n.serves(lang.Name),
		})
	}
	if i := Place(s.cands, j.slots, s.cfg.CPUThreshold); i >= 0 {
		return s.nodes[i]
	}
	return nil
}

// capacityLocked is the number of program slots of the nodes that take jobs, how many
// slots every node's running jobs hold, and the largest capacity of one node.
func (s *Scheduler) capacityLocked() (capacity, used, biggest int) {
	for _, n := range s.nodes {
		if !n.gone && !n.draining {
			capacity += n.Capacity
			biggest = max(biggest, n.Capacity)
		}
		used += n.used
	}
	return capacity, used, biggest
}

// needLocked is the slots a job counts for in the queue's accounting: its Slots, but no
// more than the largest node has (such a job runs alone on a node).
func needLocked(j *Job, biggest int) int {
	return min(j.slots, max(biggest, 1))
}

// Reading the container's own cgroup, v1 or v2: memory, OOM kills, CPU time, through
// internal/cgroup (the same reader as the scheduler's load sampler).

package boxinit

import (
	"time"

	icgroup "runbox/internal/cgroup"
)

// cgroup reads the container's own cgroup. Absent files read as "unknown".
type cgroup struct{ g icgroup.Group }

func cgroupOf(root string) cgroup { return cgroup{icgroup.At(root)} }

// oomKills is the cgroup's count of OOM kills so far (0 when unknown).
func (c cgroup) oomKills() int64 { return c.g.OOMKills() }

// memSample reads the cgroup's memory counters; what cannot be read is -1 (limit: 0).
func (c cgroup) memSample() memSample {
	s := memSample{oomKills: c.g.OOMKills(), usage: -1, refaults: -1}
	if v, ok := c.g.MemoryUsage(); ok {
		s.usage = v
	}
	if v, ok := c.g.MemoryLimit(); ok {
		s.limit = v
	}
	if v, ok := c.g.Refaults(); ok {
		s.refaults = v
	}
	return s
}

// cpuUsage is the cgroup's total CPU time so far.
func (c cgroup) cpuUsage() (time.Duration, bool) { return c.g.CPUUsage() }

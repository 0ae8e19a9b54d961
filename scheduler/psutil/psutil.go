// Package psutil samples a node's load for the scheduler with github.com/shirou/gopsutil/v4.
// Inside a container with CPU or memory limits it measures against the container's own
// cgroup (v1 or v2), not the host: a slave limited to one core at 100% is full even when
// the host is idle.
package psutil

import (
	"sync"
	"time"

	"github.com/shirou/gopsutil/v4/cpu"
	"github.com/shirou/gopsutil/v4/mem"

	"runbox/internal/cgroup"
	"runbox/scheduler"
)

// Sampler reports load since its previous Sample. It is safe for concurrent use.
type Sampler struct {
	root string           // cgroup mount, "/sys/fs/cgroup"
	now  func() time.Time // the wall clock the CPU use is divided by (tests set it)

	mu       sync.Mutex
	lastCPU  time.Duration // cgroup CPU usage at the last sample
	lastWall time.Time
}

// New returns a Sampler reading the cgroup mounted at /sys/fs/cgroup.
func New() *Sampler { return NewAt("/sys/fs/cgroup") }

// NewAt returns a Sampler reading the cgroup mounted at root (tests point it at a fake tree).
func NewAt(root string) *Sampler { return newSampler(root, time.Now) }

func newSampler(root string, now func() time.Time) *Sampler {
	s := &Sampler{root: root, now: now}
	s.Sample() // prime the CPU deltas
	return s
}

// Sample returns the CPU use since the previous call and the memory in use now.
func (s *Sampler) Sample() scheduler.Load {
	var load scheduler.Load
	g := cgroup.At(s.root)
	cores, quota := g.CPUQuota()
	if usage, ok := g.CPUUsage(); ok && quota {
		now := s.now()
		s.mu.Lock()
		if !s.lastWall.IsZero() {
			wall := now.Sub(s.lastWall)
			if wall > 0 {
				load.CPU = 100 * float64(usage-s.lastCPU) / (float64(wall) * cores)
			}
		}
		s.lastCPU, s.lastWall = usage, now
		s.mu.Unlock()
	} else if p, err := cpu.Percent(0, false); err == nil && len(p) == 1 {
		load.CPU = p[0]
	}
	load.CPU = min(max(load.CPU, 0), 100)

	if vm, err := mem.VirtualMemory(); err == nil {
		load.MemUsed, load.MemTotal = vm.Used, vm.Total
	}
	if limit, used, ok := s.memCgroup(); ok && (load.MemTotal == 0 || limit < load.MemTotal) {
		load.MemUsed, load.MemTotal = used, limit
	}
	return load
}

// memCgroup returns the cgroup's memory limit and use, if it has a limit.
func (s *Sampler) memCgroup() (limit, used uint64, ok bool) {
	g := cgroup.At(s.root)
	l, ok1 := g.MemoryLimit()
	u, ok2 := g.MemoryUsage()
	return uint64(l), uint64(u), ok1 && ok2
}

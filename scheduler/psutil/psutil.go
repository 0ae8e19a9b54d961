// Package psutil samples a node's load for the scheduler with github.com/shirou/gopsutil/v4.
// Inside a container with CPU or memory limits it measures against the container's own
// cgroup (v1 or v2), not the host: a slave limited to one core at 100% is full even when
// the host is idle.
package psutil

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/shirou/gopsutil/v4/cpu"
	"github.com/shirou/gopsutil/v4/mem"

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
	cores, quota := s.cpuQuota()
	if usage, ok := s.cpuUsage(); ok && quota {
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

func (s *Sampler) v2() bool {
	_, err := os.Stat(filepath.Join(s.root, "cgroup.controllers"))
	return err == nil
}

// cpuQuota returns the cgroup's CPU quota in cores, if it has one.
func (s *Sampler) cpuQuota() (cores float64, ok bool) {
	if s.v2() {
		f := strings.Fields(read(filepath.Join(s.root, "cpu.max")))
		if len(f) == 2 && f[0] != "max" {
			q, err1 := strconv.ParseFloat(f[0], 64)
			p, err2 := strconv.ParseFloat(f[1], 64)
			if err1 == nil && err2 == nil && p > 0 {
				return q / p, true
			}
		}
		return 0, false
	}
	for _, dir := range []string{"cpu", "cpu,cpuacct"} {
		q, err1 := strconv.ParseFloat(read(filepath.Join(s.root, dir, "cpu.cfs_quota_us")), 64)
		p, err2 := strconv.ParseFloat(read(filepath.Join(s.root, dir, "cpu.cfs_period_us")), 64)
		if err1 == nil && err2 == nil && q > 0 && p > 0 {
			return q / p, true
		}
	}
	return 0, false
}

// cpuUsage is the cgroup's total CPU time.
func (s *Sampler) cpuUsage() (time.Duration, bool) {
	if s.v2() {
		for line := range strings.SplitSeq(read(filepath.Join(s.root, "cpu.stat")), "\n") {
			if v, ok := strings.CutPrefix(line, "usage_usec "); ok {
				us, err := strconv.ParseInt(v, 10, 64)
				return time.Duration(us) * time.Microsecond, err == nil
			}
		}
		return 0, false
	}
	for _, dir := range []string{"cpuacct", "cpu,cpuacct"} {
		if ns, err := strconv.ParseInt(read(filepath.Join(s.root, dir, "cpuacct.usage")), 10, 64); err == nil {
			return time.Duration(ns), true
		}
	}
	return 0, false
}

// memCgroup returns the cgroup's memory limit and use, if it has a limit.
func (s *Sampler) memCgroup() (limit, used uint64, ok bool) {
	var lim, use string
	if s.v2() {
		lim, use = read(filepath.Join(s.root, "memory.max")), read(filepath.Join(s.root, "memory.current"))
	} else {
		lim, use = read(filepath.Join(s.root, "memory", "memory.limit_in_bytes")), read(filepath.Join(s.root, "memory", "memory.usage_in_bytes"))
	}
	l, err1 := strconv.ParseUint(lim, 10, 64)
	u, err2 := strconv.ParseUint(use, 10, 64)
	if err1 != nil || err2 != nil || l == 0 || l >= 1<<60 {
		return 0, 0, false // "max", or v1's "no limit" (a huge number)
	}
	return l, u, true
}

func read(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

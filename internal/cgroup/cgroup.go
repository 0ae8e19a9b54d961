// Package cgroup reads a Linux control group's CPU and memory counters, from its files
// under a mount point, for cgroup v2 (the unified hierarchy) and v1 (one directory per
// controller, under the names distributions and container engines give them). It reads
// files only: no cgroup is created or changed. A counter that cannot be read is reported
// as such (ok false, or -1), never as zero.
//
// Its users: the scheduler's load sampler (scheduler/psutil), which measures a node
// against its container's own limits, and runbox-init (sandbox/boxinit), which measures
// a program's CPU time and memory inside its sandbox.
package cgroup

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// unlimited is where v1's "no limit" starts (it is a page-rounded 2^63-1); v2 writes "max".
const unlimited = 1 << 60

// v1 directories of each controller: alone, or mounted together with a sibling.
var (
	cpuDirs     = []string{"cpu", "cpu,cpuacct", "cpuacct,cpu"}
	cpuacctDirs = []string{"cpuacct", "cpu,cpuacct", "cpuacct,cpu"}
)

// Group is the cgroup mounted at a directory.
type Group struct {
	// Root is the mount point: /sys/fs/cgroup in a container.
	Root string
	// V2 says whether it is the unified hierarchy (Root holds cgroup.controllers).
	V2 bool
}

// At returns the cgroup mounted at root, its version told by its files.
func At(root string) Group {
	_, err := os.Stat(filepath.Join(root, "cgroup.controllers"))
	return Group{Root: root, V2: err == nil}
}

// CPUUsage is the group's total CPU time so far: v2's cpu.stat usage_usec, v1's
// cpuacct.usage.
func (g Group) CPUUsage() (time.Duration, bool) {
	if g.V2 {
		us, err := readKey(filepath.Join(g.Root, "cpu.stat"), "usage_usec")
		if err != nil || us < 0 {
			return 0, false
		}
		return time.Duration(us) * time.Microsecond, true
	}
	for _, dir := range cpuacctDirs {
		if ns, err := readInt(filepath.Join(g.Root, dir, "cpuacct.usage")); err == nil && ns >= 0 {
			return time.Duration(ns), true
		}
	}
	return 0, false
}

// CPUQuota is the group's CPU quota in cores (1.5: one core and a half), when it has one:
// v2's cpu.max, v1's cpu.cfs_quota_us over cpu.cfs_period_us.
func (g Group) CPUQuota() (cores float64, ok bool) {
	if g.V2 {
		f := strings.Fields(read(filepath.Join(g.Root, "cpu.max")))
		if len(f) == 2 && f[0] != "max" {
			q, err1 := strconv.ParseFloat(f[0], 64)
			p, err2 := strconv.ParseFloat(f[1], 64)
			if err1 == nil && err2 == nil && q > 0 && p > 0 {
				return q / p, true
			}
		}
		return 0, false
	}
	for _, dir := range cpuDirs {
		q, err1 := readInt(filepath.Join(g.Root, dir, "cpu.cfs_quota_us"))
		p, err2 := readInt(filepath.Join(g.Root, dir, "cpu.cfs_period_us"))
		if err1 == nil && err2 == nil && q > 0 && p > 0 {
			return float64(q) / float64(p), true
		}
	}
	return 0, false
}

// MemoryUsage is the memory the group uses now, in bytes: v2's memory.current, v1's
// memory.usage_in_bytes.
func (g Group) MemoryUsage() (int64, bool) {
	v, err := readInt(g.memFile("memory.current", "memory.usage_in_bytes"))
	if err != nil || v < 0 {
		return 0, false
	}
	return v, true
}

// MemoryLimit is the group's memory limit in bytes, when it has one (v2's "max" and
// v1's huge "no limit" are none).
func (g Group) MemoryLimit() (int64, bool) {
	v, err := readInt(g.memFile("memory.max", "memory.limit_in_bytes"))
	if err != nil || v <= 0 || v >= unlimited {
		return 0, false
	}
	return v, true
}

// OOMKills is how many processes of the group the out-of-memory killer killed so far
// (v2's memory.events, v1's memory.oom_control oom_kill); 0 when unknown.
func (g Group) OOMKills() int64 {
	v, _ := readKey(g.memFile("memory.events", "memory.oom_control"), "oom_kill")
	return v
}

// Refaults is how many file pages the group read back after the kernel evicted them
// (memory.stat's workingset refaults): a group thrashing at its memory limit has many.
func (g Group) Refaults() (int64, bool) {
	keys := []string{"total_workingset_refault_file", "workingset_refault_file", "total_workingset_refault"}
	if g.V2 {
		keys = []string{"workingset_refault_file", "workingset_refault"}
	}
	for _, k := range keys {
		if v, err := readKey(g.memFile("memory.stat", "memory.stat"), k); err == nil {
			return v, true
		}
	}
	return 0, false
}

// memFile is the path of a memory controller's file, by its v2 and v1 names.
func (g Group) memFile(v2, v1 string) string {
	if g.V2 {
		return filepath.Join(g.Root, v2)
	}
	return filepath.Join(g.Root, "memory", v1)
}

func read(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// readInt reads a file holding one integer.
func readInt(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

// errNoKey: the file has no line for the key.
var errNoKey = errors.New("no such key")

// readKey reads "key value" lines and returns key's value.
func readKey(path, key string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if ok && k == key {
			return strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, errNoKey
}

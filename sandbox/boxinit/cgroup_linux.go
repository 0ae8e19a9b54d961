// Reading the container's own cgroup, v1 or v2: memory, OOM kills, CPU time.

package boxinit

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// cgroup reads the container's own cgroup, v1 or v2. Absent files read as "unknown".
type cgroup struct {
	v2   bool
	root string
}

func cgroupOf(root string) cgroup {
	_, err := os.Stat(filepath.Join(root, "cgroup.controllers"))
	return cgroup{v2: err == nil, root: root}
}

// oomKills is the cgroup's count of OOM kills so far (0 when unknown).
func (c cgroup) oomKills() int64 {
	file := "memory/memory.oom_control"
	if c.v2 {
		file = "memory.events"
	}
	v, _ := readKey(filepath.Join(c.root, file), "oom_kill")
	return v
}

// memSample reads the cgroup's memory counters; what cannot be read is -1 (limit: 0).
func (c cgroup) memSample() memSample {
	s := memSample{oomKills: c.oomKills(), usage: -1, refaults: -1}
	usage, limit, stat := "memory/memory.usage_in_bytes", "memory/memory.limit_in_bytes", "memory/memory.stat"
	refaultKeys := []string{"total_workingset_refault_file", "workingset_refault_file", "total_workingset_refault"}
	if c.v2 {
		usage, limit, stat = "memory.current", "memory.max", "memory.stat"
		refaultKeys = []string{"workingset_refault_file", "workingset_refault"}
	}
	if v, err := readInt(filepath.Join(c.root, usage)); err == nil {
		s.usage = v
	}
	if v, err := readInt(filepath.Join(c.root, limit)); err == nil && v < 1<<60 { // v1 "unlimited" is near 2^63; v2 "max" does not parse
		s.limit = v
	}
	for _, k := range refaultKeys {
		if v, err := readKey(filepath.Join(c.root, stat), k); err == nil {
			s.refaults = v
			break
		}
	}
	return s
}

// cpuUsage is the cgroup's total CPU time so far.
func (c cgroup) cpuUsage() (time.Duration, bool) {
	if c.v2 {
		us, err := readKey(filepath.Join(c.root, "cpu.stat"), "usage_usec")
		return time.Duration(us) * time.Microsecond, err == nil
	}
	for _, dir := range []string{"cpuacct", "cpu,cpuacct", "cpuacct,cpu"} {
		b, err := os.ReadFile(filepath.Join(c.root, dir, "cpuacct.usage"))
		if err != nil {
			continue
		}
		ns, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err == nil {
			return time.Duration(ns), true
		}
	}
	return 0, false
}

// readInt reads a file holding one integer.
func readInt(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

// readKey reads "key value" lines and returns key's value.
func readKey(path, key string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		k, v, ok := strings.Cut(line, " ")
		if ok && k == key {
			return strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, errors.New("no " + key + " in " + path)
}

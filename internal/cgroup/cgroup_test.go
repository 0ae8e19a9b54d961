package cgroup

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func tree(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, content := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// sample is everything a Group reads.
type sample struct {
	v2               bool
	cpu              time.Duration
	cpuOK            bool
	quota            float64
	quotaOK          bool
	usage, limit     int64
	usageOK, limitOK bool
	oom, refaults    int64
	refaultsOK       bool
}

func read1(root string) sample {
	g := At(root)
	var s sample
	s.v2 = g.V2
	s.cpu, s.cpuOK = g.CPUUsage()
	s.quota, s.quotaOK = g.CPUQuota()
	s.usage, s.usageOK = g.MemoryUsage()
	s.limit, s.limitOK = g.MemoryLimit()
	s.oom = g.OOMKills()
	s.refaults, s.refaultsOK = g.Refaults()
	return s
}

func TestGroups(t *testing.T) {
	t.Parallel()
	v1 := func(cpuDir, cpuacctDir string) map[string]string {
		return map[string]string{
			cpuDir + "/cpu.cfs_quota_us":   "150000",
			cpuDir + "/cpu.cfs_period_us":  "100000",
			cpuacctDir + "/cpuacct.usage":  "5000000000",
			"memory/memory.limit_in_bytes": "536870912",
			"memory/memory.usage_in_bytes": "134217728",
			"memory/memory.oom_control":    "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
			"memory/memory.stat":           "cache 1\ntotal_workingset_refault_file 7\n",
		}
	}
	full1 := sample{cpu: 5 * time.Second, cpuOK: true, quota: 1.5, quotaOK: true, usage: 128 << 20, usageOK: true,
		limit: 512 << 20, limitOK: true, oom: 2, refaults: 7, refaultsOK: true}
	for name, c := range map[string]struct {
		files map[string]string
		want  sample
	}{
		"v2": {map[string]string{
			"cgroup.controllers": "cpu memory",
			"cpu.max":            "50000 100000",
			"cpu.stat":           "usage_usec 1000000\nuser_usec 900000\n",
			"memory.max":         "268435456",
			"memory.current":     "67108864",
			"memory.events":      "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
			"memory.stat":        "anon 1\nworkingset_refault_file 42\n",
		}, sample{v2: true, cpu: time.Second, cpuOK: true, quota: 0.5, quotaOK: true, usage: 64 << 20, usageOK: true,
			limit: 256 << 20, limitOK: true, oom: 1, refaults: 42, refaultsOK: true}},
		"v2 without limits": {map[string]string{
			"cgroup.controllers": "", "cpu.max": "max 100000", "memory.max": "max", "memory.current": "1",
		}, sample{v2: true, usage: 1, usageOK: true}},
		"v1 apart":       {v1("cpu", "cpuacct"), full1},
		"v1 cpu,cpuacct": {v1("cpu,cpuacct", "cpu,cpuacct"), full1},
		"v1 cpuacct,cpu": {v1("cpuacct,cpu", "cpuacct,cpu"), full1},
		"v1 without limits": {map[string]string{
			"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000",
			"memory/memory.limit_in_bytes": "9223372036854771712", "memory/memory.usage_in_bytes": "1",
		}, sample{usage: 1, usageOK: true}},
		"nothing":    {map[string]string{}, sample{}},
		"garbage v2": {map[string]string{"cgroup.controllers": "", "cpu.stat": "usage_usec lots\n", "cpu.max": "1 0", "memory.current": "-5"}, sample{v2: true}},
	} {
		if got := read1(tree(t, c.files)); got != c.want {
			t.Errorf("%s:\n got %+v\nwant %+v", name, got, c.want)
		}
	}
}

package psutil

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func writeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, content := range files {
		p := filepath.Join(root, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestHostSample(t *testing.T) {
	t.Parallel()
	l := NewAt(t.TempDir()).Sample() // no cgroup files: the host's numbers
	if l.MemTotal == 0 || l.MemUsed == 0 || l.MemUsed > l.MemTotal || l.CPU < 0 || l.CPU > 100 {
		t.Errorf("host load %+v", l)
	}
}

func TestCgroupV2Limits(t *testing.T) {
	t.Parallel()
	root := writeTree(t, map[string]string{
		"cgroup.controllers": "cpu memory",
		"cpu.max":            "50000 100000", // half a core
		"cpu.stat":           "usage_usec 1000000\n",
		"memory.max":         "268435456",
		"memory.current":     "67108864",
	})
	wall := time.Unix(1e9, 0)
	s := newSampler(root, func() time.Time { return wall })
	wall = wall.Add(100 * time.Millisecond)
	// 40 ms of CPU in 100 ms of wall on half a core: 80%.
	os.WriteFile(filepath.Join(root, "cpu.stat"), []byte("usage_usec 1040000\n"), 0o644)
	l := s.Sample()
	if l.CPU < 79.9 || l.CPU > 80.1 {
		t.Errorf("cpu %.1f%%, want 80%% of the half core", l.CPU)
	}
	if l.MemTotal != 256<<20 || l.MemUsed != 64<<20 || l.MemPercent() != 25 {
		t.Errorf("memory %+v", l)
	}
}

func TestCgroupV1Limits(t *testing.T) {
	t.Parallel()
	root := writeTree(t, map[string]string{
		"cpu/cpu.cfs_quota_us":         "100000",
		"cpu/cpu.cfs_period_us":        "100000",
		"cpuacct/cpuacct.usage":        "5000000000",
		"memory/memory.limit_in_bytes": "536870912",
		"memory/memory.usage_in_bytes": "134217728",
	})
	l := NewAt(root).Sample()
	if l.MemTotal != 512<<20 || l.MemUsed != 128<<20 {
		t.Errorf("memory %+v", l)
	}
	// v1 without a limit: the host's memory.
	root = writeTree(t, map[string]string{"memory/memory.limit_in_bytes": "9223372036854771712", "memory/memory.usage_in_bytes": "1"})
	if l := NewAt(root).Sample(); l.MemTotal < 1<<30 {
		t.Errorf("unlimited cgroup reported %+v", l)
	}
}

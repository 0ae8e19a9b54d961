package bolt

import (
	"bytes"

	"os"
	"runtime"
	"testing"

	"runbox/sandbox/sandboxtest"
	"runbox/scheduler"
)

// BenchmarkFootprint40x8MiB measures what 40 finished jobs of 8 MiB stdin each leave
// behind: the live heap (after a GC), the journal's file size, and its size once reopened
// (compacted at open when mostly free). Issue 14 measured +321 MiB of heap and +538 MiB of
// journal before finished jobs dropped their inputs.
func BenchmarkFootprint40x8MiB(b *testing.B) {
	for b.Loop() {
		dir := b.TempDir()
		j, err := Open(DefaultConfig(dir))
		if err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		cfg := scheduler.DefaultConfig()
		cfg.MaxPrograms = 4
		s, err := scheduler.New(cfg, &sandboxtest.Fake{Node: "m"}, j)
		if err != nil {
			b.Fatal(err)
		}
		for i := 0; i < 40; i++ {
			spec := sandboxtest.Program("python", "out x")
			spec.Stdin = bytes.Repeat([]byte{byte('a' + i%26)}, 8<<20)
			job, err := s.Submit(spec, false)
			if err != nil {
				b.Fatal(err)
			}
			<-job.Done()
		}
		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		fi, err := os.Stat(DefaultConfig(dir).Path)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/(1<<20), "heap-MiB")
		b.ReportMetric(float64(fi.Size())/(1<<20), "journal-MiB")
		runtime.KeepAlive(s)
		s.Close()
		j.Close()
		j, err = Open(DefaultConfig(dir))
		if err != nil {
			b.Fatal(err)
		}
		j.Close()
		if fi, err = os.Stat(DefaultConfig(dir).Path); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(fi.Size())/(1<<20), "reopened-MiB")
	}
}

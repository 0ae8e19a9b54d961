package bolt

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"runbox/sandbox"
	"runbox/scheduler"
)

func open(t testing.TB, dir string, keep int) *Journal {
	t.Helper()
	cfg := DefaultConfig(dir)
	cfg.KeepFinished = keep
	j, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func rec(id string, at time.Time) scheduler.Record {
	return scheduler.Record{ID: id, Submitted: at, Spec: sandbox.Spec{Language: "python", Files: []sandbox.File{{Content: []byte("print(" + id + ")")}}}}
}

func TestJournalSurvivesReopen(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	j := open(t, dir, 10)
	t0 := time.Now()
	for i, id := range []string{"b", "a", "c"} { // submitted in this order
		if err := j.Accept(rec(id, t0.Add(time.Duration(i)*time.Millisecond))); err != nil {
			t.Fatal(err)
		}
	}
	done := rec("a", t0.Add(time.Millisecond))
	done.Done, done.Finished, done.Attempts = true, time.Now(), 1
	done.Result = &sandbox.Result{Status: sandbox.StatusOK, Stdout: []byte("out")}
	if err := j.Finish(done); err != nil {
		t.Fatal(err)
	}
	j.Close()

	j = open(t, dir, 10)
	defer j.Close()
	pending, err := j.Pending()
	if err != nil {
		t.Fatal(err)
	}
	if len(pending) != 2 || pending[0].ID != "b" || pending[1].ID != "c" || string(pending[0].Spec.Files[0].Content) != "print(b)" {
		t.Errorf("pending after reopen: %+v", pending)
	}
	got, err := j.Get("a")
	if err != nil || !got.Done || string(got.Result.Stdout) != "out" {
		t.Errorf("finished record: %v %+v", err, got)
	}
	if _, err := j.Get("zzz"); !errors.Is(err, scheduler.ErrNotFound) {
		t.Errorf("missing id: %v", err)
	}
}

func TestJournalTrimsOldFinished(t *testing.T) {
	t.Parallel()
	j := open(t, t.TempDir(), 3)
	defer j.Close()
	t0 := time.Now()
	for i := 0; i < 10; i++ {
		r := rec(fmt.Sprint("j", i), t0)
		j.Accept(r)
		r.Done, r.Finished = true, t0.Add(time.Duration(i)*time.Second)
		if err := j.Finish(r); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 10; i++ {
		_, err := j.Get(fmt.Sprint("j", i))
		if kept := i >= 7; kept != (err == nil) {
			t.Errorf("j%d: kept=%v err=%v", i, kept, err)
		}
	}
}

func TestConcurrentAccepts(t *testing.T) {
	t.Parallel()
	j := open(t, t.TempDir(), 1000)
	defer j.Close()
	var wg sync.WaitGroup
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := j.Accept(rec(fmt.Sprint("c", i), time.Now())); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if p, _ := j.Pending(); len(p) != 200 {
		t.Errorf("%d pending, want 200", len(p))
	}
}

// TestSchedulerRestart: a scheduler on a bolt journal, closed with work pending, is
// replaced by a new one on the same file, which runs the pending job.
func TestSchedulerRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	j := open(t, dir, 100)
	cfg := scheduler.DefaultConfig()
	cfg.MaxPrograms = 0 // nothing runs: the job stays pending
	s, _ := scheduler.New(cfg, nil, j)
	job, err := s.Submit(sandbox.Spec{Language: "python", Files: []sandbox.File{{Content: []byte("x")}}}, false)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	j.Close()

	j = open(t, dir, 100)
	defer j.Close()
	p, _ := j.Pending()
	if len(p) != 1 || p[0].ID != job.ID {
		t.Fatalf("pending after restart: %+v", p)
	}
}

// BenchmarkAccept: durable accepts from 64 concurrent submitters (group commit).
func BenchmarkAccept(b *testing.B) {
	j := open(b, b.TempDir(), 1<<20)
	defer j.Close()
	var n int64
	var mu sync.Mutex
	b.SetParallelism(32)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			mu.Lock()
			n++
			id := fmt.Sprint("b", n)
			mu.Unlock()
			if err := j.Accept(rec(id, time.Now())); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "accepts/s")
}

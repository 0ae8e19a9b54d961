package bolt

import (
	"context"
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
		if err := j.Accept(t.Context(), rec(id, t0.Add(time.Duration(i)*time.Millisecond))); err != nil {
			t.Fatal(err)
		}
	}
	done := rec("a", t0.Add(time.Millisecond))
	done.Done, done.Finished, done.Attempts = true, time.Now(), 1
	done.Result = &sandbox.Result{Status: sandbox.StatusOK, Stdout: []byte("out")}
	if err := j.Finish(t.Context(), done); err != nil {
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
		j.Accept(t.Context(), r)
		r.Done, r.Finished = true, t0.Add(time.Duration(i)*time.Second)
		if err := j.Finish(t.Context(), r); err != nil {
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
			if err := j.Accept(t.Context(), rec(fmt.Sprint("c", i), time.Now())); err != nil {
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
			if err := j.Accept(b.Context(), rec(id, time.Now())); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "accepts/s")
}

// TestCancelledContextWritesNothing: a write whose ctx ended before it ran is refused with
// the context's error and leaves the file as it was.
func TestCancelledContextWritesNothing(t *testing.T) {
	t.Parallel()
	j := open(t, t.TempDir(), 10)
	defer j.Close()
	t0 := time.Now()
	pending := rec("pending", t0)
	if err := j.Accept(t.Context(), pending); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := j.Accept(ctx, rec("late", t0.Add(time.Millisecond))); !errors.Is(err, context.Canceled) {
		t.Errorf("accept with a cancelled ctx: %v, want context.Canceled", err)
	}
	if err := j.Dispatch(ctx, scheduler.Record{ID: "pending", Submitted: t0, Attempts: 2}); !errors.Is(err, context.Canceled) {
		t.Errorf("dispatch with a cancelled ctx: %v", err)
	}
	done := pending
	done.Done, done.Finished = true, time.Now()
	if err := j.Finish(ctx, done); !errors.Is(err, context.Canceled) {
		t.Errorf("finish with a cancelled ctx: %v", err)
	}
	if _, err := j.Get("late"); !errors.Is(err, scheduler.ErrNotFound) {
		t.Errorf("the refused accept was written: %v", err)
	}
	p, err := j.Pending()
	if err != nil || len(p) != 1 || p[0].ID != "pending" || p[0].Attempts != 0 {
		t.Errorf("pending after refused writes: %v %+v", err, p)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	if err := DefaultConfig(t.TempDir()).Validate(); err != nil {
		t.Fatalf("the default config: %v", err)
	}
	for name, mod := range map[string]func(*Config){
		"no path":          func(c *Config) { c.Path = "" },
		"keep none":        func(c *Config) { c.KeepFinished = 0 },
		"negative retain":  func(c *Config) { c.RetainBytes = -1 },
		"no pending bytes": func(c *Config) { c.MaxPendingBytes = 0 },
		"negative age":     func(c *Config) { c.RetainAge = -time.Second },
		"no lock timeout":  func(c *Config) { c.LockTimeout = 0 },
	} {
		cfg := DefaultConfig(t.TempDir())
		mod(&cfg)
		if err := cfg.Validate(); err == nil {
			t.Errorf("%s: valid", name)
		}
		if _, err := Open(cfg); err == nil {
			t.Errorf("%s: opened", name)
		}
	}
}

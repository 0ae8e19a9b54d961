package bolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"

	"runbox/sandbox"
	"runbox/scheduler"
)

// blocker is a Runner whose runs report their start, then last until ctx ends.
type blocker struct{ started chan string }

func newBlocker() *blocker { return &blocker{started: make(chan string, 10)} }

func (b *blocker) Run(ctx context.Context, spec sandbox.Spec, _ *sandbox.Streams) (sandbox.Result, error) {
	b.started <- string(spec.Files[0].Content)
	<-ctx.Done()
	return sandbox.Result{ExitCode: -1}, ctx.Err()
}

// TestCrashLoopStopsAtCap: a job that is running each time the master dies (here: its
// journal goes away before the scheduler, as in a crash) runs MaxAttempts times, and the
// next master ends it as crashed_node instead of running it again.
func TestCrashLoopStopsAtCap(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := scheduler.DefaultConfig()
	cfg.MaxAttempts = 3
	var id string
	for round := 1; round <= cfg.MaxAttempts; round++ {
		j := open(t, dir, 100)
		runner := newBlocker()
		s, err := scheduler.New(cfg, runner, j)
		if err != nil {
			t.Fatal(err)
		}
		if round == 1 {
			job, err := s.Submit(sandbox.Spec{Language: "python", Files: []sandbox.File{{Content: []byte("kill the master")}}}, false)
			if err != nil {
				t.Fatal(err)
			}
			id = job.ID
		}
		<-runner.started // the attempt is journaled before the run starts
		if p, _ := j.Pending(); len(p) != 1 || p[0].Attempts != round {
			t.Fatalf("round %d: pending %+v", round, p)
		}
		j.Close() // the crash: nothing more reaches the journal
		s.Close()
	}
	j := open(t, dir, 100)
	defer j.Close()
	runner := newBlocker()
	s, err := scheduler.New(cfg, runner, j)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	job, err := s.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	<-job.Done()
	evs, _, _ := job.Events(context.Background(), 0)
	if err := evs[len(evs)-1].Err; !errors.Is(err, scheduler.ErrCrashedNode) {
		t.Errorf("after %d crashes: %v, want crashed_node", cfg.MaxAttempts, err)
	}
	if len(runner.started) != 0 {
		t.Error("the job ran again")
	}
	rec, err := j.Get(id)
	if err != nil || !rec.Done || rec.ErrCode != "crashed_node" || rec.Attempts != 3 {
		t.Errorf("journal: %v %+v", err, rec)
	}
	if p, _ := j.Pending(); len(p) != 0 {
		t.Errorf("still pending: %+v", p)
	}
}

// validFile writes a journal with a few records, some with large values (overflow
// pages), and returns its path.
func validFile(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	j := open(t, dir, 100)
	t0 := time.Now()
	for i := 0; i < 20; i++ {
		r := rec(fmt.Sprint("job", i), t0.Add(time.Duration(i)))
		r.Spec.Stdin = bytes.Repeat([]byte{byte('a' + i)}, 40<<10)
		if err := j.Accept(t.Context(), r); err != nil {
			t.Fatal(err)
		}
	}
	j.Close()
	return DefaultConfig(dir).Path
}

// TestDamagedFiles: a truncated, garbage, zeroed or too short journal (or one whose
// pages are overwritten) is refused with ErrDamaged, an error that names the file and
// says how to move it aside; never a panic or SIGBUS. Moved aside, the master starts
// empty.
func TestDamagedFiles(t *testing.T) {
	t.Parallel()
	// The same bytes on every run, whatever order the parallel cases run in.
	random := func(n int) []byte {
		rng := rand.New(rand.NewPCG(1, uint64(n)))
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	for _, c := range []struct {
		name   string
		damage func(t *testing.T, path string, valid []byte)
	}{
		{"truncated to half", func(t *testing.T, path string, valid []byte) { os.Truncate(path, int64(len(valid)/2)) }},
		{"truncated past the meta pages", func(t *testing.T, path string, valid []byte) { os.Truncate(path, 3*4096) }},
		{"too short for a header", func(t *testing.T, path string, valid []byte) { os.WriteFile(path, valid[:100], 0o600) }},
		{"one page", func(t *testing.T, path string, valid []byte) { os.WriteFile(path, valid[:4096], 0o600) }},
		{"garbage", func(t *testing.T, path string, valid []byte) { os.WriteFile(path, random(len(valid)), 0o600) }},
		{"short garbage", func(t *testing.T, path string, valid []byte) { os.WriteFile(path, random(10), 0o600) }},
		{"zeroed", func(t *testing.T, path string, valid []byte) { os.WriteFile(path, make([]byte, len(valid)), 0o600) }},
		{"pages overwritten, header intact", func(t *testing.T, path string, valid []byte) {
			b := bytes.Clone(valid)
			copy(b[2*4096:], random(len(b)-2*4096))
			os.WriteFile(path, b, 0o600)
		}},
		{"freelist reads past the end of the file (SIGBUS)", func(t *testing.T, path string, valid []byte) {
			// The meta pages are valid and the file has every page they count, but the
			// freelist page claims 2^20 entries: bbolt reads far past the file's end.
			b := bytes.Clone(valid)
			le := binary.LittleEndian
			var use int
			if le.Uint64(b[4096+16+48:]) > le.Uint64(b[16+48:]) {
				use = 4096
			}
			fl := int(le.Uint64(b[use+16+32:]))
			le.PutUint16(b[fl*4096+10:], 0xFFFF)
			le.PutUint64(b[fl*4096+16:], 1<<20) // 8 MiB of ids: past the 2 MiB map
			os.WriteFile(path, b, 0o600)
		}},
		{"freelist lists a page in use", func(t *testing.T, path string, valid []byte) {
			// Every page reads well, but the freelist says the root page is free: the
			// first commit frees it again, and bbolt panics (then faults re-reading its
			// freelist in the rollback) unless the open sees it.
			b := bytes.Clone(valid)
			le := binary.LittleEndian
			var use int
			if le.Uint64(b[4096+16+48:]) > le.Uint64(b[16+48:]) {
				use = 4096
			}
			root, fl := le.Uint64(b[use+16+16:]), int(le.Uint64(b[use+16+32:]))
			le.PutUint16(b[fl*4096+10:], 1) // count
			le.PutUint64(b[fl*4096+16:], root)
			os.WriteFile(path, b, 0o600)
		}},
		{"pages zeroed, header intact", func(t *testing.T, path string, valid []byte) {
			b := bytes.Clone(valid)
			clear(b[2*4096:])
			os.WriteFile(path, b, 0o600)
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			path := validFile(t)
			valid, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			c.damage(t, path, valid)
			cfg := DefaultConfig(filepath.Dir(path))
			j, err := Open(cfg)
			if err == nil {
				// Some damage leaves a usable file (overwritten free pages): it must then work.
				defer j.Close()
				if _, err := j.Pending(); err != nil {
					t.Logf("opened, then: %v", err)
				}
				t.Skipf("the damage left a usable journal")
			}
			t.Log(err)
			if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "mv "+path+" "+path+".broken") {
				t.Fatalf("Open: %v; want ErrDamaged naming the file and the mv to do", err)
			}
			if err := os.Rename(path, path+".broken"); err != nil {
				t.Fatal(err)
			}
			j, err = Open(cfg)
			if err != nil {
				t.Fatalf("after moving it aside: %v", err)
			}
			defer j.Close()
			if p, err := j.Pending(); err != nil || len(p) != 0 {
				t.Errorf("fresh journal: %v %v", p, err)
			}
		})
	}
}

// TestUndecodableRecordsSkipped: a record that does not decode (an edited or damaged
// file) is skipped with a logged error and counted, not a crash; the others still load.
func TestUndecodableRecordsSkipped(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	j := open(t, dir, 100)
	t0 := time.Now()
	j.Accept(t.Context(), rec("good", t0))
	j.Accept(t.Context(), rec("bad", t0.Add(1)))
	j.Accept(t.Context(), rec("liar", t0.Add(2)))
	j.Close()
	db, err := bbolt.Open(DefaultConfig(dir).Path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *bbolt.Tx) error {
		jobs := tx.Bucket(bucketJobs)
		jobs.Put([]byte("bad"), []byte(`{"id":"bad","spec":{"files":[{"content":"!!not base64"}]`))
		jobs.Put([]byte("liar"), []byte(`{"id":"good","spec":{"language":"python"}}`))
		jobs.Put([]byte("old"), []byte{0xff, 0x00})
		return tx.Bucket(bucketPending).Put([]byte("short"), nil)
	})
	db.Close()

	j = open(t, dir, 100)
	defer j.Close()
	p, err := j.Pending()
	if err != nil || len(p) != 1 || p[0].ID != "good" {
		t.Errorf("pending: %v %+v", err, p)
	}
	if _, err := j.Get("old"); !errors.Is(err, scheduler.ErrNotFound) {
		t.Errorf("undecodable record by id: %v", err)
	}
	if st, _ := j.Stats(); st.Skipped != 3 {
		t.Errorf("%d records counted as skipped, want 3 (bad, liar, old)", st.Skipped)
	}
}

// TestRetentionAndCompaction: finished records lose their inputs, the finished ones are
// bounded by bytes, and the file shrinks once most of it is free.
func TestRetentionAndCompaction(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := DefaultConfig(dir)
	cfg.RetainBytes, cfg.CompactFree = 200<<10, 1<<20
	j, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	t0 := time.Now()
	var peak int64
	for i := 0; i < 20; i++ {
		r := rec(fmt.Sprint("j", i), t0.Add(time.Duration(i)))
		r.Spec.Stdin = bytes.Repeat([]byte("s"), 1<<20)
		if err := j.Accept(t.Context(), r); err != nil {
			t.Fatal(err)
		}
		if st, _ := j.Stats(); st.FileBytes > peak {
			peak = st.FileBytes
		}
		r.Spec = scheduler.WithoutInputs(r.Spec)
		r.Done, r.Finished = true, t0.Add(time.Duration(i)*time.Second)
		r.Result = &sandbox.Result{Status: sandbox.StatusOK, Stdout: bytes.Repeat([]byte("o"), 50<<10)}
		if err := j.Finish(t.Context(), r); err != nil {
			t.Fatal(err)
		}
	}
	st, err := j.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Compactions == 0 || st.FileBytes >= peak || st.FileBytes > 2<<20 {
		t.Errorf("file %d bytes after %d compactions (peak %d); want it compacted under 2 MiB", st.FileBytes, st.Compactions, peak)
	}
	if st.FinishedBytes > cfg.RetainBytes || st.Finished < 1 || st.Pending != 0 {
		t.Errorf("stats %+v: want the finished ones under %d bytes", st, cfg.RetainBytes)
	}
	last, err := j.Get("j19")
	if err != nil || last.Spec.Stdin != nil || len(last.Result.Stdout) != 50<<10 {
		t.Errorf("newest record: %v", err)
	}
	if _, err := j.Get("j0"); !errors.Is(err, scheduler.ErrNotFound) {
		t.Errorf("oldest record: %v, want trimmed", err)
	}
}

// TestRetentionAge: finished records older than RetainAge go.
func TestRetentionAge(t *testing.T) {
	t.Parallel()
	cfg := DefaultConfig(t.TempDir())
	cfg.RetainAge = time.Hour
	j, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	now := time.Now()
	for i, age := range []time.Duration{3 * time.Hour, 2 * time.Hour, time.Minute} {
		r := rec(fmt.Sprint("a", i), now.Add(-age))
		j.Accept(t.Context(), r)
		r.Done, r.Finished = true, now.Add(-age)
		j.Finish(t.Context(), r)
	}
	for i, kept := range []bool{false, false, true} {
		if _, err := j.Get(fmt.Sprint("a", i)); kept != (err == nil) {
			t.Errorf("a%d: kept %v, err %v", i, kept, err)
		}
	}
}

// TestPendingBound: past its bound of unfinished bytes the journal refuses new jobs with
// ErrStorageFull; what it holds is intact, and it takes jobs again once some finish.
func TestPendingBound(t *testing.T) {
	t.Parallel()
	cfg := DefaultConfig(t.TempDir())
	cfg.MaxPendingBytes = 1 << 20
	j, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	big := func(id string) scheduler.Record {
		r := rec(id, time.Now())
		r.Spec.Stdin = bytes.Repeat([]byte("b"), 400<<10) // ~540 KiB of JSON
		return r
	}
	first := big("first")
	if err := j.Accept(t.Context(), first); err != nil {
		t.Fatal(err)
	}
	if err := j.Accept(t.Context(), big("second")); !errors.Is(err, scheduler.ErrStorageFull) {
		t.Fatalf("past the bound: %v, want ErrStorageFull", err)
	}
	if p, _ := j.Pending(); len(p) != 1 || p[0].ID != "first" {
		t.Errorf("pending: %+v", p)
	}
	first.Spec, first.Done, first.Finished = scheduler.WithoutInputs(first.Spec), true, time.Now()
	if err := j.Finish(t.Context(), first); err != nil {
		t.Fatal(err)
	}
	if err := j.Accept(t.Context(), big("third")); err != nil {
		t.Errorf("after one finished: %v", err)
	}
	if err := j.Finish(t.Context(), first); err != nil {
		t.Errorf("a retried Finish: %v", err)
	}
	if st, _ := j.Stats(); st.Finished != 1 || st.Pending != 1 {
		t.Errorf("stats %+v", st)
	}
}

// TestDiskFull: a journal whose file cannot grow (ENOSPC or, here, the file size limit:
// EFBIG) refuses new jobs with ErrStorageFull and loses nothing it took; once there is
// room it goes on. The limit is per process, so the test runs in a child process.
func TestDiskFull(t *testing.T) {
	t.Parallel()
	if dir := os.Getenv("RUNBOX_DISKFULL_DIR"); dir != "" {
		diskFullChild(t, dir)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestDiskFull$", "-test.v")
	cmd.Env = append(os.Environ(), "RUNBOX_DISKFULL_DIR="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("--- PASS: TestDiskFull")) {
		t.Fatalf("child: %v\n%s", err, out)
	}
}

func diskFullChild(t *testing.T, dir string) {
	cfg := DefaultConfig(dir)
	j, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	t0 := time.Now()
	small := rec("small", t0)
	if err := j.Accept(t.Context(), small); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(cfg.Path)
	var old syscall.Rlimit
	syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old)
	limit := syscall.Rlimit{Cur: uint64(fi.Size()) + 64<<10, Max: old.Max}
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &limit); err != nil {
		t.Skipf("setrlimit: %v", err)
	}
	big := rec("big", t0.Add(1))
	big.Spec.Stdin = bytes.Repeat([]byte("x"), 1<<20)
	err = j.Accept(t.Context(), big)
	if !errors.Is(err, scheduler.ErrStorageFull) {
		t.Fatalf("accept with a full disk: %v, want ErrStorageFull", err)
	}
	t.Logf("full: %v", err)
	if p, err := j.Pending(); err != nil || len(p) != 1 || p[0].ID != "small" {
		t.Fatalf("after the failed write: %v %+v", err, p)
	}
	done := small
	done.Done, done.Finished = true, time.Now()
	done.Result = &sandbox.Result{Status: sandbox.StatusOK, Stdout: bytes.Repeat([]byte("o"), 1<<20)}
	if err := j.Finish(t.Context(), done); !errors.Is(err, scheduler.ErrStorageFull) {
		t.Fatalf("finish with a full disk: %v", err)
	}
	if p, _ := j.Pending(); len(p) != 1 {
		t.Fatalf("a failed Finish lost the pending job: %+v", p)
	}
	syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old)
	if err := j.Finish(t.Context(), done); err != nil {
		t.Fatalf("finish with room again: %v", err)
	}
	if err := j.Accept(t.Context(), big); err != nil {
		t.Fatalf("accept with room again: %v", err)
	}
	j.Close()
	j = open(t, dir, 100)
	if got, err := j.Get("small"); err != nil || !got.Done || len(got.Result.Stdout) != 1<<20 {
		t.Errorf("after reopen: %v", err)
	}
	if p, _ := j.Pending(); len(p) != 1 || p[0].ID != "big" {
		t.Errorf("pending after reopen: %+v", p)
	}
}

// FuzzOpen: whatever bytes the journal file holds, Open returns a journal or an error;
// an opened one answers Pending and Get without crashing.
func FuzzOpen(f *testing.F) {
	valid, err := os.ReadFile(validFile(f))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid)
	f.Add(valid[:len(valid)/2])
	f.Add(valid[:8192])
	f.Add([]byte{})
	f.Add(make([]byte, 16384))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		path := DefaultConfig(dir).Path
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		j, err := Open(DefaultConfig(dir))
		if err != nil {
			return
		}
		defer j.Close()
		recs, _ := j.Pending()
		for _, r := range recs {
			j.Get(r.ID)
		}
	})
}

package boxinit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// These tests run Serve in the test process (not as PID 1), with harmless shell commands.
// They do not use t.Parallel: Serve reaps with wait4(-1), which would take another test's
// children.

type transcript struct {
	stdout, stderr, compile bytes.Buffer
	started                 bool
	result                  Result
}

// serve runs Serve on req and stdin in a scratch directory of its own (serveFrames).
func serve(t *testing.T, req Request, stdin ...string) transcript {
	t.Helper()
	tr, art := serveFrames(t, t.TempDir(), req, nil, stdin...)
	if art != nil {
		t.Errorf("an artefact of %d bytes from a request that asked for none", len(art))
	}
	return tr
}

func sh(script string) []string { return []string{"/bin/sh", "-c", script} }

func TestServeRunsAndStreams(t *testing.T) {
	tr := serve(t, Request{
		Files:   []File{{Name: "main.sh", Content: []byte("cat; echo out; echo err >&2; exit 3")}},
		Run:     []string{"/bin/sh", "main.sh"},
		RunTime: 5 * time.Second, Output: 1 << 20,
	}, "in-", "put\n")
	if !tr.started {
		t.Error("no started frame")
	}
	if got := tr.stdout.String(); got != "in-put\nout\n" {
		t.Errorf("stdout = %q", got)
	}
	if got := tr.stderr.String(); got != "err\n" {
		t.Errorf("stderr = %q", got)
	}
	if tr.result.Outcome != OutcomeExited || tr.result.ExitCode != 3 {
		t.Errorf("result = %+v", tr.result)
	}
	if tr.result.Memory <= 0 {
		t.Errorf("memory = %d, want > 0", tr.result.Memory)
	}
}

func TestServeTimeLimit(t *testing.T) {
	tr := serve(t, Request{Run: sh("echo before; exec sleep 30"), RunTime: 300 * time.Millisecond, Output: 1 << 20})
	if tr.result.Outcome != OutcomeTimeLimit || tr.result.Signal != "SIGKILL" {
		t.Errorf("result = %+v", tr.result)
	}
	if tr.stdout.String() != "before\n" {
		t.Errorf("partial stdout lost: %q", tr.stdout.String())
	}
}

func TestServeOutputLimitKeepsPrefix(t *testing.T) {
	tr := serve(t, Request{Run: sh("yes"), RunTime: 10 * time.Second, Output: 100000})
	if tr.result.Outcome != OutcomeOutputLimit {
		t.Fatalf("result = %+v", tr.result)
	}
	if tr.stdout.Len() != 100000 || !strings.HasPrefix(tr.stdout.String(), "y\ny\n") {
		t.Errorf("kept %d bytes, want exactly the first 100000", tr.stdout.Len())
	}
}

func TestServeCompileError(t *testing.T) {
	tr := serve(t, Request{
		Compile: sh("echo 'main.c:1: error: nope' >&2; exit 1"), CompileTime: 5 * time.Second,
		Run: sh("echo must not run"), RunTime: time.Second, Output: 1 << 20,
	})
	if tr.result.Outcome != OutcomeCompileError || tr.result.ExitCode != 1 {
		t.Errorf("result = %+v", tr.result)
	}
	if tr.started || tr.stdout.Len() != 0 {
		t.Error("the run phase started after a failed compile")
	}
	if !strings.Contains(tr.compile.String(), "error: nope") {
		t.Errorf("compile output = %q", tr.compile.String())
	}
}

func TestServeCompileTimeLimit(t *testing.T) {
	tr := serve(t, Request{Compile: sh("exec sleep 30"), CompileTime: 200 * time.Millisecond, Run: sh("true"), RunTime: time.Second, Output: 1 << 20})
	if tr.result.Outcome != OutcomeCompileError || !strings.Contains(tr.result.Message, "longer than") {
		t.Errorf("result = %+v", tr.result)
	}
}

func TestServeKillsLeftoversWhenMainExits(t *testing.T) {
	start := time.Now()
	// The background child holds stdout open; Serve must not wait for it.
	tr := serve(t, Request{Run: sh("sleep 30 & echo main done"), RunTime: 20 * time.Second, Output: 1 << 20})
	if tr.result.Outcome != OutcomeExited || tr.result.ExitCode != 0 {
		t.Errorf("result = %+v", tr.result)
	}
	if el := time.Since(start); el > 15*time.Second {
		t.Errorf("Serve waited %v for a leftover child", el)
	}
}

func TestServeAddsTheRequestEnv(t *testing.T) {
	tr := serve(t, Request{
		Compile: sh(`echo "compile $LANG_CACHE" >&2`), CompileTime: 5 * time.Second,
		Run: sh(`echo "$LANG_CACHE $HOME $LANG"; env | grep -c '^LANG='`), RunTime: 5 * time.Second, Output: 1 << 20,
		Env: []string{"LANG_CACHE=/tmp/cache", "LANG=C"},
	})
	if tr.result.Outcome != OutcomeExited || tr.result.ExitCode != 0 {
		t.Fatalf("result = %+v", tr.result)
	}
	// Added to the fixed environment, replacing a variable of the same name.
	if got := tr.stdout.String(); got != "/tmp/cache /tmp C\n1\n" {
		t.Errorf("run saw %q", got)
	}
	if got := tr.compile.String(); got != "compile /tmp/cache\n" {
		t.Errorf("compile saw %q", got)
	}
	bad := serve(t, Request{Run: sh("true"), RunTime: time.Second, Output: 10, Env: []string{"NOEQUALS"}})
	if bad.result.Outcome != OutcomeStartError || bad.started {
		t.Errorf("bad env: result = %+v", bad.result)
	}
}

func TestServeMissingCommand(t *testing.T) {
	tr := serve(t, Request{Run: []string{"no-such-binary-runbox"}, RunTime: time.Second, Output: 10})
	if tr.result.Outcome != OutcomeStartError {
		t.Errorf("result = %+v", tr.result)
	}
}

func TestReadFrameCaps(t *testing.T) {
	var b bytes.Buffer
	WriteFrame(&b, FrameStdin, make([]byte, 100))
	if _, _, err := ReadFrame(&b, 99); !errors.Is(err, ErrFrameTooLarge) {
		t.Errorf("err = %v, want ErrFrameTooLarge", err)
	}
	b.Reset()
	WriteFrame(&b, FrameStdin, []byte("abcdef"))
	trunc := bytes.NewReader(b.Bytes()[:8])
	if _, _, err := ReadFrame(trunc, 100); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("truncated frame: err = %v", err)
	}
}

func FuzzReadFrame(f *testing.F) {
	var b bytes.Buffer
	WriteFrame(&b, FrameResult, []byte(`{"outcome":"exited"}`))
	f.Add(b.Bytes())
	f.Add([]byte{0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		for {
			typ, p, err := ReadFrame(r, 1<<16)
			if err != nil {
				return
			}
			var again bytes.Buffer
			WriteFrame(&again, typ, p)
			if again.Len() != 5+len(p) {
				t.Fatal("re-encoding changed size")
			}
		}
	})
}

func TestServeKeepsWhatCameBeforeAFlood(t *testing.T) {
	// stdout's line was written before stderr's flood began: it must be among the bytes
	// kept, however the flood races for the cap.
	for i := 0; i < 20; i++ {
		tr := serve(t, Request{Run: sh("echo first; exec yes flood >&2"), RunTime: 10 * time.Second, Output: 64 << 10})
		if tr.result.Outcome != OutcomeOutputLimit {
			t.Fatalf("result = %+v", tr.result)
		}
		if tr.stdout.String() != "first\n" || tr.stdout.Len()+tr.stderr.Len() != 64<<10 {
			t.Fatalf("round %d: kept stdout %q and %d bytes of stderr, want \"first\\n\" and the rest of the %d", i, tr.stdout.String(), tr.stderr.Len(), 64<<10)
		}
	}
}

// fakeCgroup is a v1 memory cgroup in a directory that a test updates.
type fakeCgroup struct {
	t   *testing.T
	dir string
}

func newFakeCgroup(t *testing.T) fakeCgroup {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "memory"), 0o755); err != nil {
		t.Fatal(err)
	}
	c := fakeCgroup{t, dir}
	c.set(0, 10<<20, 64<<20, 0)
	return c
}

func (c fakeCgroup) set(oomKills, usage, limit, refaults int64) {
	write := func(name, content string) {
		// Write and rename: the reader never sees a half-written file.
		tmp := filepath.Join(c.dir, "memory", name+".tmp")
		if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
			c.t.Error(err)
		}
		os.Rename(tmp, filepath.Join(c.dir, "memory", name))
	}
	write("memory.oom_control", fmt.Sprintf("oom_kill_disable 0\nunder_oom 0\noom_kill %d\n", oomKills))
	write("memory.usage_in_bytes", fmt.Sprintf("%d\n", usage))
	write("memory.limit_in_bytes", fmt.Sprintf("%d\n", limit))
	write("memory.stat", fmt.Sprintf("cache 0\nrss %d\ntotal_workingset_refault_file %d\ntotal_pgmajfault 0\n", usage, refaults))
}

func serveIn(t *testing.T, cgroupRoot string, req Request) Result {
	t.Helper()
	var in, out bytes.Buffer
	b, _ := json.Marshal(req)
	WriteFrame(&in, FrameRequest, b)
	WriteFrame(&in, FrameStdinEOF, nil)
	cfg := DefaultConfig()
	cfg.Dir = t.TempDir()
	cfg.CgroupRoot = cgroupRoot
	if err := Serve(&in, &out, cfg); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	var res Result
	for {
		typ, p, err := ReadFrame(&out, MaxFrame)
		if err != nil {
			t.Fatalf("no result frame: %v", err)
		}
		if typ == FrameResult {
			if err := json.Unmarshal(p, &res); err != nil {
				t.Fatal(err)
			}
			return res
		}
	}
}

func TestServeEndsAtTheFirstOOMKill(t *testing.T) {
	// The OOM killer took some process of the sandbox; the main one sleeps on. The phase
	// ends as memory_limit at once, not at the time limit.
	cg := newFakeCgroup(t)
	time.AfterFunc(300*time.Millisecond, func() { cg.set(1, 60<<20, 64<<20, 0) })
	start := time.Now()
	res := serveIn(t, cg.dir, Request{Run: sh("exec sleep 30"), RunTime: 20 * time.Second, Output: 100})
	if res.Outcome != OutcomeMemoryLimit || res.Message != msgOOMKill || res.Signal != "SIGKILL" {
		t.Errorf("result = %+v", res)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("took %v to notice the OOM kill", el)
	}
}

func TestServeEndsThrashingAtTheLimit(t *testing.T) {
	cg := newFakeCgroup(t)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		refaults := int64(0)
		for {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			refaults += 100 // faster than thrashRefaults per tick, at the limit
			cg.set(0, 64<<20-4096, 64<<20, refaults)
		}
	}()
	defer func() { close(stop); <-done }()
	res := serveIn(t, cg.dir, Request{Run: sh("exec sleep 30"), RunTime: 20 * time.Second, Output: 100})
	if res.Outcome != OutcomeMemoryLimit || !strings.Contains(res.Message, "thrashing") {
		t.Errorf("result = %+v", res)
	}
}

func TestMemWatch(t *testing.T) {
	at := func(refaults int64) memSample {
		return memSample{usage: 64<<20 - 8192, limit: 64 << 20, refaults: refaults}
	}
	t.Run("OOMKill", func(t *testing.T) {
		w := memWatch{base: memSample{oomKills: 2}, prev: memSample{oomKills: 2}}
		if why := w.observe(memSample{oomKills: 2, refaults: -1}); why != "" {
			t.Errorf("no new kill: %q", why)
		}
		if why := w.observe(memSample{oomKills: 3, refaults: -1}); why != msgOOMKill {
			t.Errorf("a new kill: %q", why)
		}
	})
	t.Run("Thrash", func(t *testing.T) {
		w := memWatch{base: at(0), prev: at(0)}
		r := int64(0)
		for i := 1; i <= thrashTicks; i++ {
			r += thrashRefaults
			why := w.observe(at(r))
			if (why != "") != (i == thrashTicks) {
				t.Fatalf("tick %d: %q", i, why)
			}
		}
	})
	t.Run("CalmForgives", func(t *testing.T) {
		w := memWatch{base: at(0), prev: at(0)}
		r := int64(0)
		for i := 0; i < 5*thrashTicks; i++ {
			if i%(thrashTicks-1) == thrashTicks-2 { // a calm spell before the count is reached
				for range calmTicks {
					if why := w.observe(at(r)); why != "" {
						t.Fatalf("calm tick: %q", why)
					}
				}
			}
			r += thrashRefaults
			if why := w.observe(at(r)); why != "" {
				t.Fatalf("tick %d: %q despite the calm spells", i, why)
			}
		}
	})
	t.Run("RefaultsBelowTheLimit", func(t *testing.T) {
		w := memWatch{base: at(0), prev: at(0)}
		r := int64(0)
		for i := 0; i < 3*thrashTicks; i++ {
			r += 10 * thrashRefaults
			if why := w.observe(memSample{usage: 32 << 20, limit: 64 << 20, refaults: r}); why != "" {
				t.Fatalf("far below the limit: %q", why)
			}
		}
	})
	t.Run("Unknown", func(t *testing.T) {
		w := memWatch{base: memSample{refaults: -1}, prev: memSample{refaults: -1}}
		for i := 0; i < 3*thrashTicks; i++ {
			if why := w.observe(memSample{usage: 64 << 20, limit: 0, refaults: -1}); why != "" {
				t.Fatalf("no counters: %q", why)
			}
		}
	})
}

// TestHarden runs Harden in a child process (it changes the whole process) and checks
// there that it survives every signal, holds its threads, and starts programs with every
// signal at its default action.
func TestHarden(t *testing.T) {
	if os.Getenv("BOXINIT_TEST_HARDEN") == "1" {
		hardenChild()
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHarden$")
	cmd.Env = append(os.Environ(), "BOXINIT_TEST_HARDEN=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("hardened child: %v\n%s", err, out)
	}
	got := string(out)
	for _, want := range []string{
		"survived every signal\n",
		fmt.Sprintf("threads %d\n", ReservedPids),
		"SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("child output lacks %q:\n%s", want, got)
		}
	}
}

func hardenChild() {
	if err := Harden(); err != nil {
		fmt.Println("harden:", err)
		os.Exit(1)
	}
	fmt.Printf("threads %d\n", threadCount())
	// The standard signals. Some real-time ones the Go runtime leaves at their default
	// action, which kills this child, but not PID 1: the kernel drops a signal at its
	// default action sent to a PID namespace's init from inside. The Docker test
	// SignalsInit sends all 64 to the real PID 1.
	// A barrier: SIGWINCH, sent after all the others, has come through the runtime's
	// handler, so they have too (a signal a process sends itself is delivered before kill
	// returns, and the runtime handles them in order).
	barrier := make(chan os.Signal, 1)
	signal.Notify(barrier, syscall.SIGWINCH)
	for sig := syscall.Signal(1); sig < 32; sig++ {
		if sig != syscall.SIGKILL && sig != syscall.SIGSTOP {
			syscall.Kill(os.Getpid(), sig)
		}
	}
	for len(barrier) > 0 {
		<-barrier
	}
	syscall.Kill(os.Getpid(), syscall.SIGWINCH)
	select {
	case <-barrier:
	case <-time.After(time.Minute):
		fmt.Println("the barrier signal never came")
	}
	fmt.Println("survived every signal")
	var in, out bytes.Buffer
	b, _ := json.Marshal(Request{Run: []string{"/bin/grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"}, RunTime: 5 * time.Second, Output: 1 << 10})
	WriteFrame(&in, FrameRequest, b)
	WriteFrame(&in, FrameStdinEOF, nil)
	cfg := DefaultConfig()
	cfg.Dir = os.TempDir()
	if err := Serve(&in, &out, cfg); err != nil {
		fmt.Println("serve:", err)
		os.Exit(1)
	}
	for {
		typ, p, err := ReadFrame(&out, MaxFrame)
		if err != nil {
			break
		}
		if typ == FrameStdout {
			os.Stdout.Write(p)
		}
	}
	os.Exit(0)
}

func TestServeWarmsUpUntilTheRequest(t *testing.T) {
	dir := t.TempDir()
	cfg := DefaultConfig()
	cfg.Dir = dir
	cfg.CgroupRoot = t.TempDir()
	// The warm-up leaves a mark, writes a temporary file and would go on for a while.
	cfg.Warm = sh(`touch ../warm-ran; echo x > "$TMPDIR/tmpfile"; exec sleep 31.4159`)
	cfg.WarmDelay = 0
	inR, inW := io.Pipe()
	var out bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- Serve(inR, &out, cfg) }()
	// The warm-up is under way once it wrote its temporary file.
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(5 * time.Millisecond) {
		if _, err := os.Stat(filepath.Join(dir, warmDir, "tmpfile")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the warm-up did not start within a minute")
		}
	}
	b, _ := json.Marshal(Request{Run: sh("ls -A; echo end"), RunTime: 5 * time.Second, Output: 1 << 10})
	WriteFrame(inW, FrameRequest, b)
	WriteFrame(inW, FrameStdinEOF, nil)
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	inW.Close()
	var stdout bytes.Buffer
	for {
		typ, p, err := ReadFrame(&out, MaxFrame)
		if err != nil {
			break
		}
		if typ == FrameStdout {
			stdout.Write(p)
		}
	}
	// The program saw nothing of the warm-up but its mark; the warm-up's process is gone.
	if got := stdout.String(); got != "warm-ran\nend\n" {
		t.Errorf("the program's directory held %q, want only the warm-up's mark", got)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		if b, err := os.ReadFile(p); err == nil && bytes.Contains(b, []byte("31.4159")) {
			t.Errorf("the warm-up outlived the request: %s %q", p, b)
		}
	}
}

func TestServeSkipsTheWarmUpForAnEarlyRequest(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Dir = t.TempDir()
	cfg.CgroupRoot = t.TempDir()
	cfg.Warm = sh("touch ../warm-ran")
	cfg.WarmDelay = time.Hour
	var in, out bytes.Buffer
	b, _ := json.Marshal(Request{Run: sh("ls -A"), RunTime: 5 * time.Second, Output: 1 << 10})
	WriteFrame(&in, FrameRequest, b)
	WriteFrame(&in, FrameStdinEOF, nil)
	if err := Serve(&in, &out, cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(cfg.Dir, "warm-ran")); err == nil {
		t.Error("the warm-up ran although the request came first")
	}
}

// With a gate, runbox-init stops between the compile and the run phase: it says so
// (FrameGate) and runs the program only at FrameGo, which the runner sends once it has
// set the program's limits. A runner that goes away instead gets no run.
func TestServeWaitsAtTheGate(t *testing.T) {
	req := Request{
		Compile: sh("echo compiled >&2"), CompileTime: 5 * time.Second,
		Run: sh("touch ran; echo run"), RunTime: 5 * time.Second, Output: 1 << 20, Gate: true,
	}
	for _, open := range []bool{true, false} {
		dir := t.TempDir()
		inR, inW := io.Pipe()
		outR, outW := io.Pipe()
		cfg := DefaultConfig()
		cfg.Dir, cfg.CgroupRoot = dir, t.TempDir()
		served := make(chan error, 1)
		go func() { served <- Serve(inR, outW, cfg); outW.Close() }()
		b, _ := json.Marshal(req)
		WriteFrame(inW, FrameRequest, b)
		WriteFrame(inW, FrameStdinEOF, nil)
		var frames []byte
		var res Result
		for {
			typ, p, err := ReadFrame(outR, MaxFrame)
			if err != nil {
				break
			}
			frames = append(frames, typ)
			switch typ {
			case FrameGate:
				if _, err := os.Stat(filepath.Join(dir, "ran")); err == nil {
					t.Error("the program ran before the gate opened")
				}
				if open {
					WriteFrame(inW, FrameGo, nil)
				} else {
					inW.Close()
				}
			case FrameResult:
				json.Unmarshal(p, &res)
			}
		}
		if err := <-served; err != nil {
			t.Fatal(err)
		}
		inW.Close()
		_, ranErr := os.Stat(filepath.Join(dir, "ran"))
		if open && (string(frames) != "cWSoR" || res.Outcome != OutcomeExited || ranErr != nil) {
			t.Errorf("gate opened: frames %q, result %+v, ran: %v; want cWSoR, a run", frames, res, ranErr)
		}
		if !open && (string(frames) != "cWR" || res.Outcome != OutcomeStartError || ranErr == nil) {
			t.Errorf("runner gone at the gate: frames %q, result %+v; want cWR, a start error, no run", frames, res)
		}
	}
}

// An interpreter started ahead (Config.Prestart) runs the request's Script in place of
// the Run command, with the program's stdin, stdout, stderr and exit status: here a
// shell whose prelude records its pid, reads the script's name from fd 3 and execs it.
func TestServeRunsThePrestartedInterpreter(t *testing.T) {
	dir := t.TempDir()
	cfg := DefaultConfig()
	cfg.Dir, cfg.CgroupRoot = dir, t.TempDir()
	cfg.Prestart = sh(`echo $$ >pre.pid; read -r p <&3; exec 3<&-; exec /bin/sh "$p"`)
	var in bytes.Buffer
	b, _ := json.Marshal(Request{
		Files:  []File{{Name: "main.sh", Content: []byte("cat; echo \"pid $$\"; [ -e /proc/$$/fd/3 ] && echo fd 3 open; echo err >&2; exit 3")}},
		Run:    []string{"/bin/sh", "main.sh"},
		Script: "main.sh", RunTime: 5 * time.Second, Output: 1 << 20,
	})
	WriteFrame(&in, FrameRequest, b)
	WriteFrame(&in, FrameStdin, []byte("in-put\n"))
	WriteFrame(&in, FrameStdinEOF, nil)
	var out bytes.Buffer
	if err := Serve(&in, &out, cfg); err != nil {
		t.Fatal(err)
	}
	var tr transcript
	for {
		typ, p, err := ReadFrame(&out, MaxFrame)
		if err != nil {
			break
		}
		switch typ {
		case FrameStdout:
			tr.stdout.Write(p)
		case FrameStderr:
			tr.stderr.Write(p)
		case FrameStarted:
			tr.started = true
		case FrameResult:
			json.Unmarshal(p, &tr.result)
		}
	}
	pid, err := os.ReadFile(filepath.Join(dir, "pre.pid"))
	if err != nil {
		t.Fatalf("the prestarted shell did not run: %v", err)
	}
	// The same process, and the control pipe closed.
	want := fmt.Sprintf("in-put\npid %s", pid)
	if got := tr.stdout.String(); got != want || tr.stderr.String() != "err\n" || !tr.started {
		t.Errorf("stdout %q, stderr %q, started %v; want stdout %q (the prestarted shell's pid), stderr \"err\\n\"", got, tr.stderr.String(), tr.started, want)
	}
	if tr.result.Outcome != OutcomeExited || tr.result.ExitCode != 3 || tr.result.Memory <= 0 {
		t.Errorf("result = %+v, want exited 3 with its memory", tr.result)
	}
}

// A request the prestarted interpreter cannot serve (a compile phase) runs the ordinary
// way, and the interpreter is killed: nothing of it is left.
func TestServeKillsAnUnusedPrestartedInterpreter(t *testing.T) {
	dir := t.TempDir()
	cfg := DefaultConfig()
	cfg.Dir, cfg.CgroupRoot = dir, t.TempDir()
	marker := fmt.Sprintf("prestart-marker-%d", time.Now().UnixNano())
	cfg.Prestart = []string{"/bin/sh", "-c", "read -r p <&3; exec sleep 30", marker}
	var in bytes.Buffer
	b, _ := json.Marshal(Request{
		Compile: sh("true"), CompileTime: 5 * time.Second,
		Run: sh("echo ran"), Script: "main.sh", RunTime: 5 * time.Second, Output: 1 << 20,
	})
	WriteFrame(&in, FrameRequest, b)
	WriteFrame(&in, FrameStdinEOF, nil)
	var out bytes.Buffer
	if err := Serve(&in, &out, cfg); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "ran\n") {
		t.Errorf("the ordinary run did not happen: %q", out.String())
	}
	if ps, _ := exec.Command("pgrep", "-f", marker).Output(); len(ps) > 0 {
		t.Errorf("the prestarted interpreter outlived Serve: pids %s", ps)
	}
}

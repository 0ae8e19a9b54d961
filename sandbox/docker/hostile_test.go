package docker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"runbox/sandbox"
	"runbox/sandbox/sandboxtest"
)

// hostileCase is one bad request or hostile program of issue 2, with what must come of it.
type hostileCase struct {
	name    string
	lang    string
	src     string
	spec    *sandbox.Spec // instead of lang+src, for malformed requests
	stdin   []byte
	limits  sandbox.Limits
	streams func(t *testing.T) *sandbox.Streams
	// wantErr, when set, is the sentinel Run must fail with; else want is the status.
	wantErr error
	want    sandbox.Status
	// check looks at the details: partial output, signal, message.
	check func(t *testing.T, res sandbox.Result, elapsed time.Duration)
	// marker, when set, names processes (by their command line) that must all be gone
	// when Run returns.
	marker string
}

// TestHostilePrograms runs every case of issue 2's "Bad input and hostile programs" list
// against the real daemon, several at a time on one Runner. Each case must end with the
// exact status (or error) and its details, leave no process behind, and the Runner must
// serve a normal program right after it. At the end only the warm pool's containers may
// remain, and Close removes those (newTestRunner checks).
func TestHostilePrograms(t *testing.T) {
	r := newTestRunner(t, nil)
	marker := fmt.Sprintf("98%05d", time.Now().UnixNano()%100000)

	cases := hostileCases(marker)
	sem := make(chan struct{}, 3) // parallel groups of three: two cores
	t.Run("cases", func(t *testing.T) {
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				t.Parallel()
				sem <- struct{}{}
				defer func() { <-sem }()
				runHostile(t, r, c)
			})
		}
	})

	// The containers of the runs are removed in the background; only the warm pools stay.
	pooled := func() int { // what the pools want now (an unused language's shrinks)
		n := 0
		for _, rt := range r.langs {
			if rt.pool != nil {
				want, _ := rt.pool.wanted()
				n += want
			}
		}
		return n
	}
	deadline := time.Now().Add(30 * time.Second)
	for n := countContainers(t, r.cfg.Owner); n != pooled(); n = countContainers(t, r.cfg.Owner) {
		if time.Now().After(deadline) {
			t.Fatalf("%d containers of owner %s remain after the hostile programs, want the %d of the warm pools (%d removals pending):\n%s",
				n, r.cfg.Owner, pooled(), r.removal.pending(), strings.Join(listContainers(t, r.cfg.Owner), "\n"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func runHostile(t *testing.T, r *Runner, c hostileCase) {
	spec := sandboxtest.Program(c.lang, c.src)
	if c.spec != nil {
		spec = *c.spec
	}
	spec.Stdin = c.stdin
	spec.Limits = c.limits
	if l, ok := sandbox.Lookup(spec.Language); ok && l.Compiled() && spec.Limits.CompileTime == 0 {
		// The cases are about the program, not the compiler's speed, which on a loaded
		// 2-core machine can pass the default 10 s.
		spec.Limits.CompileTime = sandbox.MaxLimits().CompileTime
	}
	streams := &sandbox.Streams{}
	if c.streams != nil {
		streams = c.streams(t)
	}
	// elapsed counts from the program's start, not from the call: getting a container
	// on a loaded machine is not what the cases measure.
	var startMu sync.Mutex
	var started time.Time
	streams.Started = func() { startMu.Lock(); started = time.Now(); startMu.Unlock() }
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	call := time.Now()
	res, err := r.Run(ctx, spec, streams)
	startMu.Lock()
	elapsed := time.Since(started)
	startMu.Unlock()
	t.Logf("took %v (program started after %v)\n%s", time.Since(call), started.Sub(call), describe(res))

	switch {
	case c.wantErr != nil:
		if !errors.Is(err, c.wantErr) {
			t.Errorf("err = %v, want %v", err, c.wantErr)
		}
	case err != nil:
		t.Errorf("Run: %v", err)
	case res.Status != c.want:
		t.Errorf("status %s, want %s\n%s", res.Status, c.want, describe(res))
	case c.check != nil:
		c.check(t, res, elapsed)
	}
	if c.marker != "" {
		if procs := hostProcesses(c.marker); len(procs) > 0 {
			t.Errorf("processes outlived the run: %q", procs)
		}
	}

	// The Runner still serves a normal program right after.
	lang := spec.Language
	if _, ok := sandbox.Lookup(lang); !ok || lang == "cpp" {
		lang = "python"
	}
	hello := map[string]string{
		"python": "print('still fine')\n",
		"c":      "#include <stdio.h>\nint main(void){puts(\"still fine\");return 0;}\n",
	}[lang]
	after, err := r.Run(ctx, sandboxtest.Program(lang, hello), nil)
	if err != nil || after.Status != sandbox.StatusOK || string(after.Stdout) != "still fine\n" {
		t.Errorf("normal %s program after the hostile one: err %v\n%s", lang, err, describe(after))
	}
}

func describe(res sandbox.Result) string {
	clip := func(b []byte) string {
		if len(b) > 400 {
			return fmt.Sprintf("%q...(%d bytes)", b[:400], len(b))
		}
		return fmt.Sprintf("%q", b)
	}
	return fmt.Sprintf("  exit %d signal %q message %q time %v cpu %v memory %d\n  stdout %s\n  stderr %s\n  compile %s",
		res.ExitCode, res.Signal, res.Message, res.Time, res.CPUTime, res.Memory, clip(res.Stdout), clip(res.Stderr), clip(res.CompileOutput))
}

// hostProcesses lists the command lines of the host's processes that contain marker. A
// process in a container is a host process too, so this sees into every sandbox when the
// engine runs on this machine (with a remote engine it sees nothing and proves nothing).
func hostProcesses(marker string) []string {
	var found []string
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "cmdline"))
		if err != nil {
			continue
		}
		cmd := strings.ReplaceAll(strings.TrimRight(string(b), "\x00"), "\x00", " ")
		if strings.Contains(cmd, marker) {
			found = append(found, cmd)
		}
		if comm, err := os.ReadFile(filepath.Join(d, "comm")); err == nil && strings.Contains(string(comm), marker) {
			found = append(found, strings.TrimSpace(string(comm)))
		}
	}
	return found
}

// Checks shared by the cases.

func wantSignal(sig string) func(*testing.T, sandbox.Result) {
	return func(t *testing.T, res sandbox.Result) {
		t.Helper()
		if res.Signal != sig {
			t.Errorf("signal %q, want %s\n%s", res.Signal, sig, describe(res))
		}
	}
}

func wantStdout(want string) func(*testing.T, sandbox.Result) {
	return func(t *testing.T, res sandbox.Result) {
		t.Helper()
		if string(res.Stdout) != want {
			t.Errorf("stdout %q, want %q", res.Stdout, want)
		}
	}
}

func wantIn(field func(sandbox.Result) []byte, what string, subs ...string) func(*testing.T, sandbox.Result) {
	return func(t *testing.T, res sandbox.Result) {
		t.Helper()
		for _, s := range subs {
			if !bytes.Contains(field(res), []byte(s)) {
				t.Errorf("%s does not contain %q\n%s", what, s, describe(res))
			}
		}
	}
}

func stdoutHas(subs ...string) func(*testing.T, sandbox.Result) {
	return wantIn(func(r sandbox.Result) []byte { return r.Stdout }, "stdout", subs...)
}

func stderrHas(subs ...string) func(*testing.T, sandbox.Result) {
	return wantIn(func(r sandbox.Result) []byte { return r.Stderr }, "stderr", subs...)
}

func compileHas(subs ...string) func(*testing.T, sandbox.Result) {
	return wantIn(func(r sandbox.Result) []byte { return r.CompileOutput }, "compile output", subs...)
}

func messageHas(sub string) func(*testing.T, sandbox.Result) {
	return func(t *testing.T, res sandbox.Result) {
		t.Helper()
		if !strings.Contains(res.Message, sub) {
			t.Errorf("message %q does not say %q", res.Message, sub)
		}
	}
}

func exitCode(code int) func(*testing.T, sandbox.Result) {
	return func(t *testing.T, res sandbox.Result) {
		t.Helper()
		if res.ExitCode != code {
			t.Errorf("exit code %d, want %d\n%s", res.ExitCode, code, describe(res))
		}
	}
}

// endedWithin: the run phase stopped at its limit, and Run returned soon after (elapsed
// counts from the program's start).
func endedWithin(limit time.Duration) func(*testing.T, sandbox.Result, time.Duration) {
	return func(t *testing.T, res sandbox.Result, elapsed time.Duration) {
		t.Helper()
		if res.Time < limit || res.Time > limit+time.Second {
			t.Errorf("run time %v, want the %v limit (plus at most 1s to kill)", res.Time, limit)
		}
		if elapsed > limit+10*time.Second {
			t.Errorf("Run returned %v after the program started, for a %v limit", elapsed, limit)
		}
	}
}

func all(checks ...func(*testing.T, sandbox.Result)) func(*testing.T, sandbox.Result, time.Duration) {
	return func(t *testing.T, res sandbox.Result, _ time.Duration) {
		t.Helper()
		for _, c := range checks {
			c(t, res)
		}
	}
}

func both(a, b func(*testing.T, sandbox.Result, time.Duration)) func(*testing.T, sandbox.Result, time.Duration) {
	return func(t *testing.T, res sandbox.Result, el time.Duration) {
		t.Helper()
		a(t, res, el)
		b(t, res, el)
	}
}

// Time limits are small to keep the test short, but a Python case that must print before
// its limit gets 2s: on a loaded machine the interpreter alone may take most of a second
// to start.
func hostileCases(marker string) []hostileCase {
	const sec = time.Second
	return []hostileCase{
		// Time.
		{
			name: "InfiniteLoop", lang: "python",
			src:    "print('spinning', flush=True)\nwhile True: pass\n",
			limits: sandbox.Limits{RunTime: 2 * sec},
			want:   sandbox.StatusTimeLimit,
			check: both(endedWithin(2*sec), all(wantStdout("spinning\n"), wantSignal("SIGKILL"), messageHas("time limit"), func(t *testing.T, res sandbox.Result) {
				// Other cases share the two cores: only bounds, not an amount.
				if res.CPUTime <= 0 || res.CPUTime > res.Time+100*time.Millisecond {
					t.Errorf("cpu time %v for %v of spinning on at most one core", res.CPUTime, res.Time)
				}
			})),
		},
		{
			name: "SleepForever", lang: "c",
			src:    "#include <unistd.h>\n#include <stdio.h>\nint main(void){puts(\"sleeping\");fflush(stdout);for(;;)pause();}\n",
			limits: sandbox.Limits{RunTime: sec / 2},
			want:   sandbox.StatusTimeLimit,
			check:  both(endedWithin(sec/2), all(wantStdout("sleeping\n"), wantSignal("SIGKILL"))),
		},
		{
			name: "IgnoresSIGTERM", lang: "python",
			src:    "import signal, time\nfor s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP): signal.signal(s, signal.SIG_IGN)\nprint('ignoring', flush=True)\nwhile True: time.sleep(1)\n",
			limits: sandbox.Limits{RunTime: 2 * sec},
			want:   sandbox.StatusTimeLimit,
			check:  both(endedWithin(2*sec), all(wantStdout("ignoring\n"), wantSignal("SIGKILL"))),
		},
		{
			// Input that never ends: the stream stays open past the run's end.
			name: "ReadsStdinForever", lang: "python",
			src:    "import sys\nfor line in sys.stdin: print('got', line, end='', flush=True)\n",
			limits: sandbox.Limits{RunTime: 2 * sec},
			streams: func(t *testing.T) *sandbox.Streams {
				in := make(chan []byte, 1)
				in <- []byte("one line\n")
				t.Cleanup(func() { close(in) })
				return &sandbox.Streams{Stdin: in}
			},
			want:  sandbox.StatusTimeLimit,
			check: both(endedWithin(2*sec), all(wantStdout("got one line\n"))),
		},
		{
			// Batch stdin ends at EOF; a program that keeps reading spins on it.
			name: "ReadsPastEOF", lang: "c",
			src:    "#include <stdio.h>\nint main(void){char b[64];long n=0;for(;;){n+=fread(b,1,sizeof b,stdin);if(n==5){printf(\"%ld\\n\",n);fflush(stdout);n++;}}}\n",
			stdin:  []byte("hello"),
			limits: sandbox.Limits{RunTime: sec / 2},
			want:   sandbox.StatusTimeLimit,
			check:  both(endedWithin(sec/2), all(wantStdout("5\n"))),
		},

		// Processes.
		{
			name: "ForkBomb", lang: "c",
			src:    "#include <unistd.h>\n#include <stdio.h>\n#include <sys/prctl.h>\nint main(void){prctl(PR_SET_NAME,\"fbomb" + marker + "\");puts(\"forking\");fflush(stdout);for(;;)fork();}\n",
			limits: sandbox.Limits{RunTime: sec, Pids: 32},
			want:   sandbox.StatusTimeLimit,
			check:  both(endedWithin(sec), all(wantStdout("forking\n"), wantSignal("SIGKILL"))),
			marker: "fbomb" + marker,
		},
		{
			name: "ThreadBomb", lang: "python",
			src: "import threading, time\nn = 0\ntry:\n    while True:\n        threading.Thread(target=time.sleep, args=(1000,), daemon=True).start()\n        n += 1\n" +
				"except RuntimeError as e:\n    print('threads', n > 0, e, flush=True)\n    raise\n",
			limits: sandbox.Limits{RunTime: 5 * sec, Pids: 32},
			want:   sandbox.StatusRuntimeError,
			check:  all(exitCode(1), stdoutHas("threads True can't start new thread"), stderrHas("RuntimeError")),
		},
		{
			// The daemon closes its output, leaves main's session and would sleep for
			// days; main returns at once. Nothing of it may survive the run.
			name: "DoubleForkDaemon", lang: "c",
			src: `#include <stdio.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/wait.h>
int main(void){
	if (fork() == 0) {
		if (fork() == 0) {
			setsid();
			int fd = open("/dev/null", O_RDWR);
			dup2(fd, 0); dup2(fd, 1); dup2(fd, 2);
			execl("/bin/sleep", "sleep", "` + marker + `", (char *)0);
		}
		_exit(0);
	}
	wait(0);
	usleep(200000);
	puts("parent done");
	return 0;
}
`,
			limits: sandbox.Limits{RunTime: 20 * sec},
			want:   sandbox.StatusOK,
			check: func(t *testing.T, res sandbox.Result, elapsed time.Duration) {
				wantStdout("parent done\n")(t, res)
				if res.Time > 5*sec {
					t.Errorf("the run lasted %v: runbox-init waited for the daemon", res.Time)
				}
			},
			marker: "sleep " + marker,
		},
		{
			// kill(-1) signals every process the caller may signal but itself and PID 1.
			name: "KillMinusOne", lang: "c",
			src: "#include <signal.h>\n#include <stdio.h>\n#include <unistd.h>\nint main(void){puts(\"before\");fflush(stdout);" +
				"for(int s=1;s<65;s++) if(s!=SIGKILL&&s!=SIGSTOP) kill(-1,s);\nkill(-1,SIGKILL);usleep(100000);puts(\"after\");return 0;}\n",
			limits: sandbox.Limits{RunTime: 5 * sec},
			want:   sandbox.StatusOK,
			check:  all(wantStdout("before\nafter\n")),
		},
		{
			// runbox-init is PID 1 and the same user: every signal it can be sent, it must
			// survive, and still report the result.
			name: "SignalsInit", lang: "c",
			src: "#include <signal.h>\n#include <stdio.h>\n#include <unistd.h>\nint main(void){int ok=0;" +
				"for(int s=1;s<65;s++) if(kill(1,s)==0) ok++;\nusleep(300000);printf(\"sent %d\\n\",ok);return 0;}\n",
			limits: sandbox.Limits{RunTime: 5 * sec},
			want:   sandbox.StatusOK,
			check:  all(stdoutHas("sent ")),
		},

		{
			// The pids limit is the program's own: runbox-init's threads are reserved
			// on top, so the program (one pid) can fork exactly Pids-1 children.
			name: "PidsLimitIsTheProgramsOwn", lang: "c",
			src:    "#include <stdio.h>\n#include <unistd.h>\nint main(void){int n=0;for(;;){pid_t p=fork();if(p==0){pause();_exit(0);}if(p<0)break;n++;}printf(\"forked %d\\n\",n);return 0;}\n",
			limits: sandbox.Limits{RunTime: 5 * sec, Pids: 16},
			want:   sandbox.StatusOK,
			check:  all(wantStdout("forked 15\n")),
		},
		{
			// The program starts with every signal at its default action, none blocked,
			// whatever runbox-init does with signals for itself.
			name: "DefaultSignalDispositions", lang: "c",
			src:    "#include <stdio.h>\n#include <string.h>\nint main(void){char l[256];FILE*f=fopen(\"/proc/self/status\",\"r\");while(fgets(l,sizeof l,f)) if(!strncmp(l,\"SigIgn\",6)||!strncmp(l,\"SigBlk\",6)) fputs(l,stdout);return 0;}\n",
			limits: sandbox.Limits{RunTime: 5 * sec},
			want:   sandbox.StatusOK,
			check:  all(wantStdout("SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n")),
		},

		// Memory.
		{
			name: "MemoryBomb", lang: "python",
			src:    "print('allocating', flush=True)\nhog = []\nwhile True: hog.append(b'x' * (1 << 20))\n",
			limits: sandbox.Limits{RunTime: 10 * sec, Memory: 64 * sandbox.MiB},
			want:   sandbox.StatusMemoryLimit,
			check:  all(wantStdout("allocating\n"), wantSignal("SIGKILL"), messageHas("out-of-memory")),
		},
		{
			// Many small processes: the OOM killer kills one at a time, and the parent
			// waits for the rest. The first kill ends the run.
			name: "MemoryBombForked", lang: "python",
			src: "import os, time\nprint('forking', flush=True)\nfor i in range(12):\n    if os.fork() == 0:\n        hog = []\n        while True:\n            hog.append(b'x' * (1 << 19))\n            time.sleep(0.001)\n" +
				"while True:\n    try: os.wait()\n    except ChildProcessError: break\n",
			limits: sandbox.Limits{RunTime: 20 * sec, Memory: 64 * sandbox.MiB},
			want:   sandbox.StatusMemoryLimit,
			check: both(all(wantStdout("forking\n"), messageHas("out-of-memory")), func(t *testing.T, res sandbox.Result, _ time.Duration) {
				if res.Time > 10*sec {
					t.Errorf("the run lasted %v after the first OOM kill", res.Time)
				}
			}),
		},
		{
			// Two hundred small processes. runbox-init has their OOM score (1000, the
			// container's, which no process in it may lower: the host's daemons come
			// after the sandbox), and is bigger than each, so it may be the OOM killer's
			// victim: then the container ends and the Runner learns of the OOM kill from
			// the engine. Either way the run is memory_limit, with its output.
			name: "MemoryBombManyProcesses", lang: "c",
			src:    manyProcessesBomb(false),
			limits: sandbox.Limits{RunTime: 20 * sec, Memory: 48 * sandbox.MiB, Pids: 256},
			want:   sandbox.StatusMemoryLimit,
			check: all(wantStdout("forking\n"), messageHas("out-of-memory"), func(t *testing.T, res sandbox.Result) {
				if res.Time > 10*sec {
					t.Errorf("run time %v: runbox-init did not report the run promptly", res.Time)
				}
			}),
		},
		{
			// The same, and the program tries to give up its OOM score (refused below the
			// container's 1000 where the engine sets that floor).
			name: "MemoryBombTargetsInit", lang: "c",
			src:    manyProcessesBomb(true),
			limits: sandbox.Limits{RunTime: 20 * sec, Memory: 48 * sandbox.MiB, Pids: 256},
			want:   sandbox.StatusMemoryLimit,
			check:  all(wantStdout("forking\n"), messageHas("out-of-memory")),
		},
		{
			name: "GiantStaticArrayTouched", lang: "c",
			src:    "#include <string.h>\n#include <stdio.h>\nstatic char big[1L<<30];\nint main(void){puts(\"touching\");fflush(stdout);memset(big,1,sizeof big);return big[12345];}\n",
			limits: sandbox.Limits{RunTime: 10 * sec, Memory: 64 * sandbox.MiB},
			want:   sandbox.StatusMemoryLimit,
			check:  all(wantStdout("touching\n")),
		},
		{
			name: "DeepRecursionPython", lang: "python",
			src:    "def f(n): return f(n + 1) + 1\nf(0)\n",
			limits: sandbox.Limits{RunTime: 5 * sec},
			want:   sandbox.StatusRuntimeError,
			check:  all(exitCode(1), stderrHas("RecursionError: maximum recursion depth exceeded")),
		},
		{
			// Python 3.11 keeps Python frames off the C stack: without a recursion limit
			// the frames fill the memory, slowly enough that the kernel may thrash (evict
			// and read back the interpreter's code) before its OOM killer strikes;
			// runbox-init ends that too as memory_limit.
			name: "DeepRecursionUnbounded", lang: "python",
			src:    "import sys\nsys.setrecursionlimit(10**9)\ndef f(n): return f(n + 1) + 1\nprint('recursing', flush=True)\nf(0)\n",
			limits: sandbox.Limits{RunTime: 10 * sec, Memory: 64 * sandbox.MiB},
			want:   sandbox.StatusMemoryLimit,
			check:  all(wantStdout("recursing\n"), wantSignal("SIGKILL"), messageHas("memory limit")),
		},
		{
			name: "DeepRecursionC", lang: "c",
			src:    "#include <stdio.h>\nint f(int n){volatile char pad[256];pad[0]=(char)n;return f(n+1)+pad[0];}\nint main(void){puts(\"recursing\");fflush(stdout);return f(0);}\n",
			limits: sandbox.Limits{RunTime: 5 * sec},
			want:   sandbox.StatusRuntimeError,
			check:  all(wantStdout("recursing\n"), wantSignal("SIGSEGV"), exitCode(128+11)),
		},

		// Output.
		{
			name: "GigabytesOfStdout", lang: "c",
			src:    "#include <stdio.h>\n#include <string.h>\nstatic char b[1<<16];\nint main(void){memset(b,'x',sizeof b);for(;;)fwrite(b,1,sizeof b,stdout);}\n",
			limits: sandbox.Limits{RunTime: 10 * sec, Output: 256 * sandbox.KiB},
			want:   sandbox.StatusOutputLimit,
			check: all(func(t *testing.T, res sandbox.Result) {
				if len(res.Stdout) != 256<<10 || strings.Trim(string(res.Stdout), "x") != "" {
					t.Errorf("kept %d bytes of x, want exactly the first %d", len(res.Stdout), 256<<10)
				}
			}, messageHas("limit")),
		},
		{
			name: "EndlessLine", lang: "python",
			src:    "import sys\nwhile True: sys.stdout.write('y' * 1000)\n",
			limits: sandbox.Limits{RunTime: 10 * sec, Output: 100000},
			want:   sandbox.StatusOutputLimit,
			check: all(func(t *testing.T, res sandbox.Result) {
				if len(res.Stdout) != 100000 || strings.Trim(string(res.Stdout), "y") != "" {
					t.Errorf("kept %d bytes, want exactly the first 100000 of the line", len(res.Stdout))
				}
			}),
		},
		{
			name: "StderrFlood", lang: "python",
			src:    "import sys\nprint('out', flush=True)\nwhile True: sys.stderr.write('e' * 4096 + '\\n')\n",
			limits: sandbox.Limits{RunTime: 10 * sec, Output: 64 * sandbox.KiB},
			want:   sandbox.StatusOutputLimit,
			check: all(wantStdout("out\n"), func(t *testing.T, res sandbox.Result) {
				if len(res.Stdout)+len(res.Stderr) != 64<<10 || !bytes.HasPrefix(res.Stderr, []byte("eeee")) {
					t.Errorf("kept %d+%d bytes, want %d in all", len(res.Stdout), len(res.Stderr), 64<<10)
				}
			}),
		},
		{
			name: "NonUTF8Output", lang: "python",
			src:    "import sys\nsys.stdout.buffer.write(bytes(range(256)))\nsys.stderr.buffer.write(b'\\xff\\xfe\\x00\\xc3')\n",
			limits: sandbox.Limits{RunTime: 5 * sec},
			want:   sandbox.StatusOK,
			check: all(func(t *testing.T, res sandbox.Result) {
				want := make([]byte, 256)
				for i := range want {
					want[i] = byte(i)
				}
				if !bytes.Equal(res.Stdout, want) || !bytes.Equal(res.Stderr, []byte("\xff\xfe\x00\xc3")) {
					t.Errorf("bytes changed on the way: stdout %q stderr %q", res.Stdout, res.Stderr)
				}
			}),
		},

		// Disk and files.
		{
			name: "FillsTmp", lang: "python",
			src: "n = 0\ntry:\n    with open('/tmp/fill', 'wb') as f:\n        while True:\n            f.write(b'z' * (1 << 20)); f.flush(); n += 1\n" +
				"except OSError as e:\n    print('full after', n > 4, 'MiB:', e.strerror, flush=True)\n    raise\n",
			limits: sandbox.Limits{RunTime: 10 * sec, Disk: 8 * sandbox.MiB},
			want:   sandbox.StatusRuntimeError,
			check:  all(exitCode(1), stdoutHas("full after True MiB: No space left on device"), stderrHas("OSError")),
		},
		{
			// RLIMIT_FSIZE: the default disposition of SIGXFSZ kills the writer.
			name: "HugeFileWrite", lang: "c",
			src:    "#include <stdio.h>\n#include <fcntl.h>\n#include <unistd.h>\nstatic char b[1<<16];\nint main(void){int fd=open(\"/tmp/big\",O_WRONLY|O_CREAT,0600);puts(\"writing\");fflush(stdout);for(;;) if(write(fd,b,sizeof b)<0){perror(\"write\");return 1;}}\n",
			limits: sandbox.Limits{RunTime: 10 * sec, FileSize: 2 * sandbox.MiB},
			want:   sandbox.StatusRuntimeError,
			check:  all(wantStdout("writing\n"), wantSignal("SIGXFSZ"), exitCode(128+25)),
		},
		{
			// Python ignores SIGXFSZ itself, so it sees EFBIG.
			name: "HugeFileWritePython", lang: "python",
			src:    "with open('/tmp/big', 'wb') as f:\n    while True: f.write(b'q' * (1 << 20))\n",
			limits: sandbox.Limits{RunTime: 10 * sec, FileSize: 2 * sandbox.MiB},
			want:   sandbox.StatusRuntimeError,
			check:  all(exitCode(1), stderrHas("File too large")),
		},
		{
			// Empty files take no space but an inode each: every tmpfs the program can
			// write has an inode cap (one per 4 KiB, at least 1024), or the program would
			// fill the host's memory with inodes. 100,000 files is far past the caps.
			name: "FillsInodes", lang: "c",
			src: `#include <stdio.h>
#include <fcntl.h>
#include <unistd.h>
#include <errno.h>
#include <string.h>
static void fill(const char *dir) {
	char p[128];
	for (long n = 0; n < 100000; n++) {
		snprintf(p, sizeof p, "%s/f%ld", dir, n);
		int fd = open(p, O_CREAT | O_WRONLY | O_EXCL, 0600);
		if (fd < 0) { printf("%s: %ld files, %s\n", dir, n, strerror(errno)); return; }
		close(fd);
	}
	printf("%s: no inode cap\n", dir);
}
int main(void) { fill("/tmp"); fill("/dev/shm"); return 0; }
`,
			limits: sandbox.Limits{RunTime: 10 * sec, Disk: 4 * sandbox.MiB},
			want:   sandbox.StatusOK,
			check: all(func(t *testing.T, res sandbox.Result) {
				var tmp, shm int
				if _, err := fmt.Sscanf(string(res.Stdout), "/tmp: %d files, No space left on device\n/dev/shm: %d files, No space left on device\n", &tmp, &shm); err != nil {
					t.Fatalf("stdout %q: %v", res.Stdout, err)
				}
				// The compiled program, its source and the directory itself hold a few.
				if tmp > 1024 || tmp < 1000 || shm > 2048 || shm < 2000 {
					t.Errorf("%d files in /tmp (cap 1024 inodes), %d in /dev/shm (cap 2048)", tmp, shm)
				}
			}),
		},
		{
			// The container's OOM score is 1000, set by the engine: the program cannot
			// make itself less likely than dockerd or the master to be killed under host
			// memory pressure. Below 0 it is always refused; below 1000 too when the
			// engine has CAP_SYS_RESOURCE (then 1000 is a floor, oom_score_adj_min).
			name: "LowersOOMScore", lang: "python",
			src: `import os
def adj(p='self'): return int(open('/proc/%s/oom_score_adj' % p).read())
print('init', adj(1))
print('start', adj())
for v in (-1000, -500, 0, 500, 999):
    try:
        fd = os.open('/proc/self/oom_score_adj', os.O_WRONLY)
        try: os.write(fd, str(v).encode())
        finally: os.close(fd)
        r = 'ok'
    except OSError as e:
        r = e.strerror
    print(v, r, adj(), flush=True)
`,
			limits: sandbox.Limits{RunTime: 10 * sec},
			want:   sandbox.StatusOK,
			check: all(stdoutHas("init 1000\n", "start 1000\n", "-1000 Permission denied", "-500 Permission denied"), func(t *testing.T, res sandbox.Result) {
				lowest := 1000
				for _, l := range strings.Split(strings.TrimSpace(string(res.Stdout)), "\n")[2:] {
					var v, now int
					var r string
					if _, err := fmt.Sscanf(strings.Replace(l, "Permission denied", "denied", 1), "%d %s %d", &v, &r, &now); err != nil {
						t.Fatalf("line %q: %v", l, err)
					}
					lowest = min(lowest, now)
				}
				if lowest < 0 {
					t.Errorf("the program lowered its OOM score to %d\n%s", lowest, res.Stdout)
				}
				if engineHasCap("CAP_SYS_RESOURCE") && lowest < 1000 {
					t.Errorf("the program lowered its OOM score to %d under an engine that sets a floor of 1000\n%s", lowest, res.Stdout)
				} else if lowest < 1000 {
					t.Logf("the engine cannot set a floor here (no CAP_SYS_RESOURCE): the program went down to %d, never below 0", lowest)
				}
			}),
		},
		{
			name: "TooManyFiles", lang: "python",
			src: "fs = []\ntry:\n    while True: fs.append(open('/dev/null'))\n" +
				"except OSError as e:\n    print('open files', len(fs) < 32, e.strerror, flush=True)\n    raise\n",
			limits: sandbox.Limits{RunTime: 5 * sec, OpenFiles: 32},
			want:   sandbox.StatusRuntimeError,
			check:  all(exitCode(1), stdoutHas("open files True Too many open files")),
		},

		// Escapes: network, host files, privileges.
		{
			name: "Network", lang: "python",
			src: `import os, socket
def tcp(): socket.create_connection(('1.1.1.1', 80), timeout=2)
def tcp_host(): socket.create_connection(('172.17.0.1', 2375), timeout=2)
def dns(): socket.getaddrinfo('example.com', 80)
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b'x', ('8.8.8.8', 53))
def raw(): socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
def packet(): socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
def unix_docker(): socket.socket(socket.AF_UNIX).connect('/var/run/docker.sock')
for name, f in [('tcp', tcp), ('tcp-host', tcp_host), ('dns', dns), ('udp', udp), ('raw', raw), ('packet', packet), ('docker-socket', unix_docker)]:
    try:
        f(); print(name, 'OPEN')
    except Exception as e:
        print(name, 'blocked')
print('interfaces', sorted(os.listdir('/sys/class/net')))
`,
			limits: sandbox.Limits{RunTime: 10 * sec},
			want:   sandbox.StatusOK,
			check:  all(wantStdout("tcp blocked\ntcp-host blocked\ndns blocked\nudp blocked\nraw blocked\npacket blocked\ndocker-socket blocked\ninterfaces ['lo']\n")),
		},
		{
			name: "HostFiles", lang: "python",
			src: `import os
for p in ['/etc/shadow', '/var/run/docker.sock', '/run/docker.sock', '/proc/1/environ', '/proc/1/mem', '/proc/1/fd/0', '/proc/kcore', '/proc/sysrq-trigger', '/proc/keys', '/proc/timer_list', '/sys/firmware/memmap']:
    try:
        with open(p, 'rb') as f: data = f.read(64)
        print(p, 'LEAKED' if data else 'empty')
    except OSError:
        print(p, 'denied')
try:
    os.listdir('/proc/1/fd'); print('/proc/1/fd LISTED')
except OSError:
    print('/proc/1/fd denied')
print('pids', sorted(int(p) for p in os.listdir('/proc') if p.isdigit()) == sorted([1, os.getpid()]))
print('env', sorted(os.environ))
print('docker.sock mounted', 'docker.sock' in open('/proc/self/mountinfo').read())
print('uid', os.getuid(), os.geteuid())
print('cap', [l.split()[1] for l in open('/proc/self/status') if l.startswith(('CapEff', 'CapPrm', 'CapBnd'))])
print('nnp', [l.split()[1] for l in open('/proc/self/status') if l.startswith('NoNewPrivs')])
print('seccomp', [l.split()[1] for l in open('/proc/self/status') if l.startswith('Seccomp:')])
try:
    open('/usr/bin/owned', 'w'); print('rootfs WRITABLE')
except OSError:
    print('rootfs read-only')
`,
			limits: sandbox.Limits{RunTime: 10 * sec},
			want:   sandbox.StatusOK,
			check: all(func(t *testing.T, res sandbox.Result) {
				out := string(res.Stdout)
				for _, bad := range []string{"LEAKED", "LISTED", "WRITABLE"} {
					if strings.Contains(out, bad) {
						t.Errorf("%s:\n%s", bad, out)
					}
				}
			}, stdoutHas("/etc/shadow denied\n", "/var/run/docker.sock denied\n", "/proc/1/environ denied\n", "/proc/1/mem denied\n",
				"pids True\n",
				"env ['HOME', 'LANG', 'PATH', 'PYTHONDONTWRITEBYTECODE', 'TMPDIR']\n",
				"docker.sock mounted False\n", "uid 65534 65534\n",
				"cap ['0000000000000000', '0000000000000000', '0000000000000000']\n",
				"nnp ['1']\n", "seccomp ['2']\n", "rootfs read-only\n")),
		},
		{
			name: "PrivilegeEscalation", lang: "c",
			src: `#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
static void try(const char *what, long rc) { printf("%s %s\n", what, rc == 0 ? "ALLOWED" : "denied"); }
int main(void) {
	try("setuid", setuid(0));
	try("setgid", setgid(0));
	try("mount", mount("none", "/tmp", "tmpfs", 0, 0));
	try("unshare-user", unshare(CLONE_NEWUSER));
	try("unshare-mount", unshare(CLONE_NEWNS));
	try("unshare-pid", unshare(CLONE_NEWPID));
	try("ptrace-init", ptrace(PTRACE_ATTACH, 1, 0, 0));
	try("chroot", chroot("/tmp"));
	try("mknod", mknod("/tmp/sda", S_IFBLK | 0600, makedev(8, 0)));
	fflush(stdout);
	try("su", system("su -c 'touch /tmp/pwned' root </dev/null >/dev/null 2>&1"));
	try("sudo", system("sudo touch /tmp/pwned </dev/null >/dev/null 2>&1"));
	try("unshare-cmd", system("unshare -r true </dev/null >/dev/null 2>&1"));
	try("mount-cmd", system("mount -t tmpfs none /tmp </dev/null >/dev/null 2>&1"));
	try("setuid-copy", system("cp /usr/bin/su /tmp/su2 && chmod u+s /tmp/su2 && /tmp/su2 -c true root </dev/null >/dev/null 2>&1"));
	printf("uid %d euid %d pwned %d\n", getuid(), geteuid(), access("/tmp/pwned", F_OK) == 0);
	return 0;
}
`,
			limits: sandbox.Limits{RunTime: 10 * sec},
			want:   sandbox.StatusOK,
			check: all(func(t *testing.T, res sandbox.Result) {
				if bytes.Contains(res.Stdout, []byte("ALLOWED")) {
					t.Errorf("a privileged operation went through:\n%s", res.Stdout)
				}
			}, stdoutHas("setuid denied", "mount denied", "unshare-user denied", "ptrace-init denied", "su denied", "sudo denied", "setuid-copy denied", "uid 65534 euid 65534 pwned 0\n")),
		},

		// The compiler.
		{
			name: "CompileError", lang: "c",
			src:  "int main(void) { return undefined_thing; }\n",
			want: sandbox.StatusCompileError,
			check: all(exitCode(1), compileHas("undefined_thing"), func(t *testing.T, res sandbox.Result) {
				if len(res.Stdout) != 0 || res.Time != 0 {
					t.Errorf("a program that did not compile ran: stdout %q time %v", res.Stdout, res.Time)
				}
			}),
		},
		{
			name: "IncludeDevZero", lang: "c",
			src:    "#include \"/dev/zero\"\nint main(void){return 0;}\n",
			limits: sandbox.Limits{CompileTime: 5 * sec, Memory: 128 * sandbox.MiB},
			want:   sandbox.StatusCompileError,
			check: all(func(t *testing.T, res sandbox.Result) {
				if !strings.Contains(res.Message, "out of memory") && !strings.Contains(res.Message, "longer than") {
					t.Errorf("message %q names neither the memory nor the time limit", res.Message)
				}
			}),
		},
		{
			name: "RecursiveInclude", lang: "c",
			src:   "#include __FILE__\nint main(void){return 0;}\n",
			want:  sandbox.StatusCompileError,
			check: all(compileHas("nested depth")),
		},
		{
			// A gigabyte of initialised data: the assembler's object file passes the file
			// size limit long before the disk or the compile time would.
			name: "GiantStaticArrayInitialised", lang: "c",
			src:  "char big[1L<<30] = {1};\nint main(void){return big[0];}\n",
			want: sandbox.StatusCompileError,
		},
		{
			name: "IncludeShadow", lang: "c",
			src:   "#include \"/etc/shadow\"\nint main(void){return 0;}\n",
			want:  sandbox.StatusCompileError,
			check: all(compileHas("/etc/shadow", "Permission denied")),
		},
		{
			// .incbin reads at compile time what the program could read at run time: the
			// image's own world-readable files, nothing of the host.
			name: "IncbinPasswd", lang: "c",
			src: `#include <stdio.h>
__asm__(".section .rodata\n.global pw\npw:\n.incbin \"/etc/passwd\"\n.byte 0\n.previous\n");
extern const char pw[];
int main(void){ fputs(pw, stdout); return 0; }
`,
			want: sandbox.StatusOK,
			check: all(stdoutHas("root:x:0:0:", "nobody:x:65534:"), func(t *testing.T, res sandbox.Result) {
				// The image's passwd, not the host's.
				if host, err := os.ReadFile("/etc/passwd"); err == nil && bytes.Equal(host, res.Stdout) {
					t.Errorf("the program read the host's /etc/passwd")
				}
			}),
		},
		{
			name: "IncbinShadow", lang: "c",
			src:   "__asm__(\".section .rodata\\n.incbin \\\"/etc/shadow\\\"\\n.previous\\n\");\nint main(void){return 0;}\n",
			want:  sandbox.StatusCompileError,
			check: all(compileHas("/etc/shadow")),
		},

		// Malformed requests: refused before any container is touched.
		{
			name: "UnknownLanguage", spec: &sandbox.Spec{Language: "brainfuck", Files: []sandbox.File{{Content: []byte("+[]")}}},
			wantErr: sandbox.ErrUnknownLanguage,
		},
		{
			name: "EmptyProgram", spec: &sandbox.Spec{Language: "python", Files: []sandbox.File{{}}},
			wantErr: sandbox.ErrInvalidRequest,
		},
		{
			name: "NoFiles", spec: &sandbox.Spec{Language: "c"},
			wantErr: sandbox.ErrInvalidRequest,
		},
		{
			name: "SourceOverCap", spec: &sandbox.Spec{Language: "python", Files: []sandbox.File{{Content: bytes.Repeat([]byte("#"), sandbox.MaxSourceBytes+1)}}},
			wantErr: sandbox.ErrTooLarge,
		},
		{
			name: "PathInFileName", spec: &sandbox.Spec{Language: "c", Files: []sandbox.File{{Content: []byte("int main(){}")}, {Name: "../../etc/x.h", Content: []byte("x")}}},
			wantErr: sandbox.ErrInvalidRequest,
		},
	}
}

// manyProcessesBomb forks children that each hold a touched MiB, until memory runs out.
func manyProcessesBomb(lowerOOMScore bool) string {
	lower := ""
	if lowerOOMScore {
		lower = `FILE *f = fopen("/proc/self/oom_score_adj", "w"); if (f) { fputs("0", f); fclose(f); }`
	}
	return `#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
int main(void) {
	` + lower + `
	puts("forking");
	fflush(stdout);
	for (int i = 0; i < 240; i++) {
		pid_t p = fork();
		if (p == 0) {
			volatile char *b = malloc(1 << 20);
			for (int j = 0; j < (1 << 20); j += 4096) b[j] = 1;
			pause();
			_exit(b[4096]);
		}
		usleep(2000);
	}
	pause();
	return 0;
}
`
}

// engineHasCap reports whether the local dockerd runs with capability name in its effective
// set (false when it cannot be seen: a remote engine, another PID namespace).
func engineHasCap(name string) bool {
	bit := map[string]uint{"CAP_SYS_RESOURCE": 24}[name]
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		comm, err := os.ReadFile(filepath.Join(d, "comm"))
		if err != nil || strings.TrimSpace(string(comm)) != "dockerd" {
			continue
		}
		status, err := os.ReadFile(filepath.Join(d, "status"))
		if err != nil {
			return false
		}
		for _, l := range strings.Split(string(status), "\n") {
			if hex, ok := strings.CutPrefix(l, "CapEff:"); ok {
				var caps uint64
				fmt.Sscanf(strings.TrimSpace(hex), "%x", &caps)
				return caps&(1<<bit) != 0
			}
		}
	}
	return false
}

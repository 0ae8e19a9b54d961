// Package sandboxtest holds the conformance suite that every sandbox.Runner passes: the
// Docker runner, a remote slave seen through the transport, the scheduler's dispatcher.
package sandboxtest

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"runbox/sandbox"
)

// Program builds a one-file Spec.
func Program(lang, source string) sandbox.Spec {
	return sandbox.Spec{Language: lang, Files: []sandbox.File{{Content: []byte(source)}}}
}

// compiled gives a compiled program the longest compile time a server allows: the suite
// checks outcomes, not speed, and g++ on a loaded 2-core machine can pass 10 s.
func compiled(spec sandbox.Spec) sandbox.Spec {
	spec.Limits.CompileTime = sandbox.MaxLimits().CompileTime
	return spec
}

// Conformance runs the suite against r. The Runner must serve python, c and cpp with
// default limits of at least 2s run time, 1 MiB output and 128 MiB memory.
func Conformance(t *testing.T, r sandbox.Runner) {
	t.Run("PythonHello", func(t *testing.T) {
		t.Parallel()
		res := mustRun(t, r, Program("python", "print('hello, world')"), nil)
		expect(t, res, sandbox.StatusOK, 0)
		if string(res.Stdout) != "hello, world\n" {
			t.Errorf("stdout = %q", res.Stdout)
		}
		if res.Memory <= 0 || res.Time <= 0 {
			t.Errorf("time %v, memory %d: both must be measured", res.Time, res.Memory)
		}
	})
	t.Run("CHello", func(t *testing.T) {
		t.Parallel()
		res := mustRun(t, r, compiled(Program("c", "#include <stdio.h>\nint main(void){puts(\"hi from c\");return 0;}\n")), nil)
		expect(t, res, sandbox.StatusOK, 0)
		if string(res.Stdout) != "hi from c\n" {
			t.Errorf("stdout = %q", res.Stdout)
		}
	})
	t.Run("CppHello", func(t *testing.T) {
		t.Parallel()
		res := mustRun(t, r, compiled(Program("cpp", "#include <iostream>\nint main(){std::cout<<\"hi from c++\"<<std::endl;}\n")), nil)
		expect(t, res, sandbox.StatusOK, 0)
		if string(res.Stdout) != "hi from c++\n" {
			t.Errorf("stdout = %q", res.Stdout)
		}
	})
	t.Run("StdinAndExitCode", func(t *testing.T) {
		t.Parallel()
		spec := Program("python", "import sys\nd=sys.stdin.read()\nprint(d.upper(), end='')\nprint('oops', file=sys.stderr)\nsys.exit(7)\n")
		spec.Stdin = []byte("some input\n")
		res := mustRun(t, r, spec, nil)
		expect(t, res, sandbox.StatusRuntimeError, 7)
		if string(res.Stdout) != "SOME INPUT\n" || string(res.Stderr) != "oops\n" {
			t.Errorf("stdout %q stderr %q", res.Stdout, res.Stderr)
		}
	})
	t.Run("CompileError", func(t *testing.T) {
		t.Parallel()
		res := mustRun(t, r, compiled(Program("c", "int main(void){ return missing_symbol; }\n")), nil)
		expect(t, res, sandbox.StatusCompileError, 1)
		if !bytes.Contains(res.CompileOutput, []byte("missing_symbol")) {
			t.Errorf("compile output does not name the error: %q", res.CompileOutput)
		}
		if len(res.Stdout) != 0 {
			t.Errorf("stdout %q from a program that did not compile", res.Stdout)
		}
	})
	t.Run("TimeLimitKeepsPartialOutput", func(t *testing.T) {
		t.Parallel()
		spec := Program("python", "print('started', flush=True)\nwhile True: pass\n")
		// Long enough for the interpreter to start and print on a loaded machine.
		spec.Limits.RunTime = 2 * time.Second
		res := mustRun(t, r, spec, nil)
		if res.Status != sandbox.StatusTimeLimit {
			t.Fatalf("status %s, want time_limit (%+v)", res.Status, res)
		}
		if string(res.Stdout) != "started\n" {
			t.Errorf("partial stdout lost: %q", res.Stdout)
		}
	})
	t.Run("OutputLimit", func(t *testing.T) {
		t.Parallel()
		spec := Program("python", "import sys\nwhile True: sys.stdout.write('x'*4096)\n")
		spec.Limits.Output = 64 << 10
		res := mustRun(t, r, spec, nil)
		if res.Status != sandbox.StatusOutputLimit {
			t.Fatalf("status %s, want output_limit", res.Status)
		}
		if len(res.Stdout) != 64<<10 || strings.Trim(string(res.Stdout), "x") != "" {
			t.Errorf("kept %d bytes, want the first %d", len(res.Stdout), 64<<10)
		}
	})
	t.Run("LiveOutput", func(t *testing.T) {
		t.Parallel()
		var mu sync.Mutex
		var live bytes.Buffer
		started := false
		streams := &sandbox.Streams{
			Output: func(c sandbox.Chunk) {
				mu.Lock()
				defer mu.Unlock()
				if c.Stream == sandbox.Stdout {
					live.Write(c.Data)
				}
			},
			Started: func() { mu.Lock(); started = true; mu.Unlock() },
		}
		res := mustRun(t, r, Program("python", "for i in range(3): print(i)\n"), streams)
		expect(t, res, sandbox.StatusOK, 0)
		mu.Lock()
		defer mu.Unlock()
		if live.String() != "0\n1\n2\n" || !started {
			t.Errorf("live stdout %q, started %v", live.String(), started)
		}
	})
	t.Run("InteractiveStdin", func(t *testing.T) {
		t.Parallel()
		in := make(chan []byte, 1)
		var once sync.Once
		streams := &sandbox.Streams{
			Stdin: in,
			Output: func(c sandbox.Chunk) {
				// Answer the prompt only once it was seen: input() really waits.
				if bytes.Contains(c.Data, []byte("name?")) {
					once.Do(func() { in <- []byte("Ada\n"); close(in) })
				}
			},
		}
		res := mustRun(t, r, Program("python", "n = input('name?')\nprint('hello', n)\n"), streams)
		expect(t, res, sandbox.StatusOK, 0)
		if string(res.Stdout) != "name?hello Ada\n" {
			t.Errorf("stdout = %q", res.Stdout)
		}
	})
	t.Run("BadRequests", func(t *testing.T) {
		t.Parallel()
		for _, c := range []struct {
			spec sandbox.Spec
			want error
		}{
			{Program("cobol", "DISPLAY 'HI'."), sandbox.ErrUnknownLanguage},
			{Program("python", ""), sandbox.ErrInvalidRequest},
			{Program("python", strings.Repeat("#", sandbox.MaxSourceBytes+1)), sandbox.ErrTooLarge},
			{sandbox.Spec{Language: "python", Limits: sandbox.Limits{RunTime: time.Hour}, Files: []sandbox.File{{Content: []byte("print(1)")}}}, sandbox.ErrInvalidRequest},
		} {
			_, err := r.Run(context.Background(), c.spec, nil)
			if !errors.Is(err, c.want) {
				t.Errorf("%s: err = %v, want %v", c.spec.Language, err, c.want)
			}
		}
	})
	t.Run("Cancel", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithCancel(context.Background())
		streams := &sandbox.Streams{Started: func() { time.AfterFunc(100*time.Millisecond, cancel) }}
		_, err := r.Run(ctx, Program("python", "import time\ntime.sleep(60)\n"), streams)
		if !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want context.Canceled", err)
		}
	})
}

func mustRun(t *testing.T, r sandbox.Runner, spec sandbox.Spec, streams *sandbox.Streams) sandbox.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := r.Run(ctx, spec, streams)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return res
}

func expect(t *testing.T, res sandbox.Result, status sandbox.Status, code int) {
	t.Helper()
	if res.Status != status || res.ExitCode != code {
		t.Fatalf("status %s exit %d, want %s exit %d (stderr %q, compile %q, message %q)",
			res.Status, res.ExitCode, status, code, res.Stderr, res.CompileOutput, res.Message)
	}
}

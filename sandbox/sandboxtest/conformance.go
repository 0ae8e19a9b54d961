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

// compiled gives a compiled program the longest compile time a server allows, and 20 s
// to run: the suite checks outcomes, not speed, and on a loaded 2-core machine g++ can
// pass 10 s and a JVM take seconds to start.
func compiled(spec sandbox.Spec) sandbox.Spec {
	spec.Limits.CompileTime = sandbox.MaxLimits().CompileTime
	spec.Limits.RunTime = 20 * time.Second
	return spec
}

// Conformance runs the suite against r. The Runner must serve every language of the table
// (python, c, cpp, go, java, javascript) with default limits of at least 2s run time,
// 1 MiB output and 128 MiB memory.
func Conformance(t *testing.T, r sandbox.Runner) {
	progs := LanguagePrograms()
	for _, lang := range sandbox.Languages() {
		p, ok := progs[lang.Name]
		if !ok {
			t.Errorf("no conformance programs for %s", lang.Name)
			continue
		}
		t.Run(lang.Name, func(t *testing.T) {
			t.Parallel()
			conformLanguage(t, r, lang, p)
		})
	}
	t.Run("GoPackageOfTwoFiles", func(t *testing.T) {
		t.Parallel()
		spec := compiled(Program("go", "package main\n\nfunc main() { println(greeting()) }\n"))
		spec.Files = append(spec.Files, sandbox.File{Name: "greeting.go", Content: []byte("package main\n\nfunc greeting() string { return \"two files\" }\n")})
		res := mustRun(t, r, spec, nil)
		expect(t, res, sandbox.StatusOK, 0)
		if string(res.Stderr) != "two files\n" {
			t.Errorf("stderr = %q", res.Stderr)
		}
	})
	t.Run("JavaClassInItsOwnFile", func(t *testing.T) {
		t.Parallel()
		// javac finds Greeting.java on the source path, Main.java names it.
		spec := compiled(Program("java", "public class Main { public static void main(String[] a) { System.out.println(Greeting.text()); } }\n"))
		spec.Files = append(spec.Files, sandbox.File{Name: "Greeting.java", Content: []byte("public class Greeting { static String text() { return \"two files\"; } }\n")})
		res := mustRun(t, r, spec, nil)
		expect(t, res, sandbox.StatusOK, 0)
		if string(res.Stdout) != "two files\n" {
			t.Errorf("stdout = %q", res.Stdout)
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

// conformLanguage runs one language's programs: the same checks for every language.
func conformLanguage(t *testing.T, r sandbox.Runner, lang sandbox.Language, p Programs) {
	// Outcomes, not speed: a JVM or Node.js on a loaded 2-core machine can take seconds
	// to start, so every program gets the time a limit's own case does not test.
	program := func(src string) sandbox.Spec {
		spec := Program(lang.Name, src)
		if lang.Compiled() {
			spec = compiled(spec)
		}
		spec.Limits.RunTime = 20 * time.Second
		return spec
	}
	t.Run("Hello", func(t *testing.T) {
		t.Parallel()
		spec := program(p.Hello)
		spec.Stdin = []byte("some input\n")
		res := mustRun(t, r, spec, nil)
		expect(t, res, sandbox.StatusOK, 0)
		if want := "hello from " + lang.Name + "\nSOME INPUT\n"; string(res.Stdout) != want || string(res.Stderr) != "to stderr\n" {
			t.Errorf("stdout %q stderr %q, want %q and %q", res.Stdout, res.Stderr, want, "to stderr\n")
		}
		if res.Memory <= 0 || res.Time <= 0 {
			t.Errorf("time %v, memory %d: both must be measured", res.Time, res.Memory)
		}
		if lang.Compiled() != (res.CompileTime > 0) {
			t.Errorf("compile time %v for a language that compiles: %v", res.CompileTime, lang.Compiled())
		}
		t.Logf("compile %v, run %v, cpu %v, memory %s", res.CompileTime, res.Time, res.CPUTime, sandbox.FormatSize(res.Memory))
	})
	t.Run("ExitCode", func(t *testing.T) {
		t.Parallel()
		res := mustRun(t, r, program(p.Exit), nil)
		expect(t, res, sandbox.StatusRuntimeError, 3)
		if string(res.Stdout) != "bye\n" {
			t.Errorf("stdout = %q", res.Stdout)
		}
	})
	t.Run("Crash", func(t *testing.T) {
		t.Parallel()
		res := mustRun(t, r, program(p.Crash), nil)
		if res.Status != sandbox.StatusRuntimeError || res.ExitCode == 0 {
			t.Fatalf("status %s exit %d, want runtime_error, non-zero (stderr %q)", res.Status, res.ExitCode, res.Stderr)
		}
		if string(res.Stdout) != "before\n" {
			t.Errorf("output before the crash lost: %q", res.Stdout)
		}
		if res.Signal == "" && !bytes.Contains(res.Stderr, []byte("boom")) {
			t.Errorf("neither a signal nor the error on stderr: %q", res.Stderr)
		}
	})
	if p.CompileError != "" {
		t.Run("CompileError", func(t *testing.T) {
			t.Parallel()
			res := mustRun(t, r, program(p.CompileError), nil)
			if res.Status != sandbox.StatusCompileError || res.ExitCode == 0 {
				t.Fatalf("status %s exit %d, want compile_error, non-zero (compile %q)", res.Status, res.ExitCode, res.CompileOutput)
			}
			if !bytes.Contains(res.CompileOutput, []byte("missing_symbol")) {
				t.Errorf("compile output does not name the error: %q", res.CompileOutput)
			}
			if len(res.Stdout) != 0 {
				t.Errorf("stdout %q from a program that did not compile", res.Stdout)
			}
		})
	}
	t.Run("TimeLimitKeepsPartialOutput", func(t *testing.T) {
		t.Parallel()
		spec := program(p.Loop)
		// Long enough for a JVM to start and print on a loaded machine.
		spec.Limits.RunTime = 5 * time.Second
		res := mustRun(t, r, spec, nil)
		if res.Status != sandbox.StatusTimeLimit {
			t.Fatalf("status %s, want time_limit (%+v)", res.Status, res)
		}
		if string(res.Stdout) != "started\n" {
			t.Errorf("partial stdout lost: %q", res.Stdout)
		}
	})
	t.Run("MemoryLimit", func(t *testing.T) {
		t.Parallel()
		spec := program(p.Memory)
		spec.Limits.Memory = 128 * sandbox.MiB
		res := mustRun(t, r, spec, nil)
		if p.HeapLimit != "" {
			if res.Status != sandbox.StatusRuntimeError || !bytes.Contains(res.Stderr, []byte(p.HeapLimit)) {
				t.Fatalf("status %s exit %d, want runtime_error with %s (stderr %q, message %q)", res.Status, res.ExitCode, p.HeapLimit, tail(res.Stderr), res.Message)
			}
			return
		}
		if res.Status != sandbox.StatusMemoryLimit {
			t.Fatalf("status %s exit %d, want memory_limit (stderr %q, message %q)", res.Status, res.ExitCode, tail(res.Stderr), res.Message)
		}
	})
	t.Run("OutputLimit", func(t *testing.T) {
		t.Parallel()
		spec := program(p.Flood)
		spec.Limits.Output = 64 << 10
		res := mustRun(t, r, spec, nil)
		if res.Status != sandbox.StatusOutputLimit {
			t.Fatalf("status %s, want output_limit (stderr %q)", res.Status, tail(res.Stderr))
		}
		if len(res.Stdout) != 64<<10 || strings.Trim(string(res.Stdout), "x") != "" {
			t.Errorf("kept %d bytes, want the first %d", len(res.Stdout), 64<<10)
		}
	})
}

// tail is the end of a program's output, for failure messages.
func tail(b []byte) []byte { return b[max(0, len(b)-500):] }

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

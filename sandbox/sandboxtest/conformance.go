// Package sandboxtest holds what the tests of sandbox.Runner implementations share:
//
//   - Contract, what every Runner owes its callers (outcomes as Results, live output in
//     order, Started once, live stdin, the sentinel errors, limits above the maxima
//     refused, cancellation that frees everything). It needs one language and, over a
//     Fake, no toolchain: it runs over Fake, the judge (sandbox/judge), a slave seen
//     through the transport (the master's remote runner on net.Pipe) and a client of a
//     master on loopback (transport/contract_test.go), and over the Docker sandbox;
//   - Languages, the language suite: every row of the language table compiles and runs
//     the same programs (LanguagePrograms) with the same outcomes. It needs every
//     language's toolchain, so only the Docker sandbox runs it;
//   - Conformance, both, for a Runner that runs real programs;
//   - Fake, an in-process Runner for the layers above the sandbox.
package sandboxtest

import (
	"bytes"
	"context"
	"strings"
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

// Conformance runs the contract, with Python programs, and the language suite against r,
// side by side: see Contract and Languages.
func Conformance(t *testing.T, r sandbox.Runner) {
	t.Run("Contract", func(t *testing.T) {
		t.Parallel()
		Contract(t, r, ContractConfig{Programs: PythonPrograms()})
	})
	t.Run("Languages", func(t *testing.T) {
		t.Parallel()
		Languages(t, r)
	})
}

// Languages runs the language suite against r: the same programs and checks for every
// row of the language table (see Programs), and a program of several files in the
// languages that have packages or classes. The Runner must serve every language of the
// table with default limits of at least 2s run time, 1 MiB output and 128 MiB memory.
func Languages(t *testing.T, r sandbox.Runner) {
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

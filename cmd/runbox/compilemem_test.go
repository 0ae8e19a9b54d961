package main

import (
	"context"
	"strings"
	"sync"
	"testing"

	"runbox/sandbox"
	"runbox/sandbox/sandboxtest"
)

// limitsRunner is the Fake that remembers the limits of the programs it ran.
type limitsRunner struct {
	sandboxtest.Fake
	mu  sync.Mutex
	got []sandbox.Limits
}

func (r *limitsRunner) Run(ctx context.Context, spec sandbox.Spec, st *sandbox.Streams) (sandbox.Result, error) {
	r.mu.Lock()
	r.got = append(r.got, spec.Limits)
	r.mu.Unlock()
	return r.Fake.Run(ctx, spec, st)
}

// submit --compile-memory sets the compile phase's memory limit, apart from the program's,
// parsed like --memory-limit; above the server's maximum it is refused, not cut.
func TestSubmitCompileMemory(t *testing.T) {
	t.Parallel()
	r := &limitsRunner{}
	addr := startMaster(t, r, nil)
	prog := write(t, "p.py", "out x")
	if code, out, errOut := cli(t, "", "submit", "--server", addr, "--memory-limit", "128MiB", "--compile-memory", "1GiB", prog); code != 0 || out != "x\n" {
		t.Fatalf("--compile-memory 1GiB: code %d, %q %q", code, out, errOut)
	}
	r.mu.Lock()
	got := r.got
	r.mu.Unlock()
	if len(got) != 1 || got[0].CompileMemory != 1<<30 || got[0].Memory != 128<<20 {
		t.Errorf("the runner got limits %+v, want compile memory 1 GiB and memory 128 MiB", got)
	}

	for _, c := range []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"bad size", []string{"--compile-memory", "lots"}, exitUsage, "--compile-memory"},
		{"zero", []string{"--compile-memory", "0"}, exitUsage, "--compile-memory"},
		{"above the maximum", []string{"--compile-memory", "64GiB"}, exitInvalid, "compile memory"},
	} {
		code, _, errOut := cli(t, "", append(append([]string{"submit", "--server", addr}, c.args...), prog)...)
		if code != c.code || !strings.Contains(errOut, c.msg) {
			t.Errorf("%s: code %d (want %d), stderr %q (want %q)", c.name, code, c.code, errOut, c.msg)
		}
	}
	if _, _, errOut := cli(t, "", "submit", "-h"); !strings.Contains(errOut, "-compile-memory") {
		t.Errorf("help lacks --compile-memory:\n%s", errOut)
	}
}

package docker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"

	"runbox/sandbox"
	"runbox/sandbox/sandboxtest"
)

// Tests here need a Docker engine and the runtime images (`make images`). In CI they run;
// a missing daemon or image fails them. `go test -short` skips them.

func needDocker(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs Docker (skipped with -short)")
	}
}

// newTestRunner starts a Runner with its own owner label, and on cleanup closes it and
// checks that no container of its owner is left.
func newTestRunner(t testing.TB, mod func(*Config)) *Runner {
	t.Helper()
	needDocker(t)
	cfg := DefaultConfig()
	cfg.Owner = "test-" + strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	if len(cfg.Owner) > 50 {
		cfg.Owner = cfg.Owner[:50]
	}
	cfg.Owner += "-" + randomHex(3)
	cfg.PoolSize = 1
	if tag := testImageTag(); tag != "" {
		cfg.ImageTag = tag
	}
	if os.Getenv("RUNBOX_TEST_PRESTART") == "off" { // to measure without it
		cfg.PoolPrestart = false
	}
	if os.Getenv("RUNBOX_TEST_LOG") != "" {
		cfg.Logger = testLogger(t)
	}
	if mod != nil {
		mod(&cfg)
	}
	r, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if n := countContainers(t, cfg.Owner); n != 0 {
			t.Errorf("%d containers of owner %s left after Close", n, cfg.Owner)
		}
	})
	return r
}

// testImageTag is the runtime images' tag the tests use instead of "latest", from
// RUNBOX_IMAGE_TAG.
func testImageTag() string { return os.Getenv("RUNBOX_IMAGE_TAG") }

func countContainers(t testing.TB, owner string) int {
	t.Helper()
	return len(listContainers(t, owner))
}

// listContainers describes the containers of owner: name, state and status.
func listContainers(t testing.TB, owner string) []string {
	t.Helper()
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	list, err := cli.ContainerList(context.Background(), container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("label", LabelOwner+"="+owner))})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, c := range list {
		out = append(out, fmt.Sprintf("%s %s (%s)", strings.Join(c.Names, ","), c.State, c.Status))
	}
	return out
}

func TestConformance(t *testing.T) {
	r := newTestRunner(t, nil)
	sandboxtest.Conformance(t, r)
}

func TestPoolServesAndRefills(t *testing.T) {
	r := newTestRunner(t, func(c *Config) { c.Languages = []string{"python"}; c.PoolSize, c.PoolStart = 2, 1 })
	p := r.langs["python"].pool
	waitFor(t, 30*time.Second, func() bool { return p.idle() == 1 }) // PoolStart
	// A burst of two: one finds the pool empty and it grows to PoolSize; then each burst
	// takes the whole pool at once and both fillers start again side by side.
	for range 3 {
		var wg sync.WaitGroup
		for i := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res, err := r.Run(context.Background(), sandboxtest.Program("python", "print(1)"), nil)
				if err != nil || res.Status != sandbox.StatusOK {
					t.Errorf("run %d: %v %+v", i, err, res)
				}
			}()
		}
		wg.Wait()
	}
	waitFor(t, 30*time.Second, func() bool { return p.idle() == 2 })
	// The fillers' boxes: exactly PoolSize containers wait, nothing more.
	waitFor(t, 30*time.Second, func() bool { return countContainers(t, r.cfg.Owner) == 2 })
}

// A program with another memory limit can take a pooled box (the limit is set at
// runbox-init's gate); it sees its own limit.
func TestCustomMemoryInPooledBox(t *testing.T) {
	r := newTestRunner(t, func(c *Config) { c.Languages = []string{"python"} })
	spec := sandboxtest.Program("python", "print(open('/sys/fs/cgroup/memory/memory.limit_in_bytes').read() if __import__('os').path.exists('/sys/fs/cgroup/memory/memory.limit_in_bytes') else open('/sys/fs/cgroup/memory.max').read())")
	spec.Limits.Memory = 100 << 20
	res, err := r.Run(context.Background(), spec, nil)
	if err != nil || res.Status != sandbox.StatusOK {
		t.Fatalf("%v %+v", err, res)
	}
	if got := strings.TrimSpace(string(res.Stdout)); got != "104857600" {
		t.Errorf("memory limit seen inside = %q, want 104857600", got)
	}
}

func TestMissingImagesAreUnavailable(t *testing.T) {
	needDocker(t)
	cfg := DefaultConfig()
	cfg.Owner = "test-missing-" + randomHex(3)
	cfg.ImageTag = "no-such-tag-" + randomHex(4)
	_, err := New(context.Background(), cfg)
	if !errors.Is(err, sandbox.ErrUnavailable) || !strings.Contains(err.Error(), "make images") {
		t.Errorf("err = %v, want ErrUnavailable telling to run make images", err)
	}
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func waitFor(t testing.TB, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Every run says where its time went: a warm box from the pool (Pooled), the program's
// own time, and for a compiled language the compile as the Runner saw it.
func TestRunFillsTrace(t *testing.T) {
	r := newTestRunner(t, func(c *Config) { c.Languages = []string{"python", "c"} })
	p := r.langs["python"].pool
	waitFor(t, 60*time.Second, func() bool { return p.idle() == 1 })
	res, err := r.Run(context.Background(), sandboxtest.Program("python", "print(1)"), nil)
	if err != nil || res.Status != sandbox.StatusOK {
		t.Fatalf("%v %+v", err, res)
	}
	tr := res.Trace
	if tr == nil || !tr.Pooled || tr.Acquire <= 0 || tr.Send <= 0 || tr.Run <= 0 || tr.Compile != 0 {
		t.Errorf("pooled python run: trace %+v, want pooled, acquire, send and run measured, no compile", tr)
	}

	// Limits of its own: a container started for the program, not a pooled one.
	spec := sandboxtest.Program("c", "#include <stdio.h>\nint main(void){puts(\"1\");return 0;}\n")
	spec.Limits.Pids = r.cfg.Defaults.Pids / 2
	spec.Limits.CompileTime = sandbox.MaxLimits().CompileTime
	res, err = r.Run(context.Background(), spec, nil)
	if err != nil || res.Status != sandbox.StatusOK {
		t.Fatalf("%v %+v", err, res)
	}
	tr = res.Trace
	if tr == nil || tr.Pooled || tr.Acquire <= 0 || tr.Compile <= 0 || tr.Gate <= 0 || tr.Run <= 0 {
		t.Errorf("fresh c run: trace %+v, want not pooled, acquire, compile, gate (the compiler's memory lowered) and run measured", tr)
	}
	t.Logf("phases: %v", tr.Phases())
}

// The compile phase has its own memory limit: g++ on the usual headers needs more than a
// 128 MiB program may have, and the program still runs under its own 128 MiB.
func TestCompileMemoryOfItsOwn(t *testing.T) {
	r := newTestRunner(t, func(c *Config) { c.Languages = []string{"cpp"} })
	spec := sandboxtest.Program("cpp", `#include <bits/stdc++.h>
using namespace std;
int main() {
	map<string, vector<int>> m;
	m["a"].push_back(1);
	regex re("[0-9]+");
	string limit;
	for (const char *f : {"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}) {
		ifstream in(f);
		if (in >> limit) break;
	}
	cout << m["a"].size() << " " << regex_match("42", re) << " " << limit << endl;
}
`)
	spec.Limits.Memory = 128 << 20
	spec.Limits.CompileTime = sandbox.MaxLimits().CompileTime
	res, err := r.Run(context.Background(), spec, nil)
	if err != nil || res.Status != sandbox.StatusOK {
		t.Fatalf("%v: %s %s\n%s", err, res.Status, res.Message, res.CompileOutput)
	}
	if got := strings.TrimSpace(string(res.Stdout)); got != "1 1 134217728" {
		t.Errorf("the program printed %q, want 1 1 134217728 (its memory limit, seen inside)", got)
	}
}

// A pooled container of a language with an interpreter started ahead
// (sandbox.Language.Prestart) runs its program in that interpreter; the program sees what
// it would see run the ordinary way, and fails the same way, as in a container started
// for it.
func TestInterpreterPrestarted(t *testing.T) {
	for _, c := range []struct {
		lang, probe, src string
	}{
		{"python", "import sys; print('-c' in sys.orig_argv)\n", `import sys, pickle
class A: pass
print(__name__, __file__, sys.argv, sys.path[0], sorted(globals()), len(pickle.dumps(A())))
print(input())
def f(n): return f(n - 1) if n else 1 / 0
f(2)
`},
		{"javascript", "console.log(process.execArgv.some(a => a.endsWith('node-wait.js')) ? 'True' : 'False');\n", `console.log(process.argv.length, require.main === module, __filename);
console.log(require('fs').readFileSync(0, 'utf8').trim());
function f(n) { if (n === 0) throw new Error('boom'); return f(n - 1); }
f(2);
`},
	} {
		t.Run(c.lang, func(t *testing.T) {
			r := newTestRunner(t, func(cfg *Config) { cfg.Languages = []string{c.lang} })
			p := r.langs[c.lang].pool
			run := func(pooled bool) (prestarted string, res sandbox.Result) {
				t.Helper()
				spec := sandboxtest.Program(c.lang, c.probe+c.src)
				spec.Stdin = []byte("typed\n")
				if pooled {
					waitFor(t, 60*time.Second, func() bool { return p.idle() == 1 })
				} else {
					spec.Limits.Pids = r.cfg.Defaults.Pids / 2 // a container of its own
				}
				res, err := r.Run(context.Background(), spec, nil)
				if err != nil || res.Trace == nil || res.Trace.Pooled != pooled {
					t.Fatalf("%v %+v", err, res)
				}
				first, rest, _ := strings.Cut(string(res.Stdout), "\n")
				res.Stdout = []byte(rest)
				return first, res
			}
			preP, pooled := run(true)
			preF, fresh := run(false)
			if preP != "True" || preF != "False" {
				t.Errorf("prestarted: pooled %s, fresh %s; want True, False", preP, preF)
			}
			if pooled.Status != sandbox.StatusRuntimeError || pooled.ExitCode != 1 ||
				string(pooled.Stdout) != string(fresh.Stdout) || string(pooled.Stderr) != string(fresh.Stderr) ||
				pooled.Status != fresh.Status || pooled.ExitCode != fresh.ExitCode {
				t.Errorf("pooled:\n%s\nfresh:\n%s", describe(pooled), describe(fresh))
			}
			t.Logf("pooled: run %v, memory %d; fresh: run %v, memory %d", pooled.Time, pooled.Memory, fresh.Time, fresh.Memory)
		})
	}
}

// The C++ image has <bits/stdc++.h> precompiled for the flags of the language row: g++
// run with those flags uses the PCH (-H marks it with '!').
func TestCppPrecompiledHeader(t *testing.T) {
	r := newTestRunner(t, func(c *Config) { c.Languages = []string{"cpp"}; c.PoolSize = 0 })
	lang, _ := sandbox.Lookup("cpp")
	var flags []string
	for _, f := range lang.Compile[1:] {
		if f == "-o" {
			break
		}
		flags = append(flags, f)
	}
	cmd := fmt.Sprintf(`printf '#include <bits/stdc++.h>\n' | g++ %s -Winvalid-pch -H -fsyntax-only -x c++ - 2>&1 | grep '^! '`, strings.Join(flags, " "))
	src := "#include <cstdlib>\nint main() { return std::system(R\"(" + cmd + ")\") != 0; }\n"
	spec := sandboxtest.Program("cpp", src)
	spec.Limits.Memory = 1 << 30
	spec.Limits.RunTime = sandbox.MaxLimits().RunTime
	spec.Limits.CompileTime = sandbox.MaxLimits().CompileTime
	res, err := r.Run(context.Background(), spec, nil)
	if err != nil || res.Status != sandbox.StatusOK || !strings.Contains(string(res.Stdout), "stdc++.h.gch") {
		t.Fatalf("g++ %s did not use a precompiled <bits/stdc++.h>: %v\n%s", strings.Join(flags, " "), err, describe(res))
	}
}

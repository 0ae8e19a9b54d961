package docker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"runbox/sandbox"
	"runbox/sandbox/judge"
)

// The judged runs of issue 10 through the real sandbox: sandbox/judge around this Runner,
// C (compiled once, run from the artefact) and Python (each case runs the source).

// counting counts the inner runs a judge asks for.
type counting struct {
	inner                   sandbox.Runner
	mu                      sync.Mutex
	compiles, fromArt, full int
}

func (c *counting) Run(ctx context.Context, spec sandbox.Spec, s *sandbox.Streams) (sandbox.Result, error) {
	c.mu.Lock()
	switch {
	case spec.CompileOnly:
		c.compiles++
	case len(spec.Artifact) > 0:
		c.fromArt++
	default:
		c.full++
	}
	c.mu.Unlock()
	return c.inner.Run(ctx, spec, s)
}

const (
	doubleC = `#include <stdio.h>
int main(void) { long n; if (scanf("%ld", &n) != 1) return 2; printf("%ld\n", 2 * n); return 0; }
`
	offByOneC = `#include <stdio.h>
int main(void) { long n; scanf("%ld", &n); printf("%ld\n", n == 3 ? 2 * n + 1 : 2 * n); return 0; }
`
	loopsOn2C = `#include <stdio.h>
int main(void) { long n; scanf("%ld", &n); if (n == 2) for (volatile int x = 0;; x++); printf("%ld\n", 2 * n); return 0; }
`
	brokenC    = "int main(void) { return nope; }\n"
	doublePy   = "print(2 * int(input()))\n"
	offByOnePy = "n = int(input())\nprint(2 * n + (n == 3))\n"
)

func doubleCases(n int) []sandbox.TestCase {
	var tests []sandbox.TestCase
	for i := 1; i <= n; i++ {
		tests = append(tests, sandbox.TestCase{Name: fmt.Sprint(i), Stdin: []byte(fmt.Sprintf("%d\n", i)), Expected: []byte(fmt.Sprintf("%d\n", 2*i))})
	}
	return tests
}

func judgedSpec(lang, src string, tests []sandbox.TestCase) sandbox.Spec {
	return sandbox.Spec{Language: lang, Files: []sandbox.File{{Content: []byte(src)}}, Tests: tests,
		Limits: sandbox.Limits{CompileTime: 60 * time.Second, RunTime: 5 * time.Second}}
}

func newJudge(t testing.TB, inner sandbox.Runner, parallel int) *judge.Runner {
	t.Helper()
	cfg := judge.DefaultConfig()
	cfg.Parallel = parallel
	j, err := judge.New(inner, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func caseVerdicts(res sandbox.Result) string {
	var v []string
	for _, c := range res.Cases {
		v = append(v, c.Name+"="+string(c.Verdict))
	}
	return strings.Join(v, " ")
}

func TestJudgeC(t *testing.T) {
	r := newTestRunner(t, func(c *Config) { c.Languages = []string{"c"} })
	ctx := context.Background()

	t.Run("Accepted", func(t *testing.T) {
		cr := &counting{inner: r}
		res, err := newJudge(t, cr, 2).Run(ctx, judgedSpec("c", doubleC, doubleCases(4)), nil)
		if err != nil {
			t.Fatal(err)
		}
		if res.Verdict != sandbox.VerdictAccepted || caseVerdicts(res) != "1=accepted 2=accepted 3=accepted 4=accepted" {
			t.Errorf("verdict %s, cases %s, message %q, compile %q", res.Verdict, caseVerdicts(res), res.Message, res.CompileOutput)
		}
		if cr.compiles != 1 || cr.fromArt != 4 || cr.full != 0 {
			t.Errorf("compiles %d, runs from the artefact %d, full runs %d", cr.compiles, cr.fromArt, cr.full)
		}
		for _, c := range res.Cases {
			if c.Time <= 0 || c.Memory <= 0 {
				t.Errorf("case %s: time %v memory %d", c.Name, c.Time, c.Memory)
			}
		}
	})
	t.Run("WrongAnswer", func(t *testing.T) {
		res, err := newJudge(t, r, 2).Run(ctx, judgedSpec("c", offByOneC, doubleCases(4)), nil)
		if err != nil {
			t.Fatal(err)
		}
		if res.Verdict != sandbox.VerdictWrongAnswer || caseVerdicts(res) != "1=accepted 2=accepted 3=wrong_answer 4=accepted" {
			t.Errorf("verdict %s, cases %s", res.Verdict, caseVerdicts(res))
		}
		if d := res.Cases[2].Diff; d != `line 1: expected "6", got "7"` {
			t.Errorf("diff %q", d)
		}
	})
	t.Run("TimeLimitOnOneCase", func(t *testing.T) {
		spec := judgedSpec("c", loopsOn2C, doubleCases(4))
		spec.Tests[1].Limits = &sandbox.Limits{RunTime: 500 * time.Millisecond}
		res, err := newJudge(t, r, 2).Run(ctx, spec, nil)
		if err != nil {
			t.Fatal(err)
		}
		if res.Verdict != sandbox.Verdict(sandbox.StatusTimeLimit) || caseVerdicts(res) != "1=accepted 2=time_limit 3=accepted 4=accepted" {
			t.Errorf("verdict %s, cases %s", res.Verdict, caseVerdicts(res))
		}
		if c := res.Cases[1]; c.Time < 500*time.Millisecond || c.Time > 3*time.Second {
			t.Errorf("the looping case ran %v", c.Time)
		}
	})
	t.Run("CompileErrorRunsNoCase", func(t *testing.T) {
		cr := &counting{inner: r}
		res, err := newJudge(t, cr, 2).Run(ctx, judgedSpec("c", brokenC, doubleCases(3)), nil)
		if err != nil {
			t.Fatal(err)
		}
		if res.Verdict != sandbox.Verdict(sandbox.StatusCompileError) || len(res.Cases) != 0 || !strings.Contains(string(res.CompileOutput), "nope") {
			t.Errorf("verdict %s, %d cases, compile output %q", res.Verdict, len(res.Cases), res.CompileOutput)
		}
		if cr.compiles != 1 || cr.fromArt+cr.full != 0 {
			t.Errorf("compiles %d, runs %d", cr.compiles, cr.fromArt+cr.full)
		}
	})
}

func TestJudgePython(t *testing.T) {
	r := newTestRunner(t, func(c *Config) { c.Languages = []string{"python"} })
	cr := &counting{inner: r}
	res, err := newJudge(t, cr, 2).Run(context.Background(), judgedSpec("python", doublePy, doubleCases(3)), nil)
	if err != nil || res.Verdict != sandbox.VerdictAccepted {
		t.Fatalf("%v: verdict %s, cases %s", err, res.Verdict, caseVerdicts(res))
	}
	if cr.compiles+cr.fromArt != 0 || cr.full != 3 {
		t.Errorf("compiles %d, artefact runs %d, full runs %d", cr.compiles, cr.fromArt, cr.full)
	}
	res, err = newJudge(t, r, 2).Run(context.Background(), judgedSpec("python", offByOnePy, doubleCases(4)), nil)
	if err != nil || res.Verdict != sandbox.VerdictWrongAnswer || caseVerdicts(res) != "1=accepted 2=accepted 3=wrong_answer 4=accepted" {
		t.Errorf("%v: verdict %s, cases %s", err, res.Verdict, caseVerdicts(res))
	}
}

// TestArtifactRoundTrip drives the two halves by hand: a compile-only run returns the
// program as data, which then runs in other containers, and the plain Runner refuses what
// only a judge or a compiled language can serve.
func TestArtifactRoundTrip(t *testing.T) {
	r := newTestRunner(t, func(c *Config) { c.Languages = []string{"c", "python"} })
	ctx := context.Background()
	spec := judgedSpec("c", doubleC, nil)
	spec.CompileOnly = true
	res, err := r.Run(ctx, spec, nil)
	if err != nil || res.Status != sandbox.StatusOK || len(res.Artifact) == 0 || len(res.Stdout) > 0 {
		t.Fatalf("compile only: %v %+v", err, res)
	}
	t.Logf("artefact of %d bytes, compiled in %v", len(res.Artifact), res.CompileTime)
	if res.CompileTime <= 0 || res.Time != 0 {
		t.Errorf("compile only: compile time %v, run time %v", res.CompileTime, res.Time)
	}
	run := judgedSpec("c", "this source is not compiled again", nil)
	run.Artifact, run.Stdin = res.Artifact, []byte("21\n")
	out, err := r.Run(ctx, run, nil)
	if err != nil || out.Status != sandbox.StatusOK || string(out.Stdout) != "42\n" || out.CompileTime != 0 || len(out.CompileOutput) > 0 {
		t.Errorf("from the artefact: %v %+v", err, out)
	}

	py := judgedSpec("python", doublePy, nil)
	py.CompileOnly = true
	if _, err := r.Run(ctx, py, nil); !errors.Is(err, sandbox.ErrInvalidRequest) {
		t.Errorf("compile only for python: %v", err)
	}
	if _, err := r.Run(ctx, judgedSpec("c", doubleC, doubleCases(1)), nil); !errors.Is(err, sandbox.ErrInvalidRequest) {
		t.Errorf("test cases without a judge: %v", err)
	}
}

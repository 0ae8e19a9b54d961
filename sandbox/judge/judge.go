// Package judge runs judged programs: a Spec with test cases is compiled once, then run
// once per case, each in a fresh sandbox, and each case's output is compared with the
// expected one. It wraps any sandbox.Runner (on a node, the Docker sandbox) and is one
// itself: a Spec without Tests passes through untouched.
//
// For a compiled language the judge asks its inner Runner for a compile-only run
// (Spec.CompileOnly), which answers with the compiled program as data
// (Result.Artifact, packed by runbox-init from its scratch directory and sent through
// the container's output stream), then runs each case with that artefact
// (Spec.Artifact), which a fresh container unpacks and runs without compiling. An inner
// Runner that returns no artefact (a fake) makes each case compile again. Interpreted
// languages skip the compile run: each case runs the source.
//
// Verdicts: accepted (exit code 0 and the expected output), wrong_answer (exit code 0,
// another output), or the case's Status otherwise (runtime_error, time_limit,
// memory_limit, output_limit). The run's Verdict is accepted when every case passed,
// else the first failing case's in the Spec's order; compile_error when the compile
// failed, and then no case runs. Every case runs, whatever the others' verdicts.
package judge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"

	"runbox/sandbox"
)

// Config configures a judge.
type Config struct {
	// Parallel caps how many cases of one judged run run at once, each in its own sandbox.
	Parallel int
}

// DefaultConfig runs up to as many cases at once as the machine has CPUs, at most
// sandbox.MaxParallelCases.
func DefaultConfig() Config {
	return Config{Parallel: min(runtime.NumCPU(), sandbox.MaxParallelCases)}
}

// Validate checks the configuration.
func (c Config) Validate() error {
	if c.Parallel < 1 || c.Parallel > sandbox.MaxParallelCases {
		return fmt.Errorf("judge: parallel %d, want 1..%d (a scheduler charges a judged run sandbox.Spec.Slots)", c.Parallel, sandbox.MaxParallelCases)
	}
	return nil
}

var _ sandbox.Runner = (*Runner)(nil)

// Runner judges Specs with Tests on an inner Runner and passes the others through.
// It is safe for concurrent use when the inner Runner is.
type Runner struct {
	inner sandbox.Runner
	cfg   Config
}

// New returns a judge around inner.
func New(inner sandbox.Runner, cfg Config) (*Runner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if inner == nil {
		return nil, errors.New("judge: no inner runner")
	}
	return &Runner{inner: inner, cfg: cfg}, nil
}

// Run implements sandbox.Runner. With Tests, the compile run's output streams as
// sandbox.Compile chunks, Started is called once when the cases begin, the cases' own
// output is not streamed (it is compared, and summed up in Result.Cases), and Streams.Stdin
// is not read. The error is the first case's that could not run (the others are then
// cancelled), or the compile run's. A panic while judging (in the inner Runner, a
// comparison, a case's goroutine) fails the run with a *sandbox.PanicError; the process
// goes on.
func (r *Runner) Run(ctx context.Context, spec sandbox.Spec, streams *sandbox.Streams) (res sandbox.Result, err error) {
	defer func() {
		if p := recover(); p != nil {
			res, err = sandbox.Result{ExitCode: -1}, sandbox.Recovered("judged run", p)
		}
	}()
	if len(spec.Tests) == 0 {
		return r.inner.Run(ctx, spec, streams)
	}
	fail := sandbox.Result{ExitCode: -1}
	if err := spec.Validate(); err != nil {
		return fail, err
	}
	if streams == nil {
		streams = &sandbox.Streams{}
	}
	lang, _ := sandbox.Lookup(spec.Language)
	base := spec
	base.Tests, base.Compare = nil, ""

	var out sandbox.Result
	var artifact []byte
	if lang.Compiled() {
		cspec := base
		cspec.CompileOnly = true
		var cstreams sandbox.Streams
		if streams.Output != nil {
			cstreams.Output = func(c sandbox.Chunk) {
				if c.Stream == sandbox.Compile {
					streams.Output(c)
				}
			}
		}
		cres, err := r.inner.Run(ctx, cspec, &cstreams)
		if err != nil {
			return fail, fmt.Errorf("compile: %w", err)
		}
		out.CompileOutput, out.CompileTime, out.Trace = cres.CompileOutput, cres.CompileTime, cres.Trace
		if cres.Status != sandbox.StatusOK {
			out.Status, out.Verdict = sandbox.StatusCompileError, sandbox.Verdict(sandbox.StatusCompileError)
			out.ExitCode, out.Signal, out.Message = cres.ExitCode, cres.Signal, cres.Message
			if cres.Status != sandbox.StatusCompileError && out.Message == "" {
				out.Message = "the compile ended with " + string(cres.Status)
			}
			return out, nil
		}
		artifact = cres.Artifact
	}
	if streams.Started != nil {
		streams.Started()
	}

	cases, traces, err := r.runCases(ctx, base, spec, artifact)
	if err != nil {
		return fail, err
	}
	for _, t := range traces {
		out.Trace = sandbox.Merge(out.Trace, t)
	}
	return summarize(out, cases), nil
}

// runCases runs every case, at most cfg.Parallel at once, and judges each; it returns
// the cases' traces too, in the same order.
func (r *Runner) runCases(ctx context.Context, base, spec sandbox.Spec, artifact []byte) ([]sandbox.CaseResult, []*sandbox.Trace, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cases := make([]sandbox.CaseResult, len(spec.Tests))
	traces := make([]*sandbox.Trace, len(spec.Tests))
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	// fail keeps the first error and cancels the other cases.
	fail := func(err error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		mu.Unlock()
		cancel()
	}
	sem := make(chan struct{}, r.cfg.Parallel)
	for i, tc := range spec.Tests {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			defer func() {
				if p := recover(); p != nil {
					fail(sandbox.Recovered("test case "+caseName(tc, i), p))
				}
			}()
			cs := base
			cs.Stdin, cs.Artifact = tc.Stdin, artifact
			if tc.Limits != nil {
				cs.Limits = tc.Limits.WithDefaults(spec.Limits)
			}
			res, err := r.inner.Run(ctx, cs, nil)
			if err != nil {
				fail(fmt.Errorf("test case %s: %w", caseName(tc, i), err))
				return
			}
			cases[i], traces[i] = judgeCase(caseName(tc, i), res, tc.Expected, spec.Compare), res.Trace
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return nil, nil, firstErr
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	return cases, traces, nil
}

func caseName(tc sandbox.TestCase, i int) string {
	if tc.Name != "" {
		return tc.Name
	}
	return fmt.Sprint(i + 1)
}

// judgeCase turns one case's run into its CaseResult.
func judgeCase(name string, res sandbox.Result, expected []byte, mode sandbox.Compare) sandbox.CaseResult {
	c := sandbox.CaseResult{
		Name: name, ExitCode: res.ExitCode, Signal: res.Signal, Time: res.Time, CPUTime: res.CPUTime,
		Memory: res.Memory, Message: res.Message, Stderr: bytes.Clone(res.Stderr[:min(len(res.Stderr), sandbox.MaxCaseStderr)]),
	}
	switch res.Status {
	case sandbox.StatusOK:
		c.Verdict = sandbox.VerdictAccepted
		if d := Diff(mode, expected, res.Stdout); d != "" {
			c.Verdict, c.Diff = sandbox.VerdictWrongAnswer, d
		}
	default:
		c.Verdict = sandbox.Verdict(res.Status)
	}
	return c
}

// summarize fills a judged run's Result from its cases (see sandbox.Result).
func summarize(out sandbox.Result, cases []sandbox.CaseResult) sandbox.Result {
	out.Cases = cases
	out.Status, out.Verdict = sandbox.StatusOK, sandbox.VerdictAccepted
	passed := 0
	var firstFail, firstBad *sandbox.CaseResult
	for i := range cases {
		c := &cases[i]
		out.Time, out.CPUTime, out.Memory = max(out.Time, c.Time), max(out.CPUTime, c.CPUTime), max(out.Memory, c.Memory)
		if c.Verdict == sandbox.VerdictAccepted {
			passed++
			continue
		}
		if firstFail == nil {
			firstFail = c
		}
		if firstBad == nil && c.Verdict != sandbox.VerdictWrongAnswer {
			firstBad = c
		}
	}
	if firstBad != nil {
		out.Status, out.ExitCode, out.Signal = sandbox.Status(firstBad.Verdict), firstBad.ExitCode, firstBad.Signal
	}
	if firstFail == nil {
		out.Message = fmt.Sprintf("all %d test cases passed", len(cases))
		return out
	}
	out.Verdict = firstFail.Verdict
	out.Message = fmt.Sprintf("%d of %d test cases passed; case %s: %s", passed, len(cases), firstFail.Name,
		strings.ReplaceAll(string(firstFail.Verdict), "_", " "))
	if firstFail.Diff != "" {
		out.Message += " (" + firstFail.Diff + ")"
	} else if firstFail.Message != "" {
		out.Message += " (" + firstFail.Message + ")"
	}
	return out
}

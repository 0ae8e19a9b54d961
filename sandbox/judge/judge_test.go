package judge

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"runbox/sandbox"
)

// fakeRunner is an inner Runner that compiles and runs tiny "programs": the main file's
// content names a behaviour of programs. A compile-only run answers with the artefact
// "bin:" + the source; a run with an artefact runs the source it names.
type fakeRunner struct {
	mu                      sync.Mutex
	compiles, full, fromArt int
	now, peak               int
	specs                   []sandbox.Spec
	noArtifact              bool // behave like a Runner that knows nothing of artefacts
}

// programs map a source to what the program does with its stdin.
var programs = map[string]func(stdin string) sandbox.Result{
	"double": double,
	// offbyone is double but wrong on 3.
	"offbyone": func(in string) sandbox.Result {
		n, _ := strconv.Atoi(strings.TrimSpace(in))
		if n == 3 {
			n++
		}
		return sandbox.Result{Status: sandbox.StatusOK, Stdout: []byte(fmt.Sprintf("%d\n", 2*n)), Time: time.Duration(n) * time.Millisecond, Memory: int64(n) << 20}
	},
	// slow is double, but loops on 2; crash is double, but fails on 4.
	"slow": func(in string) sandbox.Result {
		if strings.TrimSpace(in) == "2" {
			return sandbox.Result{Status: sandbox.StatusTimeLimit, ExitCode: 137, Signal: "SIGKILL", Message: "killed after the 1s time limit"}
		}
		return double(in)
	},
	// boom is double, but the runner itself panics on 2 (a bug of the inner Runner).
	"boom": func(in string) sandbox.Result {
		if strings.TrimSpace(in) == "2" {
			panic("inner runner bug on 2")
		}
		return double(in)
	},
	// bytes prints what is not UTF-8, and a long line of it.
	"bytes": func(string) sandbox.Result {
		return sandbox.Result{Status: sandbox.StatusOK, Stdout: []byte(strings.Repeat("\xff", 61) + "\xc3\n")}
	},
	"crash": func(in string) sandbox.Result {
		if strings.TrimSpace(in) == "4" {
			return sandbox.Result{Status: sandbox.StatusRuntimeError, ExitCode: 1, Stderr: []byte(strings.Repeat("trace\n", 1000))}
		}
		return double(in)
	},
}

// double prints twice the number it reads.
func double(in string) sandbox.Result {
	n, _ := strconv.Atoi(strings.TrimSpace(in))
	return sandbox.Result{Status: sandbox.StatusOK, Stdout: []byte(fmt.Sprintf("%d\n", 2*n))}
}

func (f *fakeRunner) Run(ctx context.Context, spec sandbox.Spec, streams *sandbox.Streams) (sandbox.Result, error) {
	if err := spec.Validate(); err != nil {
		return sandbox.Result{ExitCode: -1}, err
	}
	f.mu.Lock()
	f.specs = append(f.specs, spec)
	f.now++
	f.peak = max(f.peak, f.now)
	f.mu.Unlock()
	defer func() { f.mu.Lock(); f.now--; f.mu.Unlock() }()
	time.Sleep(5 * time.Millisecond) // let runs overlap
	if err := ctx.Err(); err != nil {
		return sandbox.Result{ExitCode: -1}, err
	}
	src := string(spec.Files[0].Content)
	if src == "panic" && len(spec.Artifact) == 0 { // the inner Runner's bug, on its first run
		panic(fmt.Sprintf("inner runner bug (compile only %v)", spec.CompileOnly))
	}
	lang, _ := sandbox.Lookup(spec.Language)
	if len(spec.Artifact) > 0 {
		f.mu.Lock()
		f.fromArt++
		f.mu.Unlock()
		src = strings.TrimPrefix(string(spec.Artifact), "bin:")
	} else if lang.Compiled() {
		f.mu.Lock()
		if spec.CompileOnly {
			f.compiles++
		} else {
			f.full++
		}
		f.mu.Unlock()
		if streams != nil && streams.Output != nil {
			streams.Output(sandbox.Chunk{Stream: sandbox.Compile, Data: []byte("warning: " + src + "\n")})
		}
		if src == "unavailable" {
			return sandbox.Result{ExitCode: -1}, sandbox.ErrUnavailable
		}
		if _, ok := programs[src]; !ok {
			return sandbox.Result{Status: sandbox.StatusCompileError, ExitCode: 1, CompileOutput: []byte("error: " + src)}, nil
		}
		if spec.CompileOnly {
			res := sandbox.Result{Status: sandbox.StatusOK, CompileOutput: []byte("compiled")}
			if !f.noArtifact {
				res.Artifact = []byte("bin:" + src)
			}
			return res, nil
		}
	}
	if src == "unavailable" {
		return sandbox.Result{ExitCode: -1}, sandbox.ErrUnavailable
	}
	p, ok := programs[src]
	if !ok {
		return sandbox.Result{Status: sandbox.StatusRuntimeError, ExitCode: 1}, nil
	}
	return p(string(spec.Stdin)), nil
}

func doubles(n int) []sandbox.TestCase {
	var tests []sandbox.TestCase
	for i := 1; i <= n; i++ {
		tests = append(tests, sandbox.TestCase{Name: fmt.Sprintf("t%02d", i), Stdin: []byte(fmt.Sprintf("%d\n", i)), Expected: []byte(fmt.Sprintf("%d\n", 2*i))})
	}
	return tests
}

func judged(lang, src string, tests []sandbox.TestCase) sandbox.Spec {
	return sandbox.Spec{Language: lang, Files: []sandbox.File{{Content: []byte(src)}}, Tests: tests}
}

func newJudge(t *testing.T, inner sandbox.Runner, parallel int) *Runner {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Parallel = parallel
	j, err := New(inner, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func verdicts(res sandbox.Result) string {
	var v []string
	for _, c := range res.Cases {
		v = append(v, c.Name+"="+string(c.Verdict))
	}
	return strings.Join(v, " ")
}

func TestCompiledOnceAllAccepted(t *testing.T) {
	t.Parallel()
	f := &fakeRunner{}
	var compileOut strings.Builder
	started := 0
	res, err := newJudge(t, f, 3).Run(context.Background(), judged("c", "double", doubles(7)), &sandbox.Streams{
		Output:  func(c sandbox.Chunk) { compileOut.Write(c.Data) },
		Started: func() { started++ },
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Verdict != sandbox.VerdictAccepted || res.Status != sandbox.StatusOK || len(res.Cases) != 7 || res.ExitCode != 0 {
		t.Fatalf("result %+v", res)
	}
	for i, c := range res.Cases {
		if c.Name != fmt.Sprintf("t%02d", i+1) || c.Verdict != sandbox.VerdictAccepted || c.Diff != "" {
			t.Errorf("case %d: %+v", i, c)
		}
	}
	if f.compiles != 1 || f.fromArt != 7 || f.full != 0 {
		t.Errorf("compiles %d, runs from the artefact %d, full runs %d", f.compiles, f.fromArt, f.full)
	}
	if f.peak > 3 || f.peak < 2 {
		t.Errorf("peak %d runs at once, want 2..3", f.peak)
	}
	if compileOut.String() != "warning: double\n" || started != 1 || string(res.CompileOutput) != "compiled" {
		t.Errorf("compile output streamed %q, kept %q; started %d times", compileOut.String(), res.CompileOutput, started)
	}
	if !strings.Contains(res.Message, "all 7") {
		t.Errorf("message %q", res.Message)
	}
}

func TestWrongAnswerOnTheRightCase(t *testing.T) {
	t.Parallel()
	res, err := newJudge(t, &fakeRunner{}, 2).Run(context.Background(), judged("c", "offbyone", doubles(5)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := verdicts(res); got != "t01=accepted t02=accepted t03=wrong_answer t04=accepted t05=accepted" {
		t.Errorf("verdicts %s", got)
	}
	if res.Verdict != sandbox.VerdictWrongAnswer || res.Status != sandbox.StatusOK || res.ExitCode != 0 {
		t.Errorf("overall %s / %s / %d", res.Verdict, res.Status, res.ExitCode)
	}
	if d := res.Cases[2].Diff; d != `line 1: expected "6", got "8"` {
		t.Errorf("diff %q", d)
	}
	if !strings.Contains(res.Message, "4 of 5") || !strings.Contains(res.Message, "case t03: wrong answer") {
		t.Errorf("message %q", res.Message)
	}
	// The largest time and memory of the cases.
	if res.Time != 5*time.Millisecond || res.Memory != 5<<20 {
		t.Errorf("time %v memory %d", res.Time, res.Memory)
	}
}

func TestTimeLimitOnOneCaseOthersRun(t *testing.T) {
	t.Parallel()
	f := &fakeRunner{}
	res, err := newJudge(t, f, 2).Run(context.Background(), judged("c", "slow", doubles(4)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := verdicts(res); got != "t01=accepted t02=time_limit t03=accepted t04=accepted" {
		t.Errorf("verdicts %s", got)
	}
	if res.Verdict != sandbox.Verdict(sandbox.StatusTimeLimit) || res.Status != sandbox.StatusTimeLimit || res.ExitCode != 137 || res.Signal != "SIGKILL" {
		t.Errorf("overall %+v", res)
	}
	if c := res.Cases[1]; c.Message == "" || c.ExitCode != 137 {
		t.Errorf("case 2: %+v", c)
	}
	if f.fromArt != 4 {
		t.Errorf("%d cases ran, want 4", f.fromArt)
	}
}

func TestFirstFailureGivesTheVerdict(t *testing.T) {
	t.Parallel()
	// Case 3 is wrong, case 4 crashes: the verdict is the first failure's, the status the
	// first that did not exit 0.
	tests := doubles(4)
	tests[2].Expected = []byte("7\n")
	res, err := newJudge(t, &fakeRunner{}, 4).Run(context.Background(), judged("c", "crash", tests), nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Verdict != sandbox.VerdictWrongAnswer || res.Status != sandbox.StatusRuntimeError || res.ExitCode != 1 {
		t.Errorf("overall %s / %s / %d", res.Verdict, res.Status, res.ExitCode)
	}
	if c := res.Cases[3]; c.Verdict != sandbox.Verdict(sandbox.StatusRuntimeError) || len(c.Stderr) != sandbox.MaxCaseStderr {
		t.Errorf("case 4: verdict %s, %d bytes of stderr", c.Verdict, len(c.Stderr))
	}
}

func TestCompileErrorRunsNoCase(t *testing.T) {
	t.Parallel()
	f := &fakeRunner{}
	res, err := newJudge(t, f, 2).Run(context.Background(), judged("c", "syntax error", doubles(3)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Verdict != sandbox.Verdict(sandbox.StatusCompileError) || res.Status != sandbox.StatusCompileError || len(res.Cases) != 0 {
		t.Errorf("result %+v", res)
	}
	if string(res.CompileOutput) != "error: syntax error" || f.fromArt+f.full != 0 || f.compiles != 1 {
		t.Errorf("compile output %q, %d runs after it", res.CompileOutput, f.fromArt+f.full)
	}
}

func TestInterpretedSkipsTheCompile(t *testing.T) {
	t.Parallel()
	f := &fakeRunner{}
	res, err := newJudge(t, f, 2).Run(context.Background(), judged("python", "offbyone", doubles(3)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := verdicts(res); got != "t01=accepted t02=accepted t03=wrong_answer" {
		t.Errorf("verdicts %s", got)
	}
	if f.compiles != 0 || len(f.specs) != 3 {
		t.Errorf("%d compiles, %d runs", f.compiles, len(f.specs))
	}
	for _, s := range f.specs {
		if s.Tests != nil || s.CompileOnly || s.Artifact != nil || string(s.Files[0].Content) != "offbyone" {
			t.Errorf("a case ran %+v", s)
		}
	}
}

func TestNoArtifactCompilesPerCase(t *testing.T) {
	t.Parallel()
	f := &fakeRunner{noArtifact: true}
	res, err := newJudge(t, f, 2).Run(context.Background(), judged("c", "double", doubles(3)), nil)
	if err != nil || res.Verdict != sandbox.VerdictAccepted {
		t.Fatalf("%v %+v", err, res)
	}
	if f.compiles != 1 || f.full != 3 {
		t.Errorf("compiles %d, full runs %d", f.compiles, f.full)
	}
}

func TestCaseLimitsAndCompare(t *testing.T) {
	t.Parallel()
	f := &fakeRunner{}
	spec := judged("python", "double", doubles(2))
	spec.Limits = sandbox.Limits{RunTime: 2 * time.Second, Memory: 128 << 20}
	spec.Tests[1].Limits = &sandbox.Limits{RunTime: time.Second}
	spec.Tests[0].Expected = []byte("2") // no newline: passes in trim and tokens, not exact
	spec.Compare = sandbox.CompareTokens
	res, err := newJudge(t, f, 1).Run(context.Background(), spec, nil)
	if err != nil || res.Verdict != sandbox.VerdictAccepted {
		t.Fatalf("%v %+v", err, res)
	}
	got := map[string]sandbox.Limits{}
	for _, s := range f.specs {
		got[string(s.Stdin)] = s.Limits
	}
	if got["1\n"] != spec.Limits || got["2\n"] != (sandbox.Limits{RunTime: time.Second, Memory: 128 << 20}) {
		t.Errorf("limits %+v", got)
	}
	spec.Compare = sandbox.CompareExact
	res, _ = newJudge(t, &fakeRunner{}, 1).Run(context.Background(), spec, nil)
	if res.Cases[0].Verdict != sandbox.VerdictWrongAnswer {
		t.Errorf("exact: %+v", res.Cases[0])
	}
}

func TestRefusals(t *testing.T) {
	t.Parallel()
	j := newJudge(t, &fakeRunner{}, 1)
	bad := map[string]func(*sandbox.Spec){
		"stdin and tests": func(s *sandbox.Spec) { s.Stdin = []byte("1") },
		"compare mode":    func(s *sandbox.Spec) { s.Compare = "fuzzy" },
		"case above the run's limit": func(s *sandbox.Spec) {
			s.Limits.RunTime = time.Second
			s.Tests[0].Limits = &sandbox.Limits{RunTime: 2 * time.Second}
		},
		"case above the default": func(s *sandbox.Spec) { s.Tests[0].Limits = &sandbox.Limits{Memory: 1 << 30} },
		"same name twice":        func(s *sandbox.Spec) { s.Tests[1].Name = s.Tests[0].Name },
		"too many":               func(s *sandbox.Spec) { s.Tests = doubles(sandbox.MaxTests + 1) },
		"control in name":        func(s *sandbox.Spec) { s.Tests[0].Name = "a\nb" },
	}
	for name, mod := range bad {
		spec := judged("python", "double", doubles(2))
		mod(&spec)
		if _, err := j.Run(context.Background(), spec, nil); !errors.Is(err, sandbox.ErrInvalidRequest) {
			t.Errorf("%s: %v", name, err)
		}
	}
	big := judged("python", "double", []sandbox.TestCase{{Stdin: make([]byte, sandbox.MaxStdinBytes/2+1), Expected: make([]byte, sandbox.MaxStdinBytes/2)}})
	if _, err := j.Run(context.Background(), big, nil); !errors.Is(err, sandbox.ErrTooLarge) {
		t.Errorf("too large: %v", err)
	}
	// Unnamed cases are named by position.
	spec := judged("python", "double", doubles(2))
	spec.Tests[0].Name, spec.Tests[1].Name = "", ""
	res, err := j.Run(context.Background(), spec, nil)
	if err != nil || verdicts(res) != "1=accepted 2=accepted" {
		t.Errorf("%v %s", err, verdicts(res))
	}
}

func TestACaseThatCannotRunFailsTheRun(t *testing.T) {
	t.Parallel()
	_, err := newJudge(t, &fakeRunner{}, 2).Run(context.Background(), judged("python", "unavailable", doubles(5)), nil)
	if !errors.Is(err, sandbox.ErrUnavailable) || !strings.Contains(err.Error(), "test case") {
		t.Errorf("err %v", err)
	}
	_, err = newJudge(t, &fakeRunner{}, 2).Run(context.Background(), judged("c", "unavailable", doubles(5)), nil)
	if !errors.Is(err, sandbox.ErrUnavailable) || !strings.Contains(err.Error(), "compile") {
		t.Errorf("compile: err %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := newJudge(t, &fakeRunner{}, 2).Run(ctx, judged("c", "double", doubles(5)), nil); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}

func TestPassThrough(t *testing.T) {
	t.Parallel()
	f := &fakeRunner{}
	spec := sandbox.Spec{Language: "python", Files: []sandbox.File{{Content: []byte("double")}}, Stdin: []byte("21")}
	res, err := newJudge(t, f, 1).Run(context.Background(), spec, nil)
	if err != nil || string(res.Stdout) != "42\n" || res.Verdict != "" || res.Cases != nil {
		t.Fatalf("%v %+v", err, res)
	}
	if len(f.specs) != 1 || !reflect.DeepEqual(f.specs[0], spec) {
		t.Errorf("inner got %+v", f.specs)
	}
}

func TestConfig(t *testing.T) {
	t.Parallel()
	if err := DefaultConfig().Validate(); err != nil {
		t.Error(err)
	}
	if _, err := New(&fakeRunner{}, Config{}); err == nil {
		t.Error("parallel 0 accepted")
	}
	if _, err := New(nil, DefaultConfig()); err == nil {
		t.Error("nil inner accepted")
	}
}

// Expected output and program output are bytes from outside: invalid UTF-8 on either side,
// past the diff's width, gives a wrong answer with a diff, not a panic in a case goroutine
// (which took the whole process down).
func TestInvalidUTF8IsAWrongAnswer(t *testing.T) {
	t.Parallel()
	tests := []sandbox.TestCase{
		{Name: "expected", Stdin: []byte("1\n"), Expected: []byte(strings.Repeat("\xff", 61))},
		{Name: "both", Stdin: []byte("2\n"), Expected: []byte(strings.Repeat("\xfe", 70))},
	}
	for _, mode := range []sandbox.Compare{sandbox.CompareExact, sandbox.CompareTrim, sandbox.CompareTokens} {
		spec := judged("python", "double", tests)
		spec.Compare = mode
		res, err := newJudge(t, &fakeRunner{}, 2).Run(context.Background(), spec, nil)
		if err != nil || verdicts(res) != "expected=wrong_answer both=wrong_answer" {
			t.Fatalf("%s: %v %s", mode, err, verdicts(res))
		}
		if d := res.Cases[0].Diff; !strings.Contains(d, `\xff`) || strings.Count(d, `\xff`) > DiffWidth {
			t.Errorf("%s: diff %s", mode, d)
		}
		spec.Files[0].Content = []byte("bytes")
		res, err = newJudge(t, &fakeRunner{}, 2).Run(context.Background(), spec, nil)
		if err != nil || res.Verdict != sandbox.VerdictWrongAnswer {
			t.Fatalf("%s: bytes: %v %+v", mode, err, res)
		}
		if d := res.Cases[1].Diff; strings.Count(d, `\xff`) > DiffWidth || strings.Count(d, `\xfe`) > DiffWidth {
			t.Errorf("%s: diff %s", mode, d)
		}
	}
}

// A panic while judging, in a case's goroutine or in the goroutine that called Run, ends
// that run with an error (a *sandbox.PanicError, code internal: no sentinel) that says
// what panicked; the process and the judge go on.
func TestPanicFailsTheRunNotTheProcess(t *testing.T) {
	t.Parallel()
	j := newJudge(t, &fakeRunner{}, 2)
	for _, c := range []struct {
		name, lang, src string
		tests           []sandbox.TestCase
		want            []string
	}{
		{"in a case", "c", "boom", doubles(4), []string{"test case t02", "panicked", "inner runner bug on 2"}},
		{"in an interpreted case", "python", "boom", doubles(3), []string{"test case t02", "panicked", "inner runner bug on 2"}},
		{"in the compile", "c", "panic", doubles(2), []string{"judged run panicked", "inner runner bug (compile only true)"}},
		{"passing through", "python", "panic", nil, []string{"judged run panicked", "inner runner bug (compile only false)"}},
	} {
		res, err := j.Run(context.Background(), judged(c.lang, c.src, c.tests), nil)
		var pe *sandbox.PanicError
		if !errors.As(err, &pe) || len(pe.Stack) == 0 {
			t.Errorf("%s: err %v (%T), want a *sandbox.PanicError with its stack", c.name, err, err)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: err %q does not say %q", c.name, err, w)
			}
		}
		for _, s := range []error{sandbox.ErrInvalidRequest, sandbox.ErrUnknownLanguage, sandbox.ErrTooLarge, sandbox.ErrUnavailable, sandbox.ErrClosed, context.Canceled} {
			if errors.Is(err, s) {
				t.Errorf("%s: err %v is %v; want no sentinel (code internal)", c.name, err, s)
			}
		}
		if res.ExitCode != -1 || res.Cases != nil {
			t.Errorf("%s: result %+v", c.name, res)
		}
	}
	// The same judge serves the next run.
	res, err := j.Run(context.Background(), judged("c", "double", doubles(3)), nil)
	if err != nil || res.Verdict != sandbox.VerdictAccepted {
		t.Errorf("after the panics: %v %+v", err, res)
	}
}

// tracing wraps the fake with a trace on every result: a compile of 100 ms, runs of 10 ms.
type tracing struct{ fakeRunner }

func (r *tracing) Run(ctx context.Context, spec sandbox.Spec, streams *sandbox.Streams) (sandbox.Result, error) {
	res, err := r.fakeRunner.Run(ctx, spec, streams)
	tr := sandbox.Trace{Acquire: time.Millisecond, Pooled: true, Run: 10 * time.Millisecond}
	if spec.CompileOnly {
		tr = sandbox.Trace{Acquire: 2 * time.Millisecond, Compile: 100 * time.Millisecond}
	}
	res.Trace = &tr
	return res, err
}

// A judged run's trace sums its containers' phases: the compile and every case.
func TestJudgedTraceSumsItsRuns(t *testing.T) {
	t.Parallel()
	res, err := newJudge(t, &tracing{}, 2).Run(context.Background(), judged("c", "double", doubles(3)), nil)
	if err != nil || res.Verdict != sandbox.VerdictAccepted {
		t.Fatalf("%v %+v", err, res)
	}
	want := sandbox.Trace{Acquire: 5 * time.Millisecond, Compile: 100 * time.Millisecond, Run: 30 * time.Millisecond}
	if res.Trace == nil || *res.Trace != want {
		t.Errorf("trace %+v, want %+v", res.Trace, want)
	}
	// An interpreted program has no compile run: the cases' runs alone, all pooled.
	res, err = newJudge(t, &tracing{}, 2).Run(context.Background(), judged("python", "double", doubles(2)), nil)
	want = sandbox.Trace{Acquire: 2 * time.Millisecond, Pooled: true, Run: 20 * time.Millisecond}
	if err != nil || res.Trace == nil || *res.Trace != want {
		t.Errorf("%v: trace %+v, want %+v", err, res.Trace, want)
	}
}

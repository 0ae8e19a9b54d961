package sandboxtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"runbox/sandbox"
)

// ContractPrograms are the programs the contract runs, in one language the Runner serves.
// Each behaves as its field says, whatever the language.
type ContractPrograms struct {
	// Language names the programs' language.
	Language string
	// Lines prints "line 1" to "line 5" on stdout and "warn 1" to "warn 5" on stderr, one
	// line at a time, each flushed, then exits 0.
	Lines string
	// Prompt prints "name?" and a newline (flushed), then copies its standard input to
	// stdout as it arrives (flushed), until the input ends, then exits 0.
	Prompt string
	// Exit prints "bye" and a newline, then exits with code 3.
	Exit string
	// Sleep sleeps ten minutes: it ends only when cancelled.
	Sleep string
	// CompileError fails to compile, with "missing_symbol" in the compiler's output; empty
	// when the language has no compile phase (the check is then skipped).
	CompileError string
}

// FakePrograms are the contract's programs for Fake (and for every Runner that hands its
// Specs to a Fake: the judge, a slave, a master).
func FakePrograms() ContractPrograms {
	var lines strings.Builder
	for i := 1; i <= 5; i++ {
		fmt.Fprintf(&lines, "out line %d\nerr warn %d\n", i, i)
	}
	return ContractPrograms{
		Language:     "python",
		Lines:        lines.String(),
		Prompt:       "out name?\ncat\n",
		Exit:         "out bye\nexit 3\n",
		Sleep:        "sleep 10m\n",
		CompileError: "compile main.c:1: error: missing_symbol undeclared\n",
	}
}

// PythonPrograms are the contract's programs for a Runner that runs real Python.
func PythonPrograms() ContractPrograms {
	return ContractPrograms{
		Language: "python",
		Lines: "import sys\nfor i in range(1, 6):\n" +
			"    print('line', i, flush=True)\n    print('warn', i, file=sys.stderr, flush=True)\n",
		Prompt: "import sys\nprint('name?', flush=True)\nwhile True:\n    l = sys.stdin.readline()\n" +
			"    if not l: break\n    sys.stdout.write(l)\n    sys.stdout.flush()\n",
		Exit:  "import sys\nprint('bye')\nsys.exit(3)\n",
		Sleep: "import time\ntime.sleep(600)\n",
	}
}

// ContractConfig says what the contract needs to know of the Runner under test.
type ContractConfig struct {
	// Programs are the programs it runs.
	Programs ContractPrograms
	// Max are the Runner's maxima (zero: sandbox.MaxLimits()): every field above them
	// must be refused with sandbox.ErrInvalidRequest.
	Max sandbox.Limits
	// Idle, when set, reports whether the Runner holds nothing for any program (no
	// sandbox, no slot, no stream): after a cancelled run, it must come true. The
	// contract's runs that could overlap a cancelled one are over by then.
	Idle func() bool
	// StartsAtDispatch says that Started means "placed on a node", before any compile,
	// as a client of a master sees it (the scheduler's EventStarted): a program that does
	// not compile has then started once. The sandbox.Streams contract says "after
	// compiling"; a master's Runner does not keep that part of it.
	StartsAtDispatch bool
	// Judges says that the Runner judges Specs with test cases (package sandbox/judge
	// wraps it): the contract then also checks a judged run.
	Judges bool
}

// hangAfter turns a Run that never returns into a failure with a name; it is not a speed
// goal (a cancelled Run returns long before).
const hangAfter = 2 * time.Minute

// Contract runs the contract of sandbox.Runner against r: what every Runner owes its
// callers, whatever runs the program underneath. It needs one language only (see
// ContractPrograms) and no toolchain when r ends in a Fake:
//
//   - a program's outcome is a Result, not an error (exit code 3 is runtime_error);
//   - live output comes in order, per stream, from one goroutine at a time, only after
//     Started for a program's own output, and sums up to the Result's Stdout and Stderr;
//     no callback runs once Run returned;
//   - Started is called exactly once for a program that ran, never for one refused or
//     that did not compile (see ContractConfig.StartsAtDispatch);
//   - live stdin reaches the program as it is sent, and closing it ends the input;
//   - a Spec the sandbox cannot run is refused with the sentinel that says why
//     (ErrUnknownLanguage, ErrInvalidRequest, ErrTooLarge), before anything starts;
//   - every limit above the maxima, or negative, is refused with ErrInvalidRequest;
//   - cancelling ctx, or its deadline passing, ends Run with the context's error, and
//     the Runner then holds nothing (ContractConfig.Idle);
//   - a judging Runner (ContractConfig.Judges) judges every case, gives the first
//     failing case's verdict, calls Started once, and streams no case's output.
func Contract(t *testing.T, r sandbox.Runner, cfg ContractConfig) {
	p := cfg.Programs
	maxima := cfg.Max
	if maxima == (sandbox.Limits{}) {
		maxima = sandbox.MaxLimits()
	}
	prog := func(src string) sandbox.Spec { return Program(p.Language, src) }
	t.Run("Runs", func(t *testing.T) {
		t.Run("OutcomeIsAResult", func(t *testing.T) {
			t.Parallel()
			w := watch()
			res := mustRun(t, r, prog(p.Exit), w.streams)
			w.returned()
			expect(t, res, sandbox.StatusRuntimeError, 3)
			if string(res.Stdout) != "bye\n" {
				t.Errorf("stdout %q, want %q", res.Stdout, "bye\n")
			}
			w.check(t, 1)
		})
		t.Run("StreamOrder", func(t *testing.T) {
			t.Parallel()
			w := watch()
			res := mustRun(t, r, prog(p.Lines), w.streams)
			w.returned()
			expect(t, res, sandbox.StatusOK, 0)
			var wantOut, wantErr string
			for i := 1; i <= 5; i++ {
				wantOut += fmt.Sprintf("line %d\n", i)
				wantErr += fmt.Sprintf("warn %d\n", i)
			}
			if string(res.Stdout) != wantOut || string(res.Stderr) != wantErr {
				t.Errorf("result stdout %q stderr %q, want %q and %q", res.Stdout, res.Stderr, wantOut, wantErr)
			}
			live := w.live()
			if live[sandbox.Stdout] != string(res.Stdout) || live[sandbox.Stderr] != string(res.Stderr) {
				t.Errorf("live stdout %q stderr %q, not the result's %q and %q", live[sandbox.Stdout], live[sandbox.Stderr], res.Stdout, res.Stderr)
			}
			w.check(t, 1)
		})
		t.Run("InteractiveStdin", func(t *testing.T) {
			t.Parallel()
			in := make(chan []byte, 1)
			var once sync.Once
			w := watch()
			w.onOutput = func(c sandbox.Chunk) {
				// Answer the prompt only once it was seen: the program really waits.
				if c.Stream == sandbox.Stdout && bytes.Contains(c.Data, []byte("name?")) {
					once.Do(func() { in <- []byte("Ada\n"); close(in) })
				}
			}
			w.streams.Stdin = in
			res := mustRun(t, r, prog(p.Prompt), w.streams)
			w.returned()
			expect(t, res, sandbox.StatusOK, 0)
			if string(res.Stdout) != "name?\nAda\n" {
				t.Errorf("stdout %q, want %q", res.Stdout, "name?\nAda\n")
			}
			w.check(t, 1)
		})
		if p.CompileError != "" {
			t.Run("CompileErrorNeverStarts", func(t *testing.T) {
				t.Parallel()
				w := watch()
				res := mustRun(t, r, prog(p.CompileError), w.streams)
				w.returned()
				if res.Status != sandbox.StatusCompileError || !bytes.Contains(res.CompileOutput, []byte("missing_symbol")) {
					t.Errorf("status %s, compile output %q: want compile_error naming missing_symbol", res.Status, res.CompileOutput)
				}
				if live := w.live(); live[sandbox.Compile] != string(res.CompileOutput) {
					t.Errorf("live compile output %q, not the result's %q", live[sandbox.Compile], res.CompileOutput)
				}
				started := 0
				if cfg.StartsAtDispatch {
					started = 1
				}
				w.check(t, started)
			})
		}
		if cfg.Judges {
			t.Run("JudgedRun", func(t *testing.T) {
				t.Parallel()
				var lines string
				for i := 1; i <= 5; i++ {
					lines += fmt.Sprintf("line %d\n", i)
				}
				spec := prog(p.Lines)
				spec.Tests = []sandbox.TestCase{{Name: "right", Expected: []byte(lines)}, {Name: "wrong", Expected: []byte("line 0\n")}}
				w := watch()
				res := mustRun(t, r, spec, w.streams)
				w.returned()
				if res.Verdict != sandbox.VerdictWrongAnswer || len(res.Cases) != 2 ||
					res.Cases[0].Verdict != sandbox.VerdictAccepted || res.Cases[1].Verdict != sandbox.VerdictWrongAnswer {
					t.Errorf("verdict %q, cases %+v: want wrong_answer, the first case accepted and the second not", res.Verdict, res.Cases)
				}
				if live := w.live(); live[sandbox.Stdout] != "" || live[sandbox.Stderr] != "" {
					t.Errorf("the cases' output was streamed: %q", live)
				}
				w.check(t, 1)
			})
		}
		t.Run("Refused", func(t *testing.T) {
			t.Parallel()
			for _, c := range refusals(p, maxima) {
				w := watch()
				_, err := r.Run(context.Background(), c.spec, w.streams)
				w.returned()
				if !errors.Is(err, c.want) {
					t.Errorf("%s: err %v, want %v", c.name, err, c.want)
				}
				if live := w.live(); len(live) > 0 {
					t.Errorf("%s: output %q from a refused Spec", c.name, live)
				}
				w.check(t, 0)
			}
		})
	})
	// Alone, so that nothing else holds anything while Idle is asked.
	t.Run("CancelFreesEverything", func(t *testing.T) {
		for _, want := range []error{context.Canceled, context.DeadlineExceeded} {
			w := watch()
			var ctx context.Context
			if want == context.Canceled {
				c, cancel := context.WithCancel(context.Background())
				defer cancel()
				ctx, w.onStarted = c, cancel
			} else {
				e := newExpiring()
				ctx, w.onStarted = e, e.expire
			}
			_, err := runWithin(t, r, ctx, prog(p.Sleep), w.streams)
			w.returned()
			if !errors.Is(err, want) {
				t.Errorf("err %v, want %v", err, want)
			}
			w.check(t, 1)
			if cfg.Idle != nil {
				waitIdle(t, want.Error(), cfg.Idle)
			}
		}
	})
}

// expiring is a context whose deadline passes when expire is called: the contract lets
// it pass once the program started, which it cannot know in advance.
type expiring struct {
	context.Context // the values: none
	done            chan struct{}
	once            sync.Once
}

func newExpiring() *expiring {
	return &expiring{Context: context.Background(), done: make(chan struct{})}
}

func (e *expiring) Done() <-chan struct{} { return e.done }

func (e *expiring) Err() error {
	select {
	case <-e.done:
		return context.DeadlineExceeded
	default:
		return nil
	}
}

func (e *expiring) expire() { e.once.Do(func() { close(e.done) }) }

// refusal is a Spec a Runner must refuse, and the sentinel it must refuse it with.
type refusal struct {
	name string
	spec sandbox.Spec
	want error
}

// refusals are the Specs every Runner refuses: bad shapes, and each limit field above
// maxima or negative (found by reflection, so that a new field is checked without a new
// line).
func refusals(p ContractPrograms, maxima sandbox.Limits) []refusal {
	ok := Program(p.Language, p.Exit)
	with := func(f func(*sandbox.Spec)) sandbox.Spec {
		s := ok
		s.Files = append([]sandbox.File(nil), ok.Files...)
		f(&s)
		return s
	}
	out := []refusal{
		{"unknown language", Program("cobol", "DISPLAY 'HI'."), sandbox.ErrUnknownLanguage},
		{"no file", with(func(s *sandbox.Spec) { s.Files = nil }), sandbox.ErrInvalidRequest},
		{"empty program", Program(p.Language, ""), sandbox.ErrInvalidRequest},
		{"file name with a path", with(func(s *sandbox.Spec) {
			s.Files = append(s.Files, sandbox.File{Name: "../x", Content: []byte("x")})
		}), sandbox.ErrInvalidRequest},
		{"source too large", Program(p.Language, strings.Repeat("#", sandbox.MaxSourceBytes+1)), sandbox.ErrTooLarge},
		{"stdin too large", with(func(s *sandbox.Spec) { s.Stdin = make([]byte, sandbox.MaxStdinBytes+1) }), sandbox.ErrTooLarge},
		{"unknown compare mode", with(func(s *sandbox.Spec) { s.Compare = "fuzzy" }), sandbox.ErrInvalidRequest},
	}
	mv := reflect.ValueOf(maxima)
	for i := range mv.NumField() {
		name := reflect.TypeFor[sandbox.Limits]().Field(i).Name
		hi := mv.Field(i)
		for _, c := range []struct {
			what string
			set  func(v reflect.Value)
		}{
			{"above the maximum", func(v reflect.Value) {
				switch v.Kind() {
				case reflect.Int64:
					v.SetInt(hi.Int() + max(1, hi.Int()/2))
				case reflect.Float64:
					v.SetFloat(hi.Float() * 2)
				}
			}},
			{"negative", func(v reflect.Value) {
				switch v.Kind() {
				case reflect.Int64:
					v.SetInt(-1)
				case reflect.Float64:
					v.SetFloat(-1)
				}
			}},
		} {
			if c.what == "above the maximum" && hi.IsZero() {
				continue // no maximum
			}
			out = append(out, refusal{"limit " + name + " " + c.what, with(func(s *sandbox.Spec) {
				c.set(reflect.ValueOf(&s.Limits).Elem().Field(i))
			}), sandbox.ErrInvalidRequest})
		}
	}
	return out
}

// watcher records what a Runner does with a run's Streams.
type watcher struct {
	streams   *sandbox.Streams
	onOutput  func(sandbox.Chunk) // the test's own reaction to output
	onStarted func()

	mu      sync.Mutex
	chunks  []sandbox.Chunk
	started int
	early   []string // output of the program before Started
	late    int      // callbacks after Run returned
	done    bool
	inside  atomic.Int32 // Output callbacks running now
	overlap atomic.Bool  // two ran at once
}

func watch() *watcher {
	w := &watcher{}
	w.streams = &sandbox.Streams{
		Output: func(c sandbox.Chunk) {
			if w.inside.Add(1) > 1 {
				w.overlap.Store(true)
			}
			defer w.inside.Add(-1)
			w.mu.Lock()
			if w.done {
				w.late++
			}
			if w.started == 0 && c.Stream != sandbox.Compile {
				w.early = append(w.early, string(c.Data))
			}
			w.chunks = append(w.chunks, sandbox.Chunk{Stream: c.Stream, Data: bytes.Clone(c.Data)})
			react := w.onOutput
			w.mu.Unlock()
			if react != nil {
				react(c)
			}
		},
		Started: func() {
			w.mu.Lock()
			if w.done {
				w.late++
			}
			w.started++
			react := w.onStarted
			w.mu.Unlock()
			if react != nil {
				react()
			}
		},
	}
	return w
}

// returned marks Run as returned: a callback from now on is late.
func (w *watcher) returned() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}

// live is the output that came through the callbacks, by stream.
func (w *watcher) live() map[sandbox.Stream]string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[sandbox.Stream]string{}
	for _, c := range w.chunks {
		out[c.Stream] += string(c.Data)
	}
	return out
}

// check reports callbacks that broke the contract, and Started not called started times.
func (w *watcher) check(t *testing.T, started int) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.started != started {
		t.Errorf("Started called %d times, want %d", w.started, started)
	}
	if len(w.early) > 0 {
		t.Errorf("output %q before Started", w.early)
	}
	if w.late > 0 {
		t.Errorf("%d callbacks after Run returned", w.late)
	}
	if w.overlap.Load() {
		t.Errorf("Output called from two goroutines at once")
	}
}

// runWithin runs r.Run and fails the test if it does not return within hangAfter.
func runWithin(t *testing.T, r sandbox.Runner, ctx context.Context, spec sandbox.Spec, streams *sandbox.Streams) (sandbox.Result, error) {
	t.Helper()
	type out struct {
		res sandbox.Result
		err error
	}
	ch := make(chan out, 1)
	go func() {
		res, err := r.Run(ctx, spec, streams)
		ch <- out{res, err}
	}()
	select {
	case o := <-ch:
		return o.res, o.err
	case <-time.After(hangAfter):
		t.Fatalf("Run did not return within %v of its start", hangAfter)
	}
	return sandbox.Result{}, nil
}

// waitIdle polls idle until it holds; the deadline only names a hang.
func waitIdle(t *testing.T, what string, idle func() bool) {
	t.Helper()
	deadline := time.Now().Add(hangAfter)
	for !idle() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: the Runner still holds a program %v after Run returned", what, hangAfter)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

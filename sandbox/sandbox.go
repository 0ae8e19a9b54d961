// Package sandbox owns the nouns of running one untrusted program: what to run (Spec),
// within which caps (Limits), what came of it (Result, Status), the languages runbox knows,
// and the Runner contract that every way of running a program implements (a local Docker
// sandbox, a remote slave, the scheduler's dispatcher).
//
// Program outcomes are data: a program that crashes, loops or floods its output produces a
// Result with a Status. A Go error from Run means the program could not be run at all; it
// wraps one of the sentinel errors below, or is a PanicError (the runner's own bug, never
// the process's death).
package sandbox

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"strings"
	"time"
)

// Status is the outcome of a program that ran (or failed to compile).
type Status string

// The statuses of design.md §3.
const (
	StatusOK           Status = "ok"            // exited with code 0
	StatusCompileError Status = "compile_error" // compilation failed or exceeded its limits
	StatusRuntimeError Status = "runtime_error" // non-zero exit code or killed by a signal
	StatusTimeLimit    Status = "time_limit"    // killed at the run wall-time limit
	StatusMemoryLimit  Status = "memory_limit"  // killed by the out-of-memory killer
	StatusOutputLimit  Status = "output_limit"  // stdout+stderr passed the output cap
)

// Valid reports whether s is one of the known statuses.
func (s Status) Valid() bool {
	switch s {
	case StatusOK, StatusCompileError, StatusRuntimeError, StatusTimeLimit, StatusMemoryLimit, StatusOutputLimit:
		return true
	}
	return false
}

// Sentinel errors: why a program could not be run. They cross the wire as stable codes.
var (
	// ErrInvalidRequest: the Spec is malformed or asks for limits above the server's maxima.
	ErrInvalidRequest = errors.New("invalid request")
	// ErrUnknownLanguage: no runtime for the Spec's language.
	ErrUnknownLanguage = errors.New("unknown language")
	// ErrTooLarge: the source or stdin is over the size cap.
	ErrTooLarge = errors.New("request too large")
	// ErrUnavailable: the sandbox backend (daemon, image) cannot run programs now.
	ErrUnavailable = errors.New("sandbox unavailable")
	// ErrClosed: the Runner was closed.
	ErrClosed = errors.New("runner closed")
)

// PanicError is the error of a job whose handling panicked: a Runner recovers the panic
// (in the goroutine that called Run and in every goroutine it starts for the job) and
// fails that job with a PanicError instead of letting the process die. It wraps none of
// the sentinels above, so it crosses the wire as the code "internal". Stack is for the
// logs, never for the client.
type PanicError struct {
	// Where names what panicked ("test case 3", "the sandbox's output reader").
	Where string
	// Value is what was passed to panic.
	Value any
	// Stack is the panicking goroutine's stack.
	Stack []byte
}

// Recovered returns the PanicError for v, the value of a recover() that was not nil, with
// the current stack: call it in the deferred function that recovered.
func Recovered(where string, v any) *PanicError {
	return &PanicError{Where: where, Value: v, Stack: debug.Stack()}
}

func (e *PanicError) Error() string { return fmt.Sprintf("%s panicked: %v", e.Where, e.Value) }

// File is one source file of a program. Name is a plain file name (no directories).
type File struct {
	Name    string `json:"name"`
	Content []byte `json:"content"`
}

// Spec is one program to compile (if its language needs it) and run once.
type Spec struct {
	// Language is a name or alias from the language table (see Lookup).
	Language string `json:"language"`
	// Files holds the sources; the first is the main file. When its Name is empty the
	// language's default file name is used.
	Files []File `json:"files"`
	// Stdin is given to the program's standard input; see Streams for live input.
	Stdin []byte `json:"stdin,omitempty"`
	// Limits caps the run; zero fields take the runner's defaults.
	Limits Limits `json:"limits"`

	// Tests, when set, make the Spec a judged run (see package sandbox/judge): the program
	// is compiled once and runs once per case, each in a fresh sandbox, its stdout compared
	// with the case's Expected; the Result carries Verdict and Cases. Stdin must then be
	// empty. Only a judging Runner serves them; a plain sandbox refuses them.
	Tests []TestCase `json:"tests,omitempty"`
	// Compare is how a judged run compares outputs; empty means CompareTrim.
	Compare Compare `json:"compare,omitempty"`

	// CompileOnly and Artifact are the two halves of a judged run of a compiled language,
	// between a judge and the sandbox of its own node; they never cross the wire.
	// CompileOnly compiles and does not run: a successful compile returns the compiled
	// program in Result.Artifact. Artifact, when set, is such a compiled program: it is
	// unpacked into the scratch directory in place of the sources and run, without
	// compiling.
	CompileOnly bool   `json:"-"`
	Artifact    []byte `json:"-"`
}

// TestCase is one input of a judged run and the output it must produce.
type TestCase struct {
	// Name names the case in results ("1", "sample-2"); empty: its 1-based position.
	Name string `json:"name,omitempty"`
	// Stdin is the program's standard input for this case.
	Stdin []byte `json:"stdin,omitempty"`
	// Expected is the standard output that passes, compared as Spec.Compare says.
	Expected []byte `json:"expected"`
	// Limits, when set, replace the Spec's limits for this case's run, field by field
	// (zero fields keep the Spec's). A case may only lower them: each field is at most
	// the Spec's (or, where the Spec's is zero, the standard default of DefaultLimits).
	Limits *Limits `json:"limits,omitempty"`
}

// MaxParallelCases is the most cases of one judged run that run at once, each in its own
// sandbox: a judge never runs more, and Spec.Slots counts that many.
const MaxParallelCases = 4

// Slots is how many sandboxes the Spec holds at once at most: 1 for a plain run, up to
// MaxParallelCases for a judged one. A scheduler gives a job this many program slots and
// a quota counts it this many times, so that a judged run is charged what it really uses.
func (s Spec) Slots() int {
	return max(1, min(len(s.Tests), MaxParallelCases))
}

// Compare is how a judged run compares a program's stdout with the expected output.
type Compare string

// Comparison modes.
const (
	// CompareExact: byte for byte.
	CompareExact Compare = "exact"
	// CompareTrim: line by line, each line's trailing spaces, tabs and carriage returns
	// dropped, and trailing empty lines dropped (the default).
	CompareTrim Compare = "trim"
	// CompareTokens: the whitespace-separated tokens, in order.
	CompareTokens Compare = "tokens"
)

// Valid reports whether c is a known mode or empty (the default, CompareTrim).
func (c Compare) Valid() bool {
	switch c {
	case "", CompareExact, CompareTrim, CompareTokens:
		return true
	}
	return false
}

// Verdict is a judged case's (or run's) outcome: accepted, wrong_answer, or the Status of
// a run that did not end with exit code 0 (runtime_error, time_limit, memory_limit,
// output_limit; compile_error for a whole run whose compile failed).
type Verdict string

// Verdicts beyond the statuses.
const (
	VerdictAccepted    Verdict = "accepted"
	VerdictWrongAnswer Verdict = "wrong_answer"
)

// CaseResult is what came of one test case of a judged run.
type CaseResult struct {
	Name    string  `json:"name"`
	Verdict Verdict `json:"verdict"`
	// ExitCode, Signal, Time, CPUTime, Memory and Message are the case's run's, as in Result.
	ExitCode int           `json:"exit_code"`
	Signal   string        `json:"signal,omitempty"`
	Time     time.Duration `json:"time"`
	CPUTime  time.Duration `json:"cpu_time"`
	Memory   int64         `json:"memory"`
	Message  string        `json:"message,omitempty"`
	// Diff shows, for wrong_answer, the first difference: where, and the expected and
	// received line (or token), each cut to a short length.
	Diff string `json:"diff,omitempty"`
	// Stderr is the start of the case's standard error (at most MaxCaseStderr bytes).
	Stderr []byte `json:"stderr,omitempty"`
}

// Caps of judged runs.
const (
	// MaxTests caps the cases of one Spec.
	MaxTests = 128
	// MaxTestName caps the length of a case's name, in bytes.
	MaxTestName = 128
	// MaxCaseStderr caps the standard error kept in a CaseResult.
	MaxCaseStderr = 1 << 10
)

// MaxSourceBytes caps the total size of a Spec's files; MaxStdinBytes caps Spec.Stdin.
const (
	MaxSourceBytes = 1 << 20
	MaxStdinBytes  = 8 << 20
	MaxFiles       = 32
)

// Validate checks the Spec's shape (not its limits, see Limits.Check): a known language,
// at least one non-empty file, safe file names, sizes under the caps.
func (s Spec) Validate() error {
	if _, ok := Lookup(s.Language); !ok {
		return fmt.Errorf("%w: %q (known: %s)", ErrUnknownLanguage, s.Language, LanguageNames())
	}
	if len(s.Files) == 0 {
		return fmt.Errorf("%w: no source file", ErrInvalidRequest)
	}
	if len(s.Files) > MaxFiles {
		return fmt.Errorf("%w: %d files, at most %d", ErrInvalidRequest, len(s.Files), MaxFiles)
	}
	total := 0
	seen := make(map[string]bool, len(s.Files))
	for i, f := range s.Files {
		if i > 0 || f.Name != "" {
			if err := checkFileName(f.Name); err != nil {
				return err
			}
			if seen[f.Name] {
				return fmt.Errorf("%w: file %q given twice", ErrInvalidRequest, f.Name)
			}
			seen[f.Name] = true
		}
		total += len(f.Content)
	}
	if total > MaxSourceBytes {
		return fmt.Errorf("%w: source is %d bytes, at most %d", ErrTooLarge, total, MaxSourceBytes)
	}
	if len(s.Files[0].Content) == 0 {
		return fmt.Errorf("%w: the program is empty", ErrInvalidRequest)
	}
	if len(s.Stdin) > MaxStdinBytes {
		return fmt.Errorf("%w: stdin is %d bytes, at most %d", ErrTooLarge, len(s.Stdin), MaxStdinBytes)
	}
	if s.CompileOnly && len(s.Artifact) > 0 {
		return fmt.Errorf("%w: compile only and a compiled artefact", ErrInvalidRequest)
	}
	return s.validateTests()
}

// validateTests checks a judged run's cases: their count, names, the total size of their
// data (stdin and expected output, at most MaxStdinBytes), that they only lower the Spec's
// limits, and the comparison mode.
func (s Spec) validateTests() error {
	if !s.Compare.Valid() {
		return fmt.Errorf("%w: compare mode %q (known: exact, trim, tokens)", ErrInvalidRequest, s.Compare)
	}
	if len(s.Tests) == 0 {
		return nil
	}
	if len(s.Stdin) > 0 {
		return fmt.Errorf("%w: a run with test cases takes each case's stdin, not the Spec's", ErrInvalidRequest)
	}
	if s.CompileOnly || len(s.Artifact) > 0 {
		return fmt.Errorf("%w: test cases with compile only or an artefact", ErrInvalidRequest)
	}
	return CheckTests(s.Tests, s.Limits)
}

// CheckTests checks the test cases of a judged run whose limits are limits, as a server
// does: at most MaxTests cases, names (given, or the 1-based position) of at most 128
// bytes without control characters and given once, at most MaxStdinBytes of stdin and
// expected output in all (ErrTooLarge), and cases' limits that only lower limits (or,
// where a field of limits is zero, DefaultLimits). A client that loads test cases checks
// them with it before sending them (judge.LoadDir does).
func CheckTests(tests []TestCase, limits Limits) error {
	if len(tests) > MaxTests {
		return fmt.Errorf("%w: %d test cases, at most %d", ErrInvalidRequest, len(tests), MaxTests)
	}
	envelope := limits.WithDefaults(DefaultLimits())
	total := 0
	seen := make(map[string]bool, len(tests))
	for i, tc := range tests {
		name := tc.Name
		if name == "" {
			name = fmt.Sprint(i + 1)
		}
		if len(name) > MaxTestName || strings.ContainsFunc(name, func(r rune) bool { return r < ' ' || r == 0x7f }) {
			return fmt.Errorf("%w: bad test case name %q", ErrInvalidRequest, name)
		}
		if seen[name] {
			return fmt.Errorf("%w: test case %q given twice", ErrInvalidRequest, name)
		}
		seen[name] = true
		total += len(tc.Stdin) + len(tc.Expected)
		if tc.Limits != nil {
			if err := tc.Limits.Check(envelope); err != nil {
				return fmt.Errorf("test case %s: %w (a case may only lower the run's limits)", name, err)
			}
		}
	}
	if total > MaxStdinBytes {
		return fmt.Errorf("%w: the test cases' data is %d bytes, at most %d", ErrTooLarge, total, MaxStdinBytes)
	}
	return nil
}

func checkFileName(name string) error {
	if name == "" || name == "." || name == ".." || len(name) > 128 {
		return fmt.Errorf("%w: bad file name %q", ErrInvalidRequest, name)
	}
	for _, r := range name {
		ok := r == '.' || r == '_' || r == '-' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9')
		if !ok {
			return fmt.Errorf("%w: file name %q may only hold letters, digits, '.', '_' and '-'", ErrInvalidRequest, name)
		}
	}
	return nil
}

// Result is what came of a program that the sandbox ran.
type Result struct {
	Status Status `json:"status"`
	// ExitCode is the program's exit code; 128+n when killed by signal n; -1 when it did not run.
	ExitCode int `json:"exit_code"`
	// Signal names the signal that ended the program, if any ("SIGKILL").
	Signal        string `json:"signal,omitempty"`
	Stdout        []byte `json:"stdout"`
	Stderr        []byte `json:"stderr"`
	CompileOutput []byte `json:"compile_output"`
	// Time is the run phase's wall time; CPUTime its CPU time (from the cgroup when available).
	Time    time.Duration `json:"time"`
	CPUTime time.Duration `json:"cpu_time"`
	// CompileTime is the compile phase's wall time (zero for interpreted languages).
	CompileTime time.Duration `json:"compile_time"`
	// Memory is the run phase's peak resident memory in bytes.
	Memory int64 `json:"memory"`
	// Message explains a limit that was hit in words a user understands.
	Message string `json:"message,omitempty"`
	// Node names the server that ran the program; Attempts counts dispatches.
	Node     string `json:"node,omitempty"`
	Attempts int    `json:"attempts,omitempty"`
	// Trace says where the job's time went, phase by phase (nil when not measured).
	Trace *Trace `json:"trace,omitempty"`

	// Verdict and Cases are set for a judged run (a Spec with Tests): the overall verdict
	// (accepted when every case passed, else the first failing case's; compile_error when
	// the compile failed and no case ran) and each case's result, in the Spec's order.
	// Status, ExitCode and Signal are then those of the first case that did not exit with
	// code 0 (ok when none), Time, CPUTime and Memory the largest of the cases', Stdout
	// and Stderr empty.
	Verdict Verdict      `json:"verdict,omitempty"`
	Cases   []CaseResult `json:"cases,omitempty"`
	// Artifact is the compiled program of a CompileOnly Spec (see Spec.Artifact).
	Artifact []byte `json:"-"`
}

// Stream names where a chunk of live output comes from.
type Stream string

// The live output streams.
const (
	Stdout  Stream = "stdout"
	Stderr  Stream = "stderr"
	Compile Stream = "compile"
)

// Chunk is a piece of live output.
type Chunk struct {
	Stream Stream
	Data   []byte
}

// Streams are the optional live channels of a run. The zero value means a batch run:
// Spec.Stdin then end of input, output only in the Result.
type Streams struct {
	// Stdin, when set, carries more input after Spec.Stdin, forwarded to the running program
	// as it arrives; closing the channel closes the program's stdin. Nil: stdin ends after
	// Spec.Stdin. The Runner stops receiving when the run ends.
	Stdin <-chan []byte
	// Output, when set, is called with each chunk of output as it arrives, in order, from
	// one goroutine. It must not block for long; the data is not retained after it returns.
	Output func(Chunk)
	// Started, when set, is called once when the program starts running (after compiling).
	// Through a master (transport.Client's Runner) it means less: a node took the job,
	// before any compile, so a program that does not compile has started once too
	// (sandboxtest.ContractConfig.StartsAtDispatch).
	Started func()
}

// Runner runs programs.
type Runner interface {
	// Run compiles (if needed) and runs spec once, in isolation, and returns its Result.
	// A program that fails, crashes or hits a limit is a Result, not an error. The error
	// is non-nil only when the program could not be run; it wraps ErrInvalidRequest,
	// ErrUnknownLanguage, ErrTooLarge, ErrUnavailable, ErrClosed or the context's error.
	// Cancelling ctx stops the program and frees everything it held before Run returns.
	// streams may be nil.
	Run(ctx context.Context, spec Spec, streams *Streams) (Result, error)
}

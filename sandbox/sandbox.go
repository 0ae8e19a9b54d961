// Package sandbox owns the nouns of running one untrusted program: what to run (Spec),
// within which caps (Limits), what came of it (Result, Status), the languages runbox knows,
// and the Runner contract that every way of running a program implements (a local Docker
// sandbox, a remote slave, the scheduler's dispatcher).
//
// Program outcomes are data: a program that crashes, loops or floods its output produces a
// Result with a Status. A Go error from Run means the program could not be run at all; it
// wraps one of the sentinel errors below.
package sandbox

import (
	"context"
	"errors"
	"fmt"
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
}

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

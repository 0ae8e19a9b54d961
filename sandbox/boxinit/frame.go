// Package boxinit is runbox-init, the first process (PID 1) of every sandbox container, and
// the framed protocol by which a Runner talks to it over the container's stdin and stdout.
//
// A pooled container starts runbox-init, which waits for one Request frame. It writes the
// files into the scratch directory, compiles (if asked), runs the program once under the
// wall-time and output caps, streams output as frames while the program runs, forwards
// stdin frames to it, and ends with one Result frame: the exit status travels in-band, so
// the Runner has the result without waiting for the container to stop. Exchange is the
// runner's half: one program's exchange over any stream (sandbox/docker gives it a
// container's attach stream, with hooks for what only the engine can do).
//
// Frames are a 1-byte type, a 4-byte big-endian payload length and the payload:
//
//	runner → init: 'Q' request (JSON Request), 'A' artefact bytes (Request.Artifact of
//	               them, right after the request), 'I' stdin bytes, 'E' end of stdin (empty)
//	init → runner: 'o' stdout bytes, 'e' stderr bytes, 'c' compiler output bytes,
//	               'A' artefact bytes (of a CompileOnly request, before the result),
//	               'S' run phase started (empty), 'R' result (JSON Result)
//	gate (Request.Gate): init → runner 'W' before the run phase, runner → init 'G' to go on
//
// A judged run (sandbox/judge) compiles once and runs many times: a CompileOnly request
// compiles and answers with the scratch directory packed (PackDir) in 'A' frames instead
// of running; a request with an Artifact unpacks it (UnpackDir) in place of the files and
// runs without compiling. The compiled program travels only through these streams.
//
// runbox-init trusts the Runner and not the program: it is not dumpable (so the program,
// running as the same user, cannot open its file descriptors or trace it), it catches and
// drops every signal the program could send it (as PID 1 it is immune to SIGKILL from
// inside the container), it holds its threads and its code in memory before the program
// can take the pids and the memory, it kills every other process of the container when the
// program's main process ends, and it caps what it forwards. It ends a phase at its wall
// time, at the output cap, and at the first OOM kill or sustained thrashing in the
// container's memory cgroup. See docs/sandbox.md for the whole threat model.
package boxinit

import (
	"errors"
	"fmt"
	"io"
	"time"

	"runbox/internal/frame"
)

// Frame types.
const (
	FrameRequest  byte = 'Q'
	FrameStdin    byte = 'I'
	FrameStdinEOF byte = 'E'
	// FrameArtifact carries artefact bytes, in either direction.
	FrameArtifact byte = 'A'

	FrameStdout  byte = 'o'
	FrameStderr  byte = 'e'
	FrameCompile byte = 'c'
	FrameStarted byte = 'S'
	FrameResult  byte = 'R'

	// FrameGate (init → runner, empty) says that runbox-init, asked for a gate
	// (Request.Gate), is ready to start the run phase and waits for FrameGo (runner →
	// init, empty). Between the two the runner changes the container's limits for the
	// program (its memory, lower than the compiler's).
	FrameGate byte = 'W'
	FrameGo   byte = 'G'
)

// Size caps.
const (
	// MaxFrame caps any frame's payload; a longer declared length is a protocol error.
	MaxFrame = 8 << 20
	// ChunkSize is the largest data frame either side writes, and the largest frame of
	// any type that runbox-init writes (a Runner refuses a larger one from it).
	ChunkSize = 32 << 10
	// MaxMessage caps Result.Message in bytes; runbox-init cuts a longer one, so that its
	// result frame fits in ChunkSize even with every byte JSON-escaped.
	MaxMessage = 4 << 10
)

// ErrFrameTooLarge is returned for a frame whose declared length is over the cap.
var ErrFrameTooLarge = errors.New("boxinit: frame too large")

// WriteFrame writes one frame.
func WriteFrame(w io.Writer, typ byte, payload []byte) error {
	if len(payload) > MaxFrame {
		return ErrFrameTooLarge
	}
	return frame.Write(w, typ, payload)
}

// ReadFrame reads one frame whose payload is at most max bytes.
func ReadFrame(r io.Reader, max int) (typ byte, payload []byte, err error) {
	typ, payload, err = frame.Read(r, max)
	if errors.Is(err, frame.ErrTooLarge) {
		err = fmt.Errorf("%w: %v", ErrFrameTooLarge, err)
	}
	return typ, payload, err
}

// File is a file to write into the scratch directory before compiling.
type File struct {
	Name    string `json:"name"`
	Content []byte `json:"content"`
}

// Request asks runbox-init to compile and run one program.
type Request struct {
	Files []File `json:"files"`
	// Compile is the compile command (empty: no compile phase).
	Compile []string `json:"compile,omitempty"`
	// Run is the command that runs the program.
	Run []string `json:"run"`
	// CompileTime and RunTime are the phases' wall-time limits.
	CompileTime time.Duration `json:"compile_time"`
	RunTime     time.Duration `json:"run_time"`
	// Output caps the run's stdout+stderr bytes, and separately the compiler's output.
	Output int64 `json:"output"`
	// Env is added to Config.Env for the compile and run commands (KEY=value; it replaces
	// a variable of the same name): the language's own variables (sandbox.Language.Env).
	Env []string `json:"env,omitempty"`
	// CompileOnly: compile, and on success send the scratch directory as an artefact
	// instead of running (Result.Artifact tells its size).
	CompileOnly bool `json:"compile_only,omitempty"`
	// Artifact is the size of an artefact the runner sends in 'A' frames right after the
	// request: it is unpacked into the scratch directory, and the program runs without a
	// compile phase (Files and Compile are then ignored).
	Artifact int64 `json:"artifact,omitempty"`
	// Script is the main file that a prestarted interpreter (Config.Prestart) runs in
	// place of the Run command, when there is one.
	Script string `json:"script,omitempty"`
	// Gate: before the run phase (after the compile, the files or the artefact), send
	// FrameGate and wait for FrameGo.
	Gate bool `json:"gate,omitempty"`
}

// Outcome is how a phase ended, as runbox-init saw it.
type Outcome string

// Outcomes.
const (
	OutcomeExited       Outcome = "exited"        // the main process exited or was killed by a signal
	OutcomeTimeLimit    Outcome = "time_limit"    // runbox-init killed it at the wall-time limit
	OutcomeOutputLimit  Outcome = "output_limit"  // runbox-init killed it at the output cap
	OutcomeMemoryLimit  Outcome = "memory_limit"  // the cgroup's OOM killer struck during the phase
	OutcomeCompileError Outcome = "compile_error" // the compile phase failed; the run never started
	OutcomeStartError   Outcome = "start_error"   // the command could not be started
)

// Result is runbox-init's last frame.
type Result struct {
	Outcome  Outcome `json:"outcome"`
	ExitCode int     `json:"exit_code"`
	Signal   string  `json:"signal,omitempty"`
	// Time and CPUTime are the run phase's wall and CPU time; CompileTime the compile's wall time.
	Time        time.Duration `json:"time"`
	CPUTime     time.Duration `json:"cpu_time"`
	CompileTime time.Duration `json:"compile_time"`
	// Memory is the run's peak resident memory in bytes.
	Memory int64 `json:"memory"`
	// Message is a human explanation (why the compile failed, which limit was hit).
	Message string `json:"message,omitempty"`
	// Artifact is the size of the artefact sent before the result (CompileOnly).
	Artifact int64 `json:"artifact,omitempty"`
}

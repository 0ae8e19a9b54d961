package boxinit

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"runbox/sandbox"
)

// This file is the runner's half of the protocol: one program's exchange with runbox-init
// over any stream (a container's attach stream in sandbox/docker, a pipe in tests).

// Call is what a runner sends to runbox-init for one program, and how long it waits.
type Call struct {
	// Request is sent first. Its Artifact must be len(Artifact).
	Request Request
	// Artifact, when set, is the compiled program, sent in FrameArtifact frames after
	// the request.
	Artifact []byte
	// Stdin is sent after the artefact; Streams.Stdin, when set, carries more.
	Stdin []byte
	// Grace is how long past the phases' limits runbox-init may take to answer before
	// the exchange gives up on it (the backstop of a sandbox that hangs).
	Grace time.Duration
	// Trace, when set, gets the container phases the runner saw: Send, Compile, Run and
	// Result.
	Trace *sandbox.Trace
}

// Hooks are the steps of an exchange that belong to the box runbox-init runs in. Each
// may be nil.
type Hooks struct {
	// Gate, at runbox-init's FrameGate (asked for with Request.Gate), sets the program's
	// limits before the run phase; the exchange then sends FrameGo. An error ends the
	// exchange without a result (wrapped with sandbox.ErrUnavailable).
	Gate func(ctx context.Context) error
	// OOMKilled is asked when runbox-init ended without a result, neither cancelled nor
	// past the deadline: the only thing able to kill it is the OOM killer. True ends the
	// run with StatusMemoryLimit.
	OOMKilled func(ctx context.Context) bool
	// Stderr returns what runbox-init wrote on its own stderr, for the error of an
	// exchange that ended without a result.
	Stderr func() string
	// Recovered turns a panic in one of the exchange's goroutines into the run's error
	// (and logs it); nil: sandbox.Recovered.
	Recovered func(where string, v any) *sandbox.PanicError
}

// FrameMax caps a frame from runbox-init, which writes data in chunks of at most
// ChunkSize and a result that fits one (its message is capped): a box that declares a
// larger frame is refused at the header, before its payload is read.
const FrameMax = ChunkSize

// Exchange sends call to the runbox-init at the other end of conn and collects its
// answer, streaming output and the run phase's start to streams (which may be nil).
// Everything that comes from runbox-init is read under a cap: frames of at most FrameMax
// bytes, the run's stdout+stderr and the compiler's output at most Request.Output each,
// the artefact (of a CompileOnly request) at most MaxArtifact. A box that breaks the
// protocol fails the run with sandbox.ErrUnavailable.
//
// Past the phases' limits plus call.Grace, or when ctx ends, Exchange closes conn (the
// caller then kills the box) and ends with StatusTimeLimit, or with ctx's error. conn is
// closed when Exchange returns. A panic in one of the goroutines it starts (the writer,
// the reader, the killer, a Close of conn) fails the run with a *sandbox.PanicError; one
// in a callback of streams, called on the caller's goroutine, goes up to the caller.
func Exchange(ctx context.Context, conn io.ReadWriteCloser, call Call, streams *sandbox.Streams, hooks Hooks) (res sandbox.Result, err error) {
	if streams == nil {
		streams = &sandbox.Streams{}
	}
	recovered := hooks.Recovered
	if recovered == nil {
		recovered = sandbox.Recovered
	}
	breq := call.Request
	req, err := json.Marshal(breq)
	if err != nil {
		return sandbox.Result{ExitCode: -1}, fmt.Errorf("encode request: %w", err)
	}

	// The run's goroutines: the killer, the writer and the reader. A panic in one is
	// kept as the run's error, and closes the stream and the frame pipe, which ends the
	// others and the frame loop.
	frames, framesW := io.Pipe()
	done := make(chan struct{})
	var (
		wg       sync.WaitGroup
		panicMu  sync.Mutex
		panicked *sandbox.PanicError
	)
	keepPanic := func(pe *sandbox.PanicError) {
		panicMu.Lock()
		if panicked == nil {
			panicked = pe
		}
		panicMu.Unlock()
		framesW.CloseWithError(pe)
	}
	closeStream := func() {
		defer func() {
			if p := recover(); p != nil {
				keepPanic(recovered("closing the sandbox's stream", p))
			}
		}()
		conn.Close()
	}
	spawn := func(what string, fn func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				if p := recover(); p != nil {
					keepPanic(recovered(what, p))
					closeStream()
				}
			}()
			fn()
		}()
	}
	defer func() {
		close(done)
		closeStream() // unblocks the writer and the reader, whatever ended the run
		frames.Close()
		wg.Wait()
		panicMu.Lock()
		defer panicMu.Unlock()
		if panicked != nil {
			res, err = sandbox.Result{ExitCode: -1}, panicked
		}
	}()

	// The backstop: past every limit plus grace, or on cancellation, the stream goes.
	compiles := len(breq.Compile) > 0
	deadline := breq.RunTime + call.Grace
	switch {
	case breq.CompileOnly:
		deadline = breq.CompileTime + call.Grace
	case compiles:
		deadline += breq.CompileTime
	}
	var (
		killMu sync.Mutex
		killed string // "deadline" or "cancel"
	)
	timer := time.NewTimer(deadline)
	defer timer.Stop()
	spawn("the sandbox's killer", func() {
		why := ""
		select {
		case <-done:
			return
		case <-timer.C:
			why = "deadline"
		case <-ctx.Done():
			why = "cancel"
		}
		killMu.Lock()
		killed = why
		killMu.Unlock()
		closeStream() // unblocks the reader; the caller kills the box
	})

	// Writer: the request, then stdin, then end of stdin. sent closes once the request,
	// the artefact and the call's stdin are written (the trace's Send).
	sendStart := time.Now()
	var sendEnd time.Time
	sent := make(chan struct{})
	// The writer and the frame loop (FrameGo) both write: a frame at a time.
	var writeMu sync.Mutex
	w := writerFunc(func(p []byte) (int, error) {
		writeMu.Lock()
		defer writeMu.Unlock()
		return conn.Write(p)
	})
	spawn("the sandbox's input writer", func() {
		if err := WriteFrame(w, FrameRequest, req); err != nil {
			return
		}
		for chunk := range slices.Chunk(call.Artifact, ChunkSize) {
			if err := WriteFrame(w, FrameArtifact, chunk); err != nil {
				return
			}
		}
		for chunk := range slices.Chunk(call.Stdin, ChunkSize) {
			if err := WriteFrame(w, FrameStdin, chunk); err != nil {
				return
			}
		}
		sendEnd = time.Now()
		close(sent)
		if streams.Stdin != nil {
		loop:
			for {
				select {
				case <-done:
					return
				case data, ok := <-streams.Stdin:
					if !ok {
						break loop
					}
					for chunk := range slices.Chunk(data, ChunkSize) {
						if err := WriteFrame(w, FrameStdin, chunk); err != nil {
							return
						}
					}
				}
			}
		}
		WriteFrame(w, FrameStdinEOF, nil)
	})

	// Reader: what runbox-init writes, into the frame pipe.
	spawn("the sandbox's output reader", func() {
		_, err := io.Copy(framesW, conn)
		framesW.CloseWithError(err)
	})

	res = sandbox.Result{ExitCode: -1}
	out := map[byte]*cappedBuffer{
		FrameStdout:  {max: int(breq.Output)},
		FrameStderr:  {max: int(breq.Output)},
		FrameCompile: {max: int(breq.Output)},
	}
	var runOutput int64       // stdout+stderr: runbox-init caps their sum
	var artifact bytes.Buffer // of a compile-only run
	var final *Result
	var protoErr error
	var gateAt, goAt, startedAt, resultAt time.Time
	started, badResult, gated := false, false, false
	for final == nil && protoErr == nil {
		typ, payload, err := ReadFrame(frames, FrameMax)
		if err != nil {
			protoErr = err
			break
		}
		switch typ {
		case FrameStdout, FrameStderr, FrameCompile:
			buf := out[typ]
			if typ != FrameCompile {
				runOutput += int64(len(payload))
			}
			if buf.Len()+len(payload) > buf.max || runOutput > breq.Output {
				protoErr = fmt.Errorf("runbox-init sent more output than allowed")
				break
			}
			buf.Write(payload)
			if streams.Output != nil {
				streams.Output(sandbox.Chunk{Stream: streamOf(typ), Data: payload})
			}
		case FrameArtifact:
			if !breq.CompileOnly || artifact.Len()+len(payload) > MaxArtifact {
				protoErr = fmt.Errorf("runbox-init sent an artefact it was not asked for or over %d bytes", MaxArtifact)
				break
			}
			artifact.Write(payload)
		case FrameGate:
			if !breq.Gate || gated || started {
				protoErr = fmt.Errorf("a gate frame from runbox-init that was not asked for")
				break
			}
			gated, gateAt = true, time.Now()
			if hooks.Gate != nil {
				if err := hooks.Gate(ctx); err != nil {
					protoErr = fmt.Errorf("%w: %v", sandbox.ErrUnavailable, err)
					break
				}
			}
			if err := WriteFrame(w, FrameGo, nil); err != nil {
				protoErr = err
			}
			goAt = time.Now()
		case FrameStarted:
			if breq.Gate && !gated {
				protoErr = fmt.Errorf("runbox-init started the run phase before the gate")
				break
			}
			if !started {
				startedAt = time.Now()
				if streams.Started != nil {
					streams.Started()
				}
			}
			started = true
		case FrameResult:
			var fr Result
			if err := json.Unmarshal(payload, &fr); err != nil {
				protoErr = fmt.Errorf("%w: bad result from runbox-init: %v", sandbox.ErrUnavailable, err)
				badResult = true
				break
			}
			final = &fr
			resultAt = time.Now()
		default:
			protoErr = fmt.Errorf("unknown frame type %q from runbox-init", typ)
		}
	}
	frames.Close()
	closeStream()
	res.Stdout, res.Stderr, res.CompileOutput = out[FrameStdout].Bytes(), out[FrameStderr].Bytes(), out[FrameCompile].Bytes()
	if badResult || errors.As(protoErr, new(*sandbox.PanicError)) {
		return res, protoErr // (a goroutine of the run panicked: the deferred check says so)
	}

	if final == nil {
		killMu.Lock()
		why := killed
		killMu.Unlock()
		switch {
		case why == "cancel" || ctx.Err() != nil:
			return res, ctx.Err()
		case why == "deadline":
			res.Status = sandbox.StatusTimeLimit
			res.Message = fmt.Sprintf("the sandbox did not answer within %v and was killed", deadline)
			return res, nil
		}
		// runbox-init died: the only thing in the box able to kill it is the OOM killer
		// (it survives every signal a program can send).
		if hooks.OOMKilled != nil && hooks.OOMKilled(ctx) {
			res.Status = sandbox.StatusMemoryLimit
			res.Message = "killed by the out-of-memory killer at the memory limit"
			return res, nil
		}
		stderr := ""
		if hooks.Stderr != nil {
			stderr = hooks.Stderr()
		}
		return res, fmt.Errorf("%w: sandbox ended without a result (%v): %s", sandbox.ErrUnavailable, protoErr, stderr)
	}
	res, err = resultOf(res, final)
	if call.Trace != nil {
		fillTrace(call.Trace, sendStart, sent, &sendEnd, gateAt, goAt, startedAt, resultAt, res.Time, compiles)
	}
	if err == nil && breq.CompileOnly && res.Status == sandbox.StatusOK {
		if int64(artifact.Len()) != final.Artifact || artifact.Len() == 0 {
			return res, fmt.Errorf("%w: runbox-init sent %d artefact bytes and counted %d", sandbox.ErrUnavailable, artifact.Len(), final.Artifact)
		}
		res.Artifact = artifact.Bytes()
	}
	return res, err
}

// fillTrace fills the container phases of trace from what Exchange saw: the request
// written (when sent is closed, sendEnd holds the moment), the gate asked for and passed,
// the run phase's start and the result's arrival (zero when they did not happen) and the
// program's own wall time. The compile phase, of a program that compiles, is from the
// request sent to the gate (or to the run's start, or to the result of a compile-only run
// or a compile error); the gate, from runbox-init asking for it to the go sent back; what
// the result took past the program's end is the run phase's span less the program's time.
func fillTrace(trace *sandbox.Trace, sendStart time.Time, sent <-chan struct{}, sendEnd *time.Time, gateAt, goAt, startedAt, resultAt time.Time, run time.Duration, compiles bool) {
	select {
	case <-sent:
	default:
		return // the writer has not finished: nothing of it is measured
	}
	trace.Send = sendEnd.Sub(sendStart)
	if compiles {
		// The compile ends at the gate, else at the run's start, else at the result.
		if end := cmp.Or(gateAt, startedAt, resultAt); !end.IsZero() {
			trace.Compile = max(end.Sub(*sendEnd), 0)
		}
	}
	if !gateAt.IsZero() && !goAt.IsZero() {
		trace.Gate = max(goAt.Sub(gateAt), 0)
	}
	if !startedAt.IsZero() && !resultAt.IsZero() {
		trace.Run = run
		trace.Result = max(resultAt.Sub(startedAt)-run, 0)
	}
}

// resultOf turns runbox-init's result into the run's. Its numbers come from the box: a
// negative time or memory is taken as 0.
func resultOf(res sandbox.Result, f *Result) (sandbox.Result, error) {
	res.ExitCode, res.Signal, res.Message = f.ExitCode, f.Signal, f.Message
	res.Time, res.CPUTime, res.CompileTime, res.Memory = max(f.Time, 0), max(f.CPUTime, 0), max(f.CompileTime, 0), max(f.Memory, 0)
	switch f.Outcome {
	case OutcomeExited:
		res.Status = sandbox.StatusRuntimeError
		if f.ExitCode == 0 {
			res.Status = sandbox.StatusOK
		}
	case OutcomeTimeLimit:
		res.Status = sandbox.StatusTimeLimit
	case OutcomeOutputLimit:
		res.Status = sandbox.StatusOutputLimit
	case OutcomeMemoryLimit:
		res.Status = sandbox.StatusMemoryLimit
	case OutcomeCompileError:
		res.Status = sandbox.StatusCompileError
	default:
		return res, fmt.Errorf("%w: runbox-init could not start the program: %s", sandbox.ErrUnavailable, f.Message)
	}
	return res, nil
}

func streamOf(typ byte) sandbox.Stream {
	switch typ {
	case FrameStdout:
		return sandbox.Stdout
	case FrameStderr:
		return sandbox.Stderr
	}
	return sandbox.Compile
}

// writerFunc is a function as an io.Writer.
type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// cappedBuffer keeps at most max bytes.
type cappedBuffer struct {
	bytes.Buffer
	max int
}

func (c *cappedBuffer) Write(p []byte) (int, error) {
	if room := c.max - c.Len(); room < len(p) {
		c.Buffer.Write(p[:max(room, 0)])
		return len(p), nil
	}
	return c.Buffer.Write(p)
}

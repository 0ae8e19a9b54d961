package transport

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"runbox/sandbox"
	"runbox/sandbox/sandboxtest"
	"runbox/scheduler"
)

// panicRunner panics on the program "panic", else runs the Fake.
type panicRunner struct{ sandboxtest.Fake }

func (r *panicRunner) Run(ctx context.Context, spec sandbox.Spec, streams *sandbox.Streams) (sandbox.Result, error) {
	if len(spec.Files) > 0 && string(spec.Files[0].Content) == "panic" {
		panic("the runner fell over")
	}
	return r.Fake.Run(ctx, spec, streams)
}

// A slave whose Runner panics: the job gets internal, the slave and the master serve on.
func TestSlaveRunnerPanic(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(s *scheduler.Config, _ *ServerConfig) { s.MaxPrograms = 0 })
	var log logBuffer
	startSlaveWith(t, ts.addr, "fragile", 1, &panicRunner{}, &log)
	waitNodes(t, ts, 2)
	c := dialT(t, ts.addr, nil)
	_, err := c.Run(context.Background(), prog("panic"), RunOptions{})
	if !errors.Is(err, scheduler.ErrInternal) || !strings.Contains(err.Error(), "fragile") {
		t.Errorf("job whose runner panicked: %v, want internal", err)
	}
	waitLog(t, &log, "level=ERROR", "panic", "the runner fell over")
	res, err := c.Run(context.Background(), prog("out still here"), RunOptions{})
	if err != nil || res.Node != "fragile" || string(res.Stdout) != "still here\n" {
		t.Errorf("the next job: %v %+v", err, res)
	}
}

// rogueSlave is a remote runner over a yamux session whose slave side the test plays
// with raw frames.
func rogueSlave(t *testing.T) (*remoteRunner, *yamux.Session) {
	t.Helper()
	a, b := net.Pipe()
	master, err := yamux.Server(a, yamuxConfig(5*time.Second, DefaultStreamBacklog))
	if err != nil {
		t.Fatal(err)
	}
	slave, err := yamux.Client(b, yamuxConfig(5*time.Second, clientBacklog))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { slave.Close(); master.Close() })
	return &remoteRunner{sess: master, node: "rogue", log: slog.New(slog.DiscardHandler)}, slave
}

// acceptJob takes the master's next job stream and reads its submit frame; nil when
// there is none (the test is over: the session closed). It runs in the rogue's goroutine,
// which may outlive the test: it reports nothing, the master's side is what is checked.
func acceptJob(slave *yamux.Session) *yamux.Stream {
	st, err := slave.AcceptStream()
	if err != nil {
		return nil
	}
	if typ, _, err := ReadFrame(st, MaxRequestFrame); err != nil || typ != FrameSubmit {
		st.Close()
		return nil
	}
	return st
}

// runWithin runs r.Run and fails the test if it does not return within a minute (a hang
// detector, not a speed goal: the ctx given ends far earlier).
func runWithin(t *testing.T, r *remoteRunner, ctx context.Context, spec sandbox.Spec, streams *sandbox.Streams) (sandbox.Result, error) {
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
	case <-time.After(time.Minute):
		t.Fatal("the remote runner did not return")
	}
	return sandbox.Result{}, nil
}

// A slave that accepts a job and never answers, nor reads its input: Run returns when its
// ctx ends (the scheduler gives every attempt a deadline).
func TestRogueSlaveNeverAnswers(t *testing.T) {
	t.Parallel()
	r, slave := rogueSlave(t)
	go acceptJob(slave) // then silence
	stdin := make(chan []byte)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	go func() { // more input than the stream's window: the master's writes block
		for {
			select {
			case stdin <- make([]byte, ChunkSize):
			case <-ctx.Done():
				return
			}
		}
	}()
	_, err := runWithin(t, r, ctx, prog("cat"), &sandbox.Streams{Stdin: stdin})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err %v, want the ctx's deadline", err)
	}
}

// A slave that floods output: the master keeps and forwards no more than the job's output
// limit plus a little, and the attempt fails as a lost node.
func TestRogueSlaveFloodsOutput(t *testing.T) {
	t.Parallel()
	r, slave := rogueSlave(t)
	go func() {
		st := acceptJob(slave)
		if st == nil {
			return
		}
		writeJSON(st, FrameStarted, Started{Node: "rogue"})
		chunk := make([]byte, ChunkSize)
		for WriteFrame(st, FrameStdout, chunk) == nil {
		}
	}()
	spec := prog("out x")
	spec.Limits.Output = sandbox.MiB
	var forwarded atomic.Int64
	_, err := runWithin(t, r, context.Background(), spec, &sandbox.Streams{Output: func(c sandbox.Chunk) { forwarded.Add(int64(len(c.Data))) }})
	if !errors.Is(err, scheduler.ErrNodeLost) || !strings.Contains(err.Error(), "more output than") {
		t.Errorf("err %v, want node lost for too much output", err)
	}
	if n := forwarded.Load(); n > sandbox.MiB+outputSlack {
		t.Errorf("%d bytes forwarded for a 1 MiB output limit", n)
	}
}

// A slave's result is checked: one no sandbox gives makes the attempt fail as a lost node.
func TestRogueSlaveResults(t *testing.T) {
	t.Parallel()
	judged := prog("x")
	judged.Tests = []sandbox.TestCase{{Expected: []byte("1")}}
	ok := Result{Status: sandbox.StatusOK, Time: time.Millisecond, Memory: sandbox.MiB, Node: "claims-to-be-master"}
	for _, tc := range []struct {
		name    string
		spec    sandbox.Spec
		started bool
		res     Result
		bad     string // in the error; "" for a result that passes
	}{
		{"fine", prog("x"), true, ok, ""},
		{"compile error without a start", prog("x"), false, Result{Status: sandbox.StatusCompileError, ExitCode: 1}, ""},
		{"judged", judged, true, Result{Status: sandbox.StatusOK, Verdict: sandbox.VerdictAccepted, Cases: []Case{{Verdict: sandbox.VerdictAccepted}}}, ""},
		{"unknown status", prog("x"), true, Result{Status: "pwned"}, "unknown status"},
		{"ok without a start", prog("x"), false, ok, "before the program started"},
		{"exit code", prog("x"), true, Result{Status: sandbox.StatusRuntimeError, ExitCode: 1 << 20}, "exit code"},
		{"negative memory", prog("x"), true, Result{Status: sandbox.StatusOK, Memory: -1}, "memory"},
		{"absurd time", prog("x"), true, Result{Status: sandbox.StatusOK, Time: 1000 * time.Hour}, "run time"},
		{"verdict without tests", prog("x"), true, Result{Status: sandbox.StatusOK, Verdict: sandbox.VerdictAccepted}, "without tests"},
		{"more cases than tests", judged, true, Result{Status: sandbox.StatusOK, Verdict: sandbox.VerdictAccepted, Cases: make([]Case, 2)}, "cases"},
		{"long message", prog("x"), true, Result{Status: sandbox.StatusOK, Message: strings.Repeat("m", 5000)}, "message"},
		{"traced", prog("x"), true, Result{Status: sandbox.StatusOK, Trace: &sandbox.Trace{Acquire: time.Millisecond, Run: 2 * time.Millisecond}}, ""},
		{"negative trace", prog("x"), true, Result{Status: sandbox.StatusOK, Trace: &sandbox.Trace{Run: -time.Second}}, "trace phase"},
		{"absurd trace", prog("x"), true, Result{Status: sandbox.StatusOK, Trace: &sandbox.Trace{Queue: 1000 * time.Hour}}, "trace phase"},
		{"negative gate", prog("x"), true, Result{Status: sandbox.StatusOK, Trace: &sandbox.Trace{Gate: -time.Millisecond}}, "trace phase (gate)"},
	} {
		r, slave := rogueSlave(t)
		go func() {
			st := acceptJob(slave)
			if st == nil {
				return
			}
			if tc.started {
				writeJSON(st, FrameStarted, Started{Node: "rogue"})
			}
			writeJSON(st, FrameResult, tc.res)
		}()
		res, err := runWithin(t, r, context.Background(), tc.spec, nil)
		switch {
		case tc.bad == "" && (err != nil || res.Node != "rogue"):
			t.Errorf("%s: %v %+v, want the result, on node rogue", tc.name, err, res)
		case tc.bad != "" && (!errors.Is(err, scheduler.ErrNodeLost) || !strings.Contains(err.Error(), tc.bad)):
			t.Errorf("%s: %v, want node lost: %s", tc.name, err, tc.bad)
		}
	}
}

// A slave's job stream is read by the same loop as a client's, under the master's rules:
// a second S, a frame only a master sends (A, Q), or an unknown one is a lost node; an X
// is the job's error, as its sentinel; each stream's output reaches its own buffer.
func TestRogueSlaveFrames(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		frames []byte // after the submit; each with a payload that decodes
		bad    string // in a lost node's error; "" when the run ends otherwise
	}{
		{"started twice", []byte{FrameStarted, FrameStarted}, "started the job twice"},
		{"accepted", []byte{FrameAccepted}, "unexpected frame 'A'"},
		{"queued", []byte{FrameStarted, FrameQueued}, "unexpected frame 'Q'"},
		{"unknown", []byte{'Z'}, "unexpected frame 'Z'"},
		{"error", []byte{FrameError}, ""},
		{"outputs", []byte{FrameCompile, FrameStarted, FrameStdout, FrameStderr, FrameResult}, ""},
	} {
		r, slave := rogueSlave(t)
		go func() {
			st := acceptJob(slave)
			if st == nil {
				return
			}
			for _, typ := range tc.frames {
				var msg any = []byte(string(typ) + " data")
				switch typ {
				case FrameStarted:
					msg = Started{Node: "rogue"}
				case FrameAccepted:
					msg = Accepted{ID: "x"}
				case FrameQueued:
					msg = Queued{Position: 1}
				case FrameError:
					msg = Error{Code: "busy", Message: "slave busy"}
				case FrameResult:
					msg = Result{Status: sandbox.StatusOK}
				}
				b, _ := encodeGolden(typ, msg)
				st.Write(b)
			}
		}()
		res, err := runWithin(t, r, context.Background(), prog("x"), nil)
		switch {
		case tc.bad != "":
			if !errors.Is(err, scheduler.ErrNodeLost) || !strings.Contains(err.Error(), tc.bad) {
				t.Errorf("%s: %v, want node lost: %s", tc.name, err, tc.bad)
			}
		case tc.name == "error":
			if !errors.Is(err, scheduler.ErrBusy) || err.Error() != "slave busy" {
				t.Errorf("%s: %v, want busy", tc.name, err)
			}
		default:
			if err != nil || string(res.CompileOutput) != "C data" || string(res.Stdout) != "O data" || string(res.Stderr) != "E data" {
				t.Errorf("%s: %v %+v", tc.name, err, res)
			}
		}
	}
}

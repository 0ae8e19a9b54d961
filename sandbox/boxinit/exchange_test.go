package boxinit

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"runbox/sandbox"
)

// These tests run both halves of the protocol against each other over net.Pipe: Exchange
// (the runner's) and Serve (runbox-init's) in this process, or Exchange and a scripted
// runbox-init whose bytes are whatever the test says, as a hostile box's could be. Those
// that run Serve are not parallel (see init_test.go).

// rawFrame is one runbox-init frame, raw: any type.
func rawFrame(typ byte, payload string) []byte {
	var b bytes.Buffer
	WriteFrame(&b, typ, []byte(payload))
	return b.Bytes()
}

func resultFrame(r Result) []byte {
	b, _ := json.Marshal(r)
	return rawFrame(FrameResult, string(b))
}

var okResult = Result{Outcome: OutcomeExited, Time: 5 * time.Millisecond}

// box runs play on one end of a net.Pipe and returns the other; the test's cleanup waits
// for play to end.
func box(t testing.TB, play func(c net.Conn)) net.Conn {
	t.Helper()
	runner, init := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer init.Close()
		play(init)
	}()
	t.Cleanup(func() { runner.Close(); <-done })
	return runner
}

// serveBox plays runbox-init with Serve in dir (a scratch directory of its own when
// empty); Serve's error is dropped (a runner that went away makes one).
func serveBox(t *testing.T, dir string) net.Conn {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Dir, cfg.CgroupRoot = dir, t.TempDir()
	if dir == "" {
		cfg.Dir = t.TempDir()
	}
	return box(t, func(c net.Conn) { Serve(c, c, cfg) })
}

// scripted plays a runbox-init that writes out, then ends; it reads and drops whatever
// the runner sends.
func scripted(out ...[]byte) func(net.Conn) {
	return func(c net.Conn) {
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); io.Copy(io.Discard, c) }()
		c.Write(bytes.Join(out, nil))
		c.Close()
		wg.Wait()
	}
}

// recorder is a sandbox.Streams that records what it was given.
type recorder struct {
	mu      sync.Mutex
	started int
	out     map[sandbox.Stream]*bytes.Buffer
}

func (r *recorder) streams() *sandbox.Streams {
	r.out = map[sandbox.Stream]*bytes.Buffer{sandbox.Stdout: {}, sandbox.Stderr: {}, sandbox.Compile: {}}
	return &sandbox.Streams{
		Started: func() { r.mu.Lock(); r.started++; r.mu.Unlock() },
		Output:  func(c sandbox.Chunk) { r.mu.Lock(); r.out[c.Stream].Write(c.Data); r.mu.Unlock() },
	}
}

// A program through both halves: the request, stdin from the call and from the stream,
// output streamed as it comes and kept, Started once, the result and the trace.
func TestExchangeWithServe(t *testing.T) {
	stdin := make(chan []byte, 2)
	stdin <- []byte("more-")
	stdin <- []byte("input\n")
	close(stdin)
	rec := &recorder{}
	streams := rec.streams()
	streams.Stdin = stdin
	trace := &sandbox.Trace{}
	res, err := Exchange(context.Background(), serveBox(t, ""), Call{
		Request: Request{
			Files: []File{{Name: "main.sh", Content: []byte("cat; echo err >&2; exit 3")}},
			Run:   []string{"/bin/sh", "main.sh"}, RunTime: 5 * time.Second, Output: 1 << 20,
		},
		Stdin: []byte("in-"), Grace: time.Minute, Trace: trace,
	}, streams, Hooks{})
	if err != nil || res.Status != sandbox.StatusRuntimeError || res.ExitCode != 3 {
		t.Fatalf("%v %+v", err, res)
	}
	if string(res.Stdout) != "in-more-input\n" || string(res.Stderr) != "err\n" || len(res.CompileOutput) > 0 {
		t.Errorf("stdout %q stderr %q compile %q", res.Stdout, res.Stderr, res.CompileOutput)
	}
	if rec.started != 1 || rec.out[sandbox.Stdout].String() != string(res.Stdout) || rec.out[sandbox.Stderr].String() != string(res.Stderr) {
		t.Errorf("started %d times, streamed %q and %q", rec.started, rec.out[sandbox.Stdout], rec.out[sandbox.Stderr])
	}
	if res.Time <= 0 || res.Memory <= 0 || trace.Run != res.Time || trace.Compile != 0 {
		t.Errorf("time %v memory %d, trace %+v: want the run's time as the trace's Run, no compile", res.Time, res.Memory, trace)
	}
}

// A program that compiles in a box with the compiler's memory passes the gate between its
// compile and its run: the trace keeps the gate apart from the compile.
func TestExchangeTracesTheGateWithServe(t *testing.T) {
	trace := &sandbox.Trace{}
	const hold = 30 * time.Millisecond
	gates := 0
	res, err := Exchange(context.Background(), serveBox(t, ""), Call{
		Request: Request{
			Compile: sh("printf '#!/bin/sh\\necho ran\\n' >prog && chmod 755 prog"), CompileTime: 5 * time.Second,
			Run: []string{"./prog"}, RunTime: 5 * time.Second, Output: 1 << 20, Gate: true,
		},
		Grace: time.Minute, Trace: trace,
	}, (&recorder{}).streams(), Hooks{Gate: func(context.Context) error { gates++; time.Sleep(hold); return nil }})
	if err != nil || res.Status != sandbox.StatusOK || string(res.Stdout) != "ran\n" || gates != 1 {
		t.Fatalf("%v %+v, %d gates", err, res, gates)
	}
	// The hook's sleep is in the gate, not in the compile: a lower bound, never a timing.
	if trace.Gate < hold || trace.Compile <= 0 || trace.Run <= 0 {
		t.Errorf("trace %+v: want a gate of at least %v, and a compile and a run", trace, hold)
	}
	if names := phaseNames(trace); !slices.Equal(names, []string{"send", "compile", "gate", "run", "result"}) && !slices.Equal(names, []string{"send", "compile", "gate", "run"}) {
		t.Errorf("phases %v", names)
	}
}

func phaseNames(tr *sandbox.Trace) []string {
	var out []string
	for _, p := range tr.Phases() {
		out = append(out, p.Name)
	}
	return out
}

// runbox-init caps the output and says so; the runner keeps exactly what it was sent.
func TestExchangeOutputLimitWithServe(t *testing.T) {
	rec := &recorder{}
	res, err := Exchange(context.Background(), serveBox(t, ""), Call{
		Request: Request{Run: sh("yes"), RunTime: 10 * time.Second, Output: 10000}, Grace: time.Minute,
	}, rec.streams(), Hooks{})
	if err != nil || res.Status != sandbox.StatusOutputLimit {
		t.Fatalf("%v %+v", err, res)
	}
	if len(res.Stdout) != 10000 || !strings.HasPrefix(string(res.Stdout), "y\ny\n") || rec.out[sandbox.Stdout].Len() != 10000 {
		t.Errorf("kept %d bytes and streamed %d, want the first 10000", len(res.Stdout), rec.out[sandbox.Stdout].Len())
	}
}

// A judged run's path: a compile-only call brings the compiled program back as an
// artefact, and a call with the artefact runs it in another scratch directory.
func TestExchangeCompileOnceRunTwiceWithServe(t *testing.T) {
	trace := &sandbox.Trace{}
	rec := &recorder{}
	res, err := Exchange(context.Background(), serveBox(t, ""), Call{
		Request: Request{
			Compile: sh(`echo compiling >&2; printf '#!/bin/sh\nread x; echo "got $x"\n' >prog && chmod 755 prog`), CompileTime: 5 * time.Second,
			Run: sh("echo must not run"), RunTime: time.Second, Output: 1 << 20, CompileOnly: true,
		},
		Grace: time.Minute, Trace: trace,
	}, rec.streams(), Hooks{})
	if err != nil || res.Status != sandbox.StatusOK || len(res.Artifact) == 0 || string(res.CompileOutput) != "compiling\n" {
		t.Fatalf("compile only: %v %+v", err, res)
	}
	if rec.started != 0 || trace.Compile <= 0 || trace.Run != 0 {
		t.Errorf("compile only: started %d times, trace %+v", rec.started, trace)
	}
	dir := t.TempDir()
	run, err := Exchange(context.Background(), serveBox(t, dir), Call{
		Request:  Request{Run: []string{"./prog"}, RunTime: 5 * time.Second, Output: 1 << 20, Artifact: int64(len(res.Artifact))},
		Artifact: res.Artifact, Stdin: []byte("one\n"), Grace: time.Minute,
	}, nil, Hooks{})
	if err != nil || run.Status != sandbox.StatusOK || string(run.Stdout) != "got one\n" {
		t.Errorf("run of the artefact: %v %+v", err, run)
	}
	if _, err := os.Stat(filepath.Join(dir, "prog")); err != nil {
		t.Errorf("the artefact was not unpacked in the scratch directory: %v", err)
	}
}

// At runbox-init's gate the Gate hook runs once, after the compile and before the run
// phase; a hook that fails ends the run before the program runs.
func TestExchangeGateWithServe(t *testing.T) {
	for _, fail := range []bool{false, true} {
		dir := t.TempDir()
		var events []string // the hooks and callbacks run on Exchange's goroutine
		res, err := Exchange(context.Background(), serveBox(t, dir), Call{
			Request: Request{
				Compile: sh("echo compiled >&2"), CompileTime: 5 * time.Second,
				Run: sh("touch ran; echo run"), RunTime: 5 * time.Second, Output: 1 << 20, Gate: true,
			},
			Grace: time.Minute,
		}, &sandbox.Streams{
			Started: func() { events = append(events, "started") },
			Output:  func(c sandbox.Chunk) { events = append(events, string(c.Stream)) },
		}, Hooks{Gate: func(context.Context) error {
			events = append(events, "gate")
			if _, err := os.Stat(filepath.Join(dir, "ran")); err == nil {
				t.Error("the program ran before the gate opened")
			}
			if fail {
				return errors.New("no memory for you")
			}
			return nil
		}})
		got := strings.Join(events, " ")
		if !fail && (err != nil || res.Status != sandbox.StatusOK || got != "compile gate started stdout") {
			t.Errorf("gate: %v %+v, events %q", err, res, got)
		}
		if fail {
			if !errors.Is(err, sandbox.ErrUnavailable) || !strings.Contains(err.Error(), "no memory for you") || got != "compile gate" {
				t.Errorf("failed gate: err %v, events %q", err, got)
			}
			if _, err := os.Stat(filepath.Join(dir, "ran")); err == nil {
				t.Error("the program ran after a failed gate")
			}
		}
	}
}

// A box that does not answer is given up at the phases' limits plus the grace: the stream
// is closed, and the run is a time limit.
func TestExchangeDeadline(t *testing.T) {
	t.Parallel()
	for _, req := range []Request{
		{Run: sh("true"), RunTime: 20 * time.Millisecond, Output: 10},
		{Compile: sh("true"), CompileTime: 10 * time.Millisecond, Run: sh("true"), RunTime: 10 * time.Millisecond, Output: 10},
		{Compile: sh("true"), CompileTime: 20 * time.Millisecond, Run: sh("true"), RunTime: time.Hour, Output: 10, CompileOnly: true},
	} {
		closed := make(chan struct{})
		conn := box(t, func(c net.Conn) {
			c.Write(rawFrame(FrameStarted, ""))
			io.Copy(io.Discard, c) // until the runner closes the stream
			close(closed)
		})
		res, err := Exchange(context.Background(), conn, Call{Request: req, Grace: 30 * time.Millisecond}, nil, Hooks{})
		if err != nil || res.Status != sandbox.StatusTimeLimit || !strings.Contains(res.Message, "did not answer within 50ms") {
			t.Errorf("%+v: %v %+v, want a time limit at 50ms", req, err, res)
		}
		<-closed
	}
}

// Cancelling the run closes the stream and ends the exchange with the context's error,
// whether the box is silent, streaming or at the gate.
func TestExchangeCancel(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		out  []byte
		gate bool
	}{
		{"silent", nil, false},
		{"after started", rawFrame(FrameStarted, ""), false},
		{"after output", rawFrame(FrameStdout, "x"), false},
		{"at the gate", rawFrame(FrameGate, ""), true},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithCancel(context.Background())
			closed := make(chan struct{})
			conn := box(t, func(conn net.Conn) {
				if _, _, err := ReadFrame(conn, MaxFrame); err != nil { // the request
					t.Error(err)
				}
				conn.Write(c.out)
				if c.out == nil {
					cancel()
				}
				io.Copy(io.Discard, conn)
				close(closed)
			})
			streams := &sandbox.Streams{Started: cancel, Output: func(sandbox.Chunk) { cancel() }}
			hooks := Hooks{Gate: func(context.Context) error { cancel(); return nil }}
			res, err := Exchange(ctx, conn, Call{Request: Request{Run: sh("true"), RunTime: time.Minute, Output: 10, Gate: c.gate}, Grace: time.Minute}, streams, hooks)
			if !errors.Is(err, context.Canceled) || res.ExitCode != -1 {
				t.Errorf("%v %+v, want context.Canceled", err, res)
			}
			<-closed
		})
	}
}

// What a box sends is read under the caps, and what breaks the protocol fails the run
// with ErrUnavailable, never with a panic or an unbounded read.
func TestExchangeRefusesWhatBreaksTheProtocol(t *testing.T) {
	neg := okResult
	neg.Time, neg.CPUTime, neg.Memory = -time.Second, -time.Second, -1
	run := Request{Run: sh("true"), RunTime: time.Second, Output: 10}
	compileOnly := Request{Compile: sh("true"), CompileTime: time.Second, Run: sh("true"), RunTime: time.Second, Output: 10, CompileOnly: true}
	gated := run
	gated.Gate = true
	for _, c := range []struct {
		name  string
		out   [][]byte
		req   Request
		check func(t *testing.T, res sandbox.Result, err error, started int)
	}{
		{"started twice", [][]byte{rawFrame('S', ""), rawFrame('S', ""), resultFrame(okResult)}, run, func(t *testing.T, res sandbox.Result, err error, started int) {
			if err != nil || started != 1 {
				t.Errorf("%v, Started called %d times, want once", err, started)
			}
		}},
		{"stdout and stderr past the cap together", [][]byte{rawFrame('o', "123456"), rawFrame('e', "123456"), resultFrame(okResult)}, run, unavailable("more output than allowed")},
		{"stdout past the cap", [][]byte{rawFrame('o', "123456"), rawFrame('o', "123456"), resultFrame(okResult)}, run, unavailable("more output than allowed")},
		{"compiler output past the cap", [][]byte{rawFrame('c', "123456"), rawFrame('c', "123456"), resultFrame(okResult)}, compileOnly, unavailable("more output than allowed")},
		{"frame over the cap", [][]byte{rawFrame('o', strings.Repeat("x", ChunkSize+1)), resultFrame(okResult)}, run, unavailable("frame too large")},
		{"result over the cap", [][]byte{rawFrame('R', `{"outcome":"exited","message":"`+strings.Repeat("m", ChunkSize)+`"}`)}, run, unavailable("frame too large")},
		{"negative numbers", [][]byte{resultFrame(neg)}, run, func(t *testing.T, res sandbox.Result, err error, _ int) {
			if err != nil || res.Time != 0 || res.CPUTime != 0 || res.Memory != 0 {
				t.Errorf("%v: time %v cpu %v memory %d, want 0", err, res.Time, res.CPUTime, res.Memory)
			}
		}},
		{"unknown frame", [][]byte{rawFrame('Z', "")}, run, unavailable("unknown frame type")},
		{"artefact not asked for", [][]byte{rawFrame('A', "bin"), resultFrame(okResult)}, run, unavailable("artefact it was not asked for")},
		{"artefact size lies", [][]byte{rawFrame('A', "bin"), resultFrame(Result{Outcome: OutcomeExited, Artifact: 2})}, compileOnly, unavailable("sent 3 artefact bytes and counted 2")},
		{"artefact missing", [][]byte{resultFrame(Result{Outcome: OutcomeExited})}, compileOnly, unavailable("sent 0 artefact bytes and counted 0")},
		{"gate not asked for", [][]byte{rawFrame('W', ""), rawFrame('S', ""), resultFrame(okResult)}, run, unavailable("gate")},
		{"started before the gate", [][]byte{rawFrame('S', ""), rawFrame('W', ""), resultFrame(okResult)}, gated, unavailable("before the gate")},
		{"bad result", [][]byte{rawFrame('R', "{")}, run, unavailable("bad result")},
		{"unknown outcome", [][]byte{resultFrame(Result{Outcome: "pwned"})}, run, unavailable("could not start")},
		{"truncated", [][]byte{rawFrame('o', "abc")[:6]}, run, unavailable("without a result")},
		{"nothing", nil, run, unavailable("without a result")},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			started := 0
			res, err := Exchange(context.Background(), box(t, scripted(c.out...)), Call{Request: c.req, Grace: time.Minute},
				&sandbox.Streams{Started: func() { started++ }}, Hooks{})
			if errors.As(err, new(*sandbox.PanicError)) {
				t.Fatalf("panicked: %v", err)
			}
			if len(res.Stdout)+len(res.Stderr) > 10 || len(res.CompileOutput) > 10 {
				t.Errorf("kept %d+%d bytes of output and %d of the compiler's, over the cap of 10", len(res.Stdout), len(res.Stderr), len(res.CompileOutput))
			}
			c.check(t, res, err, started)
		})
	}
}

func unavailable(says string) func(t *testing.T, res sandbox.Result, err error, _ int) {
	return func(t *testing.T, res sandbox.Result, err error, _ int) {
		t.Helper()
		if !errors.Is(err, sandbox.ErrUnavailable) || !strings.Contains(err.Error(), says) {
			t.Errorf("err %v, want ErrUnavailable saying %q", err, says)
		}
	}
}

// A box that ends without a result was killed by the OOM killer when the hook says so;
// else the run fails with what runbox-init wrote on its stderr.
func TestExchangeWithoutAResult(t *testing.T) {
	t.Parallel()
	for _, oom := range []bool{true, false} {
		asked := 0
		res, err := Exchange(context.Background(), box(t, scripted(rawFrame('S', ""), rawFrame('o', "hi"))),
			Call{Request: Request{Run: sh("true"), RunTime: time.Second, Output: 10}, Grace: time.Minute}, nil,
			Hooks{
				OOMKilled: func(context.Context) bool { asked++; return oom },
				Stderr:    func() string { return "runbox-init: it broke" },
			})
		if asked != 1 || string(res.Stdout) != "hi" {
			t.Errorf("OOMKilled asked %d times, stdout %q", asked, res.Stdout)
		}
		if oom && (err != nil || res.Status != sandbox.StatusMemoryLimit) {
			t.Errorf("OOM: %v %+v, want a memory limit", err, res)
		}
		if !oom && (!errors.Is(err, sandbox.ErrUnavailable) || !strings.Contains(err.Error(), "without a result") || !strings.Contains(err.Error(), "runbox-init: it broke")) {
			t.Errorf("err %v, want ErrUnavailable with runbox-init's stderr", err)
		}
	}
}

// A box that declares a large frame is refused at the frame's header: the runner does not
// read (nor hold) the megabyte that follows.
func TestExchangeRefusesALargeFrameAtItsHeader(t *testing.T) {
	t.Parallel()
	var written atomic.Int64
	conn := box(t, func(c net.Conn) {
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); io.Copy(io.Discard, c) }()
		defer wg.Wait()
		defer c.Close()
		hdr := []byte{FrameStdout, 0, 0, 0, 0}
		binary.BigEndian.PutUint32(hdr[1:], 1<<20)
		if _, err := c.Write(hdr); err != nil {
			return
		}
		chunk := bytes.Repeat([]byte("x"), 4<<10)
		for range (1 << 20) / len(chunk) {
			n, err := c.Write(chunk)
			written.Add(int64(n))
			if err != nil {
				return
			}
		}
	})
	_, err := Exchange(context.Background(), conn, Call{Request: Request{Run: sh("true"), RunTime: time.Second, Output: 16 << 20}, Grace: time.Minute}, nil, Hooks{})
	if !errors.Is(err, sandbox.ErrUnavailable) || !strings.Contains(err.Error(), "frame too large") {
		t.Errorf("err %v", err)
	}
	conn.Close()
	if n := written.Load(); n > 256<<10 {
		t.Errorf("the runner read %d bytes of a frame it had to refuse at its header", n)
	}
}

// panicConn is a stream whose method named on panics once.
type panicConn struct {
	net.Conn
	on    string
	armed atomic.Bool
}

func (c *panicConn) Read(p []byte) (int, error) {
	if c.on == "read" && c.armed.CompareAndSwap(true, false) {
		panic("read panics")
	}
	return c.Conn.Read(p)
}

func (c *panicConn) Write(p []byte) (int, error) {
	if c.on == "write" && c.armed.CompareAndSwap(true, false) {
		panic("write panics")
	}
	return c.Conn.Write(p)
}

func (c *panicConn) Close() error {
	err := c.Conn.Close()
	if c.on == "close" && c.armed.CompareAndSwap(true, false) {
		panic("close panics")
	}
	return err
}

// A panic in one of the exchange's goroutines fails the run with a *sandbox.PanicError
// that says where, made by the Recovered hook; no goroutine is left behind (the box's
// cleanup waits for its end of the stream to close).
func TestExchangePanicsFailTheRun(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ on, where string }{
		{"write", "the sandbox's input writer panicked: write panics"},
		{"read", "the sandbox's output reader panicked: read panics"},
		{"close", "closing the sandbox's stream panicked: close panics"},
	} {
		t.Run(c.on, func(t *testing.T) {
			t.Parallel()
			conn := &panicConn{Conn: box(t, func(conn net.Conn) {
				go io.Copy(io.Discard, conn)
				if c.on == "close" { // the box ends at once: the close after the frame loop panics
					return
				}
				conn.Write(rawFrame('S', ""))
			}), on: c.on}
			conn.armed.Store(true)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var hooked []string
			var mu sync.Mutex
			_, err := Exchange(ctx, conn, Call{Request: Request{Run: sh("true"), RunTime: time.Hour, Output: 10}, Grace: time.Hour},
				&sandbox.Streams{Started: cancel}, Hooks{Recovered: func(where string, v any) *sandbox.PanicError {
					mu.Lock()
					hooked = append(hooked, where)
					mu.Unlock()
					return sandbox.Recovered(where, v)
				}})
			var pe *sandbox.PanicError
			if !errors.As(err, &pe) || err.Error() != c.where {
				t.Fatalf("err %v (%T), want a PanicError saying %q", err, err, c.where)
			}
			if len(hooked) == 0 {
				t.Error("the Recovered hook was not called")
			}
		})
	}
}

// FuzzExchange plays a box whose runbox-init writes any bytes: a run, a compile-only run
// or a run of an artefact ends with a result or ErrUnavailable, never a panic; it keeps and
// streams the same bytes, within the caps; Started comes at most once.
func FuzzExchange(f *testing.F) {
	for _, out := range [][][]byte{
		{rawFrame('S', ""), rawFrame('o', "hi\n"), rawFrame('e', "oops\n"), resultFrame(okResult)},
		{rawFrame('c', "warning\n"), rawFrame('A', "bin"), resultFrame(Result{Outcome: OutcomeExited, Artifact: 3})},
		{rawFrame('c', "error\n"), resultFrame(Result{Outcome: OutcomeCompileError, ExitCode: 1})},
		{rawFrame('S', ""), rawFrame('S', ""), rawFrame('o', strings.Repeat("x", 100)), resultFrame(okResult)},
		{rawFrame('W', ""), rawFrame('S', ""), resultFrame(okResult)},
		{rawFrame('R', `{"outcome":"time_limit","time":-5,"memory":-1}`)},
		{rawFrame('o', "abc")[:6]},
	} {
		for mode := range byte(4) {
			f.Add(mode, bytes.Join(out, nil))
		}
	}
	f.Fuzz(func(t *testing.T, mode byte, out []byte) {
		call := Call{Request: Request{Run: sh("true"), RunTime: time.Second, Output: 64}, Grace: time.Minute}
		switch mode % 4 {
		case 1:
			call.Request.Compile, call.Request.CompileOnly = sh("true"), true
		case 2:
			call.Artifact = []byte("\x1f\x8b artefact")
			call.Request.Artifact = int64(len(call.Artifact))
		case 3:
			call.Request.Compile, call.Request.Gate = sh("true"), true
		}
		started := 0
		streamed := map[sandbox.Stream]int{}
		res, err := Exchange(context.Background(), box(t, scripted(out)), call, &sandbox.Streams{
			Started: func() { started++ },
			Output:  func(c sandbox.Chunk) { streamed[c.Stream] += len(c.Data) },
		}, Hooks{})
		switch {
		case errors.As(err, new(*sandbox.PanicError)):
			t.Fatalf("panicked: %v", err)
		case err != nil && !errors.Is(err, sandbox.ErrUnavailable):
			t.Fatalf("err %v, want ErrUnavailable", err)
		case err == nil && !res.Status.Valid():
			t.Fatalf("status %q", res.Status)
		}
		if len(res.Stdout)+len(res.Stderr) > 64 || len(res.CompileOutput) > 64 {
			t.Errorf("kept %d+%d bytes of output and %d of the compiler's, over the cap of 64", len(res.Stdout), len(res.Stderr), len(res.CompileOutput))
		}
		if streamed[sandbox.Stdout] != len(res.Stdout) || streamed[sandbox.Stderr] != len(res.Stderr) || streamed[sandbox.Compile] != len(res.CompileOutput) {
			t.Errorf("streamed %v, kept %d/%d/%d", streamed, len(res.Stdout), len(res.Stderr), len(res.CompileOutput))
		}
		if started > 1 {
			t.Errorf("Started called %d times", started)
		}
		if len(res.Artifact) > 0 && (!call.Request.CompileOnly || err != nil || len(res.Artifact) > MaxArtifact) {
			t.Errorf("an artefact of %d bytes (compile only %v, err %v)", len(res.Artifact), call.Request.CompileOnly, err)
		}
		if res.Time < 0 || res.CPUTime < 0 || res.CompileTime < 0 || res.Memory < 0 {
			t.Errorf("negative numbers: %+v", res)
		}
	})
}

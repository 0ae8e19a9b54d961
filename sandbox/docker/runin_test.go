package docker

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docker/docker/pkg/stdcopy"

	"runbox/sandbox"
	"runbox/sandbox/boxinit"
	"runbox/sandbox/sandboxtest"
)

// These tests play the container on the fake engine (no Docker): its bytes are whatever
// the test says, as a hostile container's could be.

// frame is one runbox-init frame, raw: any type, any declared length.
func frame(typ byte, payload string) []byte {
	var b bytes.Buffer
	boxinit.WriteFrame(&b, typ, []byte(payload))
	return b.Bytes()
}

func resultFrame(r boxinit.Result) []byte {
	b, _ := json.Marshal(r)
	return frame(boxinit.FrameResult, string(b))
}

var okResult = boxinit.Result{Outcome: boxinit.OutcomeExited, Time: 5 * time.Millisecond}

// stdout plays a container whose runbox-init writes out on its stdout, as the engine
// frames it (stdcopy, in chunks like the engine's), then ends; it reads and drops
// whatever the Runner sends.
func stdout(out ...[]byte) func(net.Conn) {
	return func(c net.Conn) {
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); io.Copy(io.Discard, c) }()
		w := stdcopy.NewStdWriter(c, stdcopy.Stdout)
		for chunk := range slices.Chunk(bytes.Join(out, nil), 32<<10) {
			if _, err := w.Write(chunk); err != nil {
				break
			}
		}
		c.Close()
		wg.Wait()
	}
}

// logBuffer collects a Runner's logs.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// newFakeRunner returns a Runner on f, serving python and c, without a pool unless mod
// says so, and its logs. On cleanup it closes the Runner and checks that the fake
// containers' goroutines ended and no container is left.
func newFakeRunner(t testing.TB, f *fakeEngine, mod func(*Config)) (*Runner, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	cfg := DefaultConfig()
	cfg.Languages = []string{"python", "c"}
	cfg.PoolSize = 0
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	if mod != nil {
		mod(&cfg)
	}
	r, err := newRunner(context.Background(), f, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		f.serving.Wait()
		if n := f.count(); n != 0 {
			t.Errorf("%d containers left", n)
		}
	})
	return r, logs
}

func TestRunOnAFakeContainer(t *testing.T) {
	t.Parallel()
	f := newFakeEngine()
	f.serve = stdout(frame(boxinit.FrameStarted, ""), frame(boxinit.FrameStdout, "hi\n"), frame(boxinit.FrameStderr, "warn\n"), resultFrame(okResult))
	r, _ := newFakeRunner(t, f, nil)
	started := 0
	res, err := r.Run(context.Background(), sandboxtest.Program("python", "print('hi')"), &sandbox.Streams{Started: func() { started++ }})
	if err != nil || res.Status != sandbox.StatusOK || string(res.Stdout) != "hi\n" || string(res.Stderr) != "warn\n" || res.Time != 5*time.Millisecond || started != 1 {
		t.Fatalf("%v %+v, started %d times", err, res, started)
	}
}

// What a container sends is read under the caps, and what breaks the protocol fails the
// run with ErrUnavailable, never with a panic or an unbounded read.
func TestContainerBytesAreHostile(t *testing.T) {
	t.Parallel()
	neg := okResult
	neg.Time, neg.CPUTime, neg.Memory = -time.Second, -time.Second, -1
	for _, c := range []struct {
		name    string
		out     [][]byte
		compile bool // a compile-only run of c
		check   func(t *testing.T, res sandbox.Result, err error, started int)
	}{
		{"started twice", [][]byte{frame('S', ""), frame('S', ""), resultFrame(okResult)}, false, func(t *testing.T, res sandbox.Result, err error, started int) {
			if err != nil || started != 1 {
				t.Errorf("%v, Started called %d times, want once", err, started)
			}
		}},
		{"stdout and stderr past the cap together", [][]byte{frame('o', "123456"), frame('e', "123456"), resultFrame(okResult)}, false, unavailable("more output than allowed")},
		{"stdout past the cap", [][]byte{frame('o', "123456"), frame('o', "123456"), resultFrame(okResult)}, false, unavailable("more output than allowed")},
		{"frame over the cap", [][]byte{frame('o', strings.Repeat("x", boxinit.ChunkSize+1)), resultFrame(okResult)}, false, unavailable("frame too large")},
		{"result over the cap", [][]byte{frame('R', `{"outcome":"exited","message":"`+strings.Repeat("m", boxinit.ChunkSize)+`"}`)}, false, unavailable("frame too large")},
		{"negative numbers", [][]byte{resultFrame(neg)}, false, func(t *testing.T, res sandbox.Result, err error, _ int) {
			if err != nil || res.Time != 0 || res.CPUTime != 0 || res.Memory != 0 {
				t.Errorf("%v: time %v cpu %v memory %d, want 0", err, res.Time, res.CPUTime, res.Memory)
			}
		}},
		{"unknown frame", [][]byte{frame('Z', "")}, false, unavailable("unknown frame type")},
		{"artefact not asked for", [][]byte{frame('A', "bin"), resultFrame(okResult)}, false, unavailable("artefact it was not asked for")},
		{"artefact size lies", [][]byte{frame('A', "bin"), resultFrame(boxinit.Result{Outcome: boxinit.OutcomeExited, Artifact: 2})}, true, unavailable("sent 3 artefact bytes and counted 2")},
		{"bad result", [][]byte{frame('R', "{")}, false, unavailable("bad result")},
		{"unknown outcome", [][]byte{resultFrame(boxinit.Result{Outcome: "pwned"})}, false, unavailable("could not start")},
		{"truncated", [][]byte{frame('o', "abc")[:6]}, false, unavailable("without a result")},
		{"nothing", nil, false, unavailable("without a result")},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			f := newFakeEngine()
			f.serve = stdout(c.out...)
			r, _ := newFakeRunner(t, f, nil)
			spec := sandboxtest.Program("python", "print('hi')")
			if c.compile {
				spec = sandboxtest.Program("c", "int main(){}")
				spec.CompileOnly = true
			}
			spec.Limits.Output = 10
			started := 0
			res, err := r.Run(context.Background(), spec, &sandbox.Streams{Started: func() { started++ }})
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

// A container that declares a large frame is refused at the frame's header: the Runner
// does not read (nor hold) the megabyte that follows.
func TestLargeFrameIsRefusedAtItsHeader(t *testing.T) {
	t.Parallel()
	f := newFakeEngine()
	var written atomic.Int64
	f.serve = func(c net.Conn) {
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); io.Copy(io.Discard, c) }()
		defer wg.Wait()
		defer c.Close()
		w := stdcopy.NewStdWriter(c, stdcopy.Stdout)
		hdr := []byte{boxinit.FrameStdout, 0, 0, 0, 0}
		binary.BigEndian.PutUint32(hdr[1:], 1<<20)
		if _, err := w.Write(hdr); err != nil {
			return
		}
		chunk := bytes.Repeat([]byte("x"), 4<<10)
		for range (1 << 20) / len(chunk) {
			n, err := w.Write(chunk)
			written.Add(int64(n))
			if err != nil {
				return
			}
		}
	}
	r, _ := newFakeRunner(t, f, nil)
	spec := sandboxtest.Program("python", "print('hi')")
	spec.Limits.Output = 16 << 20
	_, err := r.Run(context.Background(), spec, nil)
	if !errors.Is(err, sandbox.ErrUnavailable) || !strings.Contains(err.Error(), "frame too large") {
		t.Errorf("err %v", err)
	}
	f.serving.Wait()
	if n := written.Load(); n > 256<<10 {
		t.Errorf("the Runner read %d bytes of a frame it had to refuse at its header", n)
	}
}

// panicConn panics once, in the method named by on, when armed.
type panicConn struct {
	net.Conn
	on    string
	armed *atomic.Bool
}

func (c *panicConn) Read(p []byte) (int, error) {
	if c.on == "read" && c.armed.CompareAndSwap(true, false) {
		panic("fake: read panics")
	}
	return c.Conn.Read(p)
}

func (c *panicConn) Write(p []byte) (int, error) {
	if c.on == "write" && c.armed.CompareAndSwap(true, false) {
		panic("fake: write panics")
	}
	return c.Conn.Write(p)
}

func (c *panicConn) Close() error {
	err := c.Conn.Close()
	if c.on == "close" && c.armed.CompareAndSwap(true, false) {
		panic("fake: close panics")
	}
	return err
}

// A panic while running one program (an SDK call, one of the run's goroutines, a
// callback) fails that run with a *sandbox.PanicError that says where, no sentinel
// (code internal), logged with its stack; the container is removed, and the same Runner
// runs the next program.
func TestPanicFailsTheRunNotTheProcess(t *testing.T) {
	t.Parallel()
	normal := stdout(frame('S', ""), frame('o', "hi\n"), resultFrame(okResult))
	for _, c := range []struct {
		name    string
		arm     func(f *fakeEngine, armed *atomic.Bool)
		streams func(cancel context.CancelFunc) *sandbox.Streams
		where   string
	}{
		{name: "create", arm: func(f *fakeEngine, _ *atomic.Bool) { f.panicCreate.Store(1) }, where: "container create panicked: fake: create panics"},
		{name: "attach", arm: func(f *fakeEngine, _ *atomic.Bool) { f.panicAttach.Store(1) }, where: "sandbox run panicked: fake: attach panics"},
		{name: "writer", arm: func(f *fakeEngine, _ *atomic.Bool) { f.wrap = wrapPanic("write") }, where: "input writer panicked: fake: write panics"},
		{name: "reader", arm: func(f *fakeEngine, _ *atomic.Bool) { f.wrap = wrapPanic("read") }, where: "output reader panicked: fake: read panics"},
		{
			// The container sends a byte and never answers; the run is cancelled, and the
			// killer's close of the stream panics.
			name: "killer",
			arm: func(f *fakeEngine, _ *atomic.Bool) {
				f.wrap = wrapPanic("close")
				f.serve = func(c net.Conn) {
					var wg sync.WaitGroup
					wg.Add(1)
					go func() { defer wg.Done(); stdcopy.NewStdWriter(c, stdcopy.Stdout).Write(frame('o', "x")) }()
					io.Copy(io.Discard, c)
					wg.Wait()
				}
			},
			streams: func(cancel context.CancelFunc) *sandbox.Streams {
				return &sandbox.Streams{Output: func(sandbox.Chunk) { cancel() }}
			},
			where: "closing the sandbox's stream panicked: fake: close panics",
		},
		{
			name: "output callback",
			streams: func(context.CancelFunc) *sandbox.Streams {
				return &sandbox.Streams{Output: func(sandbox.Chunk) { panic("callback panics") }}
			},
			where: "sandbox run panicked: callback panics",
		},
		{
			name: "started callback",
			streams: func(context.CancelFunc) *sandbox.Streams {
				return &sandbox.Streams{Started: func() { panic("callback panics") }}
			},
			where: "sandbox run panicked: callback panics",
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			f := newFakeEngine()
			f.serve = normal
			armed := &atomic.Bool{}
			if c.arm != nil {
				c.arm(f, armed)
			}
			r, logs := newFakeRunner(t, f, nil)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var streams *sandbox.Streams
			if c.streams != nil {
				streams = c.streams(cancel)
			}
			_, err := r.Run(ctx, sandboxtest.Program("python", "print('hi')"), streams)
			var pe *sandbox.PanicError
			if !errors.As(err, &pe) || !strings.Contains(err.Error(), c.where) {
				t.Fatalf("err %v (%T), want a PanicError saying %q", err, err, c.where)
			}
			for _, s := range []error{sandbox.ErrUnavailable, sandbox.ErrInvalidRequest, sandbox.ErrClosed, context.Canceled} {
				if errors.Is(err, s) {
					t.Errorf("err %v is %v, want no sentinel", err, s)
				}
			}
			if l := logs.String(); !strings.Contains(l, "msg=panic") || !strings.Contains(l, "component=sandbox") || !strings.Contains(l, "stack=") {
				t.Errorf("the panic was not logged with its stack:\n%s", l)
			}
			// The same Runner runs the next program (f.serve is the normal container
			// again, and nothing panics any more).
			f.setServe(normal, nil)
			res, err := r.Run(context.Background(), sandboxtest.Program("python", "print('hi')"), nil)
			if err != nil || string(res.Stdout) != "hi\n" {
				t.Errorf("next run: %v %+v", err, res)
			}
		})
	}
}

// wrapPanic wraps every stream so that the first call of on panics (once per engine).
func wrapPanic(on string) func(net.Conn) net.Conn {
	armed := &atomic.Bool{}
	armed.Store(true)
	return func(c net.Conn) net.Conn { return &panicConn{Conn: c, on: on, armed: armed} }
}

// A warm pool's filler that panics is logged and starts again after a backoff: the pool
// fills, and the containers of the failed starts are removed.
func TestPoolFillerSurvivesPanics(t *testing.T) {
	t.Parallel()
	f := newFakeEngine()
	f.serve = func(c net.Conn) { io.Copy(io.Discard, c) } // waits for a program
	f.panicAttach.Store(2)
	r, logs := newFakeRunner(t, f, func(c *Config) {
		c.Languages = []string{"python"}
		c.PoolSize, c.PoolStagger = 1, 0
	})
	p := r.langs["python"].pool
	deadline := time.Now().Add(30 * time.Second)
	for p.idle() != 1 || f.count() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("pool: %d idle, %d containers; logs:\n%s", p.idle(), f.count(), logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	l := logs.String()
	if n := strings.Count(l, "msg=panic"); n != 2 || !strings.Contains(l, `where="warm pool filler (python)"`) || !strings.Contains(l, "filler restarts") {
		t.Errorf("%d panics logged, want 2, with the filler's restarts:\n%s", n, l)
	}
}

// FuzzContainerOutput plays a container whose runbox-init writes any bytes: a run, a
// compile-only run or a run of an artefact ends with a result or ErrUnavailable, never a
// panic; it keeps and streams the same bytes, within the caps; Started comes at most once.
func FuzzContainerOutput(f *testing.F) {
	art := []byte("\x1f\x8b artefact")
	for _, out := range [][][]byte{
		{frame('S', ""), frame('o', "hi\n"), frame('e', "oops\n"), resultFrame(okResult)},
		{frame('c', "warning\n"), frame('A', "bin"), resultFrame(boxinit.Result{Outcome: boxinit.OutcomeExited, Artifact: 3})},
		{frame('c', "error\n"), resultFrame(boxinit.Result{Outcome: boxinit.OutcomeCompileError, ExitCode: 1})},
		{frame('S', ""), frame('S', ""), frame('o', strings.Repeat("x", 100)), resultFrame(okResult)},
		{frame('R', `{"outcome":"time_limit","time":-5,"memory":-1}`)},
		{frame('o', "abc")[:6]},
	} {
		for mode := range byte(3) {
			f.Add(mode, bytes.Join(out, nil))
		}
	}
	f.Fuzz(func(t *testing.T, mode byte, out []byte) {
		fe := newFakeEngine()
		fe.serve = stdout(out)
		r, _ := newFakeRunner(t, fe, nil)
		spec := sandboxtest.Program("python", "print('hi')")
		switch mode % 3 {
		case 1:
			spec = sandboxtest.Program("c", "int main(){}")
			spec.CompileOnly = true
		case 2:
			spec = sandboxtest.Program("c", "int main(){}")
			spec.Artifact = art
		}
		spec.Limits.Output = 64
		started := 0
		streamed := map[sandbox.Stream]int{}
		res, err := r.Run(context.Background(), spec, &sandbox.Streams{
			Started: func() { started++ },
			Output:  func(c sandbox.Chunk) { streamed[c.Stream] += len(c.Data) },
		})
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
		if len(res.Artifact) > 0 && (!spec.CompileOnly || err != nil || len(res.Artifact) > boxinit.MaxArtifact) {
			t.Errorf("an artefact of %d bytes (compile only %v, err %v)", len(res.Artifact), spec.CompileOnly, err)
		}
		if res.Time < 0 || res.CPUTime < 0 || res.CompileTime < 0 || res.Memory < 0 {
			t.Errorf("negative numbers: %+v", res)
		}
	})
}

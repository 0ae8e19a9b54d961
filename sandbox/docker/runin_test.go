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
// the test says, as a hostile container's could be. The exchange itself, both halves, is
// tested in sandbox/boxinit (exchange_test.go); these test the Runner around it: the
// attach stream, the hooks, the panics, the container's removal.

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

// A container that declares a large frame is refused at the frame's header: the attach
// stream reads no further than the engine's frame the exchange needs, and the Runner does
// not read (nor hold) the megabyte that follows. (What else a container's bytes may break
// is boxinit's TestExchangeRefusesWhatBreaksTheProtocol and FuzzExchange.)
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

package transport

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"runbox/sandbox"
	"runbox/sandbox/sandboxtest"
	"runbox/scheduler"
)

// Fuzz targets for every decoder of outside input: the frame reader, the server's
// handshake, and the first frame of a stream (submit, wait, cancel, status). Run one with
//
//	go test ./transport/ -run '^$' -fuzz FuzzHandshake -fuzztime 30s
//
// Inputs that found something new are kept in testdata/fuzz/<target>/ and run as ordinary
// tests by `go test`.

func FuzzReadFrame(f *testing.F) {
	for _, g := range goldenFrames() {
		b, err := encodeGolden(g.typ, g.msg)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, 1<<10)
	}
	f.Add([]byte{}, 0)
	f.Add([]byte{'J', 0xff, 0xff, 0xff, 0xff}, MaxRequestFrame) // declares 4 GiB
	f.Add([]byte{'O', 0, 0, 0, 9, 'a', 'b'}, 16)                // truncated payload
	f.Fuzz(func(t *testing.T, data []byte, max int) {
		max = max & (1<<20 - 1) // a cap the test can afford; never negative
		typ, payload, err := ReadFrame(bytes.NewReader(data), max)
		if err != nil {
			if len(data) >= 5 && payload != nil {
				t.Errorf("payload %q returned with error %v", payload, err)
			}
			return
		}
		if len(payload) > max {
			t.Fatalf("payload of %d bytes over the %d cap", len(payload), max)
		}
		var again bytes.Buffer
		if err := WriteFrame(&again, typ, payload); err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(data, again.Bytes()) {
			t.Errorf("re-encoding %q gave %q", data[:5+len(payload)], again.Bytes())
		}
	})
}

// pipeListener hands the server the far ends of net.Pipe connections.
type pipeListener struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error { l.once.Do(func() { close(l.closed) }); return nil }

func (l *pipeListener) Addr() net.Addr { return &net.UnixAddr{Name: "pipe", Net: "pipe"} }

// dial returns the client end of a new connection to the server.
func (l *pipeListener) dial() net.Conn {
	c, s := net.Pipe()
	l.conns <- s
	return c
}

// boundedRunner is the Fake with a 100ms time limit on every run, so that a fuzzed
// program cannot hold a slot for long.
type boundedRunner struct{ sandboxtest.Fake }

func (r *boundedRunner) Run(ctx context.Context, spec sandbox.Spec, s *sandbox.Streams) (sandbox.Result, error) {
	rctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	res, err := r.Fake.Run(rctx, spec, s)
	if err != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
		return sandbox.Result{Status: sandbox.StatusTimeLimit, ExitCode: 137, Signal: "SIGKILL"}, nil
	}
	return res, err
}

// fuzzServer starts a Server for a fuzz target on a pipe listener; the scheduler answers
// busy rather than queueing without bound.
func fuzzServer(f *testing.F, handshake time.Duration) *pipeListener {
	scfg := scheduler.DefaultConfig()
	scfg.MaxPrograms, scfg.Queue, scfg.Retain = 4, 4, 16
	sched, err := scheduler.New(scfg, &boundedRunner{}, scheduler.NewMemJournal(16))
	if err != nil {
		f.Fatal(err)
	}
	tcfg := DefaultServerConfig()
	tcfg.HandshakeTimeout = handshake
	tcfg.FirstFrameTimeout = 200 * time.Millisecond
	tcfg.KeepAlive = 100 * time.Millisecond
	srv, err := NewServer(tcfg, sched)
	if err != nil {
		f.Fatal(err)
	}
	ln := newPipeListener()
	go srv.Serve(ln)
	f.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			f.Errorf("shutdown: %v (a connection or stream goroutine hangs)", err)
		}
		sched.Close()
	})
	return ln
}

// FuzzHandshake feeds arbitrary bytes to a server as a new connection. The server must
// not panic, and must either welcome the client or close the connection within its
// handshake timeout (plus slack for a loaded machine), whatever it was sent.
func FuzzHandshake(f *testing.F) {
	const timeout = 50 * time.Millisecond
	ln := fuzzServer(f, timeout)

	hello, _ := encodeGolden(FrameHello, Hello{Role: RoleClient, Name: "fuzz"})
	slave, _ := encodeGolden(FrameHello, Hello{Role: RoleSlave})
	submit, _ := encodeGolden(FrameSubmit, Submit{Spec: sandboxtest.Program("python", "out hi")})
	f.Add([]byte{})
	f.Add([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	f.Add(Preamble[:])
	f.Add(append(Preamble[:6:6], 9))                      // another version
	f.Add(append(Preamble[:], 'H', 0, 0, 0, 2, '{', '}')) // no role
	f.Add(append(Preamble[:], 'H', 0x7f, 0, 0, 0))        // over the hello cap
	f.Add(append(Preamble[:], hello...))
	f.Add(append(Preamble[:], slave...))
	// A whole job: handshake, yamux SYN for stream 1, the submit as a yamux data frame.
	job := append(Preamble[:], hello...)
	job = append(job, 0, 1, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0)
	job = append(job, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, byte(len(submit)))
	f.Add(append(job, submit...))

	f.Fuzz(func(t *testing.T, data []byte) {
		conn := ln.dial()
		defer conn.Close()
		go func() { conn.Write(data) }() // blocks until the server reads it all, or fails when it hangs up

		got := make(chan []byte, 1)
		go func() { b, _ := io.ReadAll(conn); got <- b }()
		var out []byte
		select {
		case out = <-got:
		case <-time.After(timeout + 3*time.Second):
			// Still open: only a welcomed client may keep its connection.
			conn.Close()
			out = <-got
			if typ, _, err := ReadFrame(bytes.NewReader(out), 64<<10); err != nil || typ != FrameWelcome {
				t.Fatalf("server kept the connection open past its handshake timeout without a welcome; it sent %q", out)
			}
			return
		}
		// Closed: whatever came before the close is a welcome or one error frame.
		if len(out) == 0 {
			return
		}
		typ, payload, err := ReadFrame(bytes.NewReader(out), 64<<10)
		if err != nil {
			t.Fatalf("server sent a broken frame %q: %v", out, err)
		}
		switch typ {
		case FrameWelcome:
		case FrameError:
			var e Error
			if err := json.Unmarshal(payload, &e); err != nil || e.Code == "" || e.Code == "internal" {
				t.Errorf("handshake refusal %q", payload)
			}
		default:
			t.Errorf("server answered the handshake with frame %q", typ)
		}
	})
}

// FuzzFirstFrame sends an arbitrary first frame on a new stream of a welcomed client
// session: the server must answer with a well-formed frame sequence (an error frame with
// a known code other than internal, or a job's accepted frame and then its events), or
// close the stream, and never hang past its timeouts.
func FuzzFirstFrame(f *testing.F) {
	ln := fuzzServer(f, time.Second)
	cfg := DefaultClientConfig()
	conn := ln.dial()
	if _, err := clientHandshake(conn, cfg); err != nil {
		f.Fatal(err)
	}
	sess, err := yamux.Client(conn, yamuxConfig(cfg.KeepAlive, clientBacklog))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { sess.Close() })

	add := func(typ byte, msg any) {
		b, err := encodeGolden(typ, msg)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b[0], b[5:])
	}
	add(FrameSubmit, Submit{Spec: sandboxtest.Program("python", "out hi\nerr there\nexit 3")})
	add(FrameSubmit, Submit{Spec: sandboxtest.Program("cobol", "x")})
	add(FrameSubmit, Submit{Spec: sandboxtest.Program("python", "")})
	add(FrameSubmit, Submit{Spec: sandboxtest.Program("c", "compile main.c:1: error")})
	add(FrameSubmit, Submit{Spec: sandboxtest.Program("python", "sleep 1s"), Interactive: true})
	add(FrameSubmit, Submit{Spec: sandbox.Spec{Language: "python", Files: []sandbox.File{{Name: "../x", Content: []byte("x")}}}})
	add(FrameSubmit, Submit{Spec: sandbox.Spec{Language: "python", Files: []sandbox.File{{Content: []byte("out x")}},
		Limits: sandbox.Limits{RunTime: -time.Second, Memory: 1 << 62}}})
	add(FrameWait, Wait{ID: goldenID, From: 0})
	add(FrameWait, Wait{ID: "", From: -1})
	add(FrameCancel, Cancel{ID: goldenID})
	add(FrameStatus, nil)
	add(FrameStdin, []byte("x"))
	f.Add(byte('J'), []byte(`{"spec":`))
	f.Add(byte('J'), []byte(`{"spec":{"language":"python","files":[{"content":"not base64!"}]}}`))
	f.Add(byte('W'), []byte(`{"id":7}`))
	f.Add(byte(0), []byte{})

	known := map[string]bool{}
	for _, c := range []string{"busy", "not_found", "cancelled", "invalid_request", "unknown_language", "too_large", "protocol", "unavailable"} {
		known[c] = true
	}
	f.Fuzz(func(t *testing.T, typ byte, payload []byte) {
		if len(payload) > MaxFrame {
			return
		}
		st, err := sess.OpenStream()
		if err != nil {
			t.Fatalf("open stream: %v (the session died)", err)
		}
		defer st.Close()
		if err := WriteFrame(st, typ, payload); err != nil {
			t.Fatalf("write: %v", err)
		}
		st.SetReadDeadline(time.Now().Add(5 * time.Second))
		var seq []byte
		for {
			rt, rp, err := ReadFrame(st, MaxRequestFrame)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("after %q: %v (frames so far %q)", typ, err, seq)
			}
			seq = append(seq, rt)
			if rt == FrameError {
				var e Error
				if err := json.Unmarshal(rp, &e); err != nil || !known[e.Code] {
					t.Errorf("first frame %q %q: error frame %q", typ, payload, rp)
				}
				continue
			}
			if !slices.Contains([]byte{FrameAccepted, FrameQueued, FrameStarted, FrameStdout, FrameStderr, FrameCompile, FrameResult, FrameStatus}, rt) {
				t.Errorf("first frame %q: server sent frame %q", typ, rt)
			}
		}
		// An answer ends with a result, an error, a status or (cancel) an accepted frame.
		if len(seq) == 0 {
			return // closed without a word: a silent or broken frame
		}
		switch seq[len(seq)-1] {
		case FrameResult, FrameError, FrameStatus, FrameAccepted:
		default:
			t.Errorf("first frame %q: the answer %q ends without a result or error", typ, seq)
		}
	})
}

// FuzzSlaveFrames: whatever a slave sends on a job stream, the master's remote runner
// returns (no panic, no hang), forwards no more output than the job's limit plus
// outputSlack, and a result it accepts is one a sandbox could give.
func FuzzSlaveFrames(f *testing.F) {
	var fine bytes.Buffer
	writeJSON(&fine, FrameStarted, Started{Node: "s"})
	WriteFrame(&fine, FrameStdout, []byte("hello\n"))
	writeJSON(&fine, FrameResult, Result{Status: sandbox.StatusOK, Memory: 1 << 20})
	f.Add(fine.Bytes())
	for _, g := range goldenFrames() {
		if b, err := encodeGolden(g.typ, g.msg); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte{FrameStdout, 0, 0x10, 0, 0}) // declares 1 MiB, sends nothing
	f.Fuzz(func(t *testing.T, data []byte) {
		r, slave := rogueSlave(t)
		go func() {
			st, err := slave.AcceptStream()
			if err != nil {
				return
			}
			ReadFrame(st, MaxRequestFrame)
			st.Write(data)
			st.Close()
		}()
		spec := sandboxtest.Program("python", "x")
		spec.Limits.Output = 64 << 10
		var forwarded int64
		res, err := r.Run(context.Background(), spec, &sandbox.Streams{Output: func(c sandbox.Chunk) { forwarded += int64(len(c.Data)) }})
		if forwarded > spec.Limits.Output+outputSlack {
			t.Errorf("%d bytes of output forwarded for a %d byte limit", forwarded, spec.Limits.Output)
		}
		if err == nil && (!res.Status.Valid() || res.Node != "rogue") {
			t.Errorf("accepted result %+v", res)
		}
	})
}

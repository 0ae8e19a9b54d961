package transport

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"runbox/sandbox"
	"runbox/sandbox/sandboxtest"
	"runbox/scheduler"
)

type testServer struct {
	addr  string
	srv   *Server
	sched *scheduler.Scheduler
	fake  *sandboxtest.Fake
}

func startServer(t testing.TB, mod func(*scheduler.Config, *ServerConfig)) *testServer {
	t.Helper()
	fake := &sandboxtest.Fake{}
	ts := startServerWith(t, fake, mod)
	ts.fake = fake
	return ts
}

// startServerWith starts a master on loopback whose own sandbox is runner.
func startServerWith(t testing.TB, runner sandbox.Runner, mod func(*scheduler.Config, *ServerConfig)) *testServer {
	t.Helper()
	scfg := scheduler.DefaultConfig()
	tcfg := DefaultServerConfig()
	tcfg.FirstFrameTimeout = 2 * time.Second
	tcfg.HandshakeTimeout = 2 * time.Second
	if mod != nil {
		mod(&scfg, &tcfg)
	}
	sched, err := scheduler.New(scfg, runner, scheduler.NewMemJournal(1000))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := NewServer(tcfg, sched)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		sched.Close()
	})
	return &testServer{addr: ln.Addr().String(), srv: srv, sched: sched}
}

func dialT(t testing.TB, addr string, mod func(*ClientConfig)) *Client {
	t.Helper()
	cfg := DefaultClientConfig()
	cfg.Reconnect = 5 * time.Second
	if mod != nil {
		mod(&cfg)
	}
	c, err := Dial(context.Background(), addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func prog(src string) sandbox.Spec { return sandboxtest.Program("python", src) }

func TestSubmitStreamsAndResult(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	c := dialT(t, ts.addr, nil)
	var live bytes.Buffer
	var id, node string
	res, err := c.Run(context.Background(), prog("out hello\nerr oops\nexit 4"), RunOptions{Handler: Handler{
		Accepted: func(s string) { id = s },
		Started:  func(n string) { node = n },
		Output: func(ch sandbox.Chunk) {
			if ch.Stream == sandbox.Stdout {
				live.Write(ch.Data)
			}
		},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != sandbox.StatusRuntimeError || res.ExitCode != 4 || string(res.Stdout) != "hello\n" || string(res.Stderr) != "oops\n" {
		t.Errorf("result %+v", res)
	}
	if id == "" || node != "master" || res.Node != "master" || res.Attempts != 1 || live.String() != "hello\n" {
		t.Errorf("id %q node %q/%q attempts %d live %q", id, node, res.Node, res.Attempts, live.String())
	}
	// The result stays available by id.
	again, err := c.Wait(context.Background(), id, Handler{})
	if err != nil || string(again.Stdout) != "hello\n" || again.ExitCode != 4 {
		t.Errorf("wait by id: %v %+v", err, again)
	}
}

func TestSimpleServerBusy(t *testing.T) {
	t.Parallel()
	// --max-programs 1 --queue 0: the simple server of the brief.
	ts := startServer(t, func(s *scheduler.Config, _ *ServerConfig) { s.MaxPrograms = 1; s.Queue = 0 })
	c1 := dialT(t, ts.addr, nil)
	c2 := dialT(t, ts.addr, nil)
	started := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		_, err := c1.Run(context.Background(), prog("sleep 500ms\nout done"), RunOptions{Handler: Handler{Started: func(string) { close(started) }}})
		errc <- err
	}()
	<-started
	_, err := c2.Run(context.Background(), prog("out second"), RunOptions{})
	if !errors.Is(err, scheduler.ErrBusy) || !strings.Contains(err.Error(), "try another server") {
		t.Errorf("second client: %v, want busy telling to try another server", err)
	}
	if err := <-errc; err != nil {
		t.Errorf("first client: %v", err)
	}
}

func TestErrorsCrossTheWire(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	c := dialT(t, ts.addr, nil)
	for _, tc := range []struct {
		spec sandbox.Spec
		want error
	}{
		{sandboxtest.Program("cobol", "x"), sandbox.ErrUnknownLanguage},
		{prog(""), sandbox.ErrInvalidRequest},
		{prog(strings.Repeat("x", sandbox.MaxSourceBytes+1)), sandbox.ErrTooLarge},
		{prog("crash"), sandbox.ErrUnavailable},
	} {
		_, err := c.Run(context.Background(), tc.spec, RunOptions{})
		if !errors.Is(err, tc.want) {
			t.Errorf("%q: err %v, want %v", tc.spec.Language, err, tc.want)
		}
	}
}

func TestInteractiveStdin(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	c := dialT(t, ts.addr, nil)
	in := make(chan []byte)
	go func() {
		in <- []byte("first ")
		in <- []byte("second")
		close(in)
	}()
	res, err := c.Run(context.Background(), prog("cat"), RunOptions{Stdin: in})
	if err != nil || string(res.Stdout) != "first second" {
		t.Errorf("%v %q", err, res.Stdout)
	}
}

func TestCancelRunningJob(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	c := dialT(t, ts.addr, nil)
	ctx, cancel := context.WithCancel(context.Background())
	_, err := c.Run(ctx, prog("sleep 60s"), RunOptions{Handler: Handler{Started: func(string) { cancel() }}})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err %v", err)
	}
	waitUntil(t, func() bool { return ts.sched.Snapshot(0).Nodes[0].Running == 0 })
	if snap := ts.sched.Snapshot(0); snap.Totals.Failed != 1 {
		t.Errorf("the cancelled job did not end: %+v", snap.Totals)
	}
}

func TestQueuePositionsReachClient(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(s *scheduler.Config, _ *ServerConfig) { s.MaxPrograms = 1; s.Queue = 5 })
	c := dialT(t, ts.addr, nil)
	go c.Run(context.Background(), prog("sleep 300ms"), RunOptions{})
	waitUntil(t, func() bool { return ts.sched.Snapshot(0).Nodes[0].Running == 1 })
	var positions []int
	_, err := c.Run(context.Background(), prog("out x"), RunOptions{Handler: Handler{Queued: func(p int) { positions = append(positions, p) }}})
	if err != nil || len(positions) != 1 || positions[0] != 1 {
		t.Errorf("%v positions %v", err, positions)
	}
}

// flakyProxy forwards TCP to target and can cut every connection at once.
type flakyProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
}

func newProxy(t *testing.T, target string) *flakyProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &flakyProxy{ln: ln, target: target}
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, in, out)
			p.mu.Unlock()
			go func() { io.Copy(out, in); out.Close() }()
			go func() { io.Copy(in, out); in.Close() }()
		}
	}()
	t.Cleanup(func() { ln.Close(); p.cut() })
	return p
}

func (p *flakyProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func TestReconnectResumesWithoutDuplicates(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	proxy := newProxy(t, ts.addr)
	c := dialT(t, proxy.ln.Addr().String(), nil)
	var live bytes.Buffer
	reconnects := 0
	res, err := c.Run(context.Background(), prog("out one\nsleep 400ms\nout two\nsleep 400ms\nout three"), RunOptions{Handler: Handler{
		Output: func(ch sandbox.Chunk) {
			live.Write(ch.Data)
			if string(ch.Data) == "one\n" {
				go proxy.cut() // break the connection mid-job
			}
		},
		Reconnecting: func(error) { reconnects++ },
	}})
	if err != nil {
		t.Fatal(err)
	}
	if string(res.Stdout) != "one\ntwo\nthree\n" || live.String() != "one\ntwo\nthree\n" {
		t.Errorf("after reconnect: stdout %q live %q", res.Stdout, live.String())
	}
	if reconnects == 0 {
		t.Error("the connection was never cut")
	}
}

func TestGarbageAndBadHandshakes(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	raw := func(data []byte) []byte {
		conn, err := net.Dial("tcp", ts.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.Write(data)
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		b, _ := io.ReadAll(conn) // the server closes after its answer, if any
		return b
	}
	// Garbage: closed without a word.
	if b := raw([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); len(b) != 0 {
		t.Errorf("garbage got %q", b)
	}
	// Wrong version: an explicit error frame.
	b := raw([]byte("RUNBOX\x09"))
	if typ, p, err := ReadFrame(bytes.NewReader(b), MaxFrame); err != nil || typ != FrameError || !strings.Contains(string(p), "unsupported_version") {
		t.Errorf("wrong version: %q %q %v", typ, p, err)
	}
	// A hello frame over its cap.
	var big bytes.Buffer
	big.Write(Preamble[:])
	big.Write([]byte{FrameHello, 0xff, 0xff, 0xff, 0xff})
	if b := raw(big.Bytes()); len(b) != 0 {
		t.Errorf("oversized hello got %q", b)
	}
	// Silent connection: closed at the handshake timeout.
	if b := raw(nil); len(b) != 0 {
		t.Errorf("silent connection got %q", b)
	}
	// A bad role.
	var bad bytes.Buffer
	bad.Write(Preamble[:])
	WriteFrame(&bad, FrameHello, []byte(`{"role":"admin"}`))
	if typ, p, _ := ReadFrame(bytes.NewReader(raw(bad.Bytes())), MaxFrame); typ != FrameError || !strings.Contains(string(p), "protocol") {
		t.Errorf("bad role: %q %q", typ, p)
	}
	// The server still serves.
	c := dialT(t, ts.addr, nil)
	if res, err := c.Run(context.Background(), prog("out ok"), RunOptions{}); err != nil || string(res.Stdout) != "ok\n" {
		t.Errorf("after bad clients: %v %+v", err, res)
	}
}

func TestBadStreams(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	c := dialT(t, ts.addr, nil)
	ctx := context.Background()
	first := func(typ byte, payload []byte, declared int) (byte, []byte) {
		st, err := c.openStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		if declared >= 0 { // a header that lies about its length
			st.Write([]byte{typ, byte(declared >> 24), byte(declared >> 16), byte(declared >> 8), byte(declared)})
			st.Write(payload)
		} else if payload != nil || typ != 0 {
			WriteFrame(st, typ, payload)
		}
		st.SetReadDeadline(time.Now().Add(5 * time.Second))
		rt, rp, _ := ReadFrame(st, MaxRequestFrame)
		return rt, rp
	}
	if typ, p := first(FrameSubmit, nil, MaxRequestFrame+1); typ != FrameError || !strings.Contains(string(p), `"too_large"`) || !strings.Contains(string(p), "16MiB cap") {
		t.Errorf("frame over cap: %q %q", typ, p)
	}
	if typ, _ := first(FrameSubmit, []byte("{"), 100); typ != 0 {
		t.Errorf("truncated frame answered %q", typ)
	}
	if typ, _ := first(0, nil, -1); typ != 0 {
		t.Errorf("silent stream answered %q", typ)
	}
	if typ, p := first(FrameSubmit, []byte("not json"), -1); typ != FrameError || !strings.Contains(string(p), "invalid_request") {
		t.Errorf("bad json: %q %q", typ, p)
	}
	if typ, p := first('Z', nil, -1); typ != FrameError || !strings.Contains(string(p), "protocol") {
		t.Errorf("unknown frame: %q %q", typ, p)
	}
	if typ, p := first(FrameWait, []byte(`{"id":"nope"}`), -1); typ != FrameError || !strings.Contains(string(p), "not_found") {
		t.Errorf("wait unknown id: %q %q", typ, p)
	}
	judged := prog("cat")
	judged.Tests = []sandbox.TestCase{{Stdin: []byte("x"), Expected: []byte("x")}}
	b, _ := json.Marshal(Submit{Spec: judged, Interactive: true})
	if typ, p := first(FrameSubmit, b, -1); typ != FrameError || !strings.Contains(string(p), "invalid_request") || !strings.Contains(string(p), "interactive") {
		t.Errorf("interactive judged program: %q %q", typ, p)
	}
	if res, err := c.Run(ctx, prog("out fine"), RunOptions{}); err != nil || string(res.Stdout) != "fine\n" {
		t.Errorf("after bad streams: %v", err)
	}
}

func TestSlaveSessionCannotSubmit(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	c := dialT(t, ts.addr, func(cfg *ClientConfig) { cfg.Role = RoleSlave })
	// The master takes the stream for a slave's registration and refuses it: the error
	// frame, or the session closing right after it, whichever the client sees first.
	if _, err := c.Run(context.Background(), prog("out x"), RunOptions{}); !errors.Is(err, ErrProtocol) && !errors.Is(err, ErrConnect) {
		t.Errorf("err %v", err)
	}
}

func TestAuthenticateHook(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(_ *scheduler.Config, c *ServerConfig) {
		c.Authenticate = func(h Hello) error {
			if h.Token != "s3cret" {
				return ErrUnauthorized
			}
			return nil
		}
	})
	_, err := Dial(context.Background(), ts.addr, ClientConfig{Token: "wrong"})
	if !errors.Is(err, ErrUnauthorized) {
		t.Errorf("wrong token: %v", err)
	}
	dialT(t, ts.addr, func(c *ClientConfig) { c.Token = "s3cret" })
}

func TestConnectionRefusedIsClear(t *testing.T) {
	t.Parallel()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	_, err := Dial(context.Background(), addr, DefaultClientConfig())
	if !errors.Is(err, ErrConnect) || !strings.Contains(err.Error(), addr) {
		t.Errorf("err %v", err)
	}
}

// TestNoLeaks: idle connections, vanished clients, jobs cancelled by disconnect: once they
// are gone, the goroutine count returns to where it was.
func TestNoLeaks(t *testing.T) {
	ts := startServer(t, func(_ *scheduler.Config, c *ServerConfig) { c.MaxConnsPerAddress = 2000 })
	// Warm up one client so lazily started goroutines exist before the baseline.
	warm := dialT(t, ts.addr, nil)
	warm.Run(context.Background(), prog("out warm"), RunOptions{})
	base := settledGoroutines(t)

	// 1,000 idle connections that completed the handshake, then a client still served.
	var idle []*Client
	for i := 0; i < 1000; i++ {
		c, err := Dial(context.Background(), ts.addr, DefaultClientConfig())
		if err != nil {
			t.Fatalf("idle connection %d: %v", i, err)
		}
		idle = append(idle, c)
	}
	busy := dialT(t, ts.addr, nil)
	if res, err := busy.Run(context.Background(), prog("out served"), RunOptions{}); err != nil || string(res.Stdout) != "served\n" {
		t.Fatalf("with 1000 idle connections: %v", err)
	}
	for _, c := range idle {
		c.Close()
	}
	busy.Close()

	// A client that vanishes mid-job: the job still finishes.
	gone, _ := Dial(context.Background(), ts.addr, DefaultClientConfig())
	go gone.Run(context.Background(), prog("sleep 200ms\nout x"), RunOptions{Handler: Handler{Started: func(string) { gone.Close() }}})

	waitUntil(t, func() bool {
		snap := ts.sched.Snapshot(0)
		return snap.Totals.Finished >= 3 && snap.Nodes[0].Running == 0
	})
	deadline := time.Now().Add(30 * time.Second) // 1,000 sessions wind down; slow under -race on 2 cores
	for runtime.NumGoroutine() > base+2 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > base+2 {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines, %d before: leak\n%s", n, base, buf[:runtime.Stack(buf, true)])
	}
}

// settledGoroutines polls the goroutine count until the goroutines of what just ended
// (a job's stream on both sides) are gone: until it stops falling over 10 samples.
func settledGoroutines(t *testing.T) int {
	t.Helper()
	n, same := runtime.NumGoroutine(), 0
	waitUntil(t, func() bool {
		switch m := runtime.NumGoroutine(); {
		case m < n:
			n, same = m, 0
		default:
			same++
		}
		return same >= 10
	})
	return n
}

// reserved reports whether srv's request budget holds at least n bytes of requests
// being received (a barrier: the server read their headers).
func reserved(srv *Server, n int64) bool {
	free := srv.cfg.RequestBytes - n + 1
	if srv.requestBytes.TryAcquire(free) {
		srv.requestBytes.Release(free)
		return false
	}
	return true
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestStatus(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	c := dialT(t, ts.addr, nil)
	c.Run(context.Background(), prog("out x"), RunOptions{})
	snap, err := c.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(snap)
	if len(snap.Nodes) != 1 || snap.Totals.Finished != 1 || len(snap.Recent) != 1 || snap.Recent[0].Status != sandbox.StatusOK {
		t.Errorf("status %s", b)
	}
}

// A resume cursor out of the job's log is refused, and one at the end of a finished
// job's log gets the result again: neither waits for what cannot come.
func TestWaitCursorBounds(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	c := dialT(t, ts.addr, nil)
	ctx := context.Background()
	var id string
	res, err := c.Run(ctx, prog("out done"), RunOptions{Handler: Handler{Accepted: func(s string) { id = s }}})
	if err != nil || res.Status != sandbox.StatusOK {
		t.Fatalf("run: %v %+v", err, res)
	}
	job, err := ts.sched.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	events, _, err := job.Events(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	wait := func(from int) (typs []byte, last []byte) {
		st, err := c.openStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		writeJSON(st, FrameWait, Wait{ID: id, From: from, Epoch: ts.sched.Epoch()})
		st.SetReadDeadline(time.Now().Add(5 * time.Second))
		for {
			typ, p, err := ReadFrame(st, MaxFrame)
			if err != nil {
				if !errors.Is(err, io.EOF) {
					t.Errorf("wait from %d: %v after %q", from, err, typs)
				}
				return typs, last
			}
			typs, last = append(typs, typ), p
		}
	}
	for _, from := range []int{-1, len(events) + 1, 1 << 30} {
		if typs, p := wait(from); string(typs) != string([]byte{FrameAccepted, FrameError}) || !strings.Contains(string(p), "invalid_request") {
			t.Errorf("wait from %d: frames %q, last %s", from, typs, p)
		}
	}
	if typs, _ := wait(len(events)); string(typs) != string([]byte{FrameAccepted, FrameResult}) {
		t.Errorf("wait from the end: frames %q, want the result again", typs)
	}
	if typs, _ := wait(0); len(typs) != 1+len(events) || typs[len(typs)-1] != FrameResult {
		t.Errorf("wait from 0: frames %q for %d events", typs, len(events))
	}
}

// A header that declares a large request costs the server nothing until its bytes come:
// 100 streams each declaring the largest request hold a few MiB, not 100 x 16 MiB.
// (Not parallel: it reads the process's heap.)
func TestDeclaredSizeIsNotAllocated(t *testing.T) {
	ts := startServer(t, nil)
	c := dialT(t, ts.addr, nil)
	ctx := context.Background()
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	const streams = 100
	var sts []io.Closer
	for range streams {
		st, err := c.openStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		sts = append(sts, st)
		n := MaxRequestFrame
		st.Write([]byte{FrameSubmit, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
		st.Write(bytes.Repeat([]byte{'x'}, 1000))
	}
	// Barrier: the server holds all of them. The session's budget took 4 of the largest
	// requests (reading their payloads, which never come); every other stream is answered
	// busy (over the session's budget, or its MaxStreams) or reset by yamux (past its
	// accept backlog).
	fit := int(ts.srv.cfg.SessionRequestBytes / MaxRequestFrame)
	var answered atomic.Int64
	for _, st := range sts {
		go func() {
			ReadFrame(st.(io.Reader), MaxFrame)
			answered.Add(1)
		}()
	}
	waitUntil(t, func() bool {
		return answered.Load() >= int64(streams-fit) && reserved(ts.srv, int64(fit*MaxRequestFrame))
	})
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	grew := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	if grew > 64<<20 {
		t.Errorf("heap grew by %d MiB for %d streams that declared %d MiB each and sent 1000 bytes", grew>>20, streams, MaxRequestFrame>>20)
	}
	for _, st := range sts {
		st.Close()
	}
	// The session serves again once the server has seen its streams closed (until then
	// they hold its MaxStreams places: busy).
	waitUntil(t, func() bool {
		res, err := c.Run(ctx, prog("out fine"), RunOptions{})
		return err == nil && string(res.Stdout) == "fine\n"
	})
}

// Large requests being received at once are bounded per connection: past the budget, a
// request is answered busy (after its bytes are read and dropped), and the requests that
// fit go through.
func TestRequestBudget(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(_ *scheduler.Config, c *ServerConfig) { c.SessionRequestBytes = 1 << 20 })
	c := dialT(t, ts.addr, nil)
	ctx := context.Background()
	src := "out big\nexit 0\n" + strings.Repeat("x", 600<<10) // the Fake stops at exit
	body, _ := json.Marshal(Submit{Spec: prog(src)})

	// The first request sends its header and half its payload, and holds its reservation.
	first, err := c.openStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	var frame bytes.Buffer
	WriteFrame(&frame, FrameSubmit, body)
	half := frame.Len() / 2
	first.Write(frame.Bytes()[:half])
	waitUntil(t, func() bool { return reserved(ts.srv, int64(len(body))) }) // the server read the header and reserved

	second, err := c.openStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	if _, err := second.Write(frame.Bytes()); err != nil {
		t.Fatal(err)
	}
	second.SetReadDeadline(time.Now().Add(5 * time.Second))
	typ, p, err := ReadFrame(second, MaxFrame)
	if err != nil || typ != FrameError || !strings.Contains(string(p), `"busy"`) {
		t.Fatalf("second request over the budget: %q %s %v", typ, p, err)
	}

	first.Write(frame.Bytes()[half:])
	first.SetReadDeadline(time.Now().Add(5 * time.Second))
	typ, p, err = ReadFrame(first, MaxFrame)
	if err != nil || typ != FrameAccepted {
		t.Fatalf("first request: %q %s %v", typ, p, err)
	}
	// Its reservation is released: a third request goes through.
	res, err := c.Run(ctx, prog(src), RunOptions{})
	if err != nil || string(res.Stdout) != "big\n" {
		t.Errorf("third request: %v %q", err, res.Stdout)
	}
}

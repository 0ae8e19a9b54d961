package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/test"

	"runbox/sandbox"
	"runbox/scheduler"
	"runbox/transport"
)

// The widget tests do not call t.Parallel: Fyne keeps the current app, its settings and
// its caches in package variables, which parallel tests would share.

// harness drives a window headless. The test goroutine is the UI goroutine: Config.Do
// queues work that until runs, so widgets are only ever touched from the test's
// goroutine. The clock and the tickers are the test's: a timer moves when tick says so.
type harness struct {
	t      *testing.T
	ui     *UI
	win    fyne.Window
	q      *uiQueue
	clock  *fakeClock
	timer  chan time.Time // the job timers' ticks
	status chan time.Time // the cluster tab's ticks
	app    fyne.App
}

func newHarness(t *testing.T, dial Dialer, mod func(*Config)) *harness {
	t.Helper()
	a := test.NewTempApp(t)
	h := &harness{t: t, app: a, q: newUIQueue(), clock: &fakeClock{now: time.Date(2025, 3, 14, 15, 9, 26, 0, time.UTC)},
		timer: make(chan time.Time), status: make(chan time.Time)}
	cfg := DefaultConfig(a)
	cfg.Dial = dial
	cfg.Do = h.q.do
	cfg.Now = h.clock.Now
	cfg.TimerEvery, cfg.StatusEvery = 100*time.Millisecond, time.Second
	cfg.Ticker = func(d time.Duration) (<-chan time.Time, func()) {
		if d == cfg.TimerEvery {
			return h.timer, func() {}
		}
		return h.status, func() {}
	}
	if mod != nil {
		mod(&cfg)
	}
	h.win = test.NewWindow(nil)
	ui, err := New(h.win, cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.ui = ui
	h.win.Resize(fyne.NewSize(1200, 800))
	t.Cleanup(func() {
		if err := ui.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		h.win.Close()
	})
	return h
}

// until runs the window's queued work until cond holds. The deadline only turns a hang
// into a failure with a name; nothing is timed.
func (h *harness) until(what string, cond func() bool) {
	h.t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		h.q.drain()
		if cond() {
			return
		}
		select {
		case <-h.q.ready:
		case <-deadline:
			h.t.Fatalf("gave up waiting for %s", what)
		}
	}
}

// tick moves the clock by d, ticks the job timers and runs the tick's work.
func (h *harness) tick(d time.Duration) {
	h.clock.Advance(d)
	sendTick(h.timer, h.clock.Now())
	h.q.drain()
}

// statusTick ticks the cluster tab's refresh and runs the tick's work.
func (h *harness) statusTick() {
	sendTick(h.status, h.clock.Now())
	h.q.drain()
}

// sendTick ticks twice: the ticker goroutine takes the second tick only after it queued
// the first one's work, so that work is queued when sendTick returns. (The second tick
// repeats the first, at the same time.)
func sendTick(ch chan time.Time, t time.Time) {
	ch <- t
	ch <- t
}

// typeProgram types src into the editor, line by line.
func (h *harness) typeProgram(src string) {
	e := h.ui.prog.editor
	e.SetText("")
	for i, line := range strings.Split(src, "\n") {
		if i > 0 {
			e.TypedKey(&fyne.KeyEvent{Name: fyne.KeyReturn})
		}
		test.Type(e, line)
	}
	if e.Text != src {
		h.t.Fatalf("typed %q, editor holds %q", src, e.Text)
	}
}

// setServer replaces the server fields as a user would.
func (h *harness) setServer(addr string) {
	h.t.Helper()
	host, port, err := splitServer(addr)
	if err != nil {
		h.t.Fatal(err)
	}
	h.ui.srv.host.SetText("")
	test.Type(h.ui.srv.host, host)
	h.ui.srv.port.SetText("")
	test.Type(h.ui.srv.port, port)
}

// rows returns the job list's rows as drawn, top first.
func (h *harness) rows() []*jobRow {
	var rows []*jobRow
	for _, o := range test.LaidOutObjects(h.ui.list) {
		if r, ok := o.(*jobRow); ok && r.Visible() && r.name.Text != "" {
			rows = append(rows, r)
		}
	}
	return rows
}

// rowOf returns the drawn row of job seq.
func (h *harness) rowOf(seq int) *jobRow {
	h.t.Helper()
	h.ui.list.Refresh()
	for _, r := range h.rows() {
		if strings.HasPrefix(r.name.Text, fmt.Sprintf("#%d ", seq)) {
			return r
		}
	}
	h.t.Fatalf("no row for job #%d", seq)
	return nil
}

// uiQueue is Config.Do for tests: an unbounded FIFO that the test goroutine runs.
type uiQueue struct {
	mu    sync.Mutex
	fns   []func()
	ready chan struct{}
}

func newUIQueue() *uiQueue { return &uiQueue{ready: make(chan struct{}, 1)} }

func (q *uiQueue) do(fn func()) {
	q.mu.Lock()
	q.fns = append(q.fns, fn)
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

func (q *uiQueue) drain() {
	for {
		q.mu.Lock()
		fns := q.fns
		q.fns = nil
		q.mu.Unlock()
		if len(fns) == 0 {
			return
		}
		for _, fn := range fns {
			fn()
		}
	}
}

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// fakeServers is a Dialer whose clients hand every Run to the test, which then plays the
// server's part: events, then a result or an error.
type fakeServers struct {
	mu       sync.Mutex
	dials    []Server
	dialErr  map[string]error // by address
	snapshot scheduler.Snapshot
	statErr  error
	closed   int

	runs chan *fakeRun
}

func newFakeServers() *fakeServers {
	return &fakeServers{dialErr: map[string]error{}, runs: make(chan *fakeRun, 16)}
}

func (f *fakeServers) dial(_ context.Context, s Server) (Client, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dials = append(f.dials, s)
	if err := f.dialErr[s.Addr]; err != nil {
		return nil, err
	}
	return &fakeClient{f: f, server: s}, nil
}

func (f *fakeServers) setDialErr(addr string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dialErr[addr] = err
}

func (f *fakeServers) setSnapshot(s scheduler.Snapshot, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.snapshot, f.statErr = s, err
}

func (f *fakeServers) dialCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.dials)
}

// next returns the next Run the window made.
func (f *fakeServers) next(t *testing.T) *fakeRun {
	t.Helper()
	select {
	case r := <-f.runs:
		return r
	case <-time.After(30 * time.Second):
		t.Fatal("gave up waiting for the window to send a program")
		return nil
	}
}

type fakeClient struct {
	f      *fakeServers
	server Server
}

func (c *fakeClient) Run(ctx context.Context, spec sandbox.Spec, opts transport.RunOptions) (sandbox.Result, error) {
	r := &fakeRun{server: c.server, spec: spec, ctx: ctx, events: make(chan any, 64)}
	c.f.runs <- r
	for {
		select {
		case ev := <-r.events:
			switch ev := ev.(type) {
			case func(transport.Handler):
				ev(opts.Handler)
			case fakeEnd:
				return ev.res, ev.err
			}
		case <-ctx.Done():
			return sandbox.Result{ExitCode: -1}, ctx.Err()
		}
	}
}

func (c *fakeClient) Status(context.Context) (scheduler.Snapshot, error) {
	c.f.mu.Lock()
	defer c.f.mu.Unlock()
	return c.f.snapshot, c.f.statErr
}

func (c *fakeClient) Close() error {
	c.f.mu.Lock()
	c.f.closed++
	c.f.mu.Unlock()
	return nil
}

// fakeRun is one program sent to a fake server; its Run goroutine calls the handler.
type fakeRun struct {
	server Server
	spec   sandbox.Spec
	ctx    context.Context
	events chan any
}

type fakeEnd struct {
	res sandbox.Result
	err error
}

func (r *fakeRun) accepted(id string) { r.events <- func(h transport.Handler) { h.Accepted(id) } }
func (r *fakeRun) queued(pos int)     { r.events <- func(h transport.Handler) { h.Queued(pos) } }
func (r *fakeRun) started(node string) {
	r.events <- func(h transport.Handler) { h.Started(node) }
}
func (r *fakeRun) output(s sandbox.Stream, text string) {
	r.events <- func(h transport.Handler) { h.Output(sandbox.Chunk{Stream: s, Data: []byte(text)}) }
}
func (r *fakeRun) reconnecting() {
	r.events <- func(h transport.Handler) { h.Reconnecting(transport.ErrConnect) }
}
func (r *fakeRun) end(res sandbox.Result, err error) { r.events <- fakeEnd{res, err} }

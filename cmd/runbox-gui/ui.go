package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/container"
	"fyne.io/fyne/v2/driver/desktop"
	"fyne.io/fyne/v2/theme"
	"fyne.io/fyne/v2/widget"

	"runbox/sandbox"
	"runbox/transport"
)

// Defaults of the connection fields (design.md §3).
const (
	DefaultHost = "127.0.0.1"
	DefaultPort = "7700"
)

// Preference keys.
const (
	prefHost    = "server.host"
	prefPort    = "server.port"
	prefTLSCA   = "server.tls_ca"
	prefOpenDir = "open.dir"
	prefTestDir = "tests.dir"
)

// Config configures a window. DefaultConfig fills it for a real app; tests replace the
// clock, the tickers, Do and Dial.
type Config struct {
	// Dial connects to a server.
	Dial Dialer
	// Prefs remembers the server host, port and TLS CA file between runs (never the token).
	Prefs fyne.Preferences
	// Clipboard receives copied output.
	Clipboard fyne.Clipboard
	// Do runs fn on the UI goroutine without waiting (fyne.Do). Goroutines that run jobs
	// change the window only through it.
	Do func(fn func())
	// Now is the job timers' clock.
	Now func() time.Time
	// Ticker returns a channel ticking every d and a function that stops it.
	Ticker func(d time.Duration) (<-chan time.Time, func())
	// TimerEvery is how often the timers tick and new output shows.
	TimerEvery time.Duration
	// StatusEvery is how often the Cluster tab asks for the cluster's status while shown.
	StatusEvery time.Duration
	// StatusTimeout bounds one status request.
	StatusTimeout time.Duration
	// Server, when set (host:port), replaces the remembered server in the fields.
	Server string
	// Token fills the token field.
	Token string
	// TLSCA, when set, replaces the remembered TLS CA file in its field.
	TLSCA string

	// The client directory's credentials (clientDefaults: what `make cluster` wrote, or
	// $RUNBOX_TOKEN), for when the user gives none.
	//
	// DefaultToken is sent when the Token field is empty, and never shown: the field
	// stays empty and its placeholder says where the token comes from (DefaultTokenFrom).
	DefaultToken     string
	DefaultTokenFrom string
	// DefaultTokenCA, when set, is the CA file written with DefaultToken: the token is
	// sent only to a server that this CA vouches for (the TLS CA field names it), never
	// in clear or to another cluster.
	DefaultTokenCA string
	// DefaultTLSCA fills the TLS CA field when TLSCA is empty and no CA file that still
	// exists is remembered.
	DefaultTLSCA string
	// Problem, when set, is shown in the notice at start (a token file that cannot be
	// read, say).
	Problem string
}

// DefaultConfig returns the configuration of a window of app.
func DefaultConfig(app fyne.App) Config {
	return Config{
		Dial:      dialTransport,
		Prefs:     app.Preferences(),
		Clipboard: app.Clipboard(),
		Do:        fyne.Do,
		Now:       time.Now,
		Ticker: func(d time.Duration) (<-chan time.Time, func()) {
			t := time.NewTicker(d)
			return t.C, t.Stop
		},
		TimerEvery:    100 * time.Millisecond,
		StatusEvery:   time.Second,
		StatusTimeout: 5 * time.Second,
	}
}

// Validate reports the first missing or invalid field.
func (c Config) Validate() error {
	switch {
	case c.Dial == nil || c.Prefs == nil || c.Clipboard == nil || c.Do == nil || c.Now == nil || c.Ticker == nil:
		return errors.New("config needs Dial, Prefs, Clipboard, Do, Now and Ticker")
	case c.TimerEvery <= 0 || c.StatusEvery <= 0 || c.StatusTimeout <= 0:
		return errors.New("config needs positive TimerEvery, StatusEvery and StatusTimeout")
	}
	if c.Server != "" {
		if _, _, err := splitServer(c.Server); err != nil {
			return err
		}
	}
	return nil
}

// UI is the client window: the server view (server.go) on top, and two tabs: Program,
// the program view (program.go) beside the jobs and the detail view of the one selected
// (detail.go), and Cluster, the cluster view (cluster.go). It owns the jobs: run sends
// the program view's Spec to the server view's server.
// Its methods run on the UI goroutine, except Close.
type UI struct {
	cfg  Config
	win  fyne.Window
	pool *pool

	ctx    context.Context // cancelled by Close: every job is cancelled
	cancel context.CancelFunc
	wg     sync.WaitGroup // job, status and ticker goroutines
	closed atomic.Bool
	stops  []func()

	srv    *serverView  // the connection fields
	prog   *programView // the program, its input or tests, Run
	notice *notice      // why a program could not be sent, under the server row

	// The jobs, oldest first (the list shows the newest on top).
	jobs     []*job
	list     *widget.List
	selected *job
	detail   *detailView

	cluster    *clusterView
	tabs       *container.AppTabs
	programTab *container.TabItem
	clusterTab *container.TabItem
}

// New builds the window's content on win and starts its timers. Close stops them.
func New(win fyne.Window, cfg Config) (*UI, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	u := &UI{cfg: cfg, win: win, pool: newPool(cfg.Dial)}
	u.ctx, u.cancel = context.WithCancel(context.Background())

	u.notice = newNotice()
	u.srv = newServerView(u)
	u.showProblem()
	u.prog = newProgramView(u)
	u.detail = newDetailView(u)
	u.list = widget.NewList(
		func() int { return len(u.jobs) },
		func() fyne.CanvasObject { return newJobRow() },
		func(id widget.ListItemID, o fyne.CanvasObject) {
			if j := u.jobAt(id); j != nil {
				o.(*jobRow).show(j, u.cfg.Now())
			}
		})
	u.list.OnSelected = func(id widget.ListItemID) {
		if j := u.jobAt(id); j != nil && j != u.selected {
			u.selected = j
			u.detail.show(j, true)
		}
	}
	u.cluster = newClusterView(u)

	u.programTab = container.NewTabItemWithIcon("Program", theme.DocumentIcon(), u.programPane())
	u.clusterTab = container.NewTabItemWithIcon("Cluster", theme.ComputerIcon(), u.cluster.content)
	u.tabs = container.NewAppTabs(u.programTab, u.clusterTab)
	u.tabs.OnSelected = func(t *container.TabItem) {
		if t == u.clusterTab {
			u.cluster.refresh()
		}
	}
	win.SetContent(container.NewBorder(container.NewVBox(u.srv.content, u.notice.content), nil, nil, nil, u.tabs))
	win.SetMainMenu(u.mainMenu())
	win.SetOnDropped(func(_ fyne.Position, uris []fyne.URI) {
		if len(uris) > 0 {
			u.prog.openURI(uris[0])
		}
	})

	u.every(cfg.TimerEvery, u.tick)
	u.every(cfg.StatusEvery, func() {
		if u.tabs.Selected() == u.clusterTab {
			u.cluster.refresh()
		}
	})
	return u, nil
}

// Close cancels the jobs still running, stops the timers and closes the connections. It
// waits for every goroutine of the window; call it after the app stopped or from a test.
func (u *UI) Close() error {
	if u.closed.Swap(true) {
		return nil
	}
	u.cancel()
	for _, stop := range u.stops {
		stop()
	}
	u.wg.Wait()
	return u.pool.Close()
}

// do runs fn on the UI goroutine, unless the window is closed.
func (u *UI) do(fn func()) {
	if u.closed.Load() {
		return
	}
	u.cfg.Do(func() {
		if !u.closed.Load() {
			fn()
		}
	})
}

// every calls fn on the UI goroutine every d until Close.
func (u *UI) every(d time.Duration, fn func()) {
	ch, stop := u.cfg.Ticker(d)
	u.stops = append(u.stops, stop)
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		var pending atomic.Bool // a tick is queued and has not run yet
		for {
			select {
			case <-u.ctx.Done():
				return
			case <-ch:
				// Skip ticks while one waits: a slow window must not fall behind
				// with a queue of stale ticks in front of the jobs' events.
				if !pending.Swap(true) {
					u.do(func() {
						pending.Store(false)
						fn()
					})
				}
			}
		}
	}()
}

// programPane is the Program tab: the program view on the left, the jobs and the
// detail of the one selected on the right.
func (u *UI) programPane() fyne.CanvasObject {
	jobsHeader := widget.NewLabelWithStyle("Jobs", fyne.TextAlignLeading, fyne.TextStyle{Bold: true})
	jobs := container.NewBorder(jobsHeader, nil, nil, nil, u.list)
	right := container.NewVSplit(jobs, u.detail.content)
	right.Offset = 0.36
	split := container.NewHSplit(u.prog.content, right)
	split.Offset = 0.5
	return split
}

func (u *UI) mainMenu() *fyne.MainMenu {
	ctrl := fyne.KeyModifierShortcutDefault
	open := fyne.NewMenuItem("Open…", u.prog.showOpen)
	open.Shortcut = &desktop.CustomShortcut{KeyName: fyne.KeyO, Modifier: ctrl}
	run := fyne.NewMenuItem("Run", u.run)
	run.Shortcut = &desktop.CustomShortcut{KeyName: fyne.KeyReturn, Modifier: ctrl}
	save := fyne.NewMenuItem("Save output…", u.detail.showSave)
	save.Shortcut = &desktop.CustomShortcut{KeyName: fyne.KeyS, Modifier: ctrl}
	cancel := fyne.NewMenuItem("Cancel job", u.cancelSelected)
	return fyne.NewMainMenu(fyne.NewMenu("File", open, run, save, cancel))
}

// showProblem shows Config.Problem in the notice, when there is one. New does; so does
// main after opening a file, which answers the notices before it.
func (u *UI) showProblem() {
	if u.cfg.Problem != "" {
		u.notice.show(theme.ColorNameError, u.cfg.Problem)
	}
}

// run sends the program in the editor to the server in the fields, as a new job.
func (u *UI) run() {
	srv, err := u.srv.server()
	if err != nil {
		u.notice.show(theme.ColorNameWarning, err.Error())
		return
	}
	name, spec, tests, err := u.prog.spec()
	if err != nil {
		u.notice.show(theme.ColorNameWarning, err.Error())
		return
	}
	u.notice.hide()
	u.srv.remember(srv)

	lang := spec.Language
	j := &job{seq: len(u.jobs) + 1, name: name, lang: lang, server: srv, tests: tests, submitted: u.cfg.Now()}
	ctx, cancel := context.WithCancel(u.ctx)
	j.cancel = cancel
	u.jobs = append(u.jobs, j)
	u.list.Refresh()
	// Show the new job. It is on top: row 0, which may have been selected already
	// (for the job before it), so Select alone would not show it.
	u.selected = j
	u.list.Select(0)
	u.detail.show(j, true)

	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		defer cancel()
		u.runJob(ctx, j, spec)
	}()
}

// runJob runs on the job's goroutine. It does not touch j: it posts each event to the
// job's mailbox, which applies them on the UI goroutine, in order.
func (u *UI) runJob(ctx context.Context, j *job, spec sandbox.Spec) {
	m := &mailbox{u: u, j: j}
	var res sandbox.Result
	c, err := u.pool.get(ctx, j.server)
	if err == nil {
		res, err = c.Run(ctx, spec, transport.RunOptions{Handler: transport.Handler{
			Accepted: func(id string) {
				m.post(func() {
					j.id = id
					if j.phase == phaseConnecting {
						j.phase = phaseQueued
					}
				})
			},
			Queued:  func(pos int) { m.post(func() { j.phase, j.position = phaseQueued, pos }) },
			Started: func(node string) { m.post(func() { j.start(node) }) },
			Output: func(c sandbox.Chunk) {
				c.Data = bytes.Clone(c.Data)
				m.post(func() { j.appendOutput(c) })
			},
			Reconnecting: func(error) { m.post(func() { j.reconnecting = true }) },
		}})
	}
	now := u.cfg.Now()
	m.post(func() { u.finished(j, res, err, now) })
}

// mailbox carries one job's events to the UI goroutine, in order, with at most one Do
// pending: when the window draws slowly (software OpenGL on a loaded machine), events
// that pile up meanwhile are applied together by that one Do, instead of queueing one
// Do each and falling ever further behind.
type mailbox struct {
	u *UI
	j *job

	mu        sync.Mutex
	events    []func()
	scheduled bool
}

// post queues an event; it is called from the job's goroutine.
func (m *mailbox) post(event func()) {
	m.mu.Lock()
	m.events = append(m.events, event)
	if m.scheduled {
		m.mu.Unlock()
		return
	}
	m.scheduled = true
	m.mu.Unlock()
	m.u.do(m.deliver)
}

// deliver applies the queued events on the UI goroutine, then redraws the job once.
func (m *mailbox) deliver() {
	m.mu.Lock()
	events := m.events
	m.events, m.scheduled = nil, false
	m.mu.Unlock()
	j := m.j
	for _, e := range events {
		if !j.active() {
			break // the end was the last event
		}
		if j.reconnecting {
			j.reconnecting = false // any event means the connection is back
		}
		e()
	}
	if j.active() {
		// Output shows on the next tick: a program printing line by line would
		// otherwise redraw it thousands of times a second.
		m.u.changed(j)
	}
}

// finished shows how a job ended.
func (u *UI) finished(j *job, res sandbox.Result, err error, now time.Time) {
	j.finish(res, err, now)
	u.changed(j)
	if j == u.selected {
		u.detail.selectTab(j)
	}
	if j.phase == phaseFailed {
		u.notice.show(j.colorName(), fmt.Sprintf("%s — %s", j.title(), explain(j.err, j.server.Addr)))
	}
}

// changed redraws a job's row, and the details if it is the one shown.
func (u *UI) changed(j *job) {
	u.list.RefreshItem(len(u.jobs) - j.seq)
	if j == u.selected {
		u.detail.show(j, false)
	}
}

// jobAt maps a list row to its job (the newest on top).
func (u *UI) jobAt(id widget.ListItemID) *job {
	i := len(u.jobs) - 1 - id
	if i < 0 || i >= len(u.jobs) {
		return nil
	}
	return u.jobs[i]
}

// tick advances the timers of the running jobs and shows new output.
func (u *UI) tick() {
	now := u.cfg.Now()
	for i, j := range u.jobs {
		if j.active() {
			u.list.RefreshItem(len(u.jobs) - 1 - i)
		}
	}
	if j := u.selected; j != nil {
		u.detail.tick(j, now)
	}
}

// cancelSelected cancels the job shown.
func (u *UI) cancelSelected() {
	j := u.selected
	if j == nil || !j.active() || j.cancelling {
		return
	}
	j.cancelling = true
	j.cancel()
	u.changed(j)
}

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image/color"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/canvas"
	"fyne.io/fyne/v2/container"
	"fyne.io/fyne/v2/dialog"
	"fyne.io/fyne/v2/driver/desktop"
	"fyne.io/fyne/v2/storage"
	"fyne.io/fyne/v2/theme"
	"fyne.io/fyne/v2/widget"

	"runbox/sandbox"
	"runbox/sandbox/judge"
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

// UI is the client window: the server fields, the program, the jobs and the cluster.
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

	// The server row.
	host, port, token *widget.Entry
	tlsCA             *widget.Entry // path of the cluster's CA certificate; empty: plaintext
	browseCA          *widget.Button
	notice            *notice

	// The program.
	fileName  string // of the last file opened; "" for a typed program
	fileLabel *widget.Label
	lang      *widget.Select
	editor    *widget.Entry
	stdin     *widget.Entry
	openBtn   *widget.Button
	runBtn    *widget.Button

	// The test cases attached: Run sends them, and the job is judged.
	tests        []sandbox.TestCase
	testsLabel   *widget.Label
	testsBtn     *widget.Button
	clearTestBtn *widget.Button
	compare      *widget.Select // how the outputs compare; shown with tests

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

	u.host = widget.NewEntry()
	u.host.SetPlaceHolder(DefaultHost)
	u.port = widget.NewEntry()
	u.port.SetPlaceHolder(DefaultPort)
	u.token = widget.NewPasswordEntry()
	u.token.SetText(cfg.Token)
	host, port := cfg.Prefs.StringWithFallback(prefHost, DefaultHost), cfg.Prefs.StringWithFallback(prefPort, DefaultPort)
	if cfg.Server != "" {
		host, port, _ = splitServer(cfg.Server)
	}
	u.host.SetText(host)
	u.port.SetText(port)
	u.tlsCA = widget.NewEntry()
	u.tlsCA.SetPlaceHolder("none: plaintext")
	u.tlsCA.SetText(startCA(cfg))
	u.browseCA = widget.NewButtonWithIcon("", theme.FolderOpenIcon(), u.showBrowseCA)
	u.notice = newNotice()
	// Editing the server answers a notice about the server.
	for _, e := range []*widget.Entry{u.host, u.port, u.tlsCA} {
		e.OnChanged = func(string) { u.notice.hide() }
		e.OnSubmitted = func(string) { u.run() }
	}
	u.tlsCA.OnChanged = func(string) { u.notice.hide(); u.showTokenSource() }
	u.showTokenSource()
	u.showProblem()

	u.fileLabel = widget.NewLabel("untitled")
	u.fileLabel.TextStyle.Italic = true
	u.fileLabel.Truncation = fyne.TextTruncateEllipsis
	u.lang = widget.NewSelect(languageLabels(), nil)
	u.lang.SetSelected(languageLabel("python"))
	u.editor = widget.NewMultiLineEntry()
	u.editor.TextStyle.Monospace = true
	u.editor.Wrapping = fyne.TextWrapOff
	u.editor.SetPlaceHolder("Type a program here, open one (Ctrl+O) or drop a file on the window.\n" +
		"The language follows the file's extension: .py, .c, .cpp / .cc.")
	u.stdin = widget.NewMultiLineEntry()
	u.stdin.TextStyle.Monospace = true
	u.stdin.Wrapping = fyne.TextWrapOff
	u.testsLabel = widget.NewLabel("")
	u.testsLabel.Truncation = fyne.TextTruncateEllipsis
	u.testsBtn = widget.NewButtonWithIcon("Tests…", theme.ListIcon(), u.showTests)
	u.clearTestBtn = widget.NewButtonWithIcon("", theme.CancelIcon(), u.clearTests)
	u.clearTestBtn.Importance = widget.LowImportance
	u.compare = widget.NewSelect(compareLabels(), nil)
	u.compare.SetSelected(compareLabel(sandbox.CompareTrim))
	u.clearTests()
	u.openBtn = widget.NewButtonWithIcon("Open…", theme.FolderOpenIcon(), u.showOpen)
	u.runBtn = widget.NewButtonWithIcon("Run", theme.MediaPlayIcon(), u.run)
	u.runBtn.Importance = widget.HighImportance

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
	win.SetContent(container.NewBorder(container.NewVBox(u.serverRow(), u.notice.content), nil, nil, nil, u.tabs))
	win.SetMainMenu(u.mainMenu())
	win.SetOnDropped(func(_ fyne.Position, uris []fyne.URI) {
		if len(uris) > 0 {
			u.openURI(uris[0])
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

// serverRow holds the connection fields.
func (u *UI) serverRow() fyne.CanvasObject {
	label := func(s string) *widget.Label {
		return widget.NewLabelWithStyle(s, fyne.TextAlignTrailing, fyne.TextStyle{Bold: true})
	}
	return container.NewHBox(
		label("Server"), withWidth(u.host, 220),
		label("Port"), withWidth(u.port, 90),
		label("Token"), withWidth(u.token, 200),
		label("TLS CA"), withWidth(u.tlsCA, 260), u.browseCA,
	)
}

// showBrowseCA picks the TLS CA file with the file dialog.
func (u *UI) showBrowseCA() {
	d := dialog.NewFileOpen(func(r fyne.URIReadCloser, err error) {
		if err != nil {
			u.notice.show(theme.ColorNameError, "Cannot open the file: "+err.Error())
			return
		}
		if r == nil {
			return // cancelled
		}
		r.Close()
		u.setCAFile(r.URI())
	}, u.win)
	d.SetFilter(storage.NewExtensionFileFilter([]string{".crt", ".pem", ".cer"}))
	dir := ""
	if cur := strings.TrimSpace(u.tlsCA.Text); cur != "" {
		dir = filepath.Dir(cur)
	}
	showIn(d, dir)
}

// showIn shows a file dialog at a comfortable size, in folder dir when it is set and can
// be listed.
func showIn(d *dialog.FileDialog, dir string) {
	if dir != "" {
		if l, err := storage.ListerForURI(storage.NewFileURI(dir)); err == nil {
			d.SetLocation(l)
		}
	}
	d.Resize(fyne.NewSize(900, 600))
	d.Show()
}

// setCAFile puts a picked CA certificate in the TLS CA field.
func (u *UI) setCAFile(uri fyne.URI) {
	if uri.Scheme() != "file" {
		u.notice.show(theme.ColorNameError, fmt.Sprintf("The TLS CA must be a local file, not %s.", uri))
		return
	}
	u.tlsCA.SetText(filepath.Clean(uri.Path()))
}

// programPane is the Program tab: the editor and stdin on the left, the jobs on the right.
func (u *UI) programPane() fyne.CanvasObject {
	toolbar := container.NewBorder(nil, nil, u.openBtn,
		container.NewHBox(widget.NewLabel("Language"), u.lang, u.runBtn), u.fileLabel)
	stdinHeader := container.NewBorder(nil, nil,
		widget.NewLabelWithStyle("Standard input", fyne.TextAlignLeading, fyne.TextStyle{Bold: true}),
		container.NewHBox(u.compare, u.clearTestBtn, u.testsBtn), u.testsLabel)
	stdinBox := container.NewBorder(stdinHeader, nil, nil, nil, u.stdin)
	editors := container.NewVSplit(u.editor, stdinBox)
	editors.Offset = 0.78
	left := container.NewBorder(toolbar, nil, nil, nil, editors)

	jobsHeader := widget.NewLabelWithStyle("Jobs", fyne.TextAlignLeading, fyne.TextStyle{Bold: true})
	jobs := container.NewBorder(jobsHeader, nil, nil, nil, u.list)
	right := container.NewVSplit(jobs, u.detail.content)
	right.Offset = 0.36
	split := container.NewHSplit(left, right)
	split.Offset = 0.5
	return split
}

func (u *UI) mainMenu() *fyne.MainMenu {
	ctrl := fyne.KeyModifierShortcutDefault
	open := fyne.NewMenuItem("Open…", u.showOpen)
	open.Shortcut = &desktop.CustomShortcut{KeyName: fyne.KeyO, Modifier: ctrl}
	run := fyne.NewMenuItem("Run", u.run)
	run.Shortcut = &desktop.CustomShortcut{KeyName: fyne.KeyReturn, Modifier: ctrl}
	save := fyne.NewMenuItem("Save output…", u.detail.showSave)
	save.Shortcut = &desktop.CustomShortcut{KeyName: fyne.KeyS, Modifier: ctrl}
	cancel := fyne.NewMenuItem("Cancel job", u.cancelSelected)
	return fyne.NewMainMenu(fyne.NewMenu("File", open, run, save, cancel))
}

// server reads the connection fields.
func (u *UI) server() (Server, error) {
	host := strings.TrimSpace(u.host.Text)
	if host == "" {
		return Server{}, errors.New("Enter the server's name or IP address in the Server field.")
	}
	p, err := strconv.Atoi(strings.TrimSpace(u.port.Text))
	if err != nil || p < 1 || p > 65535 {
		return Server{}, fmt.Errorf("The port %q is not a number between 1 and 65535.", u.port.Text)
	}
	ca := expandHome(strings.TrimSpace(u.tlsCA.Text))
	tok := strings.TrimSpace(u.token.Text)
	if tok == "" && u.defaultTokenFor(ca) {
		tok = u.cfg.DefaultToken
	}
	return Server{Addr: net.JoinHostPort(host, strconv.Itoa(p)), Token: tok, CAFile: ca}, nil
}

// showProblem shows Config.Problem in the notice, when there is one. New does; so does
// main after opening a file, which answers the notices before it.
func (u *UI) showProblem() {
	if u.cfg.Problem != "" {
		u.notice.show(theme.ColorNameError, u.cfg.Problem)
	}
}

// expandHome reads a leading ~/ as the home directory, as people type paths.
func expandHome(path string) string {
	if rest, ok := strings.CutPrefix(path, "~/"); ok {
		if home, err := os.UserHomeDir(); err == nil {
			return filepath.Join(home, rest)
		}
	}
	return path
}

// startCA is what the TLS CA field shows at start: -tls-ca (or $RUNBOX_TLS_CA), else the
// CA file remembered if it still exists, else the client directory's, else what is
// remembered (nothing, or a file gone).
func startCA(cfg Config) string {
	remembered := cfg.Prefs.String(prefTLSCA)
	switch {
	case cfg.TLSCA != "":
		return cfg.TLSCA
	case remembered != "" && fileExists(expandHome(remembered)):
		return remembered
	case cfg.DefaultTLSCA != "":
		return cfg.DefaultTLSCA
	}
	return remembered
}

func fileExists(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular()
}

// defaultTokenFor says whether the client directory's token goes to a server reached
// with the CA file ca (a path, ~ expanded).
func (u *UI) defaultTokenFor(ca string) bool {
	if u.cfg.DefaultToken == "" {
		return false
	}
	if u.cfg.DefaultTokenCA == "" {
		return true
	}
	return ca != "" && filepath.Clean(ca) == filepath.Clean(expandHome(u.cfg.DefaultTokenCA))
}

// showTokenSource sets the empty Token field's placeholder: where the token that goes
// instead comes from, or none. The token itself is never shown.
func (u *UI) showTokenSource() {
	hint := "none"
	if u.defaultTokenFor(expandHome(strings.TrimSpace(u.tlsCA.Text))) {
		hint = "from " + u.cfg.DefaultTokenFrom
	}
	if u.token.PlaceHolder != hint {
		u.token.SetPlaceHolder(hint)
	}
}

// splitServer splits the -server flag.
func splitServer(s string) (host, port string, err error) {
	host, port, err = net.SplitHostPort(s)
	if err != nil {
		return "", "", fmt.Errorf("bad server %q, want HOST:PORT: %v", s, err)
	}
	return host, port, nil
}

// run sends the program in the editor to the server in the fields, as a new job.
func (u *UI) run() {
	srv, err := u.server()
	if err != nil {
		u.notice.show(theme.ColorNameWarning, err.Error())
		return
	}
	src := u.editor.Text
	if strings.TrimSpace(src) == "" {
		u.notice.show(theme.ColorNameWarning, "The program is empty: type one in the editor or open a file (Open…).")
		return
	}
	u.notice.hide()
	u.cfg.Prefs.SetString(prefHost, strings.TrimSpace(u.host.Text))
	u.cfg.Prefs.SetString(prefPort, strings.TrimSpace(u.port.Text))
	u.cfg.Prefs.SetString(prefTLSCA, srv.CAFile)

	lang := languageByLabel(u.lang.Selected)
	spec := sandbox.Spec{Language: lang, Files: []sandbox.File{{Content: []byte(src)}}}
	var tests []string
	if len(u.tests) > 0 {
		// A judged run: each case brings its own input.
		spec.Tests = slices.Clone(u.tests)
		spec.Compare = compareByLabel(u.compare.Selected)
		for _, tc := range u.tests {
			tests = append(tests, tc.Name)
		}
	} else if u.stdin.Text != "" {
		spec.Stdin = []byte(u.stdin.Text)
	}
	name := u.fileName
	if name == "" {
		name = "untitled"
	}
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

// showOpen opens the file dialog.
func (u *UI) showOpen() {
	d := dialog.NewFileOpen(func(r fyne.URIReadCloser, err error) {
		if err != nil {
			u.notice.show(theme.ColorNameError, "Cannot open the file: "+err.Error())
			return
		}
		if r == nil {
			return // cancelled
		}
		defer r.Close()
		u.load(r.URI(), r)
	}, u.win)
	var exts []string
	for _, l := range sandbox.Languages() {
		exts = append(exts, l.Extensions...)
	}
	d.SetFilter(storage.NewExtensionFileFilter(exts))
	showIn(d, u.cfg.Prefs.String(prefOpenDir))
}

// showTests opens the folder dialog for the test cases.
func (u *UI) showTests() {
	d := dialog.NewFolderOpen(func(l fyne.ListableURI, err error) {
		if err != nil {
			u.notice.show(theme.ColorNameError, "Cannot open the folder: "+err.Error())
			return
		}
		if l == nil {
			return // cancelled
		}
		u.attachTestsURI(l)
	}, u.win)
	dir := u.cfg.Prefs.String(prefTestDir)
	if dir == "" {
		dir = u.cfg.Prefs.String(prefOpenDir)
	}
	showIn(d, dir)
}

// attachTestsURI attaches the test cases of a folder picked in the dialog.
func (u *UI) attachTestsURI(l fyne.URI) {
	if l.Scheme() != "file" {
		u.notice.show(theme.ColorNameError, fmt.Sprintf("The tests must be a local folder, not %s.", l))
		return
	}
	u.attachTests(filepath.Clean(l.Path()))
}

// attachTests reads the test cases of dir (NAME.in and NAME.out): the next Runs send them
// and the jobs are judged. A folder without usable cases is a notice; the tests attached
// before stay.
func (u *UI) attachTests(dir string) {
	cases, err := judge.LoadDir(os.DirFS(dir))
	if err != nil {
		u.notice.show(theme.ColorNameWarning, fmt.Sprintf("No tests attached: %s: %v", dir, err))
		return
	}
	u.notice.hide()
	u.tests = cases
	u.cfg.Prefs.SetString(prefTestDir, filepath.Dir(dir))
	u.testsLabel.SetText(fmt.Sprintf("%d %s from %s", len(cases), plural(len(cases), "test", "tests"), filepath.Base(dir)))
	u.testsLabel.Importance = widget.HighImportance
	u.testsLabel.Refresh()
	u.clearTestBtn.Show()
	u.compare.Show()
	u.stdin.Disable()
	u.stdin.SetPlaceHolder("Each test gives its own input (its NAME.in file)")
}

// clearTests detaches the test cases: the next Runs are plain runs with this input.
func (u *UI) clearTests() {
	u.tests = nil
	u.testsLabel.SetText("no tests")
	u.testsLabel.Importance = widget.LowImportance
	u.testsLabel.Refresh()
	u.clearTestBtn.Hide()
	u.compare.Hide()
	u.stdin.Enable()
	u.stdin.SetPlaceHolder("Standard input given to the program (optional)")
}

// openURI loads a dropped or given file.
func (u *UI) openURI(uri fyne.URI) {
	r, err := storage.Reader(uri)
	if err != nil {
		u.notice.show(theme.ColorNameError, fmt.Sprintf("Cannot open %s: %v", uri.Name(), err))
		return
	}
	defer r.Close()
	u.load(uri, r)
}

// load reads a program into the editor and guesses its language.
func (u *UI) load(uri fyne.URI, r io.Reader) {
	src, err := io.ReadAll(io.LimitReader(r, sandbox.MaxSourceBytes+1))
	if err != nil {
		u.notice.show(theme.ColorNameError, fmt.Sprintf("Cannot read %s: %v", uri.Name(), err))
		return
	}
	if len(src) > sandbox.MaxSourceBytes {
		u.notice.show(theme.ColorNameError, fmt.Sprintf("%s is larger than %s, the most a server accepts.", uri.Name(), sandbox.FormatSize(sandbox.MaxSourceBytes)))
		return
	}
	if dir, err := storage.Parent(uri); err == nil && dir.Scheme() == "file" {
		u.cfg.Prefs.SetString(prefOpenDir, filepath.Clean(dir.Path()))
	}
	u.setProgram(uri.Name(), src)
}

// setProgram puts a program in the editor.
func (u *UI) setProgram(name string, src []byte) {
	u.fileName = name
	u.fileLabel.SetText(name)
	u.fileLabel.TextStyle.Italic = false
	u.fileLabel.Refresh()
	u.editor.SetText(string(src))
	if l, ok := sandbox.Detect(name); ok {
		u.lang.SetSelected(languageLabel(l.Name))
		u.notice.hide()
	} else {
		u.notice.show(theme.ColorNameWarning, fmt.Sprintf("Cannot tell the language of %s from its extension: pick it in the Language list.", name))
	}
}

// notice is the coloured message under the server row: why a program could not be sent.
type notice struct {
	bg      *canvas.Rectangle
	strip   *canvas.Rectangle
	label   *widget.Label
	content *fyne.Container
}

func newNotice() *notice {
	n := &notice{bg: canvas.NewRectangle(color.Transparent), strip: canvas.NewRectangle(color.Transparent), label: widget.NewLabel("")}
	n.label.Wrapping = fyne.TextWrapWord
	n.strip.SetMinSize(fyne.NewSize(6, 0))
	closeBtn := widget.NewButtonWithIcon("", theme.CancelIcon(), n.hide)
	closeBtn.Importance = widget.LowImportance
	n.content = container.NewStack(n.bg, container.NewBorder(nil, nil, n.strip, container.NewVBox(closeBtn), n.label))
	n.content.Hide()
	return n
}

func (n *notice) show(c fyne.ThemeColorName, text string) {
	n.bg.FillColor = tint(theme.Color(c), 0x38)
	n.strip.FillColor = theme.Color(c)
	n.label.SetText(text)
	n.content.Show()
	n.content.Refresh()
}

func (n *notice) hide() {
	if n.content.Visible() {
		n.content.Hide()
	}
}

func (n *notice) text() string {
	if !n.content.Visible() {
		return ""
	}
	return n.label.Text
}

// tint returns c with alpha a: a background that keeps the theme's text readable.
func tint(c color.Color, a uint8) color.Color {
	n := color.NRGBAModel.Convert(c).(color.NRGBA)
	n.A = a
	return n
}

// withWidth gives o a minimum width (an entry's is tiny otherwise).
func withWidth(o fyne.CanvasObject, w float32) fyne.CanvasObject {
	return container.New(&minWidth{w: w}, o)
}

type minWidth struct{ w float32 }

func (m *minWidth) MinSize(objs []fyne.CanvasObject) fyne.Size {
	s := objs[0].MinSize()
	return fyne.NewSize(max(s.Width, m.w), s.Height)
}

func (m *minWidth) Layout(objs []fyne.CanvasObject, size fyne.Size) {
	for _, o := range objs {
		o.Resize(size)
		o.Move(fyne.NewPos(0, 0))
	}
}

var _ fyne.Layout = (*minWidth)(nil)

package main

import (
	"fmt"
	"image/color"
	"slices"
	"strings"
	"time"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/canvas"
	"fyne.io/fyne/v2/container"
	"fyne.io/fyne/v2/dialog"
	"fyne.io/fyne/v2/theme"
	"fyne.io/fyne/v2/widget"

	"runbox/sandbox"
)

// maxShown caps the output a tab shows (its tail); Copy and Save take all of it.
const maxShown = 256 << 10

// detailView shows the selected job: a coloured banner with its state and timer, its
// numbers, a message, the buttons and its output, compiler output apart.
type detailView struct {
	u *UI

	bannerBG, strip *canvas.Rectangle
	title, timer    *widget.Label
	facts, message  *widget.Label
	cancelBtn       *widget.Button
	copyBtn         *widget.Button
	saveBtn         *widget.Button

	stdout, stderr, compile          *widget.TextGrid
	tabs                             *container.AppTabs
	tabOut, tabErr, tabCompile       *container.TabItem
	shownOut, shownErr, shownCompile int // bytes each grid shows, to skip redraws

	// The Tests tab, there while a judged job is shown: its verdict table.
	cases    *casesView
	tabCases *container.TabItem

	empty   fyne.CanvasObject
	body    fyne.CanvasObject
	content *fyne.Container
}

func newDetailView(u *UI) *detailView {
	d := &detailView{u: u,
		bannerBG: canvas.NewRectangle(color.Transparent), strip: canvas.NewRectangle(color.Transparent),
		title: widget.NewLabel(""), timer: widget.NewLabel(""),
		facts: widget.NewLabel(""), message: widget.NewLabel(""),
		stdout: newOutputGrid(), stderr: newOutputGrid(), compile: newOutputGrid(),
	}
	d.title.TextStyle.Bold = true
	d.title.SizeName = theme.SizeNameSubHeadingText
	d.title.Truncation = fyne.TextTruncateEllipsis
	d.timer.TextStyle = fyne.TextStyle{Monospace: true}
	d.timer.SizeName = theme.SizeNameSubHeadingText
	d.facts.Wrapping = fyne.TextWrapWord
	d.message.Wrapping = fyne.TextWrapWord
	d.strip.SetMinSize(fyne.NewSize(6, 0))

	d.cancelBtn = widget.NewButtonWithIcon("Cancel", theme.MediaStopIcon(), u.cancelSelected)
	d.copyBtn = widget.NewButtonWithIcon("Copy output", theme.ContentCopyIcon(), d.copyShown)
	d.saveBtn = widget.NewButtonWithIcon("Save output…", theme.DocumentSaveIcon(), d.showSave)

	d.tabOut = container.NewTabItem("Output", framed(d.stdout))
	d.tabErr = container.NewTabItem("Errors", framed(d.stderr))
	d.tabCompile = container.NewTabItem("Compiler", framed(d.compile))
	d.cases = newCasesView()
	d.tabCases = container.NewTabItemWithIcon("Tests", theme.ListIcon(), d.cases.table)
	d.tabs = container.NewAppTabs(d.tabOut, d.tabErr, d.tabCompile)

	timer := container.NewHBox(widget.NewIcon(theme.HistoryIcon()), d.timer)
	banner := container.NewStack(d.bannerBG, container.NewBorder(nil, nil, d.strip, timer, d.title))
	buttons := container.NewHBox(d.cancelBtn, d.copyBtn, d.saveBtn)
	d.body = container.NewBorder(container.NewVBox(banner, d.facts, d.message, buttons), nil, nil, nil, d.tabs)
	emptyText := widget.NewLabel("No program sent yet.\n\nType a program or open a file, check the server at the top,\nthen press Run (Ctrl+Enter). Each Run is a new job in the list above.")
	emptyText.Alignment = fyne.TextAlignCenter
	d.empty = container.NewCenter(emptyText)
	d.body.Hide()
	d.content = container.NewStack(d.empty, d.body)
	return d
}

// newOutputGrid returns a read-only monospace view of output.
func newOutputGrid() *widget.TextGrid {
	g := widget.NewTextGrid()
	g.Scroll = fyne.ScrollBoth // scrolls itself, drawing only the rows in view
	// MinSize creates the renderer, and with it the grid's scroller: ScrollToBottom
	// needs it before the grid is first drawn (a tab not shown yet).
	g.MinSize()
	return g
}

// framed puts an output view on the input background, with a margin, like a terminal.
func framed(o fyne.CanvasObject) fyne.CanvasObject {
	bg := canvas.NewRectangle(theme.Color(theme.ColorNameInputBackground))
	bg.CornerRadius = theme.InputRadiusSize()
	return container.NewStack(bg, container.NewPadded(o))
}

// show draws j; fresh says it was just selected (redraw the output and pick its tab).
func (d *detailView) show(j *job, fresh bool) {
	d.empty.Hide()
	d.body.Show()
	c := theme.Color(j.colorName())
	d.bannerBG.FillColor = tint(c, 0x38)
	d.strip.FillColor = c
	d.bannerBG.Refresh()
	d.strip.Refresh()
	title := fmt.Sprintf("#%d %s — %s", j.seq, j.name, j.title())
	if s := j.subtitle(); s != "" {
		title += " (" + s + ")"
	}
	d.title.SetText(title)
	d.facts.SetText(j.facts())
	msg := j.message()
	d.message.SetText(msg)
	if msg == "" {
		d.message.Hide()
	} else {
		d.message.Show()
	}
	if j.active() && !j.cancelling {
		d.cancelBtn.Enable()
	} else {
		d.cancelBtn.Disable()
	}
	d.showCases(j)
	if fresh {
		d.shownOut, d.shownErr, d.shownCompile = -1, -1, -1
		d.selectTab(j)
	}
	d.tick(j, d.u.cfg.Now())
	if !j.active() {
		d.flush(j) // the end: show all of it now
	}
}

// showCases puts the Tests tab first for a judged job, with its table, and takes it away
// for a plain one.
func (d *detailView) showCases(j *job) {
	has := slices.Contains(d.tabs.Items, d.tabCases)
	switch {
	case len(j.tests) > 0 && !has:
		d.tabs.Items = append([]*container.TabItem{d.tabCases}, d.tabs.Items...)
		d.tabs.Refresh()
	case len(j.tests) == 0 && has:
		d.tabs.Remove(d.tabCases)
	}
	if len(j.tests) == 0 {
		return
	}
	d.tabCases.Text = "Tests"
	if n := len(j.res.Cases); n > 0 {
		d.tabCases.Text = fmt.Sprintf("Tests (%d/%d passed)", passed(j.res.Cases), n)
	}
	d.cases.show(j)
	d.tabs.Refresh()
}

// tick updates the timer and shows new output.
func (d *detailView) tick(j *job, now time.Time) {
	d.timer.SetText(formatElapsed(j.elapsed(now)))
	if j.outputChanged || d.shownOut < 0 {
		d.flush(j)
	}
}

// flush shows j's output in the grids.
func (d *detailView) flush(j *job) {
	j.outputChanged = false
	setGrid(d.stdout, j.stdout, &d.shownOut)
	setGrid(d.stderr, j.stderr, &d.shownErr)
	setGrid(d.compile, j.compile, &d.shownCompile)
	d.tabOut.Text = tabTitle("Output", j.stdout)
	d.tabErr.Text = tabTitle("Errors", j.stderr)
	d.tabCompile.Text = tabTitle("Compiler", j.compile)
	d.tabs.Refresh()
	has := len(j.stdout)+len(j.stderr)+len(j.compile)+len(j.res.Cases) > 0
	if has {
		d.copyBtn.Enable()
		d.saveBtn.Enable()
	} else {
		d.copyBtn.Disable()
		d.saveBtn.Disable()
	}
}

func setGrid(g *widget.TextGrid, data []byte, shown *int) {
	if *shown == len(data) {
		return
	}
	*shown = len(data)
	g.SetText(shownText(data))
	g.ScrollToBottom()
}

// shownText is the tail of data a grid shows.
func shownText(data []byte) string {
	if len(data) <= maxShown {
		return strings.ToValidUTF8(string(data), "\uFFFD")
	}
	cut := len(data) - maxShown
	if i := strings.IndexByte(string(data[cut:]), '\n'); i >= 0 {
		cut += i + 1
	}
	return fmt.Sprintf("… %s not shown: Save output… writes all of it\n", sandbox.FormatSize(int64(cut))) +
		strings.ToValidUTF8(string(data[cut:]), "\uFFFD")
}

// tabTitle marks a tab that has something in it.
func tabTitle(name string, data []byte) string {
	if len(data) == 0 {
		return name
	}
	return fmt.Sprintf("%s (%d)", name, lineCount(data))
}

func lineCount(b []byte) int {
	n := strings.Count(string(b), "\n")
	if len(b) > 0 && b[len(b)-1] != '\n' {
		n++
	}
	return n
}

// selectTab shows the tab that matters: the compiler's for a compile error, the errors
// for a failure that printed nothing else, the output otherwise.
func (d *detailView) selectTab(j *job) {
	switch {
	case len(j.tests) > 0 && (j.active() || len(j.res.Cases) > 0):
		d.tabs.Select(d.tabCases)
		d.cases.table.Refresh() // drawn now that it shows
	case j.phase == phaseDone && j.res.Status == sandbox.StatusCompileError, len(j.compile) > 0 && len(j.stdout) == 0:
		d.tabs.Select(d.tabCompile)
	case len(j.stdout) == 0 && len(j.stderr) > 0:
		d.tabs.Select(d.tabErr)
	default:
		d.tabs.Select(d.tabOut)
	}
}

// shownOutput is the full text of the tab shown and a name for it.
func (d *detailView) shownOutput() (data []byte, what string) {
	j := d.u.selected
	if j == nil {
		return nil, ""
	}
	switch d.tabs.Selected() {
	case d.tabCases:
		return casesText(j.res.Cases), "tests"
	case d.tabErr:
		return j.stderr, "stderr"
	case d.tabCompile:
		return j.compile, "compiler"
	}
	return j.stdout, "stdout"
}

func (d *detailView) copyShown() {
	data, _ := d.shownOutput()
	d.u.cfg.Clipboard.SetContent(string(data))
}

// showSave asks where to save the output shown.
func (d *detailView) showSave() {
	j := d.u.selected
	if j == nil {
		return
	}
	data, what := d.shownOutput()
	if len(data) == 0 {
		d.u.notice.show(theme.ColorNameWarning, "Nothing to save: the tab shown is empty.")
		return
	}
	dlg := dialog.NewFileSave(func(w fyne.URIWriteCloser, err error) {
		if err != nil {
			d.u.notice.show(theme.ColorNameError, "Cannot save: "+err.Error())
			return
		}
		if w == nil {
			return // cancelled
		}
		d.save(w, data)
	}, d.u.win)
	base := strings.TrimSuffix(j.name, fileExt(j.name))
	dlg.SetFileName(fmt.Sprintf("%s-%d.%s.txt", base, j.seq, what))
	dlg.Resize(fyne.NewSize(900, 600))
	dlg.Show()
}

// save writes data to w and closes it; a failure is a notice.
func (d *detailView) save(w fyne.URIWriteCloser, data []byte) {
	_, err := w.Write(data)
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		d.u.notice.show(theme.ColorNameError, fmt.Sprintf("Cannot save %s: %v", w.URI().Name(), err))
	}
}

func fileExt(name string) string {
	if i := strings.LastIndexByte(name, '.'); i > 0 {
		return name[i:]
	}
	return ""
}

// jobRow is one line of the job list: a coloured dot, the file and server, the state, the timer.
type jobRow struct {
	widget.BaseWidget
	dot         *canvas.Circle
	name, state *widget.Label
	timer       *widget.Label
	content     fyne.CanvasObject
}

func newJobRow() *jobRow {
	r := &jobRow{dot: canvas.NewCircle(color.Transparent), name: widget.NewLabel(""), state: widget.NewLabel(""), timer: widget.NewLabel("")}
	r.name.TextStyle.Bold = true
	r.name.Truncation = fyne.TextTruncateEllipsis
	r.state.Truncation = fyne.TextTruncateEllipsis
	r.timer.TextStyle.Monospace = true
	dot := container.NewCenter(container.NewGridWrap(fyne.NewSize(14, 14), r.dot))
	lines := container.New(&tightVBox{}, r.name, r.state)
	r.content = container.NewBorder(nil, nil, dot, r.timer, lines)
	r.ExtendBaseWidget(r)
	return r
}

func (r *jobRow) CreateRenderer() fyne.WidgetRenderer { return widget.NewSimpleRenderer(r.content) }

func (r *jobRow) show(j *job, now time.Time) {
	r.dot.FillColor = theme.Color(j.colorName())
	r.dot.Refresh()
	r.name.SetText(fmt.Sprintf("#%d %s  →  %s", j.seq, j.name, j.server.Addr))
	state := j.title()
	if s := j.subtitle(); s != "" {
		state += " (" + s + ")"
	}
	r.state.SetText(state)
	r.timer.SetText(formatElapsed(j.elapsed(now)))
}

// tightVBox stacks labels closer than a VBox: each overlaps the one above by the
// labels' inner padding, so two lines read as one entry.
type tightVBox struct{}

func (tightVBox) overlap() float32 { return theme.InnerPadding() }

func (t tightVBox) MinSize(objs []fyne.CanvasObject) fyne.Size {
	var s fyne.Size
	for i, o := range objs {
		m := o.MinSize()
		s.Width = max(s.Width, m.Width)
		s.Height += m.Height
		if i > 0 {
			s.Height -= t.overlap()
		}
	}
	return s
}

func (t tightVBox) Layout(objs []fyne.CanvasObject, size fyne.Size) {
	y := float32(0)
	for _, o := range objs {
		h := o.MinSize().Height
		o.Resize(fyne.NewSize(size.Width, h))
		o.Move(fyne.NewPos(0, y))
		y += h - t.overlap()
	}
}

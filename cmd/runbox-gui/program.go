package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/container"
	"fyne.io/fyne/v2/dialog"
	"fyne.io/fyne/v2/storage"
	"fyne.io/fyne/v2/theme"
	"fyne.io/fyne/v2/widget"

	"runbox/sandbox"
	"runbox/sandbox/judge"
)

// programView is the left of the Program tab: the program (typed, opened or dropped),
// its language, its standard input or the test cases attached, and the Run button. Run
// sends what it holds (spec).
type programView struct {
	u *UI

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

	content fyne.CanvasObject
}

func newProgramView(u *UI) *programView {
	p := &programView{u: u}
	p.fileLabel = widget.NewLabel("untitled")
	p.fileLabel.TextStyle.Italic = true
	p.fileLabel.Truncation = fyne.TextTruncateEllipsis
	p.lang = widget.NewSelect(languageLabels(), nil)
	p.lang.SetSelected(languageLabel("python"))
	p.editor = widget.NewMultiLineEntry()
	p.editor.TextStyle.Monospace = true
	p.editor.Wrapping = fyne.TextWrapOff
	p.editor.SetPlaceHolder("Type a program here, open one (Ctrl+O) or drop a file on the window.\n" +
		"The language follows the file's extension: " + extensionsHint() + ".")
	p.stdin = widget.NewMultiLineEntry()
	p.stdin.TextStyle.Monospace = true
	p.stdin.Wrapping = fyne.TextWrapOff
	p.testsLabel = widget.NewLabel("")
	p.testsLabel.Truncation = fyne.TextTruncateEllipsis
	p.testsBtn = widget.NewButtonWithIcon("Tests…", theme.ListIcon(), p.showTests)
	p.clearTestBtn = widget.NewButtonWithIcon("", theme.CancelIcon(), p.clearTests)
	p.clearTestBtn.Importance = widget.LowImportance
	p.compare = widget.NewSelect(compareLabels(), nil)
	p.compare.SetSelected(compareLabel(sandbox.CompareTrim))
	p.clearTests()
	p.openBtn = widget.NewButtonWithIcon("Open…", theme.FolderOpenIcon(), p.showOpen)
	p.runBtn = widget.NewButtonWithIcon("Run", theme.MediaPlayIcon(), u.run)
	p.runBtn.Importance = widget.HighImportance

	toolbar := container.NewBorder(nil, nil, p.openBtn,
		container.NewHBox(widget.NewLabel("Language"), p.lang, p.runBtn), p.fileLabel)
	stdinHeader := container.NewBorder(nil, nil,
		widget.NewLabelWithStyle("Standard input", fyne.TextAlignLeading, fyne.TextStyle{Bold: true}),
		container.NewHBox(p.compare, p.clearTestBtn, p.testsBtn), p.testsLabel)
	stdinBox := container.NewBorder(stdinHeader, nil, nil, nil, p.stdin)
	editors := container.NewVSplit(p.editor, stdinBox)
	editors.Offset = 0.78
	p.content = container.NewBorder(toolbar, nil, nil, nil, editors)
	return p
}

// extensionsHint lists a few file extensions of the language table, for the editor's
// placeholder: the first of each language's.
func extensionsHint() string {
	var exts []string
	for _, l := range sandbox.Languages() {
		if len(l.Extensions) > 0 {
			exts = append(exts, l.Extensions[0])
		}
	}
	return strings.Join(exts, ", ")
}

// spec is the program to send: the job's name, its Spec, and the names of its test
// cases (none: a plain run). The error says what is missing, in words for people.
func (p *programView) spec() (name string, spec sandbox.Spec, tests []string, err error) {
	src := p.editor.Text
	if strings.TrimSpace(src) == "" {
		return "", spec, nil, errors.New("The program is empty: type one in the editor or open a file (Open…).")
	}
	spec = sandbox.Spec{Language: languageByLabel(p.lang.Selected), Files: []sandbox.File{{Content: []byte(src)}}}
	if len(p.tests) > 0 {
		// A judged run: each case brings its own input.
		spec.Tests = slices.Clone(p.tests)
		spec.Compare = compareByLabel(p.compare.Selected)
		for _, tc := range p.tests {
			tests = append(tests, tc.Name)
		}
	} else if p.stdin.Text != "" {
		spec.Stdin = []byte(p.stdin.Text)
	}
	name = p.fileName
	if name == "" {
		name = "untitled"
	}
	return name, spec, tests, nil
}

// showOpen opens the file dialog.
func (p *programView) showOpen() {
	u := p.u
	d := dialog.NewFileOpen(func(r fyne.URIReadCloser, err error) {
		if err != nil {
			u.notice.show(theme.ColorNameError, "Cannot open the file: "+err.Error())
			return
		}
		if r == nil {
			return // cancelled
		}
		defer r.Close()
		p.load(r.URI(), r)
	}, u.win)
	var exts []string
	for _, l := range sandbox.Languages() {
		exts = append(exts, l.Extensions...)
	}
	d.SetFilter(storage.NewExtensionFileFilter(exts))
	showIn(d, u.cfg.Prefs.String(prefOpenDir))
}

// showTests opens the folder dialog for the test cases.
func (p *programView) showTests() {
	u := p.u
	d := dialog.NewFolderOpen(func(l fyne.ListableURI, err error) {
		if err != nil {
			u.notice.show(theme.ColorNameError, "Cannot open the folder: "+err.Error())
			return
		}
		if l == nil {
			return // cancelled
		}
		p.attachTestsURI(l)
	}, u.win)
	dir := u.cfg.Prefs.String(prefTestDir)
	if dir == "" {
		dir = u.cfg.Prefs.String(prefOpenDir)
	}
	showIn(d, dir)
}

// attachTestsURI attaches the test cases of a folder picked in the dialog.
func (p *programView) attachTestsURI(l fyne.URI) {
	if l.Scheme() != "file" {
		p.u.notice.show(theme.ColorNameError, fmt.Sprintf("The tests must be a local folder, not %s.", l))
		return
	}
	p.attachTests(filepath.Clean(l.Path()))
}

// attachTests reads the test cases of dir (NAME.in and NAME.out, judge.LoadDir): the next
// Runs send them and the jobs are judged. A folder without usable cases is a notice; the
// tests attached before stay.
func (p *programView) attachTests(dir string) {
	u := p.u
	cases, err := judge.LoadDir(os.DirFS(dir))
	if err != nil {
		u.notice.show(theme.ColorNameWarning, fmt.Sprintf("No tests attached: %s: %v", dir, err))
		return
	}
	u.notice.hide()
	p.tests = cases
	u.cfg.Prefs.SetString(prefTestDir, filepath.Dir(dir))
	p.testsLabel.SetText(fmt.Sprintf("%d %s from %s", len(cases), plural(len(cases), "test", "tests"), filepath.Base(dir)))
	p.testsLabel.Importance = widget.HighImportance
	p.testsLabel.Refresh()
	p.clearTestBtn.Show()
	p.compare.Show()
	p.stdin.Disable()
	p.stdin.SetPlaceHolder("Each test gives its own input (its NAME.in file)")
}

// clearTests detaches the test cases: the next Runs are plain runs with this input.
func (p *programView) clearTests() {
	p.tests = nil
	p.testsLabel.SetText("no tests")
	p.testsLabel.Importance = widget.LowImportance
	p.testsLabel.Refresh()
	p.clearTestBtn.Hide()
	p.compare.Hide()
	p.stdin.Enable()
	p.stdin.SetPlaceHolder("Standard input given to the program (optional)")
}

// openURI loads a dropped or given file.
func (p *programView) openURI(uri fyne.URI) {
	r, err := storage.Reader(uri)
	if err != nil {
		p.u.notice.show(theme.ColorNameError, fmt.Sprintf("Cannot open %s: %v", uri.Name(), err))
		return
	}
	defer r.Close()
	p.load(uri, r)
}

// load reads a program into the editor and guesses its language.
func (p *programView) load(uri fyne.URI, r io.Reader) {
	u := p.u
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
	p.setProgram(uri.Name(), src)
}

// setProgram puts a program in the editor.
func (p *programView) setProgram(name string, src []byte) {
	p.fileName = name
	p.fileLabel.SetText(name)
	p.fileLabel.TextStyle.Italic = false
	p.fileLabel.Refresh()
	p.editor.SetText(string(src))
	if l, ok := sandbox.Detect(name); ok {
		p.lang.SetSelected(languageLabel(l.Name))
		p.u.notice.hide()
	} else {
		p.u.notice.show(theme.ColorNameWarning, fmt.Sprintf("Cannot tell the language of %s from its extension: pick it in the Language list.", name))
	}
}

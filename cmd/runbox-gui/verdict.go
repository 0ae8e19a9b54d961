package main

import (
	"fmt"
	"strings"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/container"
	"fyne.io/fyne/v2/theme"
	"fyne.io/fyne/v2/widget"

	"runbox/sandbox"
)

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// compareModes are the comparisons a judged run offers, with their labels.
var compareModes = []struct {
	mode  sandbox.Compare
	label string
}{
	{sandbox.CompareTrim, "Trim lines"}, // trailing blanks of each line and trailing empty lines ignored
	{sandbox.CompareTokens, "Tokens"},   // whitespace-separated tokens
	{sandbox.CompareExact, "Exact"},     // byte for byte
}

func compareLabels() []string {
	var out []string
	for _, m := range compareModes {
		out = append(out, m.label)
	}
	return out
}

func compareLabel(c sandbox.Compare) string {
	for _, m := range compareModes {
		if m.mode == c {
			return m.label
		}
	}
	return compareModes[0].label
}

func compareByLabel(label string) sandbox.Compare {
	for _, m := range compareModes {
		if m.label == label {
			return m.mode
		}
	}
	return sandbox.CompareTrim
}

// verdictLabel names a verdict for people.
func verdictLabel(v sandbox.Verdict) string {
	switch v {
	case sandbox.VerdictAccepted:
		return "Accepted"
	case sandbox.VerdictWrongAnswer:
		return "Wrong answer"
	}
	return statusTitle(sandbox.Status(v)) // runtime_error, time_limit, ..., compile_error
}

// verdictColor is a verdict's colour: green accepted, red wrong or crashed, orange a limit.
func verdictColor(v sandbox.Verdict) fyne.ThemeColorName {
	switch sandbox.Status(v) {
	case sandbox.Status(sandbox.VerdictAccepted):
		return theme.ColorNameSuccess
	case sandbox.Status(sandbox.VerdictWrongAnswer), sandbox.StatusRuntimeError, sandbox.StatusCompileError:
		return theme.ColorNameError
	}
	return theme.ColorNameWarning
}

// passed counts the accepted cases.
func passed(cases []sandbox.CaseResult) int {
	n := 0
	for _, c := range cases {
		if c.Verdict == sandbox.VerdictAccepted {
			n++
		}
	}
	return n
}

// verdictTitle is a judged run's line in the job list and on the banner:
// "Accepted, 3/3 tests", "Wrong answer on test 2, 1/3 passed".
func verdictTitle(r sandbox.Result) string {
	t := verdictLabel(r.Verdict)
	switch {
	case r.Verdict == sandbox.VerdictAccepted:
		return fmt.Sprintf("%s, %d/%d tests", t, len(r.Cases), len(r.Cases))
	case len(r.Cases) == 0:
		return t
	}
	for _, c := range r.Cases {
		if c.Verdict != sandbox.VerdictAccepted {
			t += " on test " + c.Name
			break
		}
	}
	return fmt.Sprintf("%s, %d/%d passed", t, passed(r.Cases), len(r.Cases))
}

// caseNote is the table's last column: the diff of a wrong answer, else the run's
// message, else the first line of its standard error.
func caseNote(c sandbox.CaseResult) string {
	switch {
	case c.Diff != "":
		return c.Diff
	case c.Message != "":
		return c.Message
	case c.Signal != "":
		return "signal " + c.Signal
	case c.ExitCode != 0:
		return fmt.Sprintf("exit code %d", c.ExitCode)
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(c.Stderr)), "\n")
	return line
}

// Columns of the verdict table.
var caseColumns = []struct {
	title string
	width float32
}{{"Test", 60}, {"Verdict", 140}, {"Time", 70}, {"Memory", 75}, {"Difference", 560}}

// caseRow is what the table shows of a case.
func caseRow(c sandbox.CaseResult) []string {
	mem := ""
	if c.Memory > 0 {
		mem = sandbox.FormatSize(c.Memory)
	}
	return []string{c.Name, verdictLabel(c.Verdict), formatDuration(c.Time), mem, caseNote(c)}
}

// casesText is the verdict table as text, one line per case, tab-separated, for Copy and
// Save.
func casesText(cases []sandbox.CaseResult) []byte {
	if len(cases) == 0 {
		return nil
	}
	var b strings.Builder
	for i, c := range caseColumns {
		if i > 0 {
			b.WriteByte('\t')
		}
		b.WriteString(c.title)
	}
	b.WriteByte('\n')
	for _, c := range cases {
		b.WriteString(strings.Join(caseRow(c), "\t"))
		b.WriteByte('\n')
	}
	return []byte(b.String())
}

// casesView is the Tests tab of a judged job: one row per case, its verdict marked with a
// coloured icon and coloured text.
type casesView struct {
	j     *job
	table *widget.Table
}

func newCasesView() *casesView {
	v := &casesView{}
	v.table = widget.NewTableWithHeaders(
		func() (int, int) { return v.rows(), len(caseColumns) },
		func() fyne.CanvasObject {
			icon := widget.NewIcon(nil)
			label := widget.NewLabel("")
			label.Truncation = fyne.TextTruncateEllipsis
			return container.NewBorder(nil, nil, icon, nil, label)
		},
		v.update)
	v.table.ShowHeaderColumn = false
	v.table.CreateHeader = func() fyne.CanvasObject {
		return widget.NewLabelWithStyle("", fyne.TextAlignLeading, fyne.TextStyle{Bold: true})
	}
	v.table.UpdateHeader = func(id widget.TableCellID, o fyne.CanvasObject) {
		if id.Col >= 0 && id.Col < len(caseColumns) {
			o.(*widget.Label).SetText(caseColumns[id.Col].title)
		}
	}
	for i, c := range caseColumns {
		v.table.SetColumnWidth(i, c.width)
	}
	return v
}

// rows: the results once in, else the cases sent, waiting.
func (v *casesView) rows() int {
	if v.j == nil {
		return 0
	}
	if len(v.j.res.Cases) > 0 {
		return len(v.j.res.Cases)
	}
	return len(v.j.tests)
}

func (v *casesView) update(id widget.TableCellID, o fyne.CanvasObject) {
	cell := o.(*fyne.Container)
	label := cell.Objects[0].(*widget.Label)
	icon := cell.Objects[1].(*widget.Icon)
	text, imp, res := "", widget.MediumImportance, fyne.Resource(nil)
	if j := v.j; j != nil && id.Row < v.rows() {
		if len(j.res.Cases) > 0 {
			c := j.res.Cases[id.Row]
			text = caseRow(c)[id.Col]
			if id.Col == 1 {
				imp, res = verdictLook(c.Verdict)
			}
		} else if id.Col == 0 {
			text = j.tests[id.Row]
		} else if id.Col == 1 {
			text = "waiting"
			if !j.active() {
				text = "not run"
			}
			imp = widget.LowImportance
		}
	}
	label.Importance = imp
	label.SetText(text)
	if res == nil {
		icon.Hide()
	} else {
		icon.SetResource(res)
		icon.Show()
	}
}

// verdictLook is a verdict's text colour and mark: a tick, a cross or a warning sign.
func verdictLook(v sandbox.Verdict) (widget.Importance, fyne.Resource) {
	switch verdictColor(v) {
	case theme.ColorNameSuccess:
		return widget.SuccessImportance, theme.NewSuccessThemedResource(theme.ConfirmIcon())
	case theme.ColorNameError:
		return widget.DangerImportance, theme.NewErrorThemedResource(theme.CancelIcon())
	}
	return widget.WarningImportance, theme.NewWarningThemedResource(theme.WarningIcon())
}

// show draws j's cases.
func (v *casesView) show(j *job) {
	v.j = j
	v.table.Refresh()
}

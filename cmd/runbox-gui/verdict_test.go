package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/storage"
	"fyne.io/fyne/v2/test"
	"fyne.io/fyne/v2/theme"
	"fyne.io/fyne/v2/widget"

	"runbox/sandbox"
)

// writeTests writes files (name → content) into a new directory.
func writeTests(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "tests")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// tableCells returns the verdict table's cells as drawn, row by row, the header first,
// and the verdict labels.
func tableCells(tbl *widget.Table) (text []string, verdicts []*widget.Label) {
	var walk func(o fyne.CanvasObject)
	walk = func(o fyne.CanvasObject) {
		if !o.Visible() {
			return
		}
		switch o := o.(type) {
		case *widget.Label:
			if o.Text != "" {
				text = append(text, o.Text)
				if o.Importance == widget.SuccessImportance || o.Importance == widget.DangerImportance {
					verdicts = append(verdicts, o)
				}
			}
		case *fyne.Container:
			for _, c := range o.Objects {
				walk(c)
			}
		case fyne.Widget:
			// The renderer's objects as they are (test.LaidOutObjects misses the cells).
			for _, c := range test.WidgetRenderer(o).Objects() {
				walk(c)
			}
		}
	}
	walk(tbl)
	return text, verdicts
}

func TestTestsFolderIsSentAndJudged(t *testing.T) {
	fs := newFakeServers()
	h := newHarness(t, fs.dial, nil)
	u, d := h.ui, h.ui.detail
	dir := writeTests(t, map[string]string{
		"1.in": "2 3\n", "1.out": "5\n",
		"2.in": "10 20\n", "2.out": "30\n",
		"10.in": "0 0\n", "10.out": "0\n",
		"README.md": "not a case",
	})

	if u.prog.testsLabel.Text != "no tests" || u.prog.clearTestBtn.Visible() || u.prog.compare.Visible() {
		t.Fatalf("at start: %q, clear shown %v", u.prog.testsLabel.Text, u.prog.clearTestBtn.Visible())
	}
	test.Tap(u.prog.testsBtn) // the folder dialog
	if h.win.Canvas().Overlays().Top() == nil {
		t.Fatal("Tests… did not open a dialog")
	}
	h.win.Canvas().Overlays().Top().Hide()
	u.prog.attachTestsURI(storage.NewFileURI(dir)) // what the dialog hands back
	if u.prog.testsLabel.Text != "3 tests from tests" || !u.prog.clearTestBtn.Visible() || !u.prog.stdin.Disabled() {
		t.Fatalf("attached: %q, clear shown %v, stdin disabled %v", u.prog.testsLabel.Text, u.prog.clearTestBtn.Visible(), u.prog.stdin.Disabled())
	}

	h.typeProgram("a, b = map(int, input().split())\nprint(a + b)")
	test.Tap(u.prog.runBtn)
	r := fs.next(t)
	var names []string
	for _, tc := range r.spec.Tests {
		names = append(names, tc.Name)
	}
	if !slices.Equal(names, []string{"1", "2", "10"}) || string(r.spec.Tests[1].Stdin) != "10 20\n" ||
		string(r.spec.Tests[1].Expected) != "30\n" || r.spec.Stdin != nil || r.spec.Compare != sandbox.CompareTrim {
		t.Fatalf("sent tests %q (%+v), stdin %q", names, r.spec.Tests, r.spec.Stdin)
	}
	if err := r.spec.Validate(); err != nil {
		t.Fatalf("the spec sent does not validate: %v", err)
	}
	// While it runs, the Tests tab lists the cases, waiting.
	h.until("the Tests tab", func() bool { return d.tabs.Selected() == d.tabCases })
	if cells, _ := tableCells(d.cases.table); !slices.Contains(cells, "10") || !slices.Contains(cells, "waiting") {
		t.Fatalf("while running, the table shows %q", cells)
	}

	r.started("judge-1")
	r.end(sandbox.Result{Status: sandbox.StatusOK, Verdict: sandbox.VerdictWrongAnswer, Node: "judge-1",
		Time: 41 * time.Millisecond, Memory: 9 << 20,
		Cases: []sandbox.CaseResult{
			{Name: "1", Verdict: sandbox.VerdictAccepted, Time: 38 * time.Millisecond, Memory: 8 << 20},
			{Name: "2", Verdict: sandbox.VerdictWrongAnswer, Time: 41 * time.Millisecond, Memory: 9 << 20, Diff: `line 1: expected "30", got "31"`},
			{Name: "10", Verdict: sandbox.VerdictAccepted, Time: 35 * time.Millisecond, Memory: 8 << 20},
		}}, nil)
	h.until("the verdict", func() bool { return !u.jobs[0].active() })

	if !strings.Contains(d.title.Text, "Wrong answer on test 2, 2/3 passed") || d.strip.FillColor != theme.Color(theme.ColorNameError) {
		t.Fatalf("banner %q", d.title.Text)
	}
	if row := h.rowOf(1); row.state.Text != "Wrong answer on test 2, 2/3 passed" {
		t.Fatalf("job list line %q", row.state.Text)
	}
	if d.tabs.Selected() != d.tabCases || d.tabCases.Text != "Tests (2/3 passed)" {
		t.Fatalf("tab %q selected", d.tabs.Selected().Text)
	}
	for _, want := range []string{"3 tests", "node judge-1", "slowest 41 ms", "peak memory 9MiB"} {
		if !strings.Contains(d.facts.Text, want) {
			t.Errorf("facts %q lack %q", d.facts.Text, want)
		}
	}
	cells, verdicts := tableCells(d.cases.table)
	want := []string{"Test", "Verdict", "Time", "Memory", "Difference",
		"1", "Accepted", "38 ms", "8MiB",
		"2", "Wrong answer", "41 ms", "9MiB", `line 1: expected "30", got "31"`,
		"10", "Accepted", "35 ms", "8MiB"}
	if !slices.Equal(cells, want) {
		t.Fatalf("the table shows\n%q\nwant\n%q", cells, want)
	}
	if len(verdicts) != 3 || verdicts[0].Importance != widget.SuccessImportance || verdicts[1].Importance != widget.DangerImportance {
		t.Fatalf("verdicts not coloured: %d coloured", len(verdicts))
	}
	test.Tap(d.copyBtn)
	if got := h.app.Clipboard().Content(); !strings.HasPrefix(got, "Test\tVerdict\tTime\tMemory\tDifference\n1\tAccepted\t38 ms\t8MiB\t\n2\tWrong answer") {
		t.Fatalf("copied %q", got)
	}

	// All accepted: green, and the title says so. The comparison is the user's.
	if !u.prog.compare.Visible() {
		t.Fatal("no comparison choice with tests attached")
	}
	u.prog.compare.SetSelected(compareLabel(sandbox.CompareTokens))
	test.Tap(u.prog.runBtn)
	r = fs.next(t)
	if r.spec.Compare != sandbox.CompareTokens {
		t.Fatalf("compare %q, want tokens", r.spec.Compare)
	}
	r.end(sandbox.Result{Status: sandbox.StatusOK, Verdict: sandbox.VerdictAccepted, Cases: []sandbox.CaseResult{
		{Name: "1", Verdict: sandbox.VerdictAccepted}, {Name: "2", Verdict: sandbox.VerdictAccepted}, {Name: "10", Verdict: sandbox.VerdictAccepted}}}, nil)
	h.until("the second verdict", func() bool { return len(u.jobs) == 2 && !u.jobs[1].active() })
	if !strings.Contains(d.title.Text, "Accepted, 3/3 tests") || d.strip.FillColor != theme.Color(theme.ColorNameSuccess) {
		t.Fatalf("banner %q", d.title.Text)
	}

	// Cleared: a plain run with the typed input, and no Tests tab.
	test.Tap(u.prog.clearTestBtn)
	if u.prog.testsLabel.Text != "no tests" || u.prog.clearTestBtn.Visible() || u.prog.stdin.Disabled() {
		t.Fatalf("cleared: %q, clear shown %v, stdin disabled %v", u.prog.testsLabel.Text, u.prog.clearTestBtn.Visible(), u.prog.stdin.Disabled())
	}
	test.Type(u.prog.stdin, "1 1")
	test.Tap(u.prog.runBtn)
	r = fs.next(t)
	if r.spec.Tests != nil || string(r.spec.Stdin) != "1 1" {
		t.Fatalf("after clearing: tests %+v stdin %q", r.spec.Tests, r.spec.Stdin)
	}
	r.end(sandbox.Result{Status: sandbox.StatusOK, Stdout: []byte("2\n")}, nil)
	h.until("the plain result", func() bool { return len(u.jobs) == 3 && !u.jobs[2].active() })
	if slices.Contains(d.tabs.Items, d.tabCases) || d.tabs.Selected() != d.tabOut {
		t.Fatalf("a plain job shows the Tests tab")
	}
	// Back on the judged job, its table is back.
	u.list.Select(2)
	if !slices.Contains(d.tabs.Items, d.tabCases) || d.tabs.Selected() != d.tabCases {
		t.Fatalf("the first job's Tests tab is not shown")
	}
}

func TestTestsFolderProblemsAreNotices(t *testing.T) {
	h := newHarness(t, newFakeServers().dial, nil)
	u := h.ui
	good := writeTests(t, map[string]string{"a.in": "1\n", "a.out": "1\n"})
	u.prog.attachTests(good)
	for _, tc := range []struct {
		files map[string]string
		words string
	}{
		{map[string]string{"notes.txt": "x"}, "no test cases in"},
		{map[string]string{"1.in": "1", "1.out": "1", "2.in": "2"}, "2.in has no expected output"},
	} {
		u.prog.attachTests(writeTests(t, tc.files))
		if msg := u.notice.text(); !strings.Contains(msg, "No tests attached") || !strings.Contains(msg, tc.words) {
			t.Errorf("notice %q lacks %q", msg, tc.words)
		}
		if u.prog.testsLabel.Text != "1 test from tests" || len(u.prog.tests) != 1 {
			t.Fatalf("a bad folder replaced the tests attached: %q", u.prog.testsLabel.Text)
		}
	}
	// A case without input is one with empty input.
	// Too many cases: refused here, not by the server after sending.
	many := map[string]string{}
	for i := range sandbox.MaxTests + 1 {
		many[fmt.Sprintf("%d.out", i)] = ""
	}
	u.prog.attachTests(writeTests(t, many))
	if msg := u.notice.text(); !strings.Contains(msg, "a server takes at most") || len(u.prog.tests) != 1 {
		t.Errorf("notice %q, %d tests attached", msg, len(u.prog.tests))
	}
}

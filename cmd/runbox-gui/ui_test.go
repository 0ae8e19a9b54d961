package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/storage"
	"fyne.io/fyne/v2/test"
	"fyne.io/fyne/v2/theme"
	"fyne.io/fyne/v2/widget"

	"runbox/sandbox"
	"runbox/scheduler"
	"runbox/transport"
)

func TestDefaultsAreLocalMaster(t *testing.T) {
	h := newHarness(t, newFakeServers().dial, nil)
	if h.ui.srv.host.Text != DefaultHost || h.ui.srv.port.Text != DefaultPort {
		t.Fatalf("server fields %q %q, want %s %s", h.ui.srv.host.Text, h.ui.srv.port.Text, DefaultHost, DefaultPort)
	}
	if h.ui.prog.lang.Selected != "Python" {
		t.Fatalf("language %q, want Python", h.ui.prog.lang.Selected)
	}
	if h.ui.notice.text() != "" {
		t.Fatalf("notice %q at start", h.ui.notice.text())
	}
}

func TestRunShowsQueueTimerOutputAndResult(t *testing.T) {
	fs := newFakeServers()
	h := newHarness(t, fs.dial, nil)
	u, d := h.ui, h.ui.detail

	h.typeProgram("name = input()\nprint('hello', name)")
	test.Type(u.prog.stdin, "world")
	test.Tap(u.prog.runBtn)
	r := fs.next(t)
	if got := string(r.spec.Files[0].Content); got != "name = input()\nprint('hello', name)" {
		t.Fatalf("sent source %q", got)
	}
	if r.spec.Language != "python" || string(r.spec.Stdin) != "world" || r.server.Addr != "127.0.0.1:7700" {
		t.Fatalf("sent %s with stdin %q to %s", r.spec.Language, r.spec.Stdin, r.server.Addr)
	}
	if len(u.jobs) != 1 || u.selected != u.jobs[0] {
		t.Fatalf("%d jobs, the new one not selected", len(u.jobs))
	}
	j := u.jobs[0]
	if !strings.Contains(d.title.Text, "Connecting to 127.0.0.1:7700") || d.cancelBtn.Disabled() {
		t.Fatalf("title %q, cancel disabled %v", d.title.Text, d.cancelBtn.Disabled())
	}

	r.accepted("job-1")
	r.queued(2)
	h.until("queue position", func() bool { return strings.Contains(d.title.Text, "Queued, position 2") })
	h.tick(1500 * time.Millisecond)
	if d.timer.Text != "1.5 s" {
		t.Fatalf("timer %q after 1.5 s", d.timer.Text)
	}
	if row := h.rowOf(1); row.timer.Text != "1.5 s" || !strings.Contains(row.state.Text, "Queued, position 2") {
		t.Fatalf("row shows %q %q", row.state.Text, row.timer.Text)
	}
	h.tick(100 * time.Millisecond)
	if d.timer.Text != "1.6 s" {
		t.Fatalf("timer %q did not tick to 1.6 s", d.timer.Text)
	}

	r.started("node-b")
	r.output(sandbox.Stdout, "hello ")
	r.output(sandbox.Stdout, "world\n")
	h.until("running", func() bool { return strings.Contains(d.title.Text, "Running on node-b") && len(j.stdout) == 12 })
	if !strings.Contains(d.facts.Text, "node node-b") || !strings.Contains(d.facts.Text, "job job-1") {
		t.Fatalf("facts %q", d.facts.Text)
	}
	h.tick(time.Second) // new output shows on the tick
	if got := d.stdout.Text(); !strings.Contains(got, "hello world") {
		t.Fatalf("live stdout %q", got)
	}
	if d.timer.Text != "2.6 s" {
		t.Fatalf("timer %q", d.timer.Text)
	}

	r.end(sandbox.Result{Status: sandbox.StatusOK, Stdout: []byte("hello world\n"), Time: 35 * time.Millisecond,
		CPUTime: 30 * time.Millisecond, Memory: 8 << 20, Node: "node-b", Attempts: 1}, nil)
	h.until("the result", func() bool { return !j.active() })
	if !strings.Contains(d.title.Text, "OK") || d.strip.FillColor != theme.Color(theme.ColorNameSuccess) {
		t.Fatalf("banner %q in %v", d.title.Text, d.strip.FillColor)
	}
	for _, want := range []string{"exit code 0", "time 35 ms", "CPU 30 ms", "memory 8MiB", "node node-b"} {
		if !strings.Contains(d.facts.Text, want) {
			t.Errorf("facts %q lack %q", d.facts.Text, want)
		}
	}
	if !d.cancelBtn.Disabled() || d.copyBtn.Disabled() || d.saveBtn.Disabled() {
		t.Fatalf("buttons: cancel %v copy %v save %v", d.cancelBtn.Disabled(), d.copyBtn.Disabled(), d.saveBtn.Disabled())
	}
	if d.tabs.Selected() != d.tabOut || d.tabOut.Text != "Output (1)" {
		t.Fatalf("tab %q selected", d.tabs.Selected().Text)
	}
	h.tick(5 * time.Second)
	if d.timer.Text != "2.6 s" || h.rowOf(1).timer.Text != "2.6 s" {
		t.Fatalf("the timer went on after the end: %q", d.timer.Text)
	}

	test.Tap(d.copyBtn)
	if got := h.app.Clipboard().Content(); got != "hello world\n" {
		t.Fatalf("clipboard %q", got)
	}
	if h.app.Preferences().String(prefHost) != "127.0.0.1" || h.app.Preferences().String(prefPort) != "7700" {
		t.Fatal("the server was not remembered")
	}
}

func TestCompileErrorShownApartFromRuntimeErrors(t *testing.T) {
	fs := newFakeServers()
	h := newHarness(t, fs.dial, nil)
	u, d := h.ui, h.ui.detail
	u.prog.lang.SetSelected("C")

	h.typeProgram("int main() { return x; }")
	test.Tap(u.prog.runBtn)
	r := fs.next(t)
	if r.spec.Language != "c" {
		t.Fatalf("language %q", r.spec.Language)
	}
	r.started("master")
	r.output(sandbox.Compile, "main.c:1:21: error: 'x' undeclared\n")
	r.end(sandbox.Result{Status: sandbox.StatusCompileError, ExitCode: 1, CompileOutput: []byte("main.c:1:21: error: 'x' undeclared\n"),
		CompileTime: 80 * time.Millisecond, Node: "master"}, nil)
	h.until("the result", func() bool { return !u.jobs[0].active() })
	if !strings.Contains(d.title.Text, "Compile error") || d.strip.FillColor != theme.Color(theme.ColorNameError) {
		t.Fatalf("banner %q", d.title.Text)
	}
	if d.tabs.Selected() != d.tabCompile || !strings.Contains(d.compile.Text(), "'x' undeclared") {
		t.Fatalf("tab %q, compiler output %q", d.tabs.Selected().Text, d.compile.Text())
	}
	if strings.TrimSpace(d.stdout.Text()) != "" || strings.TrimSpace(d.stderr.Text()) != "" {
		t.Fatalf("compiler output leaked into stdout %q / stderr %q", d.stdout.Text(), d.stderr.Text())
	}
	if !strings.Contains(d.message.Text, "Compiler tab") || strings.Contains(d.facts.Text, "memory") {
		t.Fatalf("message %q facts %q", d.message.Text, d.facts.Text)
	}

	// A runtime error: its traceback is in the Errors tab, shown since nothing else printed.
	h.typeProgram("1/0")
	u.prog.lang.SetSelected("Python")
	test.Tap(u.prog.runBtn)
	r = fs.next(t)
	r.started("master")
	r.output(sandbox.Stderr, "ZeroDivisionError: division by zero\n")
	r.end(sandbox.Result{Status: sandbox.StatusRuntimeError, ExitCode: 1, Stderr: []byte("ZeroDivisionError: division by zero\n"), Node: "master"}, nil)
	h.until("the second result", func() bool { return len(u.jobs) == 2 && !u.jobs[1].active() })
	if !strings.Contains(d.title.Text, "Runtime error (exit code 1)") || d.tabs.Selected() != d.tabErr {
		t.Fatalf("banner %q, tab %q", d.title.Text, d.tabs.Selected().Text)
	}
	if !strings.Contains(d.stderr.Text(), "ZeroDivisionError") || strings.TrimSpace(d.compile.Text()) != "" {
		t.Fatalf("stderr %q compiler %q", d.stderr.Text(), d.compile.Text())
	}

	// A limit is its own colour, with the server's explanation.
	test.Tap(u.prog.runBtn)
	r = fs.next(t)
	r.end(sandbox.Result{Status: sandbox.StatusTimeLimit, ExitCode: 137, Signal: "SIGKILL", Message: "killed after the 5s run time limit"}, nil)
	h.until("the third result", func() bool { return len(u.jobs) == 3 && !u.jobs[2].active() })
	if !strings.Contains(d.title.Text, "Time limit exceeded") || d.message.Text != "killed after the 5s run time limit" ||
		d.strip.FillColor != theme.Color(theme.ColorNameWarning) || !strings.Contains(d.facts.Text, "signal SIGKILL") {
		t.Fatalf("banner %q message %q facts %q", d.title.Text, d.message.Text, d.facts.Text)
	}
}

func TestBusyThenAnotherServerWithoutRestarting(t *testing.T) {
	fs := newFakeServers()
	h := newHarness(t, fs.dial, nil)
	u, d := h.ui, h.ui.detail

	h.typeProgram("print('hi')")
	test.Tap(u.prog.runBtn)
	r := fs.next(t)
	// As it comes off the wire: the scheduler's sentinel, the server's words.
	r.end(sandbox.Result{ExitCode: -1}, scheduler.ErrorOf("busy", "server busy: 1 program(s) running and 0 queued, the limit; try another server or retry later"))
	h.until("the busy message", func() bool { return u.notice.text() != "" })
	msg := u.notice.text()
	for _, want := range []string{"Server busy", "127.0.0.1:7700 is busy", "1 program(s) running", "another server or port"} {
		if !strings.Contains(msg, want) {
			t.Errorf("notice %q lacks %q", msg, want)
		}
	}
	if !strings.Contains(d.title.Text, "Server busy") || d.strip.FillColor != theme.Color(theme.ColorNameWarning) {
		t.Fatalf("banner %q", d.title.Text)
	}
	if h.rowOf(1).state.Text != "Server busy" {
		t.Fatalf("row %q", h.rowOf(1).state.Text)
	}

	// The user changes the port and sends again: the notice goes, a new job runs there.
	h.setServer("127.0.0.1:7701")
	if u.notice.text() != "" {
		t.Fatalf("notice %q stayed after editing the server", u.notice.text())
	}
	test.Tap(u.prog.runBtn)
	r = fs.next(t)
	if r.server.Addr != "127.0.0.1:7701" || string(r.spec.Files[0].Content) != "print('hi')" {
		t.Fatalf("resent %q to %s", r.spec.Files[0].Content, r.server.Addr)
	}
	r.started("other")
	r.output(sandbox.Stdout, "hi\n")
	r.end(sandbox.Result{Status: sandbox.StatusOK, Stdout: []byte("hi\n"), Node: "other"}, nil)
	h.until("the result from the second server", func() bool { return len(u.jobs) == 2 && !u.jobs[1].active() })
	if !strings.Contains(d.title.Text, "#2") || !strings.Contains(d.title.Text, "OK") || !strings.Contains(d.stdout.Text(), "hi") {
		t.Fatalf("banner %q stdout %q", d.title.Text, d.stdout.Text())
	}
	if u.jobs[0].phase != phaseFailed || u.notice.text() != "" {
		t.Fatalf("first job %v, notice %q", u.jobs[0].phase, u.notice.text())
	}
	if h.app.Preferences().String(prefPort) != "7701" {
		t.Fatal("the new port was not remembered")
	}
}

func TestUnreachableServerThenFixed(t *testing.T) {
	fs := newFakeServers()
	fs.setDialErr("127.0.0.1:7700", fmt.Errorf("%w 127.0.0.1:7700: dial tcp 127.0.0.1:7700: connect: connection refused", transport.ErrConnect))
	h := newHarness(t, fs.dial, nil)
	u, d := h.ui, h.ui.detail

	h.typeProgram("print(1)")
	test.Tap(u.prog.runBtn)
	h.until("the failure", func() bool { return len(u.jobs) == 1 && !u.jobs[0].active() })
	if msg := u.notice.text(); !strings.Contains(msg, "Cannot reach a runbox server at 127.0.0.1:7700") || !strings.Contains(msg, "connection refused") {
		t.Fatalf("notice %q", msg)
	}
	if !strings.Contains(d.title.Text, "Cannot reach the server") || d.strip.FillColor != theme.Color(theme.ColorNameError) {
		t.Fatalf("banner %q", d.title.Text)
	}

	// The server comes up: the same fields work, the failed dial was not kept.
	fs.setDialErr("127.0.0.1:7700", nil)
	test.Tap(u.prog.runBtn)
	r := fs.next(t)
	r.end(sandbox.Result{Status: sandbox.StatusOK}, nil)
	h.until("the result", func() bool { return len(u.jobs) == 2 && !u.jobs[1].active() })
	if fs.dialCount() != 2 {
		t.Fatalf("%d dials, want 2", fs.dialCount())
	}

	// A third job reuses the connection.
	test.Tap(u.prog.runBtn)
	fs.next(t).end(sandbox.Result{Status: sandbox.StatusOK}, nil)
	h.until("the third result", func() bool { return len(u.jobs) == 3 && !u.jobs[2].active() })
	if fs.dialCount() != 2 {
		t.Fatalf("%d dials, want the connection reused", fs.dialCount())
	}
}

func TestOtherRefusalsAreExplained(t *testing.T) {
	for _, tc := range []struct {
		err          error
		title, words string
	}{
		{fmt.Errorf("%w: bad token", transport.ErrUnauthorized), "Token refused", "Check the Token field"},
		{scheduler.ErrorOf("invalid_request", "invalid request: run time limit 90s is above the server maximum 60s"), "Request refused", "above the server maximum"},
		{scheduler.ErrorOf("crashed_node", "node crashed while running the job"), "Node crashed", "node crashed"},
		{fmt.Errorf("%w: 10 programs a minute", transport.ErrRateLimited), "Too many programs", "Wait a little"},
		{errors.New("something odd"), "Error", "something odd"},
		// TLS: the transport's words name `runbox submit`'s flags; the window names its field.
		{&caError{"/etc/runbox/ca.crt", fmt.Errorf("tls: %w", &fs.PathError{Op: "open", Path: "/etc/runbox/ca.crt", Err: syscall.EACCES})},
			"TLS CA file unusable", "The TLS CA file /etc/runbox/ca.crt cannot be used: permission denied."},
		{scheduler.ErrorOf("unauthorized", "unauthorized: this server requires TLS: connect with --tls-ca FILE (the cluster's CA certificate; see docs/security.md)"),
			"Server needs TLS", "127.0.0.1:7700 needs TLS"},
		{fmt.Errorf("%w: the server speaks TLS: connect with --tls-ca FILE (the cluster's CA certificate)", transport.ErrConnect), "Server needs TLS", "TLS CA field"},
		{fmt.Errorf("%w 127.0.0.1:7700: the server does not speak TLS (a master started without --tls-dir?); connect without --tls-ca: EOF", transport.ErrConnect),
			"Server without TLS", "Clear the TLS CA field"},
		{fmt.Errorf("%w: 127.0.0.1:7700: the server's certificate was refused: x509: certificate signed by unknown authority (is --tls-ca the cluster's CA?)", transport.ErrUnauthorized),
			"Certificate refused", "this cluster's CA certificate"},
	} {
		t.Run(tc.title, func(t *testing.T) {
			fs := newFakeServers()
			h := newHarness(t, fs.dial, nil)
			h.typeProgram("print(1)")
			test.Tap(h.ui.prog.runBtn)
			fs.next(t).end(sandbox.Result{ExitCode: -1}, tc.err)
			h.until("the failure", func() bool { return !h.ui.jobs[0].active() })
			if d := h.ui.detail; !strings.Contains(d.title.Text, tc.title) || !strings.Contains(d.message.Text, tc.words) {
				t.Fatalf("banner %q message %q", d.title.Text, d.message.Text)
			}
		})
	}
}

func TestCancelStopsTheJob(t *testing.T) {
	fs := newFakeServers()
	h := newHarness(t, fs.dial, nil)
	u, d := h.ui, h.ui.detail

	h.typeProgram("while True: pass")
	test.Tap(u.prog.runBtn)
	r := fs.next(t)
	r.accepted("job-9")
	r.started("master")
	h.until("running", func() bool { return u.jobs[0].phase == phaseRunning })
	if d.cancelBtn.Disabled() {
		t.Fatal("cancel is disabled while the job runs")
	}
	test.Tap(d.cancelBtn)
	if !strings.Contains(d.title.Text, "cancelling") || !d.cancelBtn.Disabled() {
		t.Fatalf("after Cancel: %q, button enabled %v", d.title.Text, !d.cancelBtn.Disabled())
	}
	<-r.ctx.Done() // the client's Run sees the cancel, as the server would
	h.until("cancelled", func() bool { return u.jobs[0].phase == phaseCancelled })
	if !strings.Contains(d.title.Text, "Cancelled") || d.strip.FillColor != theme.Color(theme.ColorNameDisabled) {
		t.Fatalf("banner %q", d.title.Text)
	}
	if u.notice.text() != "" {
		t.Fatalf("a cancel is not a problem to announce: %q", u.notice.text())
	}
}

func TestSeveralJobsEachWithItsTimer(t *testing.T) {
	fs := newFakeServers()
	h := newHarness(t, fs.dial, nil)
	u, d := h.ui, h.ui.detail

	h.typeProgram("first")
	test.Tap(u.prog.runBtn)
	r1 := fs.next(t)
	r1.started("a")
	h.tick(time.Second)
	h.typeProgram("second")
	test.Tap(u.prog.runBtn)
	r2 := fs.next(t)
	r2.queued(1)
	h.until("both shown", func() bool { return u.jobs[0].phase == phaseRunning && u.jobs[1].phase == phaseQueued })
	h.tick(500 * time.Millisecond)
	if a, b := h.rowOf(1).timer.Text, h.rowOf(2).timer.Text; a != "1.5 s" || b != "0.5 s" {
		t.Fatalf("timers %q and %q, want 1.5 s and 0.5 s", a, b)
	}
	if rows := h.rows(); len(rows) != 2 || !strings.HasPrefix(rows[0].name.Text, "#2") {
		t.Fatalf("the newest job is not on top")
	}

	r1.output(sandbox.Stdout, "one\n")
	r1.end(sandbox.Result{Status: sandbox.StatusOK, Stdout: []byte("one\n")}, nil)
	h.until("the first result", func() bool { return !u.jobs[0].active() })
	h.tick(time.Second)
	if a, b := h.rowOf(1).timer.Text, h.rowOf(2).timer.Text; a != "1.5 s" || b != "1.5 s" {
		t.Fatalf("timers %q and %q, want the first stopped at 1.5 s and the second at 1.5 s", a, b)
	}
	// The second job is shown; selecting the first shows its output.
	if !strings.Contains(d.title.Text, "#2") {
		t.Fatalf("shown %q", d.title.Text)
	}
	u.list.Select(1)
	if !strings.Contains(d.title.Text, "#1") || !strings.Contains(d.stdout.Text(), "one") {
		t.Fatalf("selected the first: %q %q", d.title.Text, d.stdout.Text())
	}
	r2.end(sandbox.Result{Status: sandbox.StatusOK}, nil)
	h.until("the second result", func() bool { return !u.jobs[1].active() })
	if !strings.Contains(d.title.Text, "#1") {
		t.Fatalf("a result took the view from the selected job: %q", d.title.Text)
	}
}

func TestReconnectingIsShown(t *testing.T) {
	fs := newFakeServers()
	h := newHarness(t, fs.dial, nil)
	h.typeProgram("x")
	test.Tap(h.ui.prog.runBtn)
	r := fs.next(t)
	r.started("a")
	r.reconnecting()
	h.until("reconnecting", func() bool { return strings.Contains(h.ui.detail.title.Text, "reconnecting") })
	r.output(sandbox.Stdout, "back\n")
	h.until("back", func() bool { return !strings.Contains(h.ui.detail.title.Text, "reconnecting") })
}

func TestNewAttemptStartsTheOutputAfresh(t *testing.T) {
	fs := newFakeServers()
	h := newHarness(t, fs.dial, nil)
	d := h.ui.detail
	h.typeProgram("x")
	test.Tap(h.ui.prog.runBtn)
	r := fs.next(t)
	r.started("slave-1")
	r.output(sandbox.Stdout, "from the first attempt\n")
	h.until("output", func() bool { return len(h.ui.jobs[0].stdout) > 0 })
	h.tick(time.Second)
	r.started("slave-2") // slave-1 died; the master placed the job again
	r.output(sandbox.Stdout, "from the second\n")
	h.until("the second attempt", func() bool { return strings.Contains(d.title.Text, "Running on slave-2 (attempt 2)") })
	h.tick(time.Second)
	if got := d.stdout.Text(); strings.Contains(got, "first") || !strings.Contains(got, "from the second") {
		t.Fatalf("stdout %q", got)
	}
}

func TestOpenFileGuessesLanguage(t *testing.T) {
	fs := newFakeServers()
	h := newHarness(t, fs.dial, nil)
	u := h.ui
	dir := t.TempDir()
	write := func(name, src string) fyne.URI {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		return storage.NewFileURI(p)
	}

	u.prog.openURI(write("hello.c", "int main(void) { return 0; }\n")) // as a drop does
	if u.prog.editor.Text != "int main(void) { return 0; }\n" || u.prog.lang.Selected != "C" || u.prog.fileLabel.Text != "hello.c" {
		t.Fatalf("editor %q, language %q, file %q", u.prog.editor.Text, u.prog.lang.Selected, u.prog.fileLabel.Text)
	}
	if h.app.Preferences().String(prefOpenDir) != dir {
		t.Fatalf("open dir %q not remembered", h.app.Preferences().String(prefOpenDir))
	}
	u.prog.openURI(write("solve.cc", "int main() {}\n"))
	if u.prog.lang.Selected != "C++" {
		t.Fatalf("language %q for .cc", u.prog.lang.Selected)
	}
	// The guess can be overridden, and the edited text is what is sent.
	u.prog.lang.SetSelected("C")
	test.Type(u.prog.editor, "// edited\n")
	test.Tap(u.prog.runBtn)
	r := fs.next(t)
	if r.spec.Language != "c" || !strings.Contains(string(r.spec.Files[0].Content), "// edited") {
		t.Fatalf("sent %s %q", r.spec.Language, r.spec.Files[0].Content)
	}
	r.end(sandbox.Result{Status: sandbox.StatusOK}, nil)
	h.until("the result", func() bool { return !u.jobs[0].active() })
	if !strings.HasPrefix(u.detail.title.Text, "#1 solve.cc") {
		t.Fatalf("job named %q", u.detail.title.Text)
	}

	u.prog.openURI(write("notes.txt", "print(1)\n"))
	if !strings.Contains(u.notice.text(), "Cannot tell the language of notes.txt") || u.prog.lang.Selected != "C" {
		t.Fatalf("notice %q, language %q", u.notice.text(), u.prog.lang.Selected)
	}
	big := strings.Repeat("x", sandbox.MaxSourceBytes+1)
	u.prog.openURI(write("big.py", big))
	if !strings.Contains(u.notice.text(), "larger than") || u.prog.editor.Text == big {
		t.Fatalf("a too large file was loaded: notice %q", u.notice.text())
	}
	u.prog.openURI(storage.NewFileURI(filepath.Join(dir, "missing.py")))
	if !strings.Contains(u.notice.text(), "Cannot open missing.py") {
		t.Fatalf("notice %q", u.notice.text())
	}
}

func TestBadFieldsAreMessagesNotJobs(t *testing.T) {
	fs := newFakeServers()
	h := newHarness(t, fs.dial, nil)
	u := h.ui

	test.Tap(u.prog.runBtn)
	if !strings.Contains(u.notice.text(), "The program is empty") {
		t.Fatalf("notice %q", u.notice.text())
	}
	h.typeProgram("print(1)")
	for _, port := range []string{"", "http", "0", "70000"} {
		u.srv.port.SetText(port)
		test.Tap(u.prog.runBtn)
		if !strings.Contains(u.notice.text(), "is not a number between 1 and 65535") {
			t.Fatalf("port %q: notice %q", port, u.notice.text())
		}
	}
	u.srv.port.SetText("7700")
	u.srv.host.SetText("  ")
	test.Tap(u.prog.runBtn)
	if !strings.Contains(u.notice.text(), "Server field") {
		t.Fatalf("notice %q", u.notice.text())
	}
	if len(u.jobs) != 0 || fs.dialCount() != 0 {
		t.Fatalf("%d jobs, %d dials from bad fields", len(u.jobs), fs.dialCount())
	}
}

func TestServerIsRememberedAndTokenIsNot(t *testing.T) {
	fs := newFakeServers()
	h := newHarness(t, fs.dial, nil)
	prefs := h.app.Preferences()
	h.setServer("10.1.2.3:7800")
	test.Type(h.ui.srv.token, "s3cret")
	h.typeProgram("print(1)")
	test.Tap(h.ui.prog.runBtn)
	r := fs.next(t)
	if r.server != (Server{Addr: "10.1.2.3:7800", Token: "s3cret"}) {
		t.Fatalf("dialled %+v", r.server)
	}
	r.end(sandbox.Result{Status: sandbox.StatusOK}, nil)
	h.until("the result", func() bool { return !h.ui.jobs[0].active() })

	// A new window (the next start) shows the remembered server, and no token.
	h2 := newHarness(t, fs.dial, func(c *Config) { c.Prefs = prefs })
	if h2.ui.srv.host.Text != "10.1.2.3" || h2.ui.srv.port.Text != "7800" || h2.ui.srv.token.Text != "" {
		t.Fatalf("next start shows %q %q token %q", h2.ui.srv.host.Text, h2.ui.srv.port.Text, h2.ui.srv.token.Text)
	}
	// -server wins over the remembered one; IPv6 works.
	h3 := newHarness(t, fs.dial, func(c *Config) { c.Prefs = prefs; c.Server = "[::1]:7900" })
	if h3.ui.srv.host.Text != "::1" || h3.ui.srv.port.Text != "7900" {
		t.Fatalf("-server shows %q %q", h3.ui.srv.host.Text, h3.ui.srv.port.Text)
	}
	if srv, err := h3.ui.srv.server(); err != nil || srv.Addr != "[::1]:7900" {
		t.Fatalf("server %v %v", srv, err)
	}
}

func TestCopyAndSaveTheShownTab(t *testing.T) {
	fs := newFakeServers()
	h := newHarness(t, fs.dial, nil)
	u, d := h.ui, h.ui.detail
	h.typeProgram("x")
	test.Tap(u.prog.runBtn)
	r := fs.next(t)
	r.output(sandbox.Stdout, "out\n")
	r.output(sandbox.Stderr, "warn\n")
	r.end(sandbox.Result{Status: sandbox.StatusOK, Stdout: []byte("out\n"), Stderr: []byte("warn\n")}, nil)
	h.until("the result", func() bool { return !u.jobs[0].active() })

	d.tabs.Select(d.tabErr)
	test.Tap(d.copyBtn)
	if got := h.app.Clipboard().Content(); got != "warn\n" {
		t.Fatalf("copied %q from the Errors tab", got)
	}
	p := filepath.Join(t.TempDir(), "out.txt")
	w, err := storage.Writer(storage.NewFileURI(p))
	if err != nil {
		t.Fatal(err)
	}
	data, what := d.shownOutput()
	d.save(w, data)
	if b, _ := os.ReadFile(p); string(b) != "warn\n" || what != "stderr" {
		t.Fatalf("saved %q (%s)", b, what)
	}
}

func TestHugeOutputShowsItsTail(t *testing.T) {
	data := []byte(strings.Repeat("0123456789abcdef\n", 2*maxShown/17))
	got := shownText(data)
	if len(got) > maxShown+200 || !strings.HasPrefix(got, "… ") || !strings.Contains(got, "Save output") {
		t.Fatalf("shown %d bytes starting %q", len(got), got[:40])
	}
	if !strings.HasSuffix(got, "0123456789abcdef\n") {
		t.Fatal("the tail is cut")
	}
	if shownText([]byte("a\xffb")) != "a\uFFFDb" {
		t.Fatal("invalid UTF-8 is not replaced")
	}
}

func TestClusterTabShowsNodesLive(t *testing.T) {
	fs := newFakeServers()
	fs.setSnapshot(scheduler.Snapshot{
		Nodes: []scheduler.NodeInfo{
			{Name: "slave-1", Role: "slave", State: scheduler.NodeDraining, Capacity: 2, Running: 1, Load: scheduler.Load{CPU: 37.4, MemUsed: 512 << 20, MemTotal: 2 << 30}},
			{Name: "master", Role: "master", State: scheduler.NodeReady, Capacity: 1, Running: 1},
		},
		Running: []scheduler.Info{{ID: "j1", Language: "python", State: scheduler.StateRunning, Node: "master"}, {ID: "j2", Language: "c", State: scheduler.StateRunning, Node: "slave-1"}},
		Queued:  []scheduler.Info{{ID: "j3", Language: "cpp", State: scheduler.StateQueued}},
		Totals:  scheduler.Totals{Accepted: 7, Rejected: 2, Finished: 4},
	}, nil)
	h := newHarness(t, fs.dial, nil)
	u, c := h.ui, h.ui.cluster

	h.statusTick() // not shown: no request
	if fs.dialCount() != 0 {
		t.Fatal("the hidden cluster tab asked for the status")
	}
	u.tabs.Select(u.clusterTab)
	h.until("the status", func() bool { return len(c.nodes) == 2 })
	if c.nodes[0].Name != "master" || !strings.Contains(c.header.Text, "Cluster at 127.0.0.1:7700") {
		t.Fatalf("nodes %v, header %q", c.nodes, c.header.Text)
	}
	for _, want := range []string{"2 node(s)", "2 / 3 slots busy", "2 running", "1 queued", "7 accepted", "2 refused busy"} {
		if !strings.Contains(c.summary.Text, want) {
			t.Errorf("summary %q lacks %q", c.summary.Text, want)
		}
	}
	var cells []string
	for _, o := range test.LaidOutObjects(c.nodeTbl) {
		switch o := o.(type) {
		case *widget.ProgressBar:
			cells = append(cells, o.TextFormatter())
		case *widget.Label:
			cells = append(cells, o.Text)
		}
	}
	want := "master, master, 1 / 1 programs, 0 %, unknown, slave-1 (draining), slave, 1 / 2 programs, 37 %, 512MiB / 2GiB"
	if got := strings.Join(cells, ", "); got != want {
		t.Fatalf("node rows show\n%s\nwant\n%s", got, want)
	}

	// Live: the next tick shows the new load.
	fs.setSnapshot(scheduler.Snapshot{Nodes: []scheduler.NodeInfo{{Name: "master", Role: "master", Capacity: 1}}}, nil)
	h.statusTick()
	h.until("the new status", func() bool { return len(c.nodes) == 1 })
	if !strings.Contains(c.summary.Text, "0 / 1 slots busy") {
		t.Fatalf("summary %q", c.summary.Text)
	}

	// A server that cannot answer is a message in the tab.
	fs.setSnapshot(scheduler.Snapshot{}, fmt.Errorf("%w: connection lost", transport.ErrConnect))
	h.statusTick()
	h.until("the problem", func() bool { return c.problem.Visible() })
	if !strings.Contains(c.problem.Text, "Cannot reach") {
		t.Fatalf("problem %q", c.problem.Text)
	}
}

func TestFormatting(t *testing.T) {
	t.Parallel()
	for d, want := range map[time.Duration]string{0: "0.0 s", 99 * time.Millisecond: "0.0 s", 1234 * time.Millisecond: "1.2 s",
		59990 * time.Millisecond: "59.9 s", 60 * time.Second: "1:00.0", 125100 * time.Millisecond: "2:05.1", -time.Second: "0.0 s"} {
		if got := formatElapsed(d); got != want {
			t.Errorf("formatElapsed(%v) = %q, want %q", d, got, want)
		}
	}
	for d, want := range map[time.Duration]string{500 * time.Microsecond: "500 µs", 35 * time.Millisecond: "35 ms", 1240 * time.Millisecond: "1.24 s"} {
		if got := formatDuration(d); got != want {
			t.Errorf("formatDuration(%v) = %q, want %q", d, got, want)
		}
	}
	for _, l := range sandbox.Languages() {
		if languageByLabel(languageLabel(l.Name)) != l.Name {
			t.Errorf("language %s does not survive its label", l.Name)
		}
	}
}

func TestEventsPileUpBehindOneDo(t *testing.T) {
	h := newHarness(t, newFakeServers().dial, nil)
	h.typeProgram("x")
	j := &job{seq: 1, name: "x", server: Server{Addr: "a:1"}, submitted: h.clock.Now(), cancel: func() {}}
	h.ui.jobs = append(h.ui.jobs, j)
	m := &mailbox{u: h.ui, j: j}
	// A window too slow to keep up: 1000 events arrive before it runs any.
	m.post(func() { j.start("n") })
	for i := range 1000 {
		m.post(func() { j.appendOutput(sandbox.Chunk{Stream: sandbox.Stdout, Data: []byte(fmt.Sprintf("%d\n", i))}) })
	}
	m.post(func() { h.ui.finished(j, sandbox.Result{Status: sandbox.StatusOK}, nil, h.clock.Now()) })
	h.q.mu.Lock()
	queued := len(h.q.fns)
	h.q.mu.Unlock()
	if queued != 1 {
		t.Fatalf("%d Do calls queued for one job's events, want 1", queued)
	}
	h.q.drain()
	if !strings.HasPrefix(string(j.stdout), "0\n1\n2\n") || !strings.HasSuffix(string(j.stdout), "998\n999\n") || j.phase != phaseDone {
		t.Fatalf("events out of order or lost: %d bytes, phase %v", len(j.stdout), j.phase)
	}

	// Ticks do not pile up either.
	h.timer <- h.clock.Now()
	h.timer <- h.clock.Now()
	h.timer <- h.clock.Now()
	h.q.mu.Lock()
	queued = len(h.q.fns)
	h.q.mu.Unlock()
	if queued != 1 {
		t.Fatalf("%d ticks queued, want 1", queued)
	}
}

func TestTLSCAFieldFeedsServerAndIsRemembered(t *testing.T) {
	fs := newFakeServers()
	h := newHarness(t, fs.dial, nil)
	u, prefs := h.ui, h.app.Preferences()
	if u.srv.tlsCA.Text != "" {
		t.Fatalf("TLS CA %q at first start, want empty (plaintext)", u.srv.tlsCA.Text)
	}

	// Browse… opens a file dialog; a file picked there fills the field.
	test.Tap(u.srv.browseCA)
	if h.win.Canvas().Overlays().Top() == nil {
		t.Fatal("Browse did not open a dialog")
	}
	h.win.Canvas().Overlays().Top().Hide()
	ca := filepath.Join(t.TempDir(), "ca.crt")
	u.srv.setCAFile(storage.NewFileURI(ca))
	if u.srv.tlsCA.Text != ca {
		t.Fatalf("picked %s, field shows %q", ca, u.srv.tlsCA.Text)
	}
	test.Type(u.srv.token, "s3cret")
	h.typeProgram("print(1)")
	test.Tap(u.prog.runBtn)
	r := fs.next(t)
	if r.server != (Server{Addr: "127.0.0.1:7700", Token: "s3cret", CAFile: ca}) {
		t.Fatalf("dialled %+v", r.server)
	}
	r.end(sandbox.Result{Status: sandbox.StatusOK}, nil)
	h.until("the result", func() bool { return !u.jobs[0].active() })
	if !strings.Contains(u.detail.facts.Text, "server 127.0.0.1:7700 (TLS)") {
		t.Fatalf("facts %q", u.detail.facts.Text)
	}

	// The next start shows the CA (a path, not a secret), not the token; -tls-ca wins.
	h2 := newHarness(t, fs.dial, func(c *Config) { c.Prefs = prefs })
	if h2.ui.srv.tlsCA.Text != ca || h2.ui.srv.token.Text != "" {
		t.Fatalf("next start shows TLS CA %q token %q", h2.ui.srv.tlsCA.Text, h2.ui.srv.token.Text)
	}
	h3 := newHarness(t, fs.dial, func(c *Config) { c.Prefs = prefs; c.TLSCA = "/etc/runbox/ca.crt" })
	if h3.ui.srv.tlsCA.Text != "/etc/runbox/ca.crt" {
		t.Fatalf("-tls-ca shows %q", h3.ui.srv.tlsCA.Text)
	}

	// A path from the home directory, as people type it.
	u.srv.tlsCA.SetText("~/runbox/ca.crt")
	home, _ := os.UserHomeDir()
	if srv, err := u.srv.server(); err != nil || srv.CAFile != filepath.Join(home, "runbox", "ca.crt") {
		t.Fatalf("~/runbox/ca.crt gives %+v %v", srv, err)
	}

	// Cleared, it is plaintext again, and remembered so.
	u.srv.tlsCA.SetText("")
	test.Tap(u.prog.runBtn)
	r = fs.next(t)
	if r.server.CAFile != "" || prefs.String(prefTLSCA) != "" {
		t.Fatalf("cleared: dialled %+v, remembered %q", r.server, prefs.String(prefTLSCA))
	}
	r.end(sandbox.Result{Status: sandbox.StatusOK}, nil)
	h.until("the second result", func() bool { return !u.jobs[1].active() })
}

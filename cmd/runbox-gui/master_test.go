package main

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"fyne.io/fyne/v2/test"

	"runbox/sandbox/sandboxtest"
	"runbox/scheduler"
	"runbox/transport"
)

// These tests drive the window against real masters in the process: the scheduler and
// the transport server of `runbox master`, with sandboxtest.Fake running the programs
// (it reads "out TEXT", "sleep D", "exit N", "compile MSG" scripts instead of Python).

type testMaster struct {
	addr  string
	sched *scheduler.Scheduler
}

// startMaster serves a master named node on 127.0.0.1:0 until the test ends.
func startMaster(t *testing.T, node string, maxPrograms, queue int) *testMaster {
	t.Helper()
	scfg := scheduler.DefaultConfig()
	scfg.Node, scfg.MaxPrograms, scfg.Queue = node, maxPrograms, queue
	sched, err := scheduler.New(scfg, &sandboxtest.Fake{Node: node}, scheduler.NewMemJournal(100))
	if err != nil {
		t.Fatal(err)
	}
	tcfg := transport.DefaultServerConfig()
	tcfg.Node = node
	srv, err := transport.NewServer(tcfg, sched)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown %s: %v", node, err)
		}
		<-served
		sched.Close()
	})
	return &testMaster{addr: ln.Addr().String(), sched: sched}
}

// The brief's scenario: a simple server runs one program at a time and refuses a second
// one; the user points the window at another server and sends again, without restarting;
// the first program is cancelled; the cluster tab shows the first server's load.
func TestRealMastersBusyResendCancel(t *testing.T) {
	alpha := startMaster(t, "alpha", 1, 0) // `runbox master --max-programs 1 --queue 0`
	beta := startMaster(t, "beta", 2, 10)
	h := newHarness(t, dialTransport, func(c *Config) { c.Server = alpha.addr })
	u, d := h.ui, h.ui.detail

	h.typeProgram("out started\nsleep 1h")
	test.Tap(u.runBtn)
	j1 := u.jobs[0]
	h.until("the first program running on alpha", func() bool {
		return j1.phase == phaseRunning && j1.node == "alpha" && string(j1.stdout) == "started\n"
	})
	h.tick(1200 * time.Millisecond)
	if d.timer.Text != "1.2 s" || !strings.Contains(d.stdout.Text(), "started") || !strings.Contains(d.title.Text, "Running on alpha") {
		t.Fatalf("while running: %q %q stdout %q", d.title.Text, d.timer.Text, d.stdout.Text())
	}
	h.tick(300 * time.Millisecond)
	if d.timer.Text != "1.5 s" {
		t.Fatalf("the timer did not tick: %q", d.timer.Text)
	}

	// A second program: alpha is full.
	h.typeProgram("out hello from beta\nexit 3")
	test.Tap(u.runBtn)
	j2 := u.jobs[1]
	h.until("busy", func() bool { return j2.phase == phaseFailed })
	if msg := u.notice.text(); !strings.Contains(msg, "is busy") || !strings.Contains(msg, "1 program(s) running and 0 queued") {
		t.Fatalf("notice %q", msg)
	}

	// Change the server, send again.
	h.setServer(beta.addr)
	test.Tap(u.runBtn)
	j3 := u.jobs[2]
	h.until("the result from beta", func() bool { return !j3.active() })
	if !strings.Contains(d.title.Text, "Runtime error (exit code 3)") || !strings.Contains(d.stdout.Text(), "hello from beta") ||
		!strings.Contains(d.facts.Text, "node beta") || u.notice.text() != "" {
		t.Fatalf("result %q stdout %q facts %q notice %q", d.title.Text, d.stdout.Text(), d.facts.Text, u.notice.text())
	}

	// The cluster tab, pointed at alpha, shows its one slot taken.
	h.setServer(alpha.addr)
	u.tabs.Select(u.clusterTab)
	c := u.cluster
	h.until("alpha's status", func() bool { return len(c.nodes) == 1 && c.nodes[0].Name == "alpha" })
	if n := c.nodes[0]; n.Running != 1 || n.Capacity != 1 || len(c.jobs) != 1 || c.jobs[0].ID != j1.id {
		t.Fatalf("alpha shows %+v, jobs %+v", n, c.jobs)
	}

	// Cancel the first program: alpha stops it and is free again.
	u.tabs.Select(u.programTab)
	u.list.Select(2) // the oldest job, at the bottom
	if u.selected != j1 {
		t.Fatal("the first job is not the one shown")
	}
	test.Tap(d.cancelBtn)
	h.until("cancelled", func() bool { return j1.phase == phaseCancelled })
	if !strings.Contains(d.title.Text, "Cancelled") {
		t.Fatalf("banner %q", d.title.Text)
	}
	if n := alpha.sched.Snapshot(0).Nodes[0]; n.Running != 0 {
		t.Fatalf("alpha still runs %d program(s)", n.Running)
	}
	h.typeProgram("out free again")
	test.Tap(u.runBtn)
	j4 := u.jobs[3]
	h.until("alpha runs again", func() bool { return !j4.active() })
	if !strings.Contains(d.title.Text, "OK") || !strings.Contains(d.stdout.Text(), "free again") || !strings.Contains(d.facts.Text, "node alpha") {
		t.Fatalf("result %q stdout %q facts %q", d.title.Text, d.stdout.Text(), d.facts.Text)
	}
}

func TestRealMasterCompileError(t *testing.T) {
	m := startMaster(t, "solo", 2, 10)
	h := newHarness(t, dialTransport, func(c *Config) { c.Server = m.addr })
	u, d := h.ui, h.ui.detail
	h.typeProgram("compile main.c:3:5: error: expected ';' before 'return'")
	test.Tap(u.runBtn)
	h.until("the result", func() bool { return !u.jobs[0].active() })
	if !strings.Contains(d.title.Text, "Compile error") || d.tabs.Selected() != d.tabCompile ||
		!strings.Contains(d.compile.Text(), "expected ';'") || strings.TrimSpace(d.stdout.Text()) != "" {
		t.Fatalf("banner %q tab %q compiler %q stdout %q", d.title.Text, d.tabs.Selected().Text, d.compile.Text(), d.stdout.Text())
	}
}

func TestRealUnreachableServer(t *testing.T) {
	// A port nobody listens on: take one, then give it back.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()

	h := newHarness(t, dialTransport, func(c *Config) { c.Server = dead })
	u := h.ui
	h.typeProgram("out hi")
	test.Tap(u.runBtn)
	h.until("the failure", func() bool { return !u.jobs[0].active() })
	if msg := u.notice.text(); !strings.Contains(msg, "Cannot reach a runbox server at "+dead) {
		t.Fatalf("notice %q", msg)
	}

	m := startMaster(t, "up", 1, 0)
	h.setServer(m.addr)
	test.Tap(u.runBtn)
	h.until("the result", func() bool { return len(u.jobs) == 2 && !u.jobs[1].active() })
	if !strings.Contains(u.detail.title.Text, "OK") {
		t.Fatalf("banner %q", u.detail.title.Text)
	}
}

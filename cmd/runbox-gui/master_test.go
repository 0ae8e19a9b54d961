package main

import (
	"context"
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
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
	return startMasterTLS(t, node, maxPrograms, queue, nil)
}

// startMasterTLS is startMaster speaking TLS with tlsCfg when it is not nil, as `runbox
// master --tls-dir` does.
func startMasterTLS(t *testing.T, node string, maxPrograms, queue int, tlsCfg *tls.Config) *testMaster {
	t.Helper()
	scfg := scheduler.DefaultConfig()
	scfg.Node, scfg.MaxPrograms, scfg.Queue = node, maxPrograms, queue
	sched, err := scheduler.New(scfg, &sandboxtest.Fake{Node: node}, scheduler.NewMemJournal(100))
	if err != nil {
		t.Fatal(err)
	}
	tcfg := transport.DefaultServerConfig()
	tcfg.Node = node
	tcfg.TLS = tlsCfg
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
	test.Tap(u.prog.runBtn)
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
	test.Tap(u.prog.runBtn)
	j2 := u.jobs[1]
	h.until("busy", func() bool { return j2.phase == phaseFailed })
	if msg := u.notice.text(); !strings.Contains(msg, "is busy") || !strings.Contains(msg, "1 program(s) running and 0 queued") {
		t.Fatalf("notice %q", msg)
	}

	// Change the server, send again.
	h.setServer(beta.addr)
	test.Tap(u.prog.runBtn)
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
	test.Tap(u.prog.runBtn)
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
	test.Tap(u.prog.runBtn)
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
	test.Tap(u.prog.runBtn)
	h.until("the failure", func() bool { return !u.jobs[0].active() })
	if msg := u.notice.text(); !strings.Contains(msg, "Cannot reach a runbox server at "+dead) {
		t.Fatalf("notice %q", msg)
	}

	m := startMaster(t, "up", 1, 0)
	h.setServer(m.addr)
	test.Tap(u.prog.runBtn)
	h.until("the result", func() bool { return len(u.jobs) == 2 && !u.jobs[1].active() })
	if !strings.Contains(u.detail.title.Text, "OK") {
		t.Fatalf("banner %q", u.detail.title.Text)
	}
}

// testPKI makes a cluster's CA, as `runbox certs init` does, and issues a master
// certificate for 127.0.0.1 and localhost, as `runbox certs issue --role master` does. It
// returns the master's TLS configuration (what --tls-dir loads) and the CA certificate's
// path (what a client's TLS CA field holds).
func testPKI(t *testing.T, name string) (serverTLS *tls.Config, caFile string) {
	t.Helper()
	ca, err := transport.NewCA(name, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := ca.Write(dir); err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.Issue(transport.CertRequest{Role: transport.RoleMaster, Name: "master",
		Hosts: []string{"localhost", "127.0.0.1"}, NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	masterDir := filepath.Join(dir, "master")
	if err := transport.WriteCertDir(masterDir, ca.CertPEM, certPEM, keyPEM); err != nil {
		t.Fatal(err)
	}
	serverTLS, err = transport.ServerTLS(masterDir)
	if err != nil {
		t.Fatal(err)
	}
	return serverTLS, filepath.Join(dir, transport.CAFile)
}

// A master with TLS: the window runs a program there with the CA in its field; without
// it, or with another cluster's CA, the user is told what to put in the field. A TLS
// attempt at a plaintext master says to clear it.
func TestRealTLSMaster(t *testing.T) {
	serverTLS, caFile := testPKI(t, "runbox test CA")
	m := startMasterTLS(t, "secure", 2, 10, serverTLS)
	h := newHarness(t, dialTransport, func(c *Config) { c.Server = m.addr })
	u, d := h.ui, h.ui.detail

	// Plaintext at a TLS master: refused, with what to do.
	h.typeProgram("out over tls")
	test.Tap(u.prog.runBtn)
	h.until("the refusal", func() bool { return !u.jobs[0].active() })
	if msg := u.notice.text(); !strings.Contains(msg, "Server needs TLS") || !strings.Contains(msg, "needs TLS") ||
		!strings.Contains(msg, "TLS CA field") || !strings.Contains(d.title.Text, "Server needs TLS") {
		t.Fatalf("banner %q notice %q", d.title.Text, msg)
	}

	// The CA in its field: the program runs, over TLS.
	test.Type(u.srv.tlsCA, caFile)
	if u.notice.text() != "" {
		t.Fatalf("notice %q stayed after editing the TLS CA", u.notice.text())
	}
	test.Tap(u.prog.runBtn)
	h.until("the result", func() bool { return len(u.jobs) == 2 && !u.jobs[1].active() })
	if !strings.Contains(d.title.Text, "OK") || !strings.Contains(d.stdout.Text(), "over tls") ||
		!strings.Contains(d.facts.Text, "(TLS)") || !strings.Contains(d.facts.Text, "node secure") {
		t.Fatalf("banner %q stdout %q facts %q", d.title.Text, d.stdout.Text(), d.facts.Text)
	}
	if h.app.Preferences().String(prefTLSCA) != caFile {
		t.Fatalf("TLS CA %q not remembered", h.app.Preferences().String(prefTLSCA))
	}
	// The Cluster tab goes over TLS too.
	u.tabs.Select(u.clusterTab)
	h.until("the status", func() bool { return len(u.cluster.nodes) == 1 && u.cluster.nodes[0].Name == "secure" })
	u.tabs.Select(u.programTab)

	// Another cluster's CA: the master's certificate is refused.
	_, otherCA := testPKI(t, "another CA")
	u.srv.tlsCA.SetText(otherCA)
	test.Tap(u.prog.runBtn)
	h.until("the refusal", func() bool { return len(u.jobs) == 3 && !u.jobs[2].active() })
	if msg := u.notice.text(); !strings.Contains(msg, "Certificate refused") || !strings.Contains(msg, "does not vouch for") ||
		!strings.Contains(msg, "unknown authority") {
		t.Fatalf("notice %q", msg)
	}

	// The CA kept for a plaintext master: told to clear the field.
	plain := startMaster(t, "plain", 1, 0)
	u.srv.tlsCA.SetText(caFile)
	h.setServer(plain.addr)
	test.Tap(u.prog.runBtn)
	h.until("the refusal", func() bool { return len(u.jobs) == 4 && !u.jobs[3].active() })
	if msg := u.notice.text(); !strings.Contains(msg, "Server without TLS") || !strings.Contains(msg, "Clear the TLS CA field") {
		t.Fatalf("notice %q", msg)
	}
}

// A TLS CA path that is wrong (missing, or not a certificate) is the job's error, in
// words that name the field; nothing is sent.
func TestRealWrongCAPath(t *testing.T) {
	m := startMaster(t, "plain", 1, 0)
	h := newHarness(t, dialTransport, func(c *Config) { c.Server = m.addr })
	u := h.ui
	dir := t.TempDir()
	notCert := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(notCert, []byte("not a certificate\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h.typeProgram("out hi")
	for i, tc := range []struct{ path, reason string }{
		{filepath.Join(dir, "missing.crt"), "no such file or directory"},
		{notCert, "it holds no PEM certificate"},
	} {
		u.srv.tlsCA.SetText(tc.path)
		test.Tap(u.prog.runBtn)
		h.until("the failure", func() bool { return len(u.jobs) == i+1 && !u.jobs[i].active() })
		d := u.detail
		for _, want := range []string{"The TLS CA file " + tc.path + " cannot be used: " + tc.reason, "ca.crt", "clear the field"} {
			if !strings.Contains(d.message.Text, want) {
				t.Errorf("%s: message %q lacks %q", tc.path, d.message.Text, want)
			}
		}
		if !strings.Contains(d.title.Text, "TLS CA file unusable") || !strings.Contains(u.notice.text(), "TLS CA file unusable") {
			t.Fatalf("banner %q notice %q", d.title.Text, u.notice.text())
		}
	}
}

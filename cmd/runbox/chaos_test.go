package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"runbox/sandbox"
	"runbox/transport"
)

// TestChaos drives a real cluster (a master and two slaves, each its own process, on the
// real Docker engine) through what an attacker and bad luck do at once, while clients keep
// submitting: hostile programs, judged runs with bytes that are not UTF-8, a flood of
// half-sent streams, a rogue slave that takes jobs and never answers, kill -9 of a slave
// and of the master at random points, and finally a journal truncated while the master is
// stopped. Then it checks that
//   - every accepted job was answered, with a result its program allows or an error with a
//     stated code, and answered once: asked again by id, it gives the same answer;
//   - no process died but those the test killed, and none logged a panic;
//   - no sandbox container is left once the nodes stop.
//
// `make test` runs the short form (one round of each disturbance); `make chaos` the long one
// (RUNBOX_CHAOS=long: more clients, jobs and rounds). RUNBOX_CHAOS_SEED replays a run: the
// seed is logged.
func TestChaos(t *testing.T) {
	bin := runboxBin(t)
	long := os.Getenv("RUNBOX_CHAOS") == "long"
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("RUNBOX_CHAOS_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("RUNBOX_CHAOS_SEED=%q: %v", s, err)
		}
		seed = v
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x5eed))
	t.Logf("chaos seed %d (replay: RUNBOX_CHAOS_SEED=%d), long=%v", seed, seed, long)
	clients, jobs, rounds, flood := 6, 8, 1, 3000
	if long {
		clients, jobs, rounds, flood = 12, 25, 4, 10000
	}

	c := newChaosCluster(t, bin)
	c.startMaster()
	c.startSlave("a")
	c.startSlave("b")
	waitReady(t, c.addr, 3)

	// The disturbances, each at a random count of answered jobs.
	total := clients * jobs
	var answered atomic.Int64
	type disturbance struct {
		at   int64
		name string
		do   func()
	}
	var plan []disturbance
	for r := range rounds {
		lo := int64(total * r / rounds)
		span := int64(total / rounds)
		at := func() int64 { return lo + 1 + rng.Int64N(max(span*2/3, 1)) }
		plan = append(plan,
			disturbance{at(), "kill -9 slave a", func() { c.killAndRestartSlave("a", time.Second) }},
			disturbance{at(), "kill -9 the master", func() { c.killAndRestartMaster(500 * time.Millisecond) }},
			disturbance{at(), "stream flood", func() { c.streamFlood(flood) }},
			disturbance{at(), "rogue slave", func() { c.rogueSlave(8 * time.Second) }},
		)
	}
	var fired sync.Map
	var bg sync.WaitGroup
	onAnswer := func(n int) {
		answered.Store(int64(n))
		for _, d := range plan {
			if int64(n) >= d.at {
				if _, loaded := fired.LoadOrStore(d.name+strconv.FormatInt(d.at, 10), true); !loaded {
					t.Logf("after %d answers: %s", n, d.name)
					bg.Add(1)
					go func() { defer bg.Done(); d.do() }()
				}
			}
		}
	}

	// The load has a deadline of its own: a job still unanswered then is reported lost
	// (with every node's log), rather than the test binary's timeout killing it all.
	budget := 8 * time.Minute
	if long {
		budget = 40 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), budget)
	defer cancel()
	outs := chaosLoad(ctx, t, c.addr, clients, jobs, rng.Uint64(), onAnswer)
	bg.Wait()
	waitReady(t, c.addr, 3)

	// Every accepted job answered, as its program allows or with a stated code.
	byCode := map[string]int{}
	seen := map[string]bool{}
	for _, o := range outs {
		if o.id == "" {
			t.Errorf("%s: never accepted: %v", o.kind.name, o.err)
			continue
		}
		if errors.Is(o.err, context.DeadlineExceeded) {
			t.Errorf("job %s (%s): no answer when the load's time was up", o.id, o.kind.name)
			continue
		}
		if seen[o.id] {
			t.Errorf("job %s answered twice", o.id)
		}
		seen[o.id] = true
		if o.err != nil {
			code := transport.Code(o.err)
			byCode[code]++
			if !o.kind.mayFail[code] {
				t.Errorf("job %s (%s) failed with code %s: %v", o.id, o.kind.name, code, o.err)
			}
			continue
		}
		if why := o.kind.check(o.res); why != "" {
			t.Errorf("job %s (%s) on %s after %d attempt(s): %s", o.id, o.kind.name, o.res.Node, o.res.Attempts, why)
		}
	}
	nodes, retried := map[string]int{}, 0
	for _, o := range outs {
		if o.err == nil {
			nodes[o.res.Node]++
			if o.res.Attempts > 1 {
				retried++
			}
		}
	}
	t.Logf("%d jobs answered, %d of them after more than one attempt; by node %v; errors by code: %v", len(outs), retried, nodes, byCode)
	if ctx.Err() != nil {
		t.Fatalf("the load did not end within %v", budget)
	}

	// Answered once: asked again by id, each job gives the answer it gave (not a re-run).
	c.recheck(outs)

	// The journal, truncated while the master is stopped, is refused with a clear error
	// that says how to move it aside; moved aside, the master starts empty.
	c.stopMaster()
	c.truncateJournal()
	c.masterRefusesJournal()
	c.moveJournalAside()
	c.startMaster()
	waitReady(t, c.addr, 3)
	cl, err := transport.Dial(context.Background(), c.addr, transport.DefaultClientConfig())
	if err != nil {
		t.Fatal(err)
	}
	res, err := cl.Run(context.Background(), pySpec("print('after the journal')\n", 30*time.Second), transport.RunOptions{})
	cl.Close()
	if err != nil || string(res.Stdout) != "after the journal\n" {
		t.Errorf("a job after the journal was moved aside: %v %+v", err, res)
	}

	// Nothing died but what the test killed; everything stops cleanly; no container left.
	c.stopAll()
	c.noPanics()
	c.noContainersLeft()
}

// chaosKind is one kind of program the clients submit, with what may come of it.
type chaosKind struct {
	name string
	spec func(c, j int) sandbox.Spec
	// check returns why a result is wrong, "" when it is right.
	check func(res sandbox.Result) string
	// mayFail lists the error codes this job may end with: a job whose nodes keep being
	// killed under it ends as crashed_node, and that is a stated answer.
	mayFail map[string]bool
}

func pySpec(src string, runTime time.Duration) sandbox.Spec {
	return sandbox.Spec{Language: "python", Files: []sandbox.File{{Content: []byte(src)}}, Limits: sandbox.Limits{RunTime: runTime}}
}

func wantStatus(s sandbox.Status, stdoutPrefix string) func(sandbox.Result) string {
	return func(res sandbox.Result) string {
		if res.Status != s || !bytes.HasPrefix(res.Stdout, []byte(stdoutPrefix)) {
			return fmt.Sprintf("status %s stdout %.60q, want %s and stdout from %q", res.Status, res.Stdout, s, stdoutPrefix)
		}
		return ""
	}
}

func chaosKinds() []chaosKind {
	crashed := map[string]bool{"crashed_node": true}
	// The normal programs get room to run: three nodes warming their pools on two cores
	// hold a short program for seconds; the limits under test are the hostile ones'.
	const roomy = 30 * time.Second
	return []chaosKind{
		{name: "hello", mayFail: crashed,
			spec: func(c, j int) sandbox.Spec { return pySpec(fmt.Sprintf("print('%d-%d')\n", c, j), roomy) },
			check: func(res sandbox.Result) string {
				if res.Status != sandbox.StatusOK || !regexpJob.Match(res.Stdout) {
					return fmt.Sprintf("status %s stdout %q", res.Status, res.Stdout)
				}
				return ""
			}},
		{name: "not utf-8", mayFail: crashed,
			spec: func(c, j int) sandbox.Spec {
				return pySpec("import sys\nsys.stdout.buffer.write(b'\\xff\\xfe\\x80' * 40 + b'\\n')\n", roomy)
			},
			check: func(res sandbox.Result) string {
				if want := append(bytes.Repeat([]byte{0xff, 0xfe, 0x80}, 40), '\n'); res.Status != sandbox.StatusOK || !bytes.Equal(res.Stdout, want) {
					return fmt.Sprintf("status %s stdout %q", res.Status, res.Stdout)
				}
				return ""
			}},
		{name: "judged, bytes that are not utf-8", mayFail: crashed,
			// Invalid UTF-8 on both sides of the comparison, past the diff's width: the
			// judge that diffs them once died of it, and took its node with it.
			spec: func(c, j int) sandbox.Spec {
				s := pySpec("import sys\nsys.stdout.buffer.write(b'\\xff' * 200 + b'\\n')\n", roomy)
				s.Tests = []sandbox.TestCase{
					{Expected: append(bytes.Repeat([]byte{0xfe}, 200), '\n')},
					{Expected: append(bytes.Repeat([]byte("é"), 100), 0xff, '\n')},
				}
				return s
			},
			check: func(res sandbox.Result) string {
				if res.Verdict != sandbox.VerdictWrongAnswer || len(res.Cases) != 2 {
					return fmt.Sprintf("verdict %q with %d cases, want wrong_answer with 2", res.Verdict, len(res.Cases))
				}
				return ""
			}},
		{name: "endless loop", mayFail: crashed,
			spec: func(c, j int) sandbox.Spec {
				return pySpec("print('spinning', flush=True)\nwhile True: pass\n", time.Second)
			},
			// Its one second may end before a loaded machine's interpreter printed a
			// thing: the status is what counts.
			check: wantStatus(sandbox.StatusTimeLimit, "")},
		{name: "memory bomb", mayFail: crashed,
			spec: func(c, j int) sandbox.Spec {
				s := pySpec("print('allocating', flush=True)\nhog = []\nwhile True: hog.append(b'x' * (1 << 20))\n", 20*time.Second)
				s.Limits.Memory = 64 * sandbox.MiB
				return s
			},
			check: wantStatus(sandbox.StatusMemoryLimit, "allocating\n")},
		{name: "output flood", mayFail: crashed,
			spec: func(c, j int) sandbox.Spec {
				s := pySpec("import sys\nwhile True: sys.stdout.write('x' * 4096)\n", 20*time.Second)
				s.Limits.Output = 64 << 10
				return s
			},
			check: func(res sandbox.Result) string {
				if res.Status != sandbox.StatusOutputLimit || len(res.Stdout)+len(res.Stderr) > 64<<10 {
					return fmt.Sprintf("status %s with %d bytes of output", res.Status, len(res.Stdout)+len(res.Stderr))
				}
				return ""
			}},
		{name: "fork bomb", mayFail: crashed,
			spec: func(c, j int) sandbox.Spec {
				return sandbox.Spec{Language: "c", Files: []sandbox.File{{Content: []byte(
					"#include <unistd.h>\n#include <stdio.h>\nint main(void){puts(\"forking\");fflush(stdout);for(;;)fork();}\n")}},
					Limits: sandbox.Limits{RunTime: time.Second, Pids: 32, CompileTime: time.Minute}}
			},
			check: wantStatus(sandbox.StatusTimeLimit, "")},
	}
}

var regexpJob = regexp.MustCompile(`^\d+-\d+\n$`)

type chaosOutcome struct {
	kind chaosKind
	id   string
	res  sandbox.Result
	err  error
}

// chaosLoad runs clients×jobs programs of random kinds, each client on its own
// connection that reconnects (and resumes its job by id) across a master's restart.
func chaosLoad(ctx context.Context, t *testing.T, addr string, clients, jobs int, seed uint64, onAnswer func(int)) []chaosOutcome {
	t.Helper()
	kinds := chaosKinds()
	var (
		mu   sync.Mutex
		outs []chaosOutcome
		wg   sync.WaitGroup
	)
	for c := range clients {
		rng := rand.New(rand.NewPCG(seed, uint64(c)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			cfg := transport.DefaultClientConfig()
			cfg.Reconnect = 3 * time.Minute
			cl, err := transport.Dial(ctx, addr, cfg)
			if err != nil {
				t.Errorf("client %d: %v", c, err)
				return
			}
			defer cl.Close()
			for j := range jobs {
				if ctx.Err() != nil {
					t.Errorf("client %d: %d of its %d jobs not submitted when the load's time was up", c, jobs-j, jobs)
					return
				}
				k := kinds[rng.IntN(len(kinds))]
				if j == 0 {
					k = kinds[c%len(kinds)] // every kind at least once
				}
				var o chaosOutcome
				for {
					o = chaosOutcome{kind: k}
					o.res, o.err = cl.Run(ctx, k.spec(c, j), transport.RunOptions{Handler: transport.Handler{Accepted: func(id string) { o.id = id }}})
					// Refused before it was accepted (the master was down, full, or
					// shedding a flood): nothing was lost; submit again, as a user would.
					if o.err != nil && o.id == "" && ctx.Err() == nil {
						time.Sleep(200 * time.Millisecond)
						continue
					}
					break
				}
				mu.Lock()
				outs = append(outs, o)
				n := len(outs)
				mu.Unlock()
				onAnswer(n)
			}
		}()
	}
	wg.Wait()
	return outs
}

// chaosCluster is the master and slaves of TestChaos, as processes it can kill and restart.
type chaosCluster struct {
	t      *testing.T
	bin    string
	addr   string
	http   string
	data   string
	sfx    string
	mu     sync.Mutex
	master *proc
	slaves map[string]*proc
	all    []*proc
	hung   chan struct{} // closed when the test ends: releases the rogue slave's jobs
}

func newChaosCluster(t *testing.T, bin string) *chaosCluster {
	sfx := fmt.Sprint(time.Now().UnixNano() % 100000)
	c := &chaosCluster{t: t, bin: bin, addr: freePort(t), http: freePort(t), data: t.TempDir(), sfx: sfx, slaves: map[string]*proc{},
		hung: make(chan struct{})}
	t.Cleanup(func() { close(c.hung) })
	removeOwners(t, "chaos-master-"+sfx, "chaos-a-"+sfx, "chaos-b-"+sfx)
	return c
}

func (c *chaosCluster) masterArgs() []string {
	return []string{"master", "--listen", c.addr, "--http", c.http, "--node", "chaos-master-" + c.sfx,
		"--max-programs", "1", "--queue", "500", "--data", c.data, "--pool", "1", "--heartbeat-timeout", "2s"}
}

func (c *chaosCluster) startMaster() {
	p := start(c.t, "master", c.masterArgs()...)
	c.mu.Lock()
	c.master = p
	c.all = append(c.all, p)
	c.mu.Unlock()
}

func (c *chaosCluster) startSlave(name string) {
	node := "chaos-" + name + "-" + c.sfx
	p := start(c.t, node, "slave", "--master", c.addr, "--node", node, "--max-programs", "2", "--pool", "1")
	c.mu.Lock()
	c.slaves[name] = p
	c.all = append(c.all, p)
	c.mu.Unlock()
}

func (c *chaosCluster) killAndRestartSlave(name string, after time.Duration) {
	c.mu.Lock()
	p := c.slaves[name]
	c.mu.Unlock()
	p.kill(syscall.SIGKILL)
	time.Sleep(after)
	c.startSlave(name)
}

func (c *chaosCluster) killAndRestartMaster(after time.Duration) {
	c.mu.Lock()
	p := c.master
	c.mu.Unlock()
	p.kill(syscall.SIGKILL)
	time.Sleep(after)
	c.startMaster()
}

// streamFlood opens one session and n streams on it that each declare a 64 KiB request
// and send one byte of it, then hold it: the master must shed them without running out of
// memory or slots for the real clients.
func (c *chaosCluster) streamFlood(n int) {
	conn, err := net.DialTimeout("tcp", c.addr, 5*time.Second)
	if err != nil {
		c.t.Logf("stream flood: %v", err)
		return
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write(transport.Preamble[:]); err != nil {
		return
	}
	hello, _ := json.Marshal(transport.Hello{Role: transport.RoleClient, Name: "flood"})
	if transport.WriteFrame(conn, transport.FrameHello, hello) != nil {
		return
	}
	if typ, _, err := transport.ReadFrame(conn, 64<<10); err != nil || typ != transport.FrameWelcome {
		c.t.Logf("stream flood: no welcome (%v)", err)
		return
	}
	conn.SetDeadline(time.Time{})
	cfg := yamux.DefaultConfig()
	cfg.LogOutput = io.Discard
	sess, err := yamux.Client(conn, cfg)
	if err != nil {
		return
	}
	defer sess.Close()
	opened := 0
	for range n {
		st, err := sess.OpenStream()
		if err != nil {
			break
		}
		// A submit frame's header declaring 64 KiB, then one byte of it.
		hdr := []byte{transport.FrameSubmit, 0, 1, 0, 0, '{'}
		if _, err := st.Write(hdr); err != nil {
			break
		}
		opened++
	}
	c.t.Logf("stream flood: %d of %d streams opened", opened, n)
	time.Sleep(5 * time.Second)
}

// rogueSlave joins as a slave that accepts every job and never answers, for d: the master
// must take its jobs back and run them elsewhere. Its jobs stay stuck until the test ends
// (its Runner ignores their cancellation, like a hung engine).
func (c *chaosCluster) rogueSlave(d time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	sl, err := transport.NewSlave(transport.SlaveConfig{Master: c.addr, Node: "rogue-" + c.sfx, Capacity: 2,
		Client: transport.DefaultClientConfig()}, neverAnswers{c.hung})
	if err != nil {
		cancel()
		c.t.Errorf("rogue slave: %v", err)
		return
	}
	go func() { defer cancel(); sl.Run(ctx) }()
	<-ctx.Done()
}

// neverAnswers is a Runner that takes a job and never ends it, whatever its ctx says,
// until release is closed (when the test ends).
type neverAnswers struct{ release <-chan struct{} }

func (r neverAnswers) Run(ctx context.Context, spec sandbox.Spec, streams *sandbox.Streams) (sandbox.Result, error) {
	<-r.release
	return sandbox.Result{}, errors.New("released")
}

// recheck asks the master again, by id, for every answered job: the answer must be the
// one the client got (same node and attempts: the job was not run again after it ended).
func (c *chaosCluster) recheck(outs []chaosOutcome) {
	cl, err := transport.Dial(context.Background(), c.addr, transport.DefaultClientConfig())
	if err != nil {
		c.t.Fatal(err)
	}
	defer cl.Close()
	for _, o := range outs {
		if o.id == "" {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		res, err := cl.Wait(ctx, o.id, transport.Handler{})
		cancel()
		switch {
		case (err == nil) != (o.err == nil):
			c.t.Errorf("job %s answered %v, then %v", o.id, o.err, err)
		case err != nil:
			if transport.Code(err) != transport.Code(o.err) {
				c.t.Errorf("job %s failed with %s, then %s", o.id, transport.Code(o.err), transport.Code(err))
			}
		case res.Node != o.res.Node || res.Attempts != o.res.Attempts || res.Status != o.res.Status || !bytes.Equal(res.Stdout, o.res.Stdout):
			c.t.Errorf("job %s answered twice: %s on %s (attempt %d), then %s on %s (attempt %d)",
				o.id, o.res.Status, o.res.Node, o.res.Attempts, res.Status, res.Node, res.Attempts)
		}
	}
}

func (c *chaosCluster) journalPath() string { return filepath.Join(c.data, "journal.db") }

// stopMaster stops the master with SIGTERM, the way an operator does before surgery.
func (c *chaosCluster) stopMaster() {
	c.mu.Lock()
	p := c.master
	c.mu.Unlock()
	if err := p.stop(30 * time.Second); err != nil {
		c.t.Errorf("master: %v", err)
	}
}

func (c *chaosCluster) truncateJournal() {
	st, err := os.Stat(c.journalPath())
	if err != nil {
		c.t.Fatal(err)
	}
	if err := os.Truncate(c.journalPath(), st.Size()/3); err != nil {
		c.t.Fatal(err)
	}
}

// masterRefusesJournal starts the master on the truncated journal: it must exit, not
// crash, with a message that names the file and says how to move it aside.
func (c *chaosCluster) masterRefusesJournal() {
	p := start(c.t, "master on a truncated journal", c.masterArgs()...)
	select {
	case <-p.done:
	case <-time.After(60 * time.Second):
		c.t.Fatal("the master did not refuse its truncated journal within 60 s")
	}
	log := p.log.String()
	code := p.cmd.ProcessState.ExitCode()
	if code == 0 || code == 2 && strings.Contains(log, "goroutine ") || strings.Contains(log, "panic") || strings.Contains(log, "SIGBUS") {
		c.t.Errorf("the master on a truncated journal exited %d:\n%s", code, log)
	}
	if !strings.Contains(log, c.journalPath()) || !strings.Contains(log, "mv ") {
		c.t.Errorf("the master's refusal does not name the journal and how to move it aside:\n%s", log)
	}
}

func (c *chaosCluster) moveJournalAside() {
	if err := os.Rename(c.journalPath(), c.journalPath()+".broken"); err != nil {
		c.t.Fatal(err)
	}
}

// stopAll checks that every process the test did not kill is still running, then stops
// each with SIGTERM: each must exit 0.
func (c *chaosCluster) stopAll() {
	c.mu.Lock()
	live := []*proc{c.master}
	for _, p := range c.slaves {
		live = append(live, p)
	}
	c.mu.Unlock()
	for _, p := range live {
		select {
		case <-p.done:
			c.t.Errorf("%s died on its own: %v", p.name, p.cmd.ProcessState)
		default:
		}
	}
	for _, p := range live {
		if err := p.stop(60 * time.Second); err != nil {
			c.t.Errorf("%s: %v", p.name, err)
		}
	}
}

func (c *chaosCluster) noPanics() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.all {
		if log := p.log.String(); strings.Contains(log, "panic:") || strings.Contains(log, "fatal error:") {
			i := max(strings.Index(log, "panic:"), strings.Index(log, "fatal error:"))
			c.t.Errorf("%s logged a crash:\n%s", p.name, log[i:min(len(log), i+2000)])
		}
	}
}

// noContainersLeft: once every node has stopped (the killed ones restarted and reaped
// what they left), no sandbox container of theirs remains.
func (c *chaosCluster) noContainersLeft() {
	owners := []string{"runbox-chaos-master-" + c.sfx, "runbox-chaos-a-" + c.sfx, "runbox-chaos-b-" + c.sfx}
	var left []string
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(time.Second) {
		out, err := exec.Command("docker", "ps", "-a", "--filter", "label=runbox.sandbox=1", "--format", `{{.ID}} {{.Label "runbox.owner"}}`).Output()
		if err != nil {
			c.t.Fatalf("docker ps: %v", err)
		}
		left = left[:0]
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			_, owner, _ := strings.Cut(l, " ")
			for _, o := range owners {
				if owner == o || strings.HasPrefix(owner, o+"-") {
					left = append(left, l)
				}
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(left) > 0 {
		c.t.Errorf("%d sandbox containers left after the nodes stopped: %q", len(left), left)
	}
}

// stop sends SIGTERM and waits up to d for the process to exit; an exit code other than 0
// is an error.
func (p *proc) stop(d time.Duration) error {
	select {
	case <-p.done:
		return fmt.Errorf("already exited: %v", p.cmd.ProcessState)
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(d):
		p.kill(syscall.SIGKILL)
		return fmt.Errorf("still running %v after SIGTERM", d)
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		return fmt.Errorf("exited %d after SIGTERM", code)
	}
	return nil
}

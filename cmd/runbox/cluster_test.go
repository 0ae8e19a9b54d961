package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"runbox/sandbox"
	"runbox/sandbox/sandboxtest"
	"runbox/scheduler"
	"runbox/transport"
)

// These tests run the real binary as separate processes (master and slaves) on the real
// Docker daemon, and kill them the hard way.

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// runboxBin builds cmd/runbox once per test binary.
func runboxBin(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("needs Docker and real processes")
	}
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "runbox-bin-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "runbox")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// freePort returns a loopback address with a port free a moment ago. It never hands out
// the same address twice in one test binary: the kernel may give a
// port just closed to the next listen on port 0, so two calls in a row (a master's
// --listen and --http) could otherwise collide.
func freePort(t *testing.T) string {
	t.Helper()
	givenMu.Lock()
	defer givenMu.Unlock()
	for range 100 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		if !given[addr] {
			given[addr] = true
			return addr
		}
	}
	t.Fatal("no fresh loopback port in 100 tries")
	return ""
}

// given holds the addresses freePort handed out.
var (
	givenMu sync.Mutex
	given   = map[string]bool{}
)

type proc struct {
	name string
	cmd  *exec.Cmd
	log  *bytes.Buffer
	done chan struct{}
}

// start runs the binary with args; the process is killed at the end of the test and its
// log printed when the test failed.
func start(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, cmd: exec.Command(runboxBin(t), args...), log: &bytes.Buffer{}, done: make(chan struct{})}
	// Killed with the test binary too, even when it dies before its cleanups (a timeout):
	// a leftover master or slave would run on, holding ports and Docker for hours.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	w := &syncWriter{w: p.log}
	p.cmd.Stdout, p.cmd.Stderr = w, w
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.kill(syscall.SIGKILL)
		if t.Failed() {
			t.Logf("--- %s log ---\n%s", p.name, w.String())
		}
	})
	return p
}

func (p *proc) kill(sig syscall.Signal) {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(sig)
	if sig == syscall.SIGKILL {
		<-p.done
	}
}

type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(b)
}

func (s *syncWriter) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.String()
}

// waitReady waits until the master at addr has want nodes (itself included).
func waitReady(t *testing.T, addr string, want int) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		c, err := transport.Dial(ctx, addr, transport.DefaultClientConfig())
		if err == nil {
			snap, err := c.Status(ctx)
			c.Close()
			if err == nil && len(snap.Nodes) >= want {
				cancel()
				return
			}
		}
		cancel()
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("master %s not ready with %d nodes", addr, want)
}

// removeOwners removes the sandbox containers of nodes that were killed -9 (their own
// reaper would remove them on their next start): a slave's owner is runbox-NODE, a
// master's runbox-NODE-PORT.
// Two passes: a create the engine was still serving when its node was killed lands after
// the first.
func removeOwners(t *testing.T, nodes ...string) {
	t.Cleanup(func() {
		for pass := range 2 {
			if pass > 0 {
				time.Sleep(2 * time.Second)
			}
			out, _ := exec.Command("docker", "ps", "-a", "--filter", "label=runbox.sandbox=1", "--format", `{{.ID}} {{.Label "runbox.owner"}}`).Output()
			var ids []string
			for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
				id, owner, _ := strings.Cut(l, " ")
				for _, n := range nodes {
					if owner == "runbox-"+n || strings.HasPrefix(owner, "runbox-"+n+"-") {
						ids = append(ids, id)
					}
				}
			}
			if len(ids) > 0 {
				exec.Command("docker", append([]string{"rm", "-f"}, ids...)...).Run()
			}
		}
	})
}

type outcome struct {
	c, j int
	id   string
	res  sandbox.Result
	err  error
}

// pyJob prints its client and job numbers after a short sleep.
func pyJob(c, j int) string {
	return fmt.Sprintf("import time\ntime.sleep(0.1)\nprint('%d-%d')\n", c, j)
}

func pyWant(o outcome) string { return fmt.Sprintf("%d-%d\n", o.c, o.j) }

// load runs clients×jobs programs (pyJob) with the default limits through separate
// connections and returns every outcome. (Until pooled containers waited at a low CPU
// weight, these tests needed a 30 s run time: three nodes warming their pools at once
// held 0.1 s programs past the default 5 s on a 2-core machine.)
func load(t *testing.T, addr string, clients, jobs int, onResult func(int)) []outcome {
	t.Helper()
	return loadWith(t, addr, clients, jobs, pyJob, sandbox.Limits{}, onResult)
}

// loadWith runs clients×jobs programs prog(client, job) with the limits lim (zero fields:
// the server's defaults) through separate connections and returns every outcome.
func loadWith(t *testing.T, addr string, clients, jobs int, prog func(c, j int) string, lim sandbox.Limits, onResult func(int)) []outcome {
	t.Helper()
	var (
		mu   sync.Mutex
		outs []outcome
		wg   sync.WaitGroup
		done int
	)
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cfg := transport.DefaultClientConfig()
			cfg.Reconnect = 3 * time.Minute
			cl, err := transport.Dial(context.Background(), addr, cfg)
			if err != nil {
				t.Errorf("client %d: %v", c, err)
				return
			}
			defer cl.Close()
			for j := 0; j < jobs; j++ {
				var o outcome
				for {
					o = outcome{c: c, j: j}
					o.res, o.err = cl.Run(context.Background(), sandbox.Spec{Language: "python", Files: []sandbox.File{{Content: []byte(prog(c, j))}},
						Limits: lim},
						transport.RunOptions{Handler: transport.Handler{Accepted: func(id string) { o.id = id }}})
					// Refused before it was accepted (the master was down, or full): nothing
					// was lost; submit it again, as a user would.
					if o.err != nil && o.id == "" {
						time.Sleep(200 * time.Millisecond)
						continue
					}
					break
				}
				mu.Lock()
				outs = append(outs, o)
				done++
				n := done
				mu.Unlock()
				if onResult != nil {
					onResult(n)
				}
			}
		}()
	}
	wg.Wait()
	return outs
}

func checkAll(t *testing.T, outs []outcome, total int, want func(o outcome) string) {
	t.Helper()
	if len(outs) != total {
		t.Errorf("%d outcomes, want %d", len(outs), total)
	}
	seen := map[string]bool{}
	for _, o := range outs {
		if o.err != nil {
			t.Errorf("job %s lost: %v", o.id, o.err)
			continue
		}
		if seen[o.id] {
			t.Errorf("job %s answered twice", o.id)
		}
		seen[o.id] = true
		if w := want(o); string(o.res.Stdout) != w || o.res.Status != sandbox.StatusOK {
			t.Errorf("job %s: %s %q, want %q (node %s, attempt %d, time %v, cpu %v, %s)", o.id, o.res.Status, o.res.Stdout, w,
				o.res.Node, o.res.Attempts, o.res.Time, o.res.CPUTime, o.res.Message)
		}
	}
}

// killSlaveUnderLoad starts a master and two slaves (each with its extra flags), runs
// clients×jobs programs prog(client, job) with the default limits, kills the first slave
// with -9 after killAt results, and checks that every job answered once, ok, with its own
// output, and that none ran again on the killed slave. It returns the master's address,
// the killed slave's name and how many jobs ran again.
func killSlaveUnderLoad(t *testing.T, masterFlags, slaveFlags []string, clients, jobs int, prog func(c, j int) string, killAt int) (addr, killed string, retried int) {
	t.Helper()
	addr, http := freePort(t), freePort(t)
	sfx := fmt.Sprint(time.Now().UnixNano() % 100000)
	a, b := "slave-a-"+sfx, "slave-b-"+sfx
	removeOwners(t, "master-"+sfx, a, b)
	start(t, "master", append([]string{"master", "--listen", addr, "--http", http, "--node", "master-" + sfx, "--data", t.TempDir()}, masterFlags...)...)
	slaveA := start(t, a, append([]string{"slave", "--master", addr, "--node", a}, slaveFlags...)...)
	start(t, b, append([]string{"slave", "--master", addr, "--node", b}, slaveFlags...)...)
	waitReady(t, addr, 3)

	outs := loadWith(t, addr, clients, jobs, prog, sandbox.Limits{}, func(n int) {
		if n == killAt {
			slaveA.kill(syscall.SIGKILL)
		}
	})
	checkAll(t, outs, clients*jobs, pyWant)
	for _, o := range outs {
		if o.err == nil && o.res.Attempts > 1 {
			retried++
			if o.res.Node == a {
				t.Errorf("job %s ran again on the killed slave %s: %+v", o.id, a, o.res)
			}
		}
	}
	return addr, a, retried
}

func TestKillSlaveMidLoad(t *testing.T) {
	addr, a, retried := killSlaveUnderLoad(t, []string{"--max-programs", "1", "--queue", "500", "--pool", "1"},
		[]string{"--max-programs", "2", "--pool", "1"}, 20, 10, pyJob, 40)
	// The kill must have hit running jobs, and those ran again elsewhere: with 20 clients
	// and 5 slots the queue is never empty, so slave A always held jobs when it died (a
	// slot it freed is filled before the freeing job's client hears of it).
	if retried == 0 {
		t.Errorf("no job ran again: the kill of %s hit no running job, so the test proved nothing", a)
	}
	// The master saw the slave lost and counted the dispatches it repeated.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl, err := transport.Dial(ctx, addr, transport.DefaultClientConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	snap, err := cl.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	lost := slices.ContainsFunc(snap.NodeEvents, func(e scheduler.NodeEvent) bool { return e.Node == a && e.Kind == scheduler.NodeEventLost })
	if !lost || snap.Totals.Retried < retried {
		t.Errorf("master: %s lost %v, %d dispatches repeated; want it lost and at least the %d jobs that ran again", a, lost, snap.Totals.Retried, retried)
	}
	t.Logf("200 jobs, %d ran again after the slave was killed (%d dispatches repeated)", retried, snap.Totals.Retried)
}

// busyJob computes for 0.7 s of its own CPU time and prints its client and job numbers.
func busyJob(c, j int) string {
	return fmt.Sprintf("import time\nt = time.process_time() + 0.7\nwhile time.process_time() < t:\n    pass\nprint('%d-%d')\n", c, j)
}

// TestKillSlaveDefaults is issue 15's run: a master and two slaves started with the
// default flags on one machine, 40 programs of 0.7 s of CPU each with the default limits,
// one slave killed with -9 mid-run. Every program must end ok with its own output: three
// nodes warming their pools on 2 cores must not push a short program past its limits.
func TestKillSlaveDefaults(t *testing.T) {
	_, _, retried := killSlaveUnderLoad(t, nil, nil, 8, 5, busyJob, 12)
	t.Logf("40 jobs with the default limits, %d ran again after the slave was killed", retried)
}

func TestKillMasterAndRestart(t *testing.T) {
	addr, http := freePort(t), freePort(t)
	data := t.TempDir()
	node := fmt.Sprint("master-", time.Now().UnixNano()%100000)
	removeOwners(t, node)
	args := []string{"master", "--listen", addr, "--http", http, "--node", node, "--max-programs", "2", "--queue", "500", "--data", data, "--pool", "1"}
	m := start(t, "master-1", args...)
	waitReady(t, addr, 1)

	var once sync.Once
	restarted := make(chan struct{})
	outs := load(t, addr, 10, 6, func(n int) {
		if n == 15 {
			once.Do(func() {
				m.kill(syscall.SIGKILL)
				go func() {
					time.Sleep(500 * time.Millisecond)
					start(t, "master-2", args...)
					close(restarted)
				}()
			})
		}
	})
	<-restarted
	checkAll(t, outs, 60, pyWant)
	again := 0
	for _, o := range outs {
		if o.res.Attempts >= 1 && o.res.Node == node {
			again++
		}
	}
	if again != 60 {
		t.Errorf("%d of 60 results came from the master", again)
	}
}

func TestHungSlaveIsDetected(t *testing.T) {
	addr, http := freePort(t), freePort(t)
	sfx := fmt.Sprint(time.Now().UnixNano() % 100000)
	hungName, okName := "hung-"+sfx, "ok-"+sfx
	removeOwners(t, "master-"+sfx, hungName, okName)
	start(t, "master", "master", "--listen", addr, "--http", http, "--node", "master-"+sfx, "--max-programs", "0", "--heartbeat-timeout", "1s", "--pool", "0")
	hung := start(t, hungName, "slave", "--master", addr, "--node", hungName, "--max-programs", "1", "--pool", "1")
	waitReady(t, addr, 2)

	cl, err := transport.Dial(context.Background(), addr, transport.DefaultClientConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var stopped time.Time
	var moved time.Duration
	res, err := cl.Run(context.Background(), sandbox.Spec{Language: "python", Files: []sandbox.File{{Content: []byte("import time\ntime.sleep(1)\nprint('done')\n")}}},
		transport.RunOptions{Handler: transport.Handler{Started: func(n string) {
			if n == hungName {
				hung.kill(syscall.SIGSTOP)
				stopped = time.Now()
				start(t, okName, "slave", "--master", addr, "--node", okName, "--max-programs", "1", "--pool", "1")
			} else {
				moved = time.Since(stopped)
			}
		}}})
	hung.kill(syscall.SIGCONT)
	if err != nil {
		t.Fatal(err)
	}
	if res.Node != okName || string(res.Stdout) != "done\n" || res.Attempts != 2 {
		t.Errorf("result %+v", res)
	}
	t.Logf("job moved %v after the slave hung (heartbeat timeout 1s)", moved)
	if moved > 20*time.Second {
		t.Errorf("moving took %v", moved)
	}
}

// TestClusterCredentials runs `deploy/cluster.sh credentials` (what `make cluster` does
// first) twice: the first run makes the CA, the master's certificate, the tokens file and
// the dashboard token in a 0700 state directory, the client files 0600 in a 0700 client
// directory, and prints the client token, whose hash is the tokens file's client line; the
// second run changes nothing and prints no token. The files make a working secured master.
func TestClusterCredentials(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("needs Docker and the server image")
	}
	tmp := t.TempDir()
	state, client := filepath.Join(tmp, "state"), filepath.Join(tmp, "client")
	run := func() string {
		t.Helper()
		cmd := exec.Command("bash", "../../deploy/cluster.sh", "credentials")
		cmd.Env = append(os.Environ(), "RUNBOX_CLUSTER=credtest", "RUNBOX_STATE_DIR="+state, "RUNBOX_CONFIG_DIR="+client,
			"RUNBOX_HOSTS=runbox.example.org")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("cluster.sh credentials: %v\n%s", err, out)
		}
		return string(out)
	}
	first := run()
	token, err := os.ReadFile(filepath.Join(client, "token"))
	tok := strings.TrimSpace(string(token))
	if err != nil || !strings.HasPrefix(tok, "rbx_") || !strings.Contains(first, tok) {
		t.Fatalf("client token %q (%v) not printed by the first run:\n%s", tok, err, first)
	}
	tokens, _ := os.ReadFile(filepath.Join(state, "tokens"))
	if !strings.Contains(string(tokens), "client "+transport.HashToken(tok)) {
		t.Errorf("tokens file %q lacks the client token's hash", tokens)
	}
	for path, want := range map[string]os.FileMode{
		state: 0o700, client: 0o700,
		filepath.Join(client, "token"): 0o600, filepath.Join(client, "ca.crt"): 0o600, filepath.Join(client, "http-token"): 0o600,
		filepath.Join(state, "tokens"): 0o600, filepath.Join(state, "http-token"): 0o600, filepath.Join(state, "client-token"): 0o600,
		filepath.Join(state, "pki", "ca.key"): 0o600, filepath.Join(state, "master", "tls.key"): 0o600,
	} {
		if m := mode(t, path); m != want {
			t.Errorf("%s: mode %v, want %v", path, m, want)
		}
	}
	ca, _ := os.ReadFile(filepath.Join(state, "pki", "ca.crt"))
	if cc, _ := os.ReadFile(filepath.Join(client, "ca.crt")); string(cc) != string(ca) || len(ca) == 0 {
		t.Error("the client's ca.crt is not the cluster's CA")
	}
	if h, _ := os.ReadFile(filepath.Join(client, "http-token")); !strings.HasPrefix(string(h), "rbx_") {
		t.Errorf("http-token %q", h)
	}
	second := run()
	if strings.Contains(second, tok) {
		t.Errorf("the second run printed the token again:\n%s", second)
	}
	if again, _ := os.ReadFile(filepath.Join(client, "token")); string(again) != string(token) {
		t.Error("the second run changed the client token")
	}

	// A master with these files: TLS for the names the slaves and clients dial, the token.
	addr := startMaster(t, &sandboxtest.Fake{}, func(c *masterConfig) {
		c.TLSDir, c.Tokens = filepath.Join(state, "master"), filepath.Join(state, "tokens")
	})
	prog := write(t, "p.py", "out cluster")
	if code, out, errOut := cli(t, "", "submit", "--server", addr, "--tls-ca", filepath.Join(client, "ca.crt"), "--token", tok, prog); code != 0 || out != "cluster\n" {
		t.Errorf("submit with the client files: %d %q %q", code, out, errOut)
	}
	crt, _ := os.ReadFile(filepath.Join(state, "master", "tls.crt"))
	block, _ := pem.Decode(crt)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"credtest-master", "runbox.example.org", "localhost"} {
		if cert.VerifyHostname(h) != nil {
			t.Errorf("the master's certificate does not name %s: %v", h, cert.DNSNames)
		}
	}
}

package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"runbox/sandbox"
	"runbox/transport"
)

func clusterContainers(t *testing.T, cluster string) []string {
	out, err := exec.Command("docker", "ps", "-aq", "--filter", "label=runbox.cluster="+cluster).Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(out))
}

// slaveContainers are the cluster's slave containers that were started: the next slave,
// created ahead of time and never started, is not one.
func slaveContainers(t *testing.T, cluster string) []string {
	out, err := exec.Command("docker", "ps", "-a", "--filter", "label=runbox.cluster="+cluster, "--format", "{{.ID}} {{.State}}").Output()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if id, state, _ := strings.Cut(l, " "); id != "" && state != "created" {
			ids = append(ids, id)
		}
	}
	return ids
}

// cleanupCluster removes, at the end of the test, whatever the cluster of the master
// named node left, and fails the test when the master (stopped first: cleanups run last
// first) left any of its containers.
func cleanupCluster(t *testing.T, node string) {
	t.Cleanup(func() {
		if ids := clusterContainers(t, node); len(ids) > 0 {
			exec.Command("docker", append([]string{"rm", "-f", "-v"}, ids...)...).Run()
		}
		// The sandboxes of slaves removed above before they could remove their own.
		out, _ := exec.Command("docker", "ps", "-a", "--filter", "label=runbox.sandbox=1", "--format", `{{.ID}} {{.Label "runbox.owner"}}`).Output()
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if id, owner, _ := strings.Cut(l, " "); strings.HasPrefix(owner, "runbox-"+node+"-slave-") {
				exec.Command("docker", "rm", "-f", id).Run()
			}
		}
	})
	// Runs after the master stopped: it removed everything it started, the slave it had
	// created ahead of time included.
	t.Cleanup(func() {
		if ids := clusterContainers(t, node); len(ids) > 0 {
			t.Errorf("containers of cluster %s left after the master stopped: %v", node, ids)
		}
	})
}

// TestAutoscaleDocker: load crosses the threshold, slave containers start and take jobs;
// the load ends, the slaves are drained and removed after their idle time; no job fails.
func TestAutoscaleDocker(t *testing.T) {
	if testing.Short() {
		t.Skip("needs Docker")
	}
	node := fmt.Sprint("scale-", time.Now().UnixNano()%100000)
	cleanupCluster(t, node)
	var log *slog.Logger
	if os.Getenv("RUNBOX_TEST_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	addr := startMasterLog(t, nil, log, func(c *masterConfig) {
		c.Node = node
		c.MaxPrograms = 1
		c.Queue = 100
		c.CPUThreshold = 0 // scale on the queue: CPU on this shared machine is noise
		c.Autoscale = autoscaleConfig{Mode: "docker", Min: 0, Max: 2, Capacity: 2, CPUs: 1, Memory: "1GiB", Network: "host",
			Image: "runbox/server:latest", IdleAfter: 5 * time.Second, DockerSock: "/var/run/docker.sock"}
	})
	c, err := transport.Dial(context.Background(), addr, transport.DefaultClientConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The steady state before the load: the first slave's container is created ahead of
	// time (and the master's warm pool has had the same time to fill).
	deadline := time.Now().Add(time.Minute)
	for {
		out, _ := exec.Command("docker", "ps", "-a", "--filter", "name=^/runbox-"+node+"-slave-1$", "--format", "{{.State}}").Output()
		if strings.TrimSpace(string(out)) == "created" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the first slave was not prepared within a minute (state %q)", out)
		}
		time.Sleep(100 * time.Millisecond)
	}

	nodes, firstSlave := loadCluster(t, c, node, 8, nil)
	t.Logf("jobs per node %v; first job on a new slave %v after the queue formed", nodes, firstSlave)

	// The load is gone: after the idle time the slaves drain and their containers go.
	deadline = time.Now().Add(2 * time.Minute)
	for len(slaveContainers(t, node)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("slave containers still there: %v", slaveContainers(t, node))
		}
		time.Sleep(500 * time.Millisecond)
	}
	snap, _ := c.Status(context.Background())
	if len(snap.Nodes) != 1 {
		t.Errorf("nodes after scale-in: %+v", snap.Nodes)
	}
}

// loadCluster runs n Python jobs of 2 s at once on the master named master and checks
// that every one ended ok and that some ran on a started slave. It returns the jobs per
// node and the time from the queue forming to the first job placed on a slave; mark,
// when set, hears of that first placement.
func loadCluster(t *testing.T, c *transport.Client, master string, n int, mark func(format string, a ...any)) (map[string]int, time.Duration) {
	t.Helper()
	var (
		mu         sync.Mutex
		nodes      = map[string]int{}
		queuedAt   time.Time
		firstSlave time.Duration
		wg         sync.WaitGroup
		failures   []error
	)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A long time limit: the test is about scaling, and on a loaded machine a 2 s
			// sleep next to slaves warming their pools can take longer than the default 5 s.
			res, err := c.Run(context.Background(), sandbox.Spec{Language: "python", Files: []sandbox.File{{Content: []byte("import time\ntime.sleep(2)\nprint('ok')\n")}},
				Limits: sandbox.Limits{RunTime: 30 * time.Second}},
				transport.RunOptions{Handler: transport.Handler{
					Queued: func(int) {
						mu.Lock()
						if queuedAt.IsZero() {
							queuedAt = time.Now()
						}
						mu.Unlock()
					},
					Started: func(n string) {
						mu.Lock()
						if n != master && firstSlave == 0 && !queuedAt.IsZero() {
							firstSlave = time.Since(queuedAt)
							if mark != nil {
								mark("first job on a slave (%s)", n)
							}
						}
						mu.Unlock()
					},
				}})
			mu.Lock()
			defer mu.Unlock()
			if err != nil || res.Status != sandbox.StatusOK {
				failures = append(failures, fmt.Errorf("%v %+v", err, res))
				return
			}
			nodes[res.Node]++
		}()
	}
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("jobs failed while scaling: %v", failures)
	}
	slaves := 0
	for n := range nodes {
		if n != master {
			slaves++
		}
	}
	if slaves == 0 {
		t.Fatalf("no job ran on a started slave: %v", nodes)
	}
	return nodes, firstSlave
}

// TestAutoscaleSecured: a master with --tls-dir and --tokens gets its autoscaled slaves:
// they join with its join token (in their environment) over TLS (the CA copied into their
// container), run as an unprivileged user in the socket's group with every capability
// dropped and a read-only root, and run a client's job. No credential is in a slave's
// command line, and the CA's volume goes with the slave.
func TestAutoscaleSecured(t *testing.T) {
	if testing.Short() {
		t.Skip("needs Docker")
	}
	node := fmt.Sprint("secure-", time.Now().UnixNano()%100000)
	pki := filepath.Join(t.TempDir(), "pki")
	tokens := filepath.Join(pki, "tokens")
	for _, args := range [][]string{
		{"certs", "init", "--dir", pki},
		{"certs", "issue", "--dir", pki, "--role", "master", "--name", "master"},
	} {
		if code, _, errOut := cli(t, "", args...); code != 0 {
			t.Fatalf("%q: %d %s", args, code, errOut)
		}
	}
	_, token, _ := cli(t, "", "certs", "token", "--name", "alice", "--tokens", tokens)
	token = strings.TrimSpace(token)
	data := t.TempDir()
	cleanupCluster(t, node)
	var log *slog.Logger
	if os.Getenv("RUNBOX_TEST_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	addr := startMasterLog(t, nil, log, func(c *masterConfig) {
		c.Node, c.MaxPrograms, c.Data, c.CPUThreshold = node, 0, data, 0
		c.TLSDir, c.Tokens = filepath.Join(pki, "master"), tokens
		// No slot of its own: the job waits, the autoscaler starts a slave.
		c.Autoscale = autoscaleConfig{Mode: "docker", Min: 0, Max: 1, Capacity: 1, CPUs: 1, Memory: "512MiB", Network: "host",
			Image: "runbox/server:latest", IdleAfter: 3 * time.Second, DockerSock: "/var/run/docker.sock"}
	})
	ccfg := transport.DefaultClientConfig()
	ccfg.Token = token
	var err error
	if ccfg.TLS, err = transport.ClientTLS(filepath.Join(pki, "ca.crt"), "", ""); err != nil {
		t.Fatal(err)
	}
	c, err := transport.Dial(context.Background(), addr, ccfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute) // a slave that cannot join: no answer
	defer cancel()
	res, err := c.Run(ctx, sandbox.Spec{Language: "python", Files: []sandbox.File{{Content: []byte("print('secured')\n")}},
		Limits: sandbox.Limits{RunTime: 30 * time.Second}}, transport.RunOptions{})
	if err != nil || res.Status != sandbox.StatusOK || string(res.Stdout) != "secured\n" || res.Node != node+"-slave-1" {
		t.Fatalf("job: %v %+v (want it run on the autoscaled slave %s-slave-1)", err, res, node)
	}

	// The slave container as the engine runs it.
	out, err := exec.Command("docker", "inspect", "--format",
		`{{json .Config.Cmd}}|{{.Config.User}}|{{json .HostConfig.CapDrop}}|{{.HostConfig.ReadonlyRootfs}}|{{json .HostConfig.GroupAdd}}|{{range .Mounts}}{{if eq .Type "volume"}}{{.Name}}{{end}}{{end}}`,
		"runbox-"+node+"-slave-1").Output()
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Split(strings.TrimSpace(string(out)), "|")
	join, _ := os.ReadFile(filepath.Join(data, "join-token"))
	if strings.Contains(f[0], strings.TrimSpace(string(join))) || strings.Contains(f[0], "BEGIN") || len(join) == 0 {
		t.Errorf("a credential in the slave's command line: %s", f[0])
	}
	if f[1] != "65534:65534" || f[2] != `["ALL"]` || f[3] != "true" || f[4] == "null" || f[5] == "" {
		t.Errorf("slave container: user %q cap-drop %s read-only %s group-add %s volume %q", f[1], f[2], f[3], f[4], f[5])
	}

	// Idle, the slave is drained and removed, and its CA volume with it.
	deadline := time.Now().Add(2 * time.Minute)
	for len(slaveContainers(t, node)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the idle slave is still there: %v", slaveContainers(t, node))
		}
		time.Sleep(500 * time.Millisecond)
	}
	if exec.Command("docker", "volume", "inspect", f[5]).Run() == nil {
		t.Errorf("the CA's volume %s outlived its slave", f[5])
		exec.Command("docker", "volume", "rm", f[5]).Run()
	}
}

// The master's autoscaling flags become the autoscaler's policy: Docker slaves share the
// master's engine, Swarm ones do not.
func TestScalePolicyFromFlags(t *testing.T) {
	t.Parallel()
	parse := func(args ...string) masterConfig {
		fs := flag.NewFlagSet("master", flag.ContinueOnError)
		var cfg masterConfig
		cfg.flags(fs)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	p := scalePolicy(parse("--autoscale", "docker"))
	if p.QueueWait != time.Second || p.Headroom != 25 || !p.SharedEngine || p.CPUThreshold != 80 {
		t.Errorf("docker defaults: %+v", p)
	}
	p = scalePolicy(parse("--autoscale", "swarm", "--scale-queue-wait", "250ms", "--scale-headroom", "10", "--cpu-threshold", "70"))
	if p.QueueWait != 250*time.Millisecond || p.Headroom != 10 || p.SharedEngine || p.CPUThreshold != 70 {
		t.Errorf("swarm with flags: %+v", p)
	}
	if err := p.Validate(); err != nil {
		t.Error(err)
	}
	if err := scalePolicy(parse("--autoscale", "docker", "--scale-headroom", "120")).Validate(); err == nil {
		t.Error("a headroom of 120% passed Validate")
	}
}

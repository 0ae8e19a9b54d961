//go:build unix

package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"runbox/scheduler"
	"runbox/transport"
)

func TestSlaveNodeFromEnv(t *testing.T) {
	t.Setenv("RUNBOX_NODE", "runbox-slaves-7")
	_, _, stderr := cli(t, "", "slave", "-h")
	if !strings.Contains(stderr, `(default "runbox-slaves-7")`) {
		t.Errorf("--node does not default to $RUNBOX_NODE:\n%s", stderr)
	}
}

func dockerCmd(t *testing.T, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command("docker", args...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// useSwarm makes the engine a one-node swarm manager for the test. Swarm tests of every
// process on this machine take turns (a lock file), since joining and leaving is global to
// the engine. A swarm the test created is always left afterwards, failure or not; one the
// engine was already in (someone else's) is used and left as it was.
func useSwarm(t *testing.T) {
	t.Helper()
	lock, err := os.OpenFile(os.TempDir()+"/runbox-swarm-test.lock", os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lock.Close() }) // registered first: runs last, after the swarm is left
	state, err := dockerCmd(t, "info", "--format", "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}")
	if err != nil {
		t.Fatalf("docker info: %v: %s", err, state)
	}
	switch state {
	case "active true":
		t.Log("the engine is already a swarm manager: using its swarm, leaving it as it was")
		return
	case "inactive false":
	default:
		t.Fatalf("the engine's swarm state is %q: want inactive, or active as a manager", state)
	}
	_, gwErr := dockerCmd(t, "network", "inspect", "docker_gwbridge")
	start := time.Now()
	if out, err := dockerCmd(t, "swarm", "init", "--advertise-addr", "127.0.0.1"); err != nil {
		t.Fatalf("docker swarm init: %v: %s", err, out)
	}
	t.Logf("swarm init: %v", time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() {
		if out, err := dockerCmd(t, "swarm", "leave", "--force"); err != nil {
			t.Errorf("docker swarm leave: %v: %s", err, out)
		}
		if gwErr != nil { // swarm init created it
			dockerCmd(t, "network", "rm", "docker_gwbridge")
		}
	})
}

// retireService removes a service the way the provisioner does: scaled to 0 first, and
// removed only once Swarm has deleted its tasks (removing a service while Swarm reaps its
// tasks crashes Docker 20.10's engine; see scheduler/swarm).
func retireService(t *testing.T, name string) {
	t.Helper()
	if out, err := dockerCmd(t, "service", "scale", "--detach", name+"=0"); err != nil {
		t.Errorf("docker service scale: %v: %s", err, out)
		return
	}
	for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		if out, err := dockerCmd(t, "service", "ps", "-q", name); err == nil && out == "" {
			dockerCmd(t, "service", "rm", name)
			return
		}
	}
	t.Errorf("service %s still has tasks after 90 s: not removed", name)
}

// slaveServices is the cluster's slave services: name → replicas ("1/1").
func slaveServices(t *testing.T, cluster string) map[string]string {
	t.Helper()
	out, err := dockerCmd(t, "service", "ls", "--filter", "label=runbox.cluster="+cluster, "--format", "{{.Name}} {{.Replicas}}")
	if err != nil {
		t.Errorf("docker service ls: %v: %s", err, out)
		return nil
	}
	m := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if name, rep, ok := strings.Cut(l, " "); ok {
			m[name] = rep
		}
	}
	return m
}

// TestAutoscaleSwarm, on a one-node swarm: load crosses the threshold, slave services
// start (Swarm runs their task from the local image, no registry) and their slaves
// register and take jobs; the load ends, each slave is drained, its service scaled to 0
// and removed; no job fails.
func TestAutoscaleSwarm(t *testing.T) {
	if testing.Short() {
		t.Skip("needs Docker")
	}
	useSwarm(t)
	node := fmt.Sprint("swarm-", time.Now().UnixNano()%100000)
	t.Cleanup(func() { // before the swarm is left: whatever the test left of its cluster
		for name := range slaveServices(t, node) {
			retireService(t, name)
		}
		if ids := clusterContainers(t, node); len(ids) > 0 {
			dockerCmd(t, append([]string{"rm", "-f"}, ids...)...)
		}
		out, _ := dockerCmd(t, "ps", "-aq", "--filter", "label=runbox.sandbox=1", "--format", `{{.ID}} {{.Label "runbox.owner"}}`)
		for _, l := range strings.Split(out, "\n") {
			if id, owner, _ := strings.Cut(l, " "); strings.HasPrefix(owner, "runbox-"+node+"-slave-") {
				dockerCmd(t, "rm", "-f", id)
			}
		}
	})
	var log *slog.Logger
	if os.Getenv("RUNBOX_TEST_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	addr := startMasterLog(t, nil, log, func(c *masterConfig) {
		c.Node = node
		c.MaxPrograms = 1
		c.Queue = 100
		c.CPUThreshold = 0 // scale on the queue: CPU on this shared machine is noise
		c.Autoscale = autoscaleConfig{Mode: "swarm", Min: 0, Max: 2, Capacity: 2, CPUs: 1, Memory: "1GiB", Network: "host",
			Image: "runbox/server:latest", IdleAfter: 5 * time.Second, DockerSock: "/var/run/docker.sock"}
	})
	c, err := transport.Dial(context.Background(), addr, transport.DefaultClientConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	// A timeline of what the services and the master show, every 250 ms.
	t0 := time.Now()
	var (
		tmu      sync.Mutex
		timeline []string
		maxUp    int // most slave services running their task at once
	)
	mark := func(format string, a ...any) {
		tmu.Lock()
		timeline = append(timeline, fmt.Sprintf("%6.1fs ", time.Since(t0).Seconds())+fmt.Sprintf(format, a...))
		tmu.Unlock()
	}
	watchCtx, stopWatch := context.WithCancel(context.Background())
	watched := make(chan struct{})
	t.Cleanup(func() { stopWatch(); <-watched }) // runs before the cleanups above
	go func() {
		defer close(watched)
		seen := map[string]string{}
		for watchCtx.Err() == nil {
			now := slaveServices(t, node)
			up := 0
			for name, rep := range now {
				if seen[name] != rep {
					mark("service %s replicas %s", name, rep)
				}
				if rep == "1/1" {
					up++
				}
			}
			for name := range seen {
				if _, ok := now[name]; !ok {
					mark("service %s removed", name)
				}
			}
			seen = now
			tmu.Lock()
			maxUp = max(maxUp, up)
			tmu.Unlock()
			select {
			case <-watchCtx.Done():
			case <-time.After(250 * time.Millisecond):
			}
		}
	}()

	mark("submitting 10 jobs of 2 s")
	nodes, firstSlave := loadCluster(t, c, node, 10, mark)
	mark("all jobs done: %v", nodes)

	// The load is gone: after the idle time each slave is drained, its service scaled to
	// 0 and removed, and its container goes.
	deadline := time.Now().Add(2 * time.Minute)
	for len(slaveServices(t, node)) > 0 || len(clusterContainers(t, node)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("slaves still there: services %v, containers %v", slaveServices(t, node), clusterContainers(t, node))
		}
		time.Sleep(500 * time.Millisecond)
	}
	mark("no slave service or container left")
	stopWatch()
	<-watched

	snap, err := c.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Nodes) != 1 {
		t.Errorf("nodes after scale-in: %+v", snap.Nodes)
	}
	// Every slave that joined was drained before it went.
	drained, joined := map[string]bool{}, []string{}
	for _, e := range snap.NodeEvents {
		if e.Node == node {
			continue
		}
		tmu.Lock()
		timeline = append(timeline, fmt.Sprintf("%6.1fs (master) %s %s %s", e.At.Sub(t0).Seconds(), e.Node, e.Kind, e.Reason))
		tmu.Unlock()
		switch e.Kind {
		case scheduler.NodeEventJoined:
			joined = append(joined, e.Node)
		case scheduler.NodeEventDraining:
			drained[e.Node] = true
		case scheduler.NodeEventLost:
			t.Errorf("slave %s was lost, not drained and stopped: %s", e.Node, e.Reason)
		}
	}
	for _, n := range joined {
		if !drained[n] {
			t.Errorf("slave %s went without being drained", n)
		}
	}
	tmu.Lock()
	defer tmu.Unlock()
	if maxUp == 0 {
		t.Error("no slave service ever ran its task")
	}
	slices.Sort(joined)
	slices.Sort(timeline) // "%6.1fs ...": in time order
	t.Logf("slaves joined %v, most running at once %d; jobs per node %v; first job on a new slave %v after the queue formed; whole test %v\n%s",
		slices.Compact(joined), maxUp, nodes, firstSlave, time.Since(t0).Round(time.Second), strings.Join(timeline, "\n"))
}

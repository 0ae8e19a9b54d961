package transport

import (
	"context"
	"errors"
	"regexp"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"runbox/sandbox"
	"runbox/sandbox/sandboxtest"
	"runbox/scheduler"
)

// startSlave runs a Slave with a Fake runner against addr until the test ends (or stop).
func startSlave(t *testing.T, addr, name string, capacity int) (stop func()) {
	t.Helper()
	return startSlaveWith(t, addr, name, capacity, &sandboxtest.Fake{}, nil)
}

// startSlaveWith is startSlave with a runner and a log (nil: discarded).
func startSlaveWith(t *testing.T, addr, name string, capacity int, runner sandbox.Runner, log *logBuffer) (stop func()) {
	t.Helper()
	cfg := SlaveConfig{Master: addr, Node: name, Capacity: capacity, LoadInterval: 100 * time.Millisecond,
		Load: func() scheduler.Load { return scheduler.Load{CPU: 12} }}
	if log != nil {
		cfg.Logger = log.logger()
	}
	sl, err := NewSlave(cfg, runner)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sl.Run(ctx) }()
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cancel()
			if err := <-done; err != nil {
				t.Errorf("slave %s: %v", name, err)
			}
		}
	}
	t.Cleanup(stop)
	return stop
}

func waitNodes(t *testing.T, ts *testServer, n int) {
	t.Helper()
	waitUntil(t, func() bool { return len(ts.sched.Snapshot(0).Nodes) == n })
}

func TestSlaveRunsDelegatedJobs(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(s *scheduler.Config, _ *ServerConfig) { s.MaxPrograms = 0 })
	startSlave(t, ts.addr, "slave-1", 2)
	waitNodes(t, ts, 2)
	c := dialT(t, ts.addr, nil)
	var startedOn string
	res, err := c.Run(context.Background(), prog("out from the slave\nerr e\nexit 3"), RunOptions{Handler: Handler{Started: func(n string) { startedOn = n }}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Node != "slave-1" || startedOn != "slave-1" || string(res.Stdout) != "from the slave\n" || string(res.Stderr) != "e\n" || res.ExitCode != 3 {
		t.Errorf("result %+v started on %q", res, startedOn)
	}
	// Interactive input crosses master and slave.
	in := make(chan []byte, 2)
	in <- []byte("typed ")
	in <- []byte("live")
	close(in)
	res, err = c.Run(context.Background(), prog("cat"), RunOptions{Stdin: in})
	if err != nil || string(res.Stdout) != "typed live" {
		t.Errorf("interactive via slave: %v %q", err, res.Stdout)
	}
	snap, _ := c.Status(context.Background())
	var slave scheduler.NodeInfo
	for _, n := range snap.Nodes {
		if n.Name == "slave-1" {
			slave = n
		}
	}
	if slave.Role != "slave" || slave.Capacity != 2 || slave.Load.CPU != 12 || slave.Done != 2 {
		t.Errorf("slave in status: %+v", slave)
	}
}

func TestSlaveLossRerunsElsewhere(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(s *scheduler.Config, _ *ServerConfig) { s.MaxPrograms = 0 })
	proxy := newProxy(t, ts.addr)
	// The doomed slave reaches the master through a proxy we can cut.
	startSlave(t, proxy.ln.Addr().String(), "doomed", 1)
	waitNodes(t, ts, 2)
	c := dialT(t, ts.addr, nil)
	var nodes []string
	var node string // where the attempt whose output arrives runs
	var cut atomic.Bool
	// Barrier: the doomed slave is cut once its program printed "start", in the middle of
	// its run (it then sleeps), not after some time.
	res, err := c.Run(context.Background(), prog("out start\nsleep 1s\nout end"), RunOptions{Handler: Handler{
		Started: func(n string) {
			nodes = append(nodes, n)
			node = n
		},
		Output: func(sandbox.Chunk) {
			if node == "doomed" && cut.CompareAndSwap(false, true) {
				proxy.ln.Close() // it cannot come back
				proxy.cut()
				go startSlave(t, ts.addr, "rescuer", 1)
			}
		},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Node != "rescuer" || res.Attempts != 2 || string(res.Stdout) != "start\nend\n" {
		t.Errorf("result %+v (nodes %v)", res, nodes)
	}
}

func TestSlaveDrainsOnStop(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(s *scheduler.Config, _ *ServerConfig) { s.MaxPrograms = 0 })
	stop := startSlave(t, ts.addr, "leaving", 1)
	waitNodes(t, ts, 2)
	c := dialT(t, ts.addr, nil)
	errc := make(chan error, 1)
	var res sandbox.Result
	go func() {
		var err error
		res, err = c.Run(context.Background(), prog("sleep 300ms\nout finished"), RunOptions{Handler: Handler{Started: func(string) { go stop() }}})
		errc <- err
	}()
	if err := <-errc; err != nil || string(res.Stdout) != "finished\n" || res.Attempts != 1 {
		t.Errorf("job on a draining slave: %v %+v", err, res)
	}
}

func TestSlaveReconnectsAfterMasterRestart(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(s *scheduler.Config, _ *ServerConfig) { s.MaxPrograms = 0 })
	proxy := newProxy(t, ts.addr)
	startSlave(t, proxy.ln.Addr().String(), "faithful", 1)
	waitNodes(t, ts, 2)
	proxy.cut() // the master "goes away" for the slave
	waitUntil(t, func() bool {
		for _, e := range ts.sched.Snapshot(0).NodeEvents {
			if e.Kind == scheduler.NodeEventLost {
				return true
			}
		}
		return false
	})
	waitNodes(t, ts, 2) // it came back by itself
	c := dialT(t, ts.addr, nil)
	if res, err := c.Run(context.Background(), prog("out back"), RunOptions{}); err != nil || res.Node != "faithful" {
		t.Errorf("%v %+v", err, res)
	}
}

func TestSlaveRefusedCredentials(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(_ *scheduler.Config, c *ServerConfig) {
		c.Authenticate = func(h Hello) error {
			if h.Token != "join" {
				return ErrUnauthorized
			}
			return nil
		}
	})
	sl, _ := NewSlave(SlaveConfig{Master: ts.addr, Node: "rogue", Capacity: 1}, &sandboxtest.Fake{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := sl.Run(ctx); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("rogue slave: %v", err)
	}
}

// A slave whose registration the master refuses (here: the master's own node name, a
// live node's) does not exit nor spin: it says why and tries again, waiting longer each
// time.
func TestSlaveRetriesRefusedRegistration(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(s *scheduler.Config, _ *ServerConfig) { s.MaxPrograms = 0 })
	var log logBuffer
	sl, err := NewSlave(SlaveConfig{Master: ts.addr, Node: "master", Capacity: 1, Logger: log.logger()}, &sandboxtest.Fake{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sl.Run(ctx) }()
	refusal := regexp.MustCompile(`refused this slave's registration, retrying.* code=(\w+) .* in=(\S+)`)
	waitUntil(t, func() bool { return len(refusal.FindAllString(log.String(), -1)) >= 3 })
	select {
	case err := <-done:
		t.Fatalf("the slave exited: %v", err)
	default:
	}
	var last time.Duration
	for i, m := range refusal.FindAllStringSubmatch(log.String(), 3) {
		d, err := time.ParseDuration(m[2])
		if m[1] != "invalid_request" || err != nil || d <= last {
			t.Errorf("refusal %d: code %s, retry in %s after %v: want the code and a longer wait each time", i, m[1], m[2], last)
		}
		last = d
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("stopped: %v", err)
	}
	if n := len(ts.sched.Snapshot(0).Nodes); n != 1 {
		t.Errorf("%d nodes, want the master alone", n)
	}
}

// TestSlaveOfATakenNameWaits: a second slave under a live slave's name is refused with
// name_taken (it cannot evict the live one, whose jobs and session stay), retries, and
// joins once the first one has left.
func TestSlaveOfATakenNameWaits(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(s *scheduler.Config, _ *ServerConfig) { s.MaxPrograms = 0 })
	stopFirst := startSlave(t, ts.addr, "twin", 1)
	waitNodes(t, ts, 2)
	joined := ts.sched.Snapshot(0).Nodes[1].Joined

	var log logBuffer
	startSlaveWith(t, ts.addr, "twin", 3, &sandboxtest.Fake{}, &log)
	waitUntil(t, func() bool {
		return regexp.MustCompile(`refused this slave's registration, retrying.* code=name_taken`).MatchString(log.String())
	})
	if nodes := ts.sched.Snapshot(0).Nodes; len(nodes) != 2 || nodes[1].Capacity != 1 || !nodes[1].Joined.Equal(joined) {
		t.Fatalf("the live slave was replaced: %+v", nodes)
	}

	stopFirst()
	waitUntil(t, func() bool {
		nodes := ts.sched.Snapshot(0).Nodes
		return len(nodes) == 2 && nodes[1].Name == "twin" && nodes[1].Capacity == 3
	})
}

// tracingRunner is the Fake with a trace on every result.
type tracingRunner struct{ sandboxtest.Fake }

var testTrace = sandbox.Trace{Acquire: 3 * time.Millisecond, Pooled: true, Send: time.Millisecond, Run: 7 * time.Millisecond}

func (r *tracingRunner) Run(ctx context.Context, spec sandbox.Spec, streams *sandbox.Streams) (sandbox.Result, error) {
	res, err := r.Fake.Run(ctx, spec, streams)
	tr := testTrace
	res.Trace = &tr
	return res, err
}

// A result's trace crosses both hops: slave to master, master to client.
func TestTraceCrossesTheWire(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(s *scheduler.Config, _ *ServerConfig) { s.MaxPrograms = 0 })
	startSlaveWith(t, ts.addr, "tracer", 1, &tracingRunner{}, nil)
	waitNodes(t, ts, 2)
	c := dialT(t, ts.addr, nil)
	res, err := c.Run(context.Background(), prog("out traced"), RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Node != "tracer" || res.Trace == nil || res.Trace.Acquire != testTrace.Acquire || !res.Trace.Pooled ||
		res.Trace.Send != testTrace.Send || res.Trace.Run != testTrace.Run {
		t.Errorf("node %s trace %+v, want %+v", res.Node, res.Trace, testTrace)
	}
	if res.Trace != nil && res.Trace.Queue < 0 {
		t.Errorf("queue wait %v", res.Trace.Queue)
	}
	// A runner that traces nothing: the client sees only the scheduler's queue wait.
	ts2 := startServer(t, nil)
	res, err = dialT(t, ts2.addr, nil).Run(context.Background(), prog("out plain"), RunOptions{})
	if err != nil || res.Trace == nil || len(res.Trace.Phases()) > 1 || res.Trace.Acquire != 0 || res.Trace.Run != 0 {
		t.Errorf("untraced: %v, trace %+v, want the queue wait alone", err, res.Trace)
	}
}

// A draining slave waits for its running programs and for the grace, whichever ends last
// (the fake clock of synctest: no real wait).
func TestSlaveWaitIdle(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		sl := &Slave{changed: make(chan struct{})}
		returned := func(done <-chan struct{}) bool {
			synctest.Wait()
			select {
			case <-done:
				return true
			default:
				return false
			}
		}
		// Idle: it returns when the grace ends, not before.
		done := make(chan struct{})
		go func() { sl.waitIdle(time.Second); close(done) }()
		time.Sleep(time.Second - time.Millisecond)
		if returned(done) {
			t.Fatal("returned before the grace ended")
		}
		time.Sleep(time.Millisecond)
		if !returned(done) {
			t.Fatal("idle, and did not return at the end of the grace")
		}
		// Busy past the grace: it returns when the last program ends.
		sl.addRunning(2)
		done = make(chan struct{})
		go func() { sl.waitIdle(time.Second); close(done) }()
		time.Sleep(time.Hour)
		sl.addRunning(-1)
		if returned(done) {
			t.Fatal("returned while a program runs")
		}
		sl.addRunning(-1)
		if !returned(done) {
			t.Fatal("did not return once the last program ended")
		}
	})
}

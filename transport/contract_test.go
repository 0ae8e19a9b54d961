package transport

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"runbox/sandbox"
	"runbox/sandbox/judge"
	"runbox/sandbox/sandboxtest"
	"runbox/scheduler"
)

// TestRunnersKeepTheContract runs the Runner contract (sandboxtest.Contract), one body,
// over every Runner the transport makes, as litestream runs one test body over every
// replica client: the master's remote runner, which sees a slave as a Runner, on net.Pipe
// against a real Slave; and a client of a master on loopback. Each runs its programs on a
// Fake, bare or inside a judge (as on a real node, where the judge wraps the sandbox).
func TestRunnersKeepTheContract(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name           string
		master, judged bool // a client of a master, else the remote runner of a slave
	}{
		{"RemoteRunner", false, false},
		{"RemoteRunnerOfAJudgingSlave", false, true},
		{"Client", true, false},
		{"ClientOfAJudgingMaster", true, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			fake := &sandboxtest.Fake{Node: "fake"}
			var inner sandbox.Runner = fake
			if c.judged {
				j, err := judge.New(fake, judge.DefaultConfig())
				if err != nil {
					t.Fatal(err)
				}
				inner = j
			}
			runner := pipeSlave
			if c.master {
				runner = loopbackMaster
			}
			r, idle := runner(t, inner)
			sandboxtest.Contract(t, r, sandboxtest.ContractConfig{
				Programs: sandboxtest.FakePrograms(),
				Max:      scheduler.DefaultConfig().MaxLimits, // the master's; a slave's Fake takes sandbox.MaxLimits, the same
				Idle:     func() bool { return fake.Running() == 0 && idle() },
				// Through a master, Started says that the job was placed on a node,
				// before it compiles (the scheduler's EventStarted).
				StartsAtDispatch: c.master,
				Judges:           c.judged,
			})
		})
	}
}

// pipeSlave returns the master's remote runner for a slave at the far end of a net.Pipe,
// which serves each job stream as a slave process does, on runner, and whether the slave
// serves no job stream now.
func pipeSlave(t *testing.T, runner sandbox.Runner) (sandbox.Runner, func() bool) {
	t.Helper()
	a, b := net.Pipe()
	master, err := yamux.Server(a, yamuxConfig(5*time.Second, DefaultStreamBacklog))
	if err != nil {
		t.Fatal(err)
	}
	sess, err := yamux.Client(b, yamuxConfig(5*time.Second, clientBacklog))
	if err != nil {
		t.Fatal(err)
	}
	sl, err := NewSlave(SlaveConfig{Master: "pipe", Node: "pipe", Capacity: 4}, runner)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var (
		wg sync.WaitGroup
		mu sync.Mutex
		n  int // job streams served now
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			st, err := sess.AcceptStream()
			if err != nil {
				return
			}
			mu.Lock()
			n++
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { mu.Lock(); n--; mu.Unlock() }()
				defer st.Close()
				sl.serveJob(ctx, st)
			}()
		}
	}()
	t.Cleanup(func() {
		cancel()
		sess.Close()
		master.Close()
		wg.Wait()
	})
	idle := func() bool { mu.Lock(); defer mu.Unlock(); return n == 0 }
	return &remoteRunner{sess: master, node: "pipe", log: slog.New(slog.DiscardHandler)}, idle
}

// loopbackMaster returns a client's Runner for a master on loopback whose scheduler runs
// programs on runner, and whether the master runs no job now.
func loopbackMaster(t *testing.T, runner sandbox.Runner) (sandbox.Runner, func() bool) {
	t.Helper()
	ts := startServerWith(t, runner, nil)
	c := dialT(t, ts.addr, nil)
	idle := func() bool { return ts.sched.Snapshot(0).Nodes[0].Running == 0 }
	return c.Runner(), idle
}

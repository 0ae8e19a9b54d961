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
	"runbox/sandbox/sandboxtest"
	"runbox/scheduler"
)

// The Runner contract (sandboxtest.Contract) runs over every Runner the transport makes,
// one body for each, as litestream runs one test body over every replica client: the
// master's remote runner, which sees a slave as a Runner, and a client of a master.

// TestRemoteRunnerKeepsTheContract: the master's side of a slave's session, on net.Pipe,
// against a real Slave serving the job streams on a Fake.
func TestRemoteRunnerKeepsTheContract(t *testing.T) {
	t.Parallel()
	fake := &sandboxtest.Fake{Node: "pipe"}
	r, serving := pipeSlave(t, fake)
	sandboxtest.Contract(t, r, sandboxtest.ContractConfig{
		Programs: sandboxtest.FakePrograms(),
		Idle:     func() bool { return fake.Running() == 0 && serving() == 0 },
	})
}

// TestClientKeepsTheContract: a client on loopback, its jobs run by a master on a Fake.
// Through a master, Started says that the job was placed on a node, before it compiles.
func TestClientKeepsTheContract(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	c := dialT(t, ts.addr, nil)
	sandboxtest.Contract(t, c.Runner(), sandboxtest.ContractConfig{
		Programs:         sandboxtest.FakePrograms(),
		StartsAtDispatch: true,
		Max:              scheduler.DefaultConfig().MaxLimits, // startServer's
		Idle: func() bool {
			return ts.fake.Running() == 0 && ts.sched.Snapshot(0).Nodes[0].Running == 0
		},
	})
}

// pipeSlave returns the master's remote runner for a slave at the far end of a net.Pipe,
// which serves each job stream as a slave process does, on runner, and a count of the
// job streams it serves now.
func pipeSlave(t *testing.T, runner sandbox.Runner) (sandbox.Runner, func() int) {
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
		n  int
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
	serving := func() int { mu.Lock(); defer mu.Unlock(); return n }
	return &remoteRunner{sess: master, node: "pipe", log: slog.New(slog.DiscardHandler)}, serving
}

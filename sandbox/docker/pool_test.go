package docker

import (
	"context"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/docker/docker/pkg/stdcopy"

	"runbox/sandbox"
	"runbox/sandbox/boxinit"
	"runbox/sandbox/sandboxtest"
)

// A pool is sized by demand: PoolStart boxes at first, one more each time a program
// finds it empty (up to PoolSize), and one fewer for each PoolIdle without a program,
// down to PoolMin: a language nobody uses holds no container, a busy one PoolSize.
func TestPoolSizedByDemand(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeEngine()
		// A container waits for its program, then answers it.
		f.serve = stdout(frame(boxinit.FrameStarted, ""), resultFrame(okResult))
		r, _ := newFakeRunner(t, f, func(c *Config) {
			c.Languages = []string{"python", "c"}
			c.PoolSize, c.PoolStart, c.PoolMin = 3, 1, 0
			c.PoolIdle = time.Minute
		})
		py, c := r.langs["python"].pool, r.langs["c"].pool
		settle := func() {
			time.Sleep(time.Second) // the stagger, the remover's yield
			synctest.Wait()
		}
		check := func(when string, wantPy, wantC int) {
			t.Helper()
			if py.idle() != wantPy || c.idle() != wantC || f.count() != wantPy+wantC || r.removal.pending() != 0 {
				t.Errorf("%s: python %d idle, c %d, %d containers, %d removals pending; want python %d, c %d and no other container",
					when, py.idle(), c.idle(), f.count(), r.removal.pending(), wantPy, wantC)
			}
		}
		settle()
		check("at start", 1, 1)

		// Bursts of python: each program that finds the pool empty grows it by one. (How
		// many do depends on how fast the fillers refill between them.)
		for range 3 {
			var wg sync.WaitGroup
			for range 3 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					res, err := r.Run(context.Background(), sandboxtest.Program("python", "print(1)"), nil)
					if err != nil || res.Status != sandbox.StatusOK {
						t.Errorf("%v %+v", err, res)
					}
				}()
			}
			wg.Wait()
			settle()
		}
		grown := py.idle()
		if grown < 2 || grown > r.cfg.PoolSize {
			t.Errorf("after the bursts python has %d idle, want 2..%d", grown, r.cfg.PoolSize)
		}
		check("after the bursts", grown, 1)

		// Unused: c first (it was never used), then python, one box per PoolIdle.
		time.Sleep(r.cfg.PoolIdle + r.cfg.PoolIdle/4) // the governor looks every PoolIdle/4
		settle()
		check("one idle period later", grown-1, 0)
		time.Sleep(3 * r.cfg.PoolIdle)
		settle()
		check("all idle", 0, 0)

		// In use again: the first program starts its own box and the pool grows.
		if res, err := r.Run(context.Background(), sandboxtest.Program("python", "print(1)"), nil); err != nil || res.Status != sandbox.StatusOK || res.Trace.Pooled {
			t.Errorf("%v %+v, want a run in a box of its own", err, res)
		}
		settle()
		check("in use again", 1, 0)
	})
}

// Pooled starts take turns across languages: at most PoolStarts at once, so the refills
// of one language cannot hold the engine while another waits.
func TestPoolStartsTakeTurns(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeEngine()
		f.createGate = make(chan struct{})
		f.serve = func(c net.Conn) { io.Copy(io.Discard, c) } // waits for a program
		r, _ := newFakeRunner(t, f, func(c *Config) {
			c.Languages = []string{"python", "c", "cpp"}
			c.PoolSize, c.PoolStart, c.PoolStarts, c.PoolStagger = 2, 2, 2, 0
		})
		synctest.Wait()
		if n := len(r.poolStarts); n != 2 {
			t.Errorf("%d pooled starts in flight, want PoolStarts (2)", n)
		}
		close(f.createGate)
		time.Sleep(time.Second)
		synctest.Wait()
		for _, l := range []string{"python", "c", "cpp"} {
			if n := r.langs[l].pool.idle(); n != 2 {
				t.Errorf("%s: %d idle, want 2", l, n)
			}
		}
	})
}

// A pooled box waits at WaitShares, so that its warm-up or prestarted interpreter takes
// only CPU no program wants; its program gets the default weight once it has run for
// BoostAfter. A short program ends before and costs no update; a box started for a
// waiting program has the default weight from the start.
func TestPooledBoxWaitsAtLowWeight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeEngine()
		f.created = make(chan string, 16)
		// A container answers at once, or after a second for a program that says "long".
		f.serve = func(c net.Conn) {
			w := stdcopy.NewStdWriter(c, stdcopy.Stdout)
			req, ok := readRequest(c)
			if !ok {
				return
			}
			go io.Copy(io.Discard, c)
			w.Write(frame(boxinit.FrameStarted, ""))
			if len(req.Files) > 0 && strings.Contains(string(req.Files[0].Content), "long") {
				time.Sleep(time.Second)
			}
			w.Write(resultFrame(okResult))
		}
		pooled, _ := newFakeRunner(t, f, func(c *Config) {
			c.Languages = []string{"python"}
			c.PoolSize, c.PoolStart = 1, 1
		})
		// run waits for the pool's box (a fresh one each time), runs src in it and
		// returns the box's weights.
		run := func(src string) []int64 {
			t.Helper()
			time.Sleep(time.Second) // the pool fills
			synctest.Wait()
			id := <-f.created
			res, err := pooled.Run(context.Background(), sandboxtest.Program("python", src), nil)
			if err != nil || res.Status != sandbox.StatusOK || !res.Trace.Pooled {
				t.Fatalf("%v %+v, want a pooled run", err, res)
			}
			return f.sharesOf(id)
		}
		if got := run("print('short')"); !slices.Equal(got, []int64{minShares}) {
			t.Errorf("a short program's pooled box: weights %v, want %d and no update", got, minShares)
		}
		if got := run("print('long')"); !slices.Equal(got, []int64{minShares, defaultShares}) {
			t.Errorf("a long program's pooled box: weights %v, want %d then %d", got, minShares, defaultShares)
		}
		time.Sleep(time.Second) // the pool's last refill
		synctest.Wait()
		<-f.created

		fresh, _ := newFakeRunner(t, f, func(c *Config) { c.PoolSize = 0 })
		if res, err := fresh.Run(context.Background(), sandboxtest.Program("python", "print('long')"), nil); err != nil || res.Status != sandbox.StatusOK || res.Trace.Pooled {
			t.Fatalf("%v %+v, want a box of its own", err, res)
		}
		if id := <-f.created; !slices.Equal(f.sharesOf(id), []int64{0}) {
			t.Errorf("a box started for its program: weights %v, want the engine's default (0) and no update", f.sharesOf(id))
		}
	})
}

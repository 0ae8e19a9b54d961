package docker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/containerd/errdefs"

	"runbox/sandbox"
	"runbox/sandbox/boxinit"
	"runbox/sandbox/sandboxtest"
)

// A removal that the engine refuses (busy, or another removal of the same container in
// progress, which may then fail and leave it Dead) is tried again until the container is
// gone, without waiting for Close.
func TestRemovalRetriedUntilGone(t *testing.T) {
	for _, fail := range []error{
		errdefs.ErrConflict.WithMessage("removal of container x is already in progress"),
		errors.New("could not kill running container: tried to kill container, but did not receive an exit event"),
	} {
		t.Run(fail.Error()[:20], func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFakeEngine()
				f.serve = stdout(frame(boxinit.FrameStarted, ""), resultFrame(okResult))
				var mu sync.Mutex
				refusals := map[string]int{}
				f.removeHook = func(id string) error {
					mu.Lock()
					defer mu.Unlock()
					if refusals[id] < 3 {
						refusals[id]++
						return fail
					}
					return nil
				}
				r, _ := newFakeRunner(t, f, nil)
				res, err := r.Run(context.Background(), sandboxtest.Program("python", "print(1)"), nil)
				if err != nil || res.Status != sandbox.StatusOK {
					t.Fatalf("%v %+v", err, res)
				}
				time.Sleep(time.Minute)
				synctest.Wait()
				if n := f.count(); n != 0 || r.removal.pending() != 0 {
					t.Errorf("a minute after the run, %d containers remain (%d removals pending), want 0", n, r.removal.pending())
				}
			})
		})
	}
}

// Removals yield to container starts: while a create is in flight a removal waits, at
// most removeYield, unless removeBacklog of them wait.
func TestRemovalYieldsToStarts(t *testing.T) {
	// start holds one container start in flight (its create waits on the gate) and
	// returns the function that lets it end.
	start := func(t *testing.T, f *fakeEngine, r *Runner) (release func()) {
		f.createGate = make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			r.startBox(context.Background(), r.langs["python"], boxLimitsOf(r.cfg.Defaults, false), false)
		}()
		synctest.Wait()
		return func() { close(f.createGate); <-done }
	}
	t.Run("waits for the start", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			f := newFakeEngine()
			r, _ := newFakeRunner(t, f, nil)
			release := start(t, f, r)
			f.add("exited")
			r.remove(&box{id: "exited"})
			time.Sleep(removeYield / 2)
			synctest.Wait()
			if !f.has("exited") {
				t.Fatal("removed while a start was in flight")
			}
			release() // the start ends (it fails: the fake cannot attach)
			synctest.Wait()
			if f.has("exited") {
				t.Error("not removed once the start ended")
			}
		})
	})
	t.Run("at most removeYield", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			f := newFakeEngine()
			r, _ := newFakeRunner(t, f, nil)
			release := start(t, f, r)
			defer release()
			f.add("exited")
			r.remove(&box{id: "exited"})
			time.Sleep(removeYield)
			synctest.Wait()
			if f.has("exited") {
				t.Error("still there after removeYield with a start in flight")
			}
		})
	})
	t.Run("a backlog goes at once", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			f := newFakeEngine()
			r, _ := newFakeRunner(t, f, nil)
			release := start(t, f, r)
			defer release()
			for i := range removeBacklog {
				id := fmt.Sprint("exited-", i)
				f.add(id)
				r.remove(&box{id: id})
			}
			synctest.Wait()
			// Removed without yielding until fewer than removeBacklog wait.
			if n := f.count(); n >= removeBacklog {
				t.Errorf("%d of a backlog of %d left while a start was in flight", n, removeBacklog)
			}
		})
	})
}

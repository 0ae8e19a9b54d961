package docker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
)

// How the remover paces itself. An exited single-use container is dead already: its
// removal can wait for a quiet moment of the engine, but not for long, and never so that
// containers pile up.
const (
	// removeYield is the longest a removal waits for the container starts in flight to
	// end before it goes ahead anyway.
	removeYield = time.Second
	// removeBacklog: with this many removals waiting, they stop yielding to starts...
	removeBacklog = 8
	// ...and removeParallel of them run at once.
	removeParallel = 4
	// removeTries: a removal that keeps failing (an engine that cannot kill the
	// container yet, a removal already in progress that then fails and leaves a Dead
	// container) is tried again with a backoff from minBackoff to removeMaxBackoff, this
	// many times in all; after that the owner reap (at Close, or when the next Runner
	// starts) is left to catch it.
	removeTries      = 12
	removeMaxBackoff = 5 * time.Second
	// removeTimeout bounds one removal call.
	removeTimeout = 30 * time.Second
)

// remover removes the Runner's containers in the background: one at a time while the
// engine is busy starting containers (it waits for the starts in flight to end, at most
// removeYield), several at once when a backlog builds up, and again after a failure until
// the engine says the container is gone. Its one goroutine is owned by the Runner; Close
// waits for it to remove everything it was given.
type remover struct {
	r *Runner

	mu       sync.Mutex
	queue    []*removal
	inFlight int  // removals under way (out of the queue)
	starts   int  // container creates and starts in flight
	closing  bool // remove what is left without yielding, then end
	wake     chan struct{}
	done     chan struct{}
}

// removal is one container to remove.
type removal struct {
	id        string
	queued    time.Time // when it was first asked for
	tries     int
	notBefore time.Time // after a failure: not before the backoff
}

func newRemover(r *Runner) *remover {
	m := &remover{r: r, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go m.run()
	return m
}

// add asks for the removal of the container id.
func (m *remover) add(id string) {
	m.mu.Lock()
	m.queue = append(m.queue, &removal{id: id, queued: time.Now()})
	m.mu.Unlock()
	m.poke()
}

// startBegin and startEnd bracket a container's create, attach and start: removals yield
// to them.
func (m *remover) startBegin() {
	m.mu.Lock()
	m.starts++
	m.mu.Unlock()
}

func (m *remover) startEnd() {
	m.mu.Lock()
	m.starts--
	quiet := m.starts == 0
	m.mu.Unlock()
	if quiet {
		m.poke()
	}
}

// pending is how many removals wait or are under way.
func (m *remover) pending() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.queue) + m.inFlight
}

func (m *remover) poke() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// close removes what is left, without yielding, and returns when the remover has ended.
// Nothing may be added after close.
func (m *remover) close() {
	m.mu.Lock()
	m.closing = true
	m.mu.Unlock()
	m.poke()
	<-m.done
}

func (m *remover) run() {
	defer close(m.done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		m.mu.Lock()
		if m.closing && len(m.queue) == 0 {
			m.mu.Unlock()
			return
		}
		batch, wait := m.nextLocked(time.Now())
		m.mu.Unlock()
		if len(batch) == 0 {
			timer.Reset(wait)
			select {
			case <-m.wake:
			case <-timer.C:
			}
			continue
		}
		var wg sync.WaitGroup
		for _, rm := range batch {
			wg.Add(1)
			go func() {
				defer wg.Done()
				m.attempt(rm)
			}()
		}
		wg.Wait()
	}
}

// nextLocked takes the removals to make now out of the queue (in a batch that the caller
// runs and returns what failed of), or says how long to wait for the next one.
func (m *remover) nextLocked(now time.Time) (batch []*removal, wait time.Duration) {
	urgent := m.closing || len(m.queue) >= removeBacklog
	n := 1
	if urgent {
		n = removeParallel
	}
	wait = time.Hour
	keep := m.queue[:0]
	for _, rm := range m.queue {
		at := rm.notBefore
		if !urgent && m.starts > 0 && rm.tries == 0 {
			at = rm.queued.Add(removeYield)
		}
		if len(batch) < n && !at.After(now) {
			batch = append(batch, rm)
			continue
		}
		if d := at.Sub(now); d > 0 {
			wait = min(wait, d)
		}
		keep = append(keep, rm)
	}
	clear(m.queue[len(keep):])
	m.queue = keep
	m.inFlight += len(batch)
	return batch, max(wait, time.Millisecond)
}

// attempt removes rm once; a failure puts it back in the queue after a backoff, up to
// removeTries.
func (m *remover) attempt(rm *removal) {
	gone, err := false, error(nil)
	func() {
		defer m.r.logPanic("container removal")
		ctx, cancel := context.WithTimeout(context.Background(), removeTimeout)
		defer cancel()
		gone, err = removeOnce(ctx, m.r.api, rm.id)
	}()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.inFlight--
	if gone {
		return
	}
	rm.tries++
	if rm.tries >= removeTries {
		m.r.log.Warn("remove container: giving up, the owner reap will", "id", shortID(rm.id), "tries", rm.tries, "err", err)
		return
	}
	rm.notBefore = time.Now().Add(backoffAfter(rm.tries))
	m.queue = append(m.queue, rm)
}

// backoffAfter is the wait after the n-th failed removal (n >= 1).
func backoffAfter(n int) time.Duration {
	d := minBackoff
	for range n - 1 {
		d *= 2
		if d >= removeMaxBackoff {
			return removeMaxBackoff
		}
	}
	return d
}

// errRemovalInProgress: the engine is removing the container on another request; that
// removal may still fail and leave a Dead container, so it is not yet gone.
var errRemovalInProgress = errors.New("removal already in progress")

// removeOnce asks the engine to remove (and kill) a container and reports whether it is
// gone: removed now, or not found.
func removeOnce(ctx context.Context, api dockerAPI, id string) (gone bool, err error) {
	err = api.ContainerRemove(ctx, id, container.RemoveOptions{Force: true})
	switch {
	case err == nil || errdefs.IsNotFound(err):
		return true, nil
	case errdefs.IsConflict(err):
		return false, fmt.Errorf("remove container: %w (%v)", errRemovalInProgress, err)
	}
	return false, fmt.Errorf("remove container: %w", err)
}

// removeRetrying removes a container now, trying again after a failure until it is gone,
// removeTries in all, or ctx ends.
func removeRetrying(ctx context.Context, api dockerAPI, id string) error {
	for try := 1; ; try++ {
		gone, err := removeOnce(ctx, api, id)
		if gone {
			return nil
		}
		if try >= removeTries {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(backoffAfter(try)):
		}
	}
}

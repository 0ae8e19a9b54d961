// Hardening: runbox-init made a safe PID 1 for untrusted children (Harden).

package boxinit

import (
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// ReservedPids is how many of the container's pids (processes and threads, one cgroup
// count) runbox-init takes for itself. Harden creates all of its threads up front, so a
// program that takes every other pid (a fork or thread bomb) cannot keep the Go runtime
// from starting a thread it needs, which would be fatal to runbox-init. A Runner creates
// the container with the program's pids limit plus ReservedPids.
const ReservedPids = 12

// Harden makes the calling process a safe PID 1 for untrusted children:
//   - not dumpable, so processes of the same user cannot ptrace it or open /proc/1/fd;
//   - deaf to every signal a child can send it: each one is caught and dropped. Caught, not
//     ignored: an ignored signal stays ignored across exec, so the program would start
//     with SIGPIPE, SIGXFSZ, SIGTERM... ignored; a caught one is reset to its default
//     action. And catching is what keeps the Go runtime alive: a kill(1, SIGSEGV) that
//     nobody asked for would make it throw, and PID 1's death ends the container;
//   - holding every thread it will need (ReservedPids), created now while pids are free;
//   - with its code locked in memory (see lockText).
func Harden() error {
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("prctl dumpable: %w", err)
	}
	// Nobody reads the channel: the signal package drops what does not fit.
	signal.Notify(make(chan os.Signal, 1))
	resetIgnoredSignals()
	reserveThreads(ReservedPids)
	lockText()
	return nil
}

// lockText keeps runbox-init's own code in memory (best effort: it needs an
// RLIMIT_MEMLOCK of a few MiB, which containers have by default). Its heap and stacks are
// anonymous memory and, with no swap, stay put; but its code is file-backed, and a
// sandbox at its memory limit evicts file pages first. Without the lock, a program that
// sits at the limit (an OOM storm, thrashing) makes every step of runbox-init wait for its
// own code to be read back in, and the limits it enforces arrive seconds late.
func lockText() {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return
	}
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return
	}
	for line := range strings.SplitSeq(string(maps), "\n") {
		// start-end perms offset dev inode path
		f := strings.Fields(line)
		if len(f) < 6 || f[5] != exe {
			continue
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			continue
		}
		unix.Syscall(unix.SYS_MLOCK, uintptr(start), uintptr(end-start), 0)
	}
}

// reserveThreads makes the Go runtime hold exactly n threads (when it can). The runtime
// never ends an idle thread, only one whose goroutine exits while locked to it, so later
// it takes an idle thread instead of creating one. A goroutine locked to its thread and
// parked holds that thread and the runtime starts another to go on: each round parks as
// many more as threads are missing. The runtime may start one more than asked meanwhile;
// a locked goroutine that exits takes its thread with it.
func reserveThreads(n int) {
	parked := 0
	for range 8 {
		missing := n - threadCount()
		if missing <= 0 {
			break
		}
		parked += missing
		var locked, done sync.WaitGroup
		release := make(chan struct{})
		locked.Add(parked)
		done.Add(parked)
		for range parked {
			go func() {
				defer done.Done()
				runtime.LockOSThread()
				locked.Done()
				<-release
				runtime.UnlockOSThread()
			}()
		}
		locked.Wait()
		close(release)
		done.Wait()
	}
	for range 8 {
		extra := threadCount() - n
		if extra <= 0 {
			return
		}
		var done sync.WaitGroup
		done.Add(extra)
		for range extra {
			go func() {
				defer done.Done()
				runtime.LockOSThread() // and exit locked: the thread ends
			}()
		}
		done.Wait()
		// The thread ends just after its goroutine; on a busy machine that may take a
		// while, and ending another one meanwhile would leave too few.
		for i := 0; i < 1000 && threadCount() > n; i++ {
			time.Sleep(time.Millisecond)
		}
	}
}

// threadCount is the number of threads of the calling process.
func threadCount() int {
	entries, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return 1
	}
	return len(entries)
}

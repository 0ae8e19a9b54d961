package boxinit

import (
	"fmt"
	"time"
)

// memSample is one look at the sandbox cgroup's memory counters.
type memSample struct {
	// oomKills counts the processes the kernel's OOM killer killed in the cgroup so far.
	oomKills int64
	// usage is the charged memory in bytes (-1: unknown); limit the cap (0: unknown or none).
	usage, limit int64
	// refaults counts file pages read back in soon after they were evicted (-1: unknown).
	refaults int64
}

// How the phase's memory is watched. With no swap, a cgroup at its limit can still evict
// file pages: the program's own code and libraries. A program that grows slowly (a deep
// recursion, many small allocations) then thrashes: each page it adds evicts code it
// needs again at once, which is read back (through fuse-overlayfs on our machines), and
// the kernel, seeing reclaim make progress, holds off the OOM killer for many seconds.
// runbox-init calls that what it is: out of memory.
const (
	memTick = 50 * time.Millisecond
	// A tick thrashes when usage is within thrashHeadroom of the limit and at least
	// thrashRefaults pages (128 KiB per 50 ms) came back in.
	thrashHeadroom = 2 << 20
	thrashRefaults = 32
	// thrashTicks thrashing ticks (a second) end the phase; calmTicks calm ticks in a row
	// forgive them.
	thrashTicks = 20
	calmTicks   = 6
)

// msgOOMKill is the message of a phase ended by the OOM killer.
const msgOOMKill = "killed by the out-of-memory killer at the memory limit"

// memWatch decides, from a sample every memTick, whether the phase has run out of memory:
//   - the OOM killer killed a process of the sandbox, any process: the program is out of
//     memory and its state is broken, even if the main process lives on (a parent that
//     waits for its killed workers would otherwise be killed one worker at a time);
//   - the cgroup thrashes at its limit for thrashTicks (see above).
type memWatch struct {
	base, prev   memSample
	thrash, calm int
}

// observe takes the next sample and returns why the phase is out of memory, or "".
func (w *memWatch) observe(s memSample) string {
	defer func() { w.prev = s }()
	if s.oomKills > w.base.oomKills {
		return msgOOMKill
	}
	if s.limit <= 0 || s.usage < 0 || s.refaults < 0 || w.prev.refaults < 0 {
		return ""
	}
	if s.usage >= s.limit-thrashHeadroom && s.refaults-w.prev.refaults >= thrashRefaults {
		w.thrash++
		w.calm = 0
	} else if w.calm++; w.calm >= calmTicks {
		w.thrash = 0
	}
	if w.thrash >= thrashTicks {
		return fmt.Sprintf("killed at the memory limit: for %v it did little but read back the pages that memory pressure had just evicted (thrashing)", time.Duration(thrashTicks)*memTick)
	}
	return ""
}

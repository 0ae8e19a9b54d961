// One phase (compile or run): its start, its caps, output forwarding, reaping and measures.

package boxinit

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

type phase struct {
	// pre, when set, is an interpreter started ahead that runs script in place of argv
	// (should it be gone, argv runs the ordinary way).
	pre              *prestarted
	script           string
	argv             []string
	stdin            *os.File
	outType, errType byte
	cap              int64
	timeout          time.Duration
}

type phaseResult struct {
	outcome  Outcome
	exitCode int
	signal   string
	wall     time.Duration
	cpu      time.Duration
	maxRSS   int64
	message  string
}

// runPhase runs one command to its end under the phase's caps. When the command's main
// process ends, every other process in the sandbox is killed too (daemons do not outlive it).
func (s *server) runPhase(ph phase) phaseResult {
	cg := cgroupOf(s.cfg.CgroupRoot)
	var (
		mem0             memSample
		cpuBefore        time.Duration
		cpuOK            bool
		ruBefore         syscall.Rusage
		start            time.Time
		pid              int
		outR, errR       *os.File
		prestartedFailed bool
	)
	sample := func() {
		mem0 = cg.memSample()
		cpuBefore, cpuOK = cg.cpuUsage()
		syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ruBefore)
	}
	if ph.pre != nil {
		// The interpreter is up and waiting: hand it the program.
		sample()
		start = time.Now()
		if ph.pre.run(ph.script) {
			pid, outR, errR = ph.pre.pid, ph.pre.outR, ph.pre.errR
			defer outR.Close()
			defer errR.Close()
		} else {
			prestartedFailed = true
		}
	}
	if ph.pre == nil || prestartedFailed {
		path, err := lookPath(ph.argv[0], s.cfg)
		if err != nil {
			return phaseResult{outcome: OutcomeStartError, exitCode: -1, message: err.Error()}
		}
		var outW, errW *os.File
		outR, outW, err = os.Pipe()
		if err != nil {
			return phaseResult{outcome: OutcomeStartError, exitCode: -1, message: err.Error()}
		}
		defer outR.Close()
		errR, errW = outR, outW
		if ph.errType != ph.outType {
			if errR, errW, err = os.Pipe(); err != nil {
				outW.Close()
				return phaseResult{outcome: OutcomeStartError, exitCode: -1, message: err.Error()}
			}
			defer errR.Close()
		}

		sample()
		start = time.Now()
		pid, err = syscall.ForkExec(path, ph.argv, &syscall.ProcAttr{
			Dir:   s.cfg.Dir,
			Env:   s.cfg.Env,
			Files: []uintptr{ph.stdin.Fd(), outW.Fd(), errW.Fd()},
			Sys:   &syscall.SysProcAttr{Setpgid: true},
		})
		outW.Close()
		if errW != outW {
			errW.Close()
		}
		if err != nil {
			return phaseResult{outcome: OutcomeStartError, exitCode: -1, message: fmt.Sprintf("start %s: %v", ph.argv[0], err)}
		}
		setOOMScore(pid)
	}
	kill := func() { killAll(pid) }

	var (
		limitMu  sync.Mutex
		limitHit Outcome
		limitMsg string
	)
	hit := func(o Outcome, msg string) {
		limitMu.Lock()
		if limitHit == "" {
			limitHit, limitMsg = o, msg
		}
		limitMu.Unlock()
		kill()
	}
	timer := time.AfterFunc(ph.timeout, func() { hit(OutcomeTimeLimit, "") })
	defer timer.Stop()

	var helpers sync.WaitGroup
	// Output: frames, cut at the cap.
	pipes, types := []*os.File{outR}, []byte{ph.outType}
	if errR != outR {
		pipes, types = append(pipes, errR), append(types, ph.errType)
	}
	helpers.Add(1)
	go func() {
		defer helpers.Done()
		s.forward(pipes, types, ph.cap, func() { hit(OutcomeOutputLimit, "") })
	}()
	// Memory: an OOM kill or thrashing at the limit ends the phase.
	stopWatch := make(chan struct{})
	helpers.Add(1)
	go func() {
		defer helpers.Done()
		w := memWatch{base: mem0, prev: mem0}
		tick := time.NewTicker(memTick)
		defer tick.Stop()
		for {
			select {
			case <-stopWatch:
				return
			case <-tick.C:
			}
			if why := w.observe(cg.memSample()); why != "" {
				hit(OutcomeMemoryLimit, why)
				return
			}
		}
	}()

	// Reap every child until none is left; the main process's status and rusage are ours.
	var (
		status syscall.WaitStatus
		ru     syscall.Rusage
		end    time.Time
		done   bool
	)
	for {
		var ws syscall.WaitStatus
		var r syscall.Rusage
		wpid, err := syscall.Wait4(-1, &ws, 0, &r)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			break // ECHILD: all reaped
		}
		if wpid == pid {
			status, ru, end, done = ws, r, time.Now(), true
		}
		if done {
			kill() // the main process is gone: nothing else may outlive it
		}
	}
	if !done {
		end = time.Now()
	}
	timer.Stop()
	close(stopWatch)
	helpers.Wait()

	res := phaseResult{wall: end.Sub(start), maxRSS: ru.Maxrss * 1024}
	if cpuAfter, ok := cg.cpuUsage(); ok && cpuOK {
		res.cpu = cpuAfter - cpuBefore
	} else {
		var ruAfter syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ruAfter)
		res.cpu = time.Duration(ruAfter.Utime.Nano()+ruAfter.Stime.Nano()-ruBefore.Utime.Nano()-ruBefore.Stime.Nano()) * time.Nanosecond
	}
	switch {
	case status.Exited():
		res.exitCode = status.ExitStatus()
	case status.Signaled():
		res.exitCode = 128 + int(status.Signal())
		res.signal = unix.SignalName(status.Signal())
	default:
		res.exitCode = -1
	}
	limitMu.Lock()
	res.outcome, res.message = limitHit, limitMsg
	limitMu.Unlock()
	if res.outcome == "" {
		res.outcome = OutcomeExited
		if cg.oomKills() > mem0.oomKills {
			res.outcome, res.message = OutcomeMemoryLimit, msgOOMKill
		}
	}
	return res
}

// forward turns the phase's output pipes into frames until every writer has closed them.
// One loop polls all pipes and on each round reads them in order, stdout first: what the
// program wrote to one stream before it flooded another is read no later than the flood,
// and so is kept. Past the cap the rest is read and dropped, and over is called once.
func (s *server) forward(pipes []*os.File, types []byte, cap int64, over func()) {
	fds := make([]unix.PollFd, len(pipes))
	for i, p := range pipes {
		fds[i] = unix.PollFd{Fd: int32(p.Fd()), Events: unix.POLLIN}
	}
	defer runtime.KeepAlive(pipes)
	buf := make([]byte, ChunkSize)
	var written int64
	capped := false
	for open := len(fds); open > 0; {
		if _, err := unix.Poll(fds, -1); err != nil {
			if err == unix.EINTR {
				continue
			}
			return
		}
		for i := range fds {
			if fds[i].Fd < 0 || fds[i].Revents == 0 {
				continue
			}
			n, err := unix.Read(int(fds[i].Fd), buf)
			if err == unix.EINTR || err == unix.EAGAIN {
				continue
			}
			if err != nil || n <= 0 {
				fds[i].Fd = -1 // end of this pipe; poll skips negative fds
				open--
				continue
			}
			keep := min(int64(n), max(cap-written, 0))
			written += keep
			if keep > 0 {
				s.send(types[i], buf[:keep])
			}
			if int64(n) > keep && !capped {
				capped = true
				over()
			}
		}
	}
}

// killAll kills every process of the sandbox but the caller. As PID 1 of the container's
// PID namespace that is kill(-1); outside one (tests) only the phase's process group.
func killAll(pid int) {
	if os.Getpid() == 1 {
		syscall.Kill(-1, syscall.SIGKILL)
		return
	}
	syscall.Kill(-pid, syscall.SIGKILL)
}

func lookPath(name string, cfg Config) (string, error) {
	if strings.Contains(name, "/") {
		if filepath.IsAbs(name) {
			return name, nil
		}
		return filepath.Join(cfg.Dir, name), nil
	}
	for _, kv := range cfg.Env {
		if dirs, ok := strings.CutPrefix(kv, "PATH="); ok {
			for _, d := range filepath.SplitList(dirs) {
				p := filepath.Join(d, name)
				if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
					return p, nil
				}
			}
		}
	}
	return "", fmt.Errorf("%s: %w", name, exec.ErrNotFound)
}

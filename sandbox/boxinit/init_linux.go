package boxinit

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Config configures Serve.
type Config struct {
	// Dir is the scratch directory: the program's files go there and it is its working
	// directory. In a container it is the tmpfs /tmp.
	Dir string
	// Env is the program's whole environment.
	Env []string
	// CgroupRoot is where the container's own cgroup is mounted ("/sys/fs/cgroup").
	CgroupRoot string
	// OnRequest, when set, is called once the request frame has arrived (to stop an idle timer).
	OnRequest func()
	// Warm, when set, is run while Serve waits for the request (see sandbox.Language.Warm),
	// in a scratch subdirectory of Dir, and killed, with all it started, when the request
	// arrives; the subdirectory is then removed. It starts WarmDelay after Serve: a
	// container whose program comes at once (a busy pool) does not pay for it.
	Warm      []string
	WarmDelay time.Duration
	// Prestart, when set, is an interpreter started as Serve begins (in place of Warm),
	// with the program's stdin, stdout and stderr, its working directory and environment,
	// and a control pipe as fd 3. Its prelude reads the main file's path, one line, from
	// fd 3, closes it and runs that file as the interpreter would have: the program does
	// not wait for the interpreter to start. It is used for a request with a Script and
	// nothing to compile, unpack or add to the environment; else it is killed.
	Prestart []string
}

// DefaultConfig is the configuration inside a sandbox container.
func DefaultConfig() Config {
	return Config{
		Dir: "/tmp",
		Env: []string{
			"PATH=/usr/local/bin:/usr/bin:/bin",
			"HOME=/tmp",
			"TMPDIR=/tmp",
			"LANG=C.UTF-8",
			"PYTHONDONTWRITEBYTECODE=1",
		},
		CgroupRoot: "/sys/fs/cgroup",
		WarmDelay:  200 * time.Millisecond,
	}
}

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

// Serve reads one Request from in, runs it and writes frames to out, ending with a Result
// frame. It returns an error only when the protocol itself failed (no Result was written).
func Serve(in io.Reader, out io.Writer, cfg Config) error {
	s := &server{cfg: cfg, out: out}
	stopWarm := func() {}
	if s.pre = prestart(cfg); s.pre == nil {
		stopWarm = warm(cfg)
	}
	defer func() {
		if s.pre != nil { // started and not used
			s.pre.kill()
			s.pre.closeStdin()
		}
	}()
	typ, payload, err := ReadFrame(in, MaxFrame)
	stopWarm()
	if err != nil {
		return fmt.Errorf("read request: %w", err)
	}
	if cfg.OnRequest != nil {
		cfg.OnRequest()
	}
	if typ != FrameRequest {
		return fmt.Errorf("read request: frame type %q, want %q", typ, FrameRequest)
	}
	var req Request
	if err := json.Unmarshal(payload, &req); err != nil {
		return fmt.Errorf("decode request: %w", err)
	}
	res := s.serve(in, req)
	res.Message = capMessage(res.Message)
	b, err := json.Marshal(res)
	if err != nil {
		return err
	}
	return s.send(FrameResult, b)
}

// capMessage cuts m to at most MaxMessage bytes of valid UTF-8 (a message may quote a
// file name or an artefact's entry name, which come from outside).
func capMessage(m string) string {
	if len(m) <= MaxMessage {
		return m
	}
	const more = "..."
	return strings.ToValidUTF8(m[:MaxMessage-len(more)], "") + more
}

// warmDir is the warm-up's working and temporary directory, under Config.Dir.
const warmDir = ".runbox-warm"

// warm starts cfg.Warm, if any, after cfg.WarmDelay, and returns the function that ends
// it: it kills the warm-up's process group, reaps it and removes its directory, so that
// the program finds nothing of it. Failures are ignored: the warm-up only saves time.
func warm(cfg Config) (stop func()) {
	if len(cfg.Warm) == 0 {
		return func() {}
	}
	dir := filepath.Join(cfg.Dir, warmDir)
	var (
		mu      sync.Mutex
		stopped bool
		pid     int
	)
	timer := time.AfterFunc(cfg.WarmDelay, func() {
		mu.Lock()
		defer mu.Unlock()
		if !stopped {
			pid = startWarm(cfg, dir)
		}
	})
	return func() {
		timer.Stop()
		mu.Lock()
		stopped = true
		p := pid
		mu.Unlock()
		if p > 0 {
			syscall.Kill(-p, syscall.SIGKILL)
			for {
				// Everything of the group: the warm-up and its children (the compiler's).
				if _, err := syscall.Wait4(-p, nil, 0, nil); err != nil && err != syscall.EINTR {
					break
				}
			}
		}
		os.RemoveAll(dir)
	}
}

// startWarm starts the warm-up in its own process group and returns its pid, 0 if it
// could not.
func startWarm(cfg Config, dir string) int {
	path, err := lookPath(cfg.Warm[0], cfg)
	if err != nil || os.Mkdir(dir, 0o700) != nil {
		return 0
	}
	devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return 0
	}
	defer devnull.Close()
	env := append(slices.Clone(cfg.Env), "TMPDIR="+dir) // the later TMPDIR wins
	pid, err := syscall.ForkExec(path, cfg.Warm, &syscall.ProcAttr{
		Dir:   dir,
		Env:   env,
		Files: []uintptr{devnull.Fd(), devnull.Fd(), devnull.Fd()},
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	})
	if err != nil {
		return 0
	}
	return pid
}

type server struct {
	cfg Config
	pre *prestarted // the interpreter started ahead, until the run phase takes it
	mu  sync.Mutex  // guards writes to out
	out io.Writer
}

func (s *server) send(typ byte, payload []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return WriteFrame(s.out, typ, payload)
}

func (s *server) serve(in io.Reader, req Request) Result {
	if len(req.Run) == 0 {
		return Result{Outcome: OutcomeStartError, ExitCode: -1, Message: "no run command"}
	}
	for _, kv := range req.Env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" || strings.ContainsRune(kv, 0) {
			return Result{Outcome: OutcomeStartError, ExitCode: -1, Message: fmt.Sprintf("bad environment entry %q", kv)}
		}
	}
	s.cfg.Env = mergeEnv(s.cfg.Env, req.Env)
	if req.Artifact > 0 {
		// A compiled program in place of the sources: no files, no compile phase.
		if req.CompileOnly || req.Artifact > MaxArtifact {
			return Result{Outcome: OutcomeStartError, ExitCode: -1, Message: fmt.Sprintf("bad artefact request (%d bytes, compile only %v)", req.Artifact, req.CompileOnly)}
		}
		ar := &artifactReader{in: in, left: req.Artifact}
		err := UnpackDir(s.cfg.Dir, ar, MaxArtifact)
		if err == nil {
			_, err = io.Copy(io.Discard, ar) // what gzip did not need, to the last 'A' frame
		}
		if err != nil {
			return Result{Outcome: OutcomeStartError, ExitCode: -1, Message: "unpack the compiled program: " + err.Error()}
		}
		req.Files, req.Compile = nil, nil
	}
	for _, f := range req.Files {
		if f.Name == "" || strings.ContainsAny(f.Name, "/\x00") || f.Name == "." || f.Name == ".." {
			return Result{Outcome: OutcomeStartError, ExitCode: -1, Message: fmt.Sprintf("bad file name %q", f.Name)}
		}
		if err := os.WriteFile(filepath.Join(s.cfg.Dir, f.Name), f.Content, 0o644); err != nil {
			return Result{Outcome: OutcomeStartError, ExitCode: -1, Message: fmt.Sprintf("write %s: %v", f.Name, err)}
		}
	}
	if req.CompileOnly && len(req.Compile) == 0 {
		return Result{Outcome: OutcomeStartError, ExitCode: -1, Message: "compile only, and no compile command"}
	}

	// The program's stdin: frames from the Runner, pumped into a pipe. The pump owns the
	// write end; the program gets the read end once it runs.
	// A prestarted interpreter runs the program when the request allows: a main file to
	// hand it, nothing to compile or unpack, no environment of its own.
	var pre *prestarted
	if s.pre != nil && req.Script != "" && len(req.Compile) == 0 && req.Artifact == 0 && len(req.Env) == 0 {
		pre, s.pre = s.pre, nil
	} else if s.pre != nil { // of no use: gone before anything runs
		s.pre.kill()
		s.pre.closeStdin()
		s.pre = nil
	}
	var stdinR, stdinW *os.File
	if pre != nil {
		stdinR, stdinW = pre.stdinR, pre.stdinW
	} else {
		var err error
		if stdinR, stdinW, err = os.Pipe(); err != nil {
			return Result{Outcome: OutcomeStartError, ExitCode: -1, Message: err.Error()}
		}
	}
	defer stdinR.Close()
	goOn, pumpDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(pumpDone)
		pumpStdin(in, stdinW, goOn)
	}()

	var res Result
	if len(req.Compile) > 0 {
		devnull, err := os.Open(os.DevNull)
		if err != nil {
			return Result{Outcome: OutcomeStartError, ExitCode: -1, Message: err.Error()}
		}
		p := s.runPhase(phase{
			argv: req.Compile, stdin: devnull, outType: FrameCompile, errType: FrameCompile,
			cap: req.Output, timeout: req.CompileTime,
		})
		devnull.Close()
		res.CompileTime = p.wall
		if p.outcome != OutcomeExited || p.exitCode != 0 {
			res.Outcome = OutcomeCompileError
			res.ExitCode = p.exitCode
			res.Signal = p.signal
			switch p.outcome {
			case OutcomeTimeLimit:
				res.Message = fmt.Sprintf("compilation took longer than %v", req.CompileTime)
			case OutcomeOutputLimit:
				res.Message = fmt.Sprintf("compiler output passed %d bytes", req.Output)
			case OutcomeMemoryLimit:
				res.Message = "the compiler ran out of memory (" + p.message + ")"
			case OutcomeStartError:
				res.Message = p.message
			default:
				if p.signal != "" {
					res.Message = "the compiler was killed by " + p.signal
				}
			}
			return res
		}
		if req.CompileOnly {
			return s.sendArtifact(res)
		}
	}

	if req.Gate {
		// The runner sets the program's limits, then says go.
		s.send(FrameGate, nil)
		select {
		case <-goOn:
		case <-pumpDone:
			return Result{Outcome: OutcomeStartError, ExitCode: -1, Message: "the runner did not open the gate"}
		}
	}
	s.send(FrameStarted, nil)
	p := s.runPhase(phase{
		pre: pre, script: req.Script,
		argv: req.Run, stdin: stdinR, outType: FrameStdout, errType: FrameStderr,
		cap: req.Output, timeout: req.RunTime,
	})
	res.Outcome = p.outcome
	res.ExitCode = p.exitCode
	res.Signal = p.signal
	res.Time = p.wall
	res.CPUTime = p.cpu
	res.Memory = p.maxRSS
	res.Message = p.message
	switch p.outcome {
	case OutcomeTimeLimit:
		res.Message = fmt.Sprintf("killed after the %v time limit", req.RunTime)
	case OutcomeOutputLimit:
		res.Message = fmt.Sprintf("output passed the %d byte limit; the first %d bytes are kept", req.Output, req.Output)
	}
	return res
}

// sendArtifact packs the scratch directory after a successful compile and sends it in
// artefact frames. A directory that cannot be packed (too large, a symbolic link) is a
// compile error: the compiler made something that cannot run elsewhere.
func (s *server) sendArtifact(res Result) Result {
	fw := &frameWriter{send: s.send, typ: FrameArtifact}
	if err := PackDir(s.cfg.Dir, MaxArtifact, fw); err != nil {
		res.Outcome, res.ExitCode, res.Message = OutcomeCompileError, -1, err.Error()
		return res
	}
	res.Outcome, res.ExitCode, res.Artifact = OutcomeExited, 0, fw.n
	return res
}

// artifactReader reads the bytes of the artefact frames that follow a request, left of
// them; another frame type before the end is an error.
type artifactReader struct {
	in   io.Reader
	left int64
	buf  []byte
}

func (a *artifactReader) Read(p []byte) (int, error) {
	for len(a.buf) == 0 {
		if a.left <= 0 {
			return 0, io.EOF
		}
		typ, payload, err := ReadFrame(a.in, MaxFrame)
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return 0, err
		}
		if typ != FrameArtifact || int64(len(payload)) > a.left {
			return 0, fmt.Errorf("frame %q of %d bytes, want the artefact's %d", typ, len(payload), a.left)
		}
		a.left -= int64(len(payload))
		a.buf = payload
	}
	n := copy(p, a.buf)
	a.buf = a.buf[n:]
	return n, nil
}

// pumpStdin forwards stdin frames into w until an end-of-stdin frame or the end of in,
// and closes goOn at the first FrameGo. Writes to a program that stopped reading fail and
// are dropped; the frames keep being read.
func pumpStdin(in io.Reader, w *os.File, goOn chan struct{}) {
	defer w.Close()
	open, gone := true, false
	for {
		typ, payload, err := ReadFrame(in, MaxFrame)
		if err != nil {
			return
		}
		switch typ {
		case FrameStdin:
			if open {
				if _, err := w.Write(payload); err != nil {
					open = false
				}
			}
		case FrameStdinEOF:
			if open {
				w.Close()
				open = false
			}
		case FrameGo:
			if !gone {
				close(goOn)
				gone = true
			}
		}
	}
}

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

// mergeEnv returns env with each KEY=value of add set: a key already in env is replaced
// (libc's getenv takes the first of duplicates, shells the last).
func mergeEnv(env, add []string) []string {
	out := slices.Clone(env)
	for _, kv := range add {
		key, _, _ := strings.Cut(kv, "=")
		out = slices.DeleteFunc(out, func(e string) bool { return strings.HasPrefix(e, key+"=") })
		out = append(out, kv)
	}
	return out
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

// cgroup reads the container's own cgroup, v1 or v2. Absent files read as "unknown".
type cgroup struct {
	v2   bool
	root string
}

func cgroupOf(root string) cgroup {
	_, err := os.Stat(filepath.Join(root, "cgroup.controllers"))
	return cgroup{v2: err == nil, root: root}
}

// oomKills is the cgroup's count of OOM kills so far (0 when unknown).
func (c cgroup) oomKills() int64 {
	file := "memory/memory.oom_control"
	if c.v2 {
		file = "memory.events"
	}
	v, _ := readKey(filepath.Join(c.root, file), "oom_kill")
	return v
}

// memSample reads the cgroup's memory counters; what cannot be read is -1 (limit: 0).
func (c cgroup) memSample() memSample {
	s := memSample{oomKills: c.oomKills(), usage: -1, refaults: -1}
	usage, limit, stat := "memory/memory.usage_in_bytes", "memory/memory.limit_in_bytes", "memory/memory.stat"
	refaultKeys := []string{"total_workingset_refault_file", "workingset_refault_file", "total_workingset_refault"}
	if c.v2 {
		usage, limit, stat = "memory.current", "memory.max", "memory.stat"
		refaultKeys = []string{"workingset_refault_file", "workingset_refault"}
	}
	if v, err := readInt(filepath.Join(c.root, usage)); err == nil {
		s.usage = v
	}
	if v, err := readInt(filepath.Join(c.root, limit)); err == nil && v < 1<<60 { // v1 "unlimited" is near 2^63; v2 "max" does not parse
		s.limit = v
	}
	for _, k := range refaultKeys {
		if v, err := readKey(filepath.Join(c.root, stat), k); err == nil {
			s.refaults = v
			break
		}
	}
	return s
}

// cpuUsage is the cgroup's total CPU time so far.
func (c cgroup) cpuUsage() (time.Duration, bool) {
	if c.v2 {
		us, err := readKey(filepath.Join(c.root, "cpu.stat"), "usage_usec")
		return time.Duration(us) * time.Microsecond, err == nil
	}
	for _, dir := range []string{"cpuacct", "cpu,cpuacct", "cpuacct,cpu"} {
		b, err := os.ReadFile(filepath.Join(c.root, dir, "cpuacct.usage"))
		if err != nil {
			continue
		}
		ns, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err == nil {
			return time.Duration(ns), true
		}
	}
	return 0, false
}

// readInt reads a file holding one integer.
func readInt(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

// readKey reads "key value" lines and returns key's value.
func readKey(path, key string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		k, v, ok := strings.Cut(line, " ")
		if ok && k == key {
			return strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, errors.New("no " + key + " in " + path)
}

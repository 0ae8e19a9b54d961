// An interpreter started before the request (Config.Prestart).

package boxinit

import (
	"os"
	"strconv"
	"syscall"
)

// prestarted is an interpreter started before the request (Config.Prestart): its prelude
// waits on the control pipe (its fd 3) for the path of the program's main file, then runs
// it in the same process. Its stdin and output pipes are the run phase's.
type prestarted struct {
	pid    int
	stdinR *os.File // the program's stdin (read end, runbox-init's copy)
	stdinW *os.File // where the stdin pump writes
	outR   *os.File // its stdout
	errR   *os.File // its stderr
	ctl    *os.File // write end of the control pipe
}

// prestart starts cfg.Prestart in its own process group, with the program's environment
// and working directory, and returns it; nil when there is none or it could not start.
func prestart(cfg Config) *prestarted {
	if len(cfg.Prestart) == 0 {
		return nil
	}
	path, err := lookPath(cfg.Prestart[0], cfg)
	if err != nil {
		return nil
	}
	var files []*os.File // every pipe end, closed on failure
	pipe := func() (r, w *os.File, ok bool) {
		r, w, err := os.Pipe()
		if err != nil {
			return nil, nil, false
		}
		files = append(files, r, w)
		return r, w, true
	}
	fail := func() *prestarted {
		for _, f := range files {
			f.Close()
		}
		return nil
	}
	stdinR, stdinW, ok1 := pipe()
	outR, outW, ok2 := pipe()
	errR, errW, ok3 := pipe()
	ctlR, ctlW, ok4 := pipe()
	if !ok1 || !ok2 || !ok3 || !ok4 {
		return fail()
	}
	pid, err := syscall.ForkExec(path, cfg.Prestart, &syscall.ProcAttr{
		Dir:   cfg.Dir,
		Env:   cfg.Env,
		Files: []uintptr{stdinR.Fd(), outW.Fd(), errW.Fd(), ctlR.Fd()},
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	})
	if err != nil {
		return fail()
	}
	setOOMScore(pid)
	outW.Close()
	errW.Close()
	ctlR.Close()
	return &prestarted{pid: pid, stdinR: stdinR, stdinW: stdinW, outR: outR, errR: errR, ctl: ctlW}
}

// run hands the interpreter the program's main file; false when it is gone (then it has
// been killed and reaped, and the caller starts the program the ordinary way).
func (p *prestarted) run(script string) bool {
	_, err := p.ctl.Write([]byte(script + "\n"))
	p.ctl.Close()
	if err != nil {
		p.kill()
		return false
	}
	return true
}

// kill ends an interpreter that will not run a program, reaps it and closes its output
// and control pipes (not the stdin pipe, which the program started instead may use).
func (p *prestarted) kill() {
	syscall.Kill(-p.pid, syscall.SIGKILL)
	for {
		if _, err := syscall.Wait4(-p.pid, nil, 0, nil); err != nil && err != syscall.EINTR {
			break
		}
	}
	for _, f := range []*os.File{p.outR, p.errR, p.ctl} {
		f.Close()
	}
}

// closeStdin closes both ends of the stdin pipe of an interpreter that was not used.
func (p *prestarted) closeStdin() {
	p.stdinR.Close()
	p.stdinW.Close()
}

// setOOMScore makes a process, not runbox-init, the OOM killer's first choice; what it
// forks inherits the score. (It could lower its own back to 0, and a program that makes
// runbox-init the victim ends the container: the Runner reports that as memory_limit.)
func setOOMScore(pid int) {
	os.WriteFile("/proc/"+strconv.Itoa(pid)+"/oom_score_adj", []byte("1000"), 0)
}

// The warm-up: a pooled container loads its toolchain into the file cache while it waits.

package boxinit

import (
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"
)

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

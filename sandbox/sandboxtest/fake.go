package sandboxtest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"runbox/sandbox"
)

// Fake is an in-process sandbox.Runner for the layers above the sandbox. It validates the
// Spec like a real Runner, then interprets the main file as a tiny script, one command a
// line:
//
//	out TEXT       print TEXT and a newline on stdout
//	err TEXT       the same on stderr
//	cat            copy all of stdin to stdout (stdin ends when the Streams say so)
//	sleep DUR      wait (Go duration), or until the run is cancelled
//	exit N         stop with exit code N (status runtime_error unless 0)
//	status S       stop with status S (time_limit, memory_limit, ...)
//	compile MSG    fail to compile with MSG
//	crash          return sandbox.ErrUnavailable (the program could not run)
//
// Anything else is an error on stderr and exit code 2.
type Fake struct {
	// Node is written into each Result.
	Node string
	// Max refuses larger limits (zero: sandbox.MaxLimits).
	Max sandbox.Limits

	mu   sync.Mutex
	runs int
	peak int
	now  int
}

var _ sandbox.Runner = (*Fake)(nil)

// Runs returns how many programs ran; Peak the most that ran at once.
func (f *Fake) Runs() (runs, peak int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.runs, f.peak
}

// Running returns how many programs run now.
func (f *Fake) Running() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// Run implements sandbox.Runner.
func (f *Fake) Run(ctx context.Context, spec sandbox.Spec, streams *sandbox.Streams) (sandbox.Result, error) {
	if err := spec.Validate(); err != nil {
		return sandbox.Result{ExitCode: -1}, err
	}
	max := f.Max
	if max == (sandbox.Limits{}) {
		max = sandbox.MaxLimits()
	}
	if err := spec.Limits.Check(max); err != nil {
		return sandbox.Result{ExitCode: -1}, err
	}
	f.mu.Lock()
	f.runs++
	f.now++
	f.peak = max2(f.peak, f.now)
	f.mu.Unlock()
	defer func() { f.mu.Lock(); f.now--; f.mu.Unlock() }()

	if streams == nil {
		streams = &sandbox.Streams{}
	}
	start := time.Now()
	res := sandbox.Result{Status: sandbox.StatusOK, Node: f.Node, Memory: 1 << 20}
	emit := func(s sandbox.Stream, text string) {
		b := []byte(text)
		switch s {
		case sandbox.Stdout:
			res.Stdout = append(res.Stdout, b...)
		case sandbox.Stderr:
			res.Stderr = append(res.Stderr, b...)
		case sandbox.Compile:
			res.CompileOutput = append(res.CompileOutput, b...)
		}
		if streams.Output != nil {
			streams.Output(sandbox.Chunk{Stream: s, Data: b})
		}
	}
	started := false
	start1 := func() {
		if !started && streams.Started != nil {
			streams.Started()
		}
		started = true
	}
	sc := bufio.NewScanner(bytes.NewReader(spec.Files[0].Content))
	for sc.Scan() {
		cmd, arg, _ := strings.Cut(strings.TrimSpace(sc.Text()), " ")
		if cmd != "compile" {
			start1()
		}
		switch cmd {
		case "":
		case "out":
			emit(sandbox.Stdout, arg+"\n")
		case "err":
			emit(sandbox.Stderr, arg+"\n")
		case "cat":
			emit(sandbox.Stdout, string(spec.Stdin))
			if streams.Stdin != nil {
			loop:
				for {
					select {
					case b, ok := <-streams.Stdin:
						if !ok {
							break loop
						}
						emit(sandbox.Stdout, string(b))
					case <-ctx.Done():
						return res, ctx.Err()
					}
				}
			}
		case "sleep":
			d, err := time.ParseDuration(arg)
			if err != nil {
				emit(sandbox.Stderr, err.Error()+"\n")
				res.Status, res.ExitCode = sandbox.StatusRuntimeError, 2
				return res, nil
			}
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return sandbox.Result{ExitCode: -1}, ctx.Err()
			}
		case "exit":
			res.ExitCode, _ = strconv.Atoi(arg)
			if res.ExitCode != 0 {
				res.Status = sandbox.StatusRuntimeError
			}
			res.Time = time.Since(start)
			return res, nil
		case "status":
			res.Status, res.ExitCode = sandbox.Status(arg), 137
			return res, nil
		case "compile":
			emit(sandbox.Compile, arg+"\n")
			res.Status, res.ExitCode = sandbox.StatusCompileError, 1
			return res, nil
		case "crash":
			return sandbox.Result{ExitCode: -1}, fmt.Errorf("%w: fake crash", sandbox.ErrUnavailable)
		default:
			emit(sandbox.Stderr, "fake: unknown command "+cmd+"\n")
			res.Status, res.ExitCode = sandbox.StatusRuntimeError, 2
			return res, nil
		}
	}
	start1()
	res.Time = time.Since(start)
	return res, nil
}

func max2(a, b int) int {
	if a > b {
		return a
	}
	return b
}

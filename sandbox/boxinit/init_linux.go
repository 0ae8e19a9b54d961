package boxinit

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
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

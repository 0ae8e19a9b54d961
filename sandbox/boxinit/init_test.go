package boxinit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// These tests run Serve in the test process (not as PID 1), with harmless shell commands.
// They do not use t.Parallel: Serve reaps with wait4(-1), which would take another test's
// children.

type transcript struct {
	stdout, stderr, compile bytes.Buffer
	started                 bool
	result                  Result
}

func serve(t *testing.T, req Request, stdin ...[]byte) transcript {
	t.Helper()
	var in bytes.Buffer
	b, _ := json.Marshal(req)
	WriteFrame(&in, FrameRequest, b)
	for _, s := range stdin {
		WriteFrame(&in, FrameStdin, s)
	}
	WriteFrame(&in, FrameStdinEOF, nil)
	var out bytes.Buffer
	cfg := DefaultConfig()
	cfg.Dir = t.TempDir()
	cfg.CgroupRoot = t.TempDir() // no cgroup files: the rusage fallback
	if err := Serve(&in, &out, cfg); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	var tr transcript
	for {
		typ, p, err := ReadFrame(&out, MaxFrame)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		switch typ {
		case FrameStdout:
			tr.stdout.Write(p)
		case FrameStderr:
			tr.stderr.Write(p)
		case FrameCompile:
			tr.compile.Write(p)
		case FrameStarted:
			tr.started = true
		case FrameResult:
			if err := json.Unmarshal(p, &tr.result); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("unexpected frame %q", typ)
		}
	}
	return tr
}

func sh(script string) []string { return []string{"/bin/sh", "-c", script} }

func TestServeRunsAndStreams(t *testing.T) {
	tr := serve(t, Request{
		Files:   []File{{Name: "main.sh", Content: []byte("cat; echo out; echo err >&2; exit 3")}},
		Run:     []string{"/bin/sh", "main.sh"},
		RunTime: 5 * time.Second, Output: 1 << 20,
	}, []byte("in-"), []byte("put\n"))
	if !tr.started {
		t.Error("no started frame")
	}
	if got := tr.stdout.String(); got != "in-put\nout\n" {
		t.Errorf("stdout = %q", got)
	}
	if got := tr.stderr.String(); got != "err\n" {
		t.Errorf("stderr = %q", got)
	}
	if tr.result.Outcome != OutcomeExited || tr.result.ExitCode != 3 {
		t.Errorf("result = %+v", tr.result)
	}
	if tr.result.Memory <= 0 {
		t.Errorf("memory = %d, want > 0", tr.result.Memory)
	}
}

func TestServeTimeLimit(t *testing.T) {
	tr := serve(t, Request{Run: sh("echo before; exec sleep 30"), RunTime: 300 * time.Millisecond, Output: 1 << 20})
	if tr.result.Outcome != OutcomeTimeLimit || tr.result.Signal != "SIGKILL" {
		t.Errorf("result = %+v", tr.result)
	}
	if tr.stdout.String() != "before\n" {
		t.Errorf("partial stdout lost: %q", tr.stdout.String())
	}
}

func TestServeOutputLimitKeepsPrefix(t *testing.T) {
	tr := serve(t, Request{Run: sh("yes"), RunTime: 10 * time.Second, Output: 100000})
	if tr.result.Outcome != OutcomeOutputLimit {
		t.Fatalf("result = %+v", tr.result)
	}
	if tr.stdout.Len() != 100000 || !strings.HasPrefix(tr.stdout.String(), "y\ny\n") {
		t.Errorf("kept %d bytes, want exactly the first 100000", tr.stdout.Len())
	}
}

func TestServeCompileError(t *testing.T) {
	tr := serve(t, Request{
		Compile: sh("echo 'main.c:1: error: nope' >&2; exit 1"), CompileTime: 5 * time.Second,
		Run: sh("echo must not run"), RunTime: time.Second, Output: 1 << 20,
	})
	if tr.result.Outcome != OutcomeCompileError || tr.result.ExitCode != 1 {
		t.Errorf("result = %+v", tr.result)
	}
	if tr.started || tr.stdout.Len() != 0 {
		t.Error("the run phase started after a failed compile")
	}
	if !strings.Contains(tr.compile.String(), "error: nope") {
		t.Errorf("compile output = %q", tr.compile.String())
	}
}

func TestServeCompileTimeLimit(t *testing.T) {
	tr := serve(t, Request{Compile: sh("exec sleep 30"), CompileTime: 200 * time.Millisecond, Run: sh("true"), RunTime: time.Second, Output: 1 << 20})
	if tr.result.Outcome != OutcomeCompileError || !strings.Contains(tr.result.Message, "longer than") {
		t.Errorf("result = %+v", tr.result)
	}
}

func TestServeKillsLeftoversWhenMainExits(t *testing.T) {
	start := time.Now()
	// The background child holds stdout open; Serve must not wait for it.
	tr := serve(t, Request{Run: sh("sleep 30 & echo main done"), RunTime: 20 * time.Second, Output: 1 << 20})
	if tr.result.Outcome != OutcomeExited || tr.result.ExitCode != 0 {
		t.Errorf("result = %+v", tr.result)
	}
	if el := time.Since(start); el > 15*time.Second {
		t.Errorf("Serve waited %v for a leftover child", el)
	}
}

func TestServeMissingCommand(t *testing.T) {
	tr := serve(t, Request{Run: []string{"no-such-binary-runbox"}, RunTime: time.Second, Output: 10})
	if tr.result.Outcome != OutcomeStartError {
		t.Errorf("result = %+v", tr.result)
	}
}

func TestReadFrameCaps(t *testing.T) {
	var b bytes.Buffer
	WriteFrame(&b, FrameStdin, make([]byte, 100))
	if _, _, err := ReadFrame(&b, 99); !errors.Is(err, ErrFrameTooLarge) {
		t.Errorf("err = %v, want ErrFrameTooLarge", err)
	}
	b.Reset()
	WriteFrame(&b, FrameStdin, []byte("abcdef"))
	trunc := bytes.NewReader(b.Bytes()[:8])
	if _, _, err := ReadFrame(trunc, 100); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("truncated frame: err = %v", err)
	}
}

func FuzzReadFrame(f *testing.F) {
	var b bytes.Buffer
	WriteFrame(&b, FrameResult, []byte(`{"outcome":"exited"}`))
	f.Add(b.Bytes())
	f.Add([]byte{0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		for {
			typ, p, err := ReadFrame(r, 1<<16)
			if err != nil {
				return
			}
			var again bytes.Buffer
			WriteFrame(&again, typ, p)
			if again.Len() != 5+len(p) {
				t.Fatal("re-encoding changed size")
			}
		}
	})
}

// TestHarden runs Harden in a child process (it changes the whole process) and checks
// there that it survives every signal, holds its threads, and starts programs with every
// signal at its default action.
func TestHarden(t *testing.T) {
	if os.Getenv("BOXINIT_TEST_HARDEN") == "1" {
		hardenChild()
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHarden$")
	cmd.Env = append(os.Environ(), "BOXINIT_TEST_HARDEN=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("hardened child: %v\n%s", err, out)
	}
	got := string(out)
	for _, want := range []string{
		"survived every signal\n",
		fmt.Sprintf("threads %d\n", ReservedPids),
		"SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("child output lacks %q:\n%s", want, got)
		}
	}
}

func hardenChild() {
	if err := Harden(); err != nil {
		fmt.Println("harden:", err)
		os.Exit(1)
	}
	fmt.Printf("threads %d\n", threadCount())
	// The standard signals. Some real-time ones the Go runtime leaves at their default
	// action, which kills this child, but not PID 1: the kernel drops a signal at its
	// default action sent to a PID namespace's init from inside. The Docker test
	// SignalsInit sends all 64 to the real PID 1.
	for sig := syscall.Signal(1); sig < 32; sig++ {
		if sig != syscall.SIGKILL && sig != syscall.SIGSTOP {
			syscall.Kill(os.Getpid(), sig)
		}
	}
	time.Sleep(200 * time.Millisecond)
	fmt.Println("survived every signal")
	var in, out bytes.Buffer
	b, _ := json.Marshal(Request{Run: []string{"/bin/grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"}, RunTime: 5 * time.Second, Output: 1 << 10})
	WriteFrame(&in, FrameRequest, b)
	WriteFrame(&in, FrameStdinEOF, nil)
	cfg := DefaultConfig()
	cfg.Dir = os.TempDir()
	if err := Serve(&in, &out, cfg); err != nil {
		fmt.Println("serve:", err)
		os.Exit(1)
	}
	for {
		typ, p, err := ReadFrame(&out, MaxFrame)
		if err != nil {
			break
		}
		if typ == FrameStdout {
			os.Stdout.Write(p)
		}
	}
	os.Exit(0)
}

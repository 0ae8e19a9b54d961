package transport

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"runbox/sandbox"
	"runbox/scheduler"
)

// The golden files pin the protocol's bytes: each testdata/*.golden holds the hex dump
// (encoding/hex.Dump, like `hexdump -C`) of one frame, encoded by the same functions the
// client and server use. A change to a message's fields or their JSON names breaks these
// tests on purpose: decide whether it is compatible (see docs/protocol.md, "Versioning"),
// then run
//
//	go test ./transport/ -run Golden -update
//
// and commit the new files with the change.

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// goldenID and goldenEpoch are a job id and a master run's epoch in the golden frames
// (both are 18 base32 characters: 6 bytes of time, 5 random).
const (
	goldenID    = "aaaqfu5dkb2nxmzgc4"
	goldenEpoch = "aaaqfu4xr7kwb3hd2e"
)

var helloWorld = sandbox.Spec{Language: "python", Files: []sandbox.File{{Content: []byte("print('hello, world')\n")}}}

// goldenFrames lists every frame type with a typical payload.
func goldenFrames() []struct {
	name string
	typ  byte
	msg  any // a value to marshal as JSON, []byte for raw data, nil for an empty frame
} {
	return []struct {
		name string
		typ  byte
		msg  any
	}{
		// Client to server.
		{"hello", FrameHello, Hello{Role: RoleClient, Name: "runbox-cli", Token: "s3cret"}},
		{"hello-slave", FrameHello, Hello{Role: RoleSlave, Name: "slave-1"}},
		{"submit", FrameSubmit, Submit{Spec: helloWorld}},
		{"submit-interactive", FrameSubmit, Submit{Interactive: true, Spec: sandbox.Spec{
			Language: "c",
			Files:    []sandbox.File{{Name: "main.c", Content: []byte("int main(){}\n")}, {Name: "util.h", Content: []byte("#pragma once\n")}},
			Stdin:    []byte("42\n"),
			Limits:   sandbox.Limits{RunTime: 2 * time.Second, Memory: 128 * sandbox.MiB},
		}}},
		{"submit-judged", FrameSubmit, Submit{Spec: sandbox.Spec{
			Language: "c",
			Files:    []sandbox.File{{Content: []byte("int main(){int n;scanf(\"%d\",&n);printf(\"%d\\n\",2*n);}\n")}},
			Limits:   sandbox.Limits{RunTime: 2 * time.Second},
			Tests: []sandbox.TestCase{
				{Name: "1", Stdin: []byte("1\n"), Expected: []byte("2\n")},
				{Name: "big", Stdin: []byte("1000000\n"), Expected: []byte("2000000\n"), Limits: &sandbox.Limits{RunTime: time.Second}},
			},
			Compare: sandbox.CompareTokens,
		}}},
		{"submit-compile-memory", FrameSubmit, Submit{Spec: sandbox.Spec{
			Language: "cpp",
			Files:    []sandbox.File{{Content: []byte("#include <bits/stdc++.h>\nint main(){}\n")}},
			Limits:   sandbox.Limits{Memory: 128 * sandbox.MiB, CompileMemory: 1 * sandbox.GiB},
		}}},
		{"wait", FrameWait, Wait{ID: goldenID, From: 3, Epoch: goldenEpoch}},
		{"cancel", FrameCancel, Cancel{ID: goldenID}},
		{"cancel-job", FrameCancel, nil},
		{"stdin", FrameStdin, []byte("Ada\n")},
		{"stdin-end", FrameStdinEnd, nil},
		{"status", FrameStatus, nil},
		// Slave to master, on the slave's control stream.
		{"register", FrameRegister, scheduler.NodeSpec{Name: "slave-1", Capacity: 4, Languages: map[string]string{"python": "c7fa0560b1af", "c": "6d5cf6b3d0da"}}},
		{"load", FrameLoad, scheduler.Load{CPU: 12.5, MemUsed: 300 << 20, MemTotal: 4 << 30}},
		{"capacity", FrameCapacity, Capacity{Capacity: 0, Draining: true}},
		// Server to client (and master to slave: welcome, accepted for a registration).
		{"welcome", FrameWelcome, Welcome{Version: Version, Node: "master"}},
		{"accepted", FrameAccepted, Accepted{ID: goldenID, Epoch: goldenEpoch}},
		{"queued", FrameQueued, Queued{Position: 2}},
		{"started", FrameStarted, Started{Node: "master"}},
		{"stdout", FrameStdout, []byte("hello, world\n")},
		{"stderr", FrameStderr, []byte("Traceback (most recent call last):\n")},
		{"compile", FrameCompile, []byte("main.c:1:1: error: expected ';'\n")},
		{"result", FrameResult, Result{Status: sandbox.StatusOK, Time: 21 * time.Millisecond, CPUTime: 18 * time.Millisecond,
			Memory: 9 << 20, Node: "master", Attempts: 1}},
		{"result-limit", FrameResult, Result{Status: sandbox.StatusTimeLimit, ExitCode: 137, Signal: "SIGKILL", Time: 2 * time.Second,
			CPUTime: 1990 * time.Millisecond, CompileTime: 310 * time.Millisecond, Memory: 1 << 20,
			Message: "killed at the 2s run time limit", Node: "slave-1", Attempts: 2}},
		{"result-judged", FrameResult, Result{Status: sandbox.StatusTimeLimit, ExitCode: 137, Signal: "SIGKILL", Time: time.Second,
			CPUTime: 990 * time.Millisecond, CompileTime: 250 * time.Millisecond, Memory: 2 << 20,
			Message: "1 of 3 test cases passed; case 2: wrong answer (line 1: expected \"4\", got \"5\")", Node: "master", Attempts: 1,
			Verdict: sandbox.VerdictWrongAnswer, Cases: []Case{
				{Name: "1", Verdict: sandbox.VerdictAccepted, Time: 3 * time.Millisecond, CPUTime: 2 * time.Millisecond, Memory: 1 << 20},
				{Name: "2", Verdict: sandbox.VerdictWrongAnswer, Time: 3 * time.Millisecond, CPUTime: 2 * time.Millisecond, Memory: 1 << 20,
					Diff: "line 1: expected \"4\", got \"5\""},
				{Name: "big", Verdict: sandbox.Verdict(sandbox.StatusTimeLimit), ExitCode: 137, Signal: "SIGKILL", Time: time.Second,
					CPUTime: 990 * time.Millisecond, Memory: 2 << 20, Message: "killed after the 1s time limit", Stderr: []byte("partial\n")},
			}}},
		{"result-trace", FrameResult, Result{Status: sandbox.StatusOK, Time: 21 * time.Millisecond, CPUTime: 18 * time.Millisecond,
			Memory: 9 << 20, Node: "slave-1", Attempts: 1, Trace: &sandbox.Trace{Queue: 2 * time.Millisecond, Acquire: 3 * time.Millisecond,
				Pooled: true, Send: 400 * time.Microsecond, Run: 21 * time.Millisecond, Result: 600 * time.Microsecond}}},
		{"result-trace-gate", FrameResult, Result{Status: sandbox.StatusOK, Time: time.Millisecond, CPUTime: time.Millisecond,
			Memory: 1 << 20, Node: "master", Attempts: 1, Trace: &sandbox.Trace{Acquire: 2 * time.Microsecond, Pooled: true,
				Send: 100 * time.Microsecond, Compile: 80 * time.Millisecond, Gate: 15 * time.Millisecond, Run: time.Millisecond, Result: time.Millisecond}}},
		{"error", FrameError, Error{Code: "busy", Message: "server busy: 2 program(s) running and 0 queued, the limit; try another server or retry later"}},
		{"status-reply", FrameStatus, scheduler.Snapshot{
			Nodes: []scheduler.NodeInfo{
				{Name: "master", Role: "master", State: "ready", Capacity: 2, Running: 1, Done: 2, Joined: time.Date(2025, 1, 2, 3, 0, 0, 0, time.UTC)},
				{Name: "slave-1", Role: "slave", State: "ready", Capacity: 4, Load: scheduler.Load{CPU: 12.5, MemUsed: 300 << 20, MemTotal: 4 << 30},
					LastBeat: time.Date(2025, 1, 2, 3, 4, 4, 0, time.UTC), Joined: time.Date(2025, 1, 2, 3, 1, 0, 0, time.UTC), Languages: []string{"c", "python"}},
			},
			Totals: scheduler.Totals{Accepted: 3, Rejected: 1, Finished: 2, ByStatus: map[string]int{"ok": 2}},
			Running: []scheduler.Info{{ID: goldenID, Language: "python", State: scheduler.StateRunning, Node: "master", Attempts: 1,
				Submitted: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC), Started: time.Date(2025, 1, 2, 3, 4, 5, 6e6, time.UTC)}},
		}},
	}
}

func encodeGolden(typ byte, msg any) ([]byte, error) {
	var buf bytes.Buffer
	var err error
	switch m := msg.(type) {
	case nil:
		err = WriteFrame(&buf, typ, nil)
	case []byte:
		err = WriteFrame(&buf, typ, m)
	default:
		err = writeJSON(&buf, typ, m)
	}
	return buf.Bytes(), err
}

// checkGolden compares got with testdata/name.golden (or writes it with -update).
func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s changed; if on purpose, run `go test ./transport/ -run Golden -update`\n--- got\n%s--- want\n%s", path, got, want)
	}
}

func TestGoldenPreamble(t *testing.T) {
	t.Parallel()
	checkGolden(t, "preamble", []byte(hex.Dump(Preamble[:])))
}

func TestGoldenFrames(t *testing.T) {
	t.Parallel()
	seen := map[byte]bool{}
	for _, g := range goldenFrames() {
		t.Run(g.name, func(t *testing.T) {
			b, err := encodeGolden(g.typ, g.msg)
			if err != nil {
				t.Fatal(err)
			}
			checkGolden(t, g.name, []byte(hex.Dump(b)))

			// The bytes decode back to the same frame and message.
			typ, payload, err := ReadFrame(bytes.NewReader(b), MaxRequestFrame)
			if err != nil || typ != g.typ {
				t.Fatalf("ReadFrame: %q %v", typ, err)
			}
			switch m := g.msg.(type) {
			case nil:
				if len(payload) != 0 {
					t.Errorf("payload %q, want none", payload)
				}
			case []byte:
				if !bytes.Equal(payload, m) {
					t.Errorf("payload %q, want %q", payload, m)
				}
			default:
				back := reflect.New(reflect.TypeOf(m))
				if err := json.Unmarshal(payload, back.Interface()); err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(back.Elem().Interface(), m) {
					t.Errorf("round trip: %+v, want %+v", back.Elem().Interface(), m)
				}
			}
		})
		seen[g.typ] = true
	}
	for _, typ := range []byte{FrameHello, FrameSubmit, FrameWait, FrameStatus, FrameCancel, FrameStdin, FrameStdinEnd,
		FrameRegister, FrameLoad, FrameCapacity, FrameWelcome, FrameAccepted, FrameQueued, FrameStarted, FrameStdout, FrameStderr, FrameCompile, FrameResult, FrameError} {
		if !seen[typ] {
			t.Errorf("frame type %q has no golden file", typ)
		}
	}
}

// TestGoldenErrorCodes pins the stable error codes: code, then the sentinel's text.
func TestGoldenErrorCodes(t *testing.T) {
	t.Parallel()
	sentinels := []error{
		scheduler.ErrBusy, scheduler.ErrNotFound, scheduler.ErrCancelled, scheduler.ErrCrashedNode,
		scheduler.ErrShuttingDown, scheduler.ErrInternal,
		sandbox.ErrInvalidRequest, sandbox.ErrUnknownLanguage, sandbox.ErrTooLarge, sandbox.ErrUnavailable,
		ErrProtocol, ErrVersion, ErrUnauthorized, ErrRateLimited, ErrQuota, ErrConnect,
	}
	var b strings.Builder
	for _, s := range sentinels {
		code := Code(fmt.Errorf("op: %w", s))
		fmt.Fprintf(&b, "%-20s %s\n", code, s)
		if back := errorFromWire(Error{Code: code, Message: "m"}); !errors.Is(back, s) {
			t.Errorf("code %s does not come back as %v", code, s)
		}
	}
	checkGolden(t, "codes", []byte(b.String()))
}

// recorder keeps a copy of everything written to a net.Conn.
type recorder struct {
	net.Conn
	mu  sync.Mutex
	buf bytes.Buffer
}

func (r *recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	r.buf.Write(p)
	r.mu.Unlock()
	return r.Conn.Write(p)
}

func (r *recorder) bytes() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Clone(r.buf.Bytes())
}

// TestGoldenJob records the bytes of a whole hello-world job, both directions, through real
// yamux sessions: the handshake, then the job stream. The server side is scripted (a fixed
// job id and result) so the bytes are reproducible; docs/protocol.md walks through them.
func TestGoldenJob(t *testing.T) {
	t.Parallel()
	cc, sc := net.Pipe()
	client, server := &recorder{Conn: cc}, &recorder{Conn: sc}
	cfg := yamuxConfig(time.Second, clientBacklog)
	cfg.EnableKeepAlive = false // no pings in the recording

	done := make(chan error, 1)
	go func() { done <- scriptedServer(server, cfg) }()

	// The client: exactly what Dial and Run write.
	hello, _ := json.Marshal(Hello{Role: RoleClient, Name: "runbox-cli"})
	var hs bytes.Buffer
	hs.Write(Preamble[:])
	WriteFrame(&hs, FrameHello, hello)
	if _, err := client.Write(hs.Bytes()); err != nil {
		t.Fatal(err)
	}
	if typ, _, err := ReadFrame(client, 64<<10); err != nil || typ != FrameWelcome {
		t.Fatalf("welcome: %q %v", typ, err)
	}
	sess, err := yamux.Client(client, cfg)
	if err != nil {
		t.Fatal(err)
	}
	st, err := sess.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	if err := writeJSON(st, FrameSubmit, Submit{Spec: helloWorld}); err != nil {
		t.Fatal(err)
	}
	var types []byte
	for {
		typ, _, err := ReadFrame(st, MaxFrame)
		if err != nil {
			t.Fatal(err)
		}
		types = append(types, typ)
		if typ == FrameResult {
			break
		}
	}
	st.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	sess.Close()
	if string(types) != "ASOR" {
		t.Errorf("frames %q, want ASOR", types)
	}
	checkGolden(t, "job-client", []byte(hex.Dump(client.bytes())))
	checkGolden(t, "job-server", []byte(hex.Dump(server.bytes())))
}

// scriptedServer answers the handshake and one job stream with fixed frames, one write
// per frame, and returns once the client closed the stream.
func scriptedServer(conn net.Conn, cfg *yamux.Config) error {
	var pre [len(Preamble)]byte
	if _, err := io.ReadFull(conn, pre[:]); err != nil || pre != Preamble {
		return fmt.Errorf("preamble %q: %v", pre, err)
	}
	if typ, _, err := ReadFrame(conn, 64<<10); err != nil || typ != FrameHello {
		return fmt.Errorf("hello %q: %v", typ, err)
	}
	if err := writeJSON(conn, FrameWelcome, Welcome{Version: Version, Node: "master"}); err != nil {
		return err
	}
	sess, err := yamux.Server(conn, cfg)
	if err != nil {
		return err
	}
	defer sess.Close()
	st, err := sess.AcceptStream()
	if err != nil {
		return err
	}
	if typ, _, err := ReadFrame(st, MaxRequestFrame); err != nil || typ != FrameSubmit {
		return fmt.Errorf("submit %q: %v", typ, err)
	}
	for _, f := range []struct {
		typ byte
		msg any
	}{
		{FrameAccepted, Accepted{ID: goldenID, Epoch: goldenEpoch}},
		{FrameStarted, Started{Node: "master"}},
		{FrameStdout, []byte("hello, world\n")},
		{FrameResult, Result{Status: sandbox.StatusOK, Time: 21 * time.Millisecond, CPUTime: 18 * time.Millisecond, Memory: 9 << 20, Node: "master", Attempts: 1}},
	} {
		b, err := encodeGolden(f.typ, f.msg)
		if err != nil {
			return err
		}
		if _, err := st.Write(b); err != nil {
			return err
		}
	}
	st.Close()
	// Wait for the client's close before the session goes.
	io.Copy(io.Discard, st)
	return nil
}

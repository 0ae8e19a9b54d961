package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"runbox/sandbox"
	"runbox/sandbox/sandboxtest"
)

// startMaster runs serveMaster in-process on loopback with runner (a Fake unless nil,
// which means the real Docker sandbox) and returns its cluster address.
func startMaster(t *testing.T, runner sandbox.Runner, mod func(*masterConfig)) string {
	t.Helper()
	return startMasterLog(t, runner, nil, mod)
}

// startMasterLog is startMaster with a logger (nil: discard).
func startMasterLog(t *testing.T, runner sandbox.Runner, log *slog.Logger, mod func(*masterConfig)) string {
	t.Helper()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg := masterConfig{Listen: "127.0.0.1:0", Node: "master", MaxPrograms: 2, Queue: 10, Pool: 1, ImageTag: "latest", LogLevel: "info"}
	if mod != nil {
		mod(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan string, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- serveMaster(ctx, cfg, log, runner, func(a string) { addrc <- a })
	}()
	select {
	case a := <-addrc:
		t.Cleanup(func() {
			cancel()
			if err := <-errc; err != nil {
				t.Errorf("master: %v", err)
			}
		})
		return a
	case err := <-errc:
		cancel()
		t.Fatalf("master: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("master did not start")
	}
	return ""
}

func write(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func cli(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	code = run(context.Background(), args, strings.NewReader(stdin), &o, &e)
	return code, o.String(), e.String()
}

func TestSubmitTextMode(t *testing.T) {
	t.Parallel()
	addr := startMaster(t, &sandboxtest.Fake{}, nil)
	code, out, errOut := cli(t, "", "submit", "--server", addr, write(t, "p.py", "out hello\nerr warning\nexit 5"))
	if code != 5 || out != "hello\n" || errOut != "warning\n" {
		t.Errorf("code %d stdout %q stderr %q", code, out, errOut)
	}
	code, _, errOut = cli(t, "", "submit", "--server", addr, write(t, "bad.c", "compile main.c:1: error: oops"))
	if code != 1 || !strings.Contains(errOut, "main.c:1: error: oops") || !strings.Contains(errOut, "compilation failed") {
		t.Errorf("compile error: code %d stderr %q", code, errOut)
	}
	code, _, errOut = cli(t, "", "submit", "--server", addr, write(t, "tl.py", "status time_limit"))
	if code != 137 || !strings.Contains(errOut, "time limit") {
		t.Errorf("time limit: code %d stderr %q", code, errOut)
	}
}

func TestSubmitJSONMode(t *testing.T) {
	t.Parallel()
	addr := startMaster(t, &sandboxtest.Fake{}, nil)
	code, out, _ := cli(t, "", "submit", "--server", addr, "--json", write(t, "a.py", "out A"), write(t, "b.c", "exit 2"))
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 2 || len(lines) != 2 {
		t.Fatalf("code %d, %d lines: %s", code, len(lines), out)
	}
	var a, b map[string]any
	json.Unmarshal([]byte(lines[0]), &a)
	json.Unmarshal([]byte(lines[1]), &b)
	for _, f := range []string{"id", "language", "status", "exit_code", "stdout", "stderr", "compile_output", "time_ms", "memory_bytes", "node", "attempts"} {
		if _, ok := a[f]; !ok {
			t.Errorf("field %s missing from %s", f, lines[0])
		}
	}
	if a["stdout"] != "A\n" || a["status"] != "ok" || a["language"] != "python" || a["node"] != "master" {
		t.Errorf("first: %s", lines[0])
	}
	if b["language"] != "c" || b["status"] != "runtime_error" || b["exit_code"] != 2.0 {
		t.Errorf("second: %s", lines[1])
	}
}

func TestSubmitStdin(t *testing.T) {
	t.Parallel()
	addr := startMaster(t, &sandboxtest.Fake{}, nil)
	in := write(t, "in.txt", "from file")
	if code, out, _ := cli(t, "", "submit", "--server", addr, "--stdin", in, write(t, "c.py", "cat")); code != 0 || out != "from file" {
		t.Errorf("--stdin FILE: %d %q", code, out)
	}
	if code, out, _ := cli(t, "line one\nline two\n", "submit", "--server", addr, "--stdin", "-", write(t, "c.py", "cat")); code != 0 || out != "line one\nline two\n" {
		t.Errorf("--stdin -: %d %q", code, out)
	}
}

func TestSubmitErrorsAndExitCodes(t *testing.T) {
	t.Parallel()
	addr := startMaster(t, &sandboxtest.Fake{}, func(c *masterConfig) { c.MaxPrograms = 1; c.Queue = 0 })
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close()
	prog := write(t, "p.py", "out x")
	for _, c := range []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"no file", []string{"submit", "--server", addr}, exitUsage, "no program file"},
		{"missing file", []string{"submit", "--server", addr, "/nonexistent/x.py"}, exitUsage, "no such file"},
		{"unknown extension", []string{"submit", "--server", addr, write(t, "x.cob", "x")}, exitUsage, "--lang"},
		{"unknown lang", []string{"submit", "--server", addr, "--lang", "cobol", prog}, exitUsage, "unknown --lang"},
		{"bad size", []string{"submit", "--server", addr, "--memory-limit", "lots", prog}, exitUsage, "--memory-limit"},
		{"empty program", []string{"submit", "--server", addr, write(t, "e.py", "")}, exitInvalid, "empty"},
		{"over max", []string{"submit", "--server", addr, "--time-limit", "1h", prog}, exitInvalid, "above the server maximum"},
		{"unreachable", []string{"submit", "--server", dead, prog}, exitUnavailable, "cannot reach server"},
		{"unknown command", []string{"frobnicate"}, exitUsage, "unknown command"},
	} {
		code, _, errOut := cli(t, "", c.args...)
		if code != c.code || !strings.Contains(errOut, c.msg) {
			t.Errorf("%s: code %d (want %d), stderr %q (want %q)", c.name, code, c.code, errOut, c.msg)
		}
		if strings.Contains(errOut, "goroutine ") || (c.name != "unknown command" && strings.Count(strings.TrimSpace(errOut), "\n") > 0) {
			t.Errorf("%s: not one clear line: %q", c.name, errOut)
		}
	}
}

// With --json, a connection failure still gives every FILE its object, with the error.
func TestSubmitJSONUnreachable(t *testing.T) {
	t.Parallel()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close()
	code, out, errOut := cli(t, "", "submit", "--server", dead, "--json", write(t, "a.py", "out A"), write(t, "b.c", "out B"))
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != exitUnavailable || len(lines) != 2 || !strings.Contains(errOut, "cannot reach server") {
		t.Fatalf("code %d, stdout %q, stderr %q", code, out, errOut)
	}
	for i, lang := range []string{"python", "c"} {
		var r struct {
			File, Language string
			ExitCode       int `json:"exit_code"`
			Error          *struct{ Code, Message string }
		}
		if err := json.Unmarshal([]byte(lines[i]), &r); err != nil || r.Language != lang || r.ExitCode != -1 ||
			r.Error == nil || r.Error.Code != "unreachable" || !strings.Contains(r.Error.Message, dead) {
			t.Errorf("line %d: %s (%v)", i, lines[i], err)
		}
	}
}

// jsonLines parses `submit --json` output: one object per line.
func jsonLines(t *testing.T, out string) []jsonResult {
	t.Helper()
	var rs []jsonResult
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var r jsonResult
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("not a JSON object: %q (%v)", l, err)
		}
		rs = append(rs, r)
	}
	return rs
}

// With --json every failure, found here or by the server, is one JSON object per FILE
// with error.code, and the exit code is the documented one; a FILE that fails here does
// not keep the others from running.
func TestSubmitJSONLocalErrors(t *testing.T) {
	t.Parallel()
	addr := startMaster(t, &sandboxtest.Fake{}, nil)
	good := write(t, "a.py", "out A")
	big := write(t, "big.py", "out big\n"+strings.Repeat("#", 24<<20))
	for _, c := range []struct {
		name  string
		args  []string
		code  int
		files []string // FILE of each line
		want  []string // error.code of each line ("" for a program that ran)
		msg   string   // in the first error's message
	}{
		{"unknown --lang", []string{"--lang", "cobol", good}, exitUsage, []string{good}, []string{"unknown_language"}, "unknown --lang"},
		{"unknown extension", []string{write(t, "x.cob", "x"), good}, exitUsage, []string{"x.cob", good}, []string{"unknown_language", ""}, "--lang"},
		{"missing file", []string{"/nonexistent/x.py", good}, exitUsage, []string{"/nonexistent/x.py", good}, []string{"usage", ""}, "no such file"},
		{"bad flag value", []string{"--memory-limit", "lots", good, good}, exitUsage, []string{good, good}, []string{"usage", "usage"}, "--memory-limit"},
		{"unknown flag", []string{"--frobnicate", good}, exitUsage, []string{""}, []string{"usage"}, "frobnicate"},
		{"no file", nil, exitUsage, []string{""}, []string{"usage"}, "no program file"},
		{"too large", []string{big, good}, exitInvalid, []string{big, good}, []string{"too_large", ""}, "over the 1MiB cap"},
		{"refused by the server", []string{write(t, "e.py", "")}, exitInvalid, []string{"e.py"}, []string{"invalid_request"}, "empty"},
	} {
		args := append([]string{"submit", "--server", addr, "--json"}, c.args...)
		code, out, errOut := cli(t, "", args...)
		if code != c.code {
			t.Errorf("%s: exit code %d, want %d (stderr %q)", c.name, code, c.code, errOut)
		}
		lines := jsonLines(t, out)
		if len(lines) != len(c.want) {
			t.Errorf("%s: %d lines, want %d: %s", c.name, len(lines), len(c.want), out)
			continue
		}
		for i, r := range lines {
			if !strings.HasSuffix(r.File, c.files[i]) {
				t.Errorf("%s: line %d is of %q, want %q", c.name, i, r.File, c.files[i])
			}
			switch {
			case c.want[i] == "" && (r.Error != nil || r.Status != "ok" || r.Stdout != "A\n"):
				t.Errorf("%s: line %d: %+v, want the program's result", c.name, i, r)
			case c.want[i] != "" && (r.Error == nil || r.Error.Code != c.want[i] || r.ExitCode != -1):
				t.Errorf("%s: line %d: %+v, want error %s", c.name, i, r, c.want[i])
			}
		}
		if e := lines[0].Error; e != nil && !strings.Contains(e.Message, c.msg) {
			t.Errorf("%s: message %q, want %q", c.name, e.Message, c.msg)
		}
	}
}

// A source over the server's cap is refused before anything is sent, with too_large and
// the cap, in text mode too.
func TestSubmitTooLarge(t *testing.T) {
	t.Parallel()
	addr := startMaster(t, &sandboxtest.Fake{}, nil)
	big := write(t, "big.py", strings.Repeat("#", 24<<20))
	code, out, errOut := cli(t, "", "submit", "--server", addr, big)
	if code != exitInvalid || out != "" || !strings.Contains(errOut, "request too large") || !strings.Contains(errOut, "1MiB cap") ||
		strings.Count(strings.TrimSpace(errOut), "\n") > 0 {
		t.Errorf("code %d, stdout %q, stderr %q", code, out, errOut)
	}
	in := write(t, "in.txt", strings.Repeat("x", 9<<20))
	code, _, errOut = cli(t, "", "submit", "--server", addr, "--stdin", in, write(t, "p.py", "cat"))
	if code != exitInvalid || !strings.Contains(errOut, "8MiB cap") {
		t.Errorf("--stdin over its cap: code %d, stderr %q", code, errOut)
	}
}

func TestSubmitBusy(t *testing.T) {
	t.Parallel()
	addr := startMaster(t, &sandboxtest.Fake{}, func(c *masterConfig) { c.MaxPrograms = 1; c.Queue = 0 })
	done := make(chan int)
	go func() {
		code, _, _ := cli(t, "", "submit", "--server", addr, write(t, "slow.py", "sleep 1s"))
		done <- code
	}()
	deadline := time.Now().Add(10 * time.Second)
	for { // wait until the slow program holds the only slot
		_, out, _ := cli(t, "", "status", "--server", addr, "--json")
		if strings.Contains(out, `"state": "running"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the slow program never ran")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for {
		code, _, errOut := cli(t, "", "submit", "--server", addr, write(t, "p.py", "out x"))
		if code == exitBusy {
			if !strings.Contains(errOut, "try another server") {
				t.Errorf("busy message %q", errOut)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("never busy: last code %d stderr %q", code, errOut)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code := <-done; code != 0 {
		t.Errorf("first client: %d", code)
	}
}

func TestStatusCommand(t *testing.T) {
	t.Parallel()
	addr := startMaster(t, &sandboxtest.Fake{}, nil)
	cli(t, "", "submit", "--server", addr, write(t, "p.py", "out x"))
	code, out, _ := cli(t, "", "status", "--server", addr)
	if code != 0 || !strings.Contains(out, "NODE") || !strings.Contains(out, "master") || !strings.Contains(out, "RECENT") {
		t.Errorf("status: %d\n%s", code, out)
	}
	code, out, _ = cli(t, "", "status", "--server", addr, "--json")
	var snap map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &snap) != nil || snap["nodes"] == nil {
		t.Errorf("status --json: %d %s", code, out)
	}
	for _, list := range []string{"running", "queued"} { // nothing runs or waits: [], not null
		if l, ok := snap[list].([]any); !ok || len(l) != 0 {
			t.Errorf("status --json: %s is %v, want []", list, snap[list])
		}
	}
}

// TestEndToEndDocker: CLI → master → real sandbox, for each language.
func TestEndToEndDocker(t *testing.T) {
	if testing.Short() {
		t.Skip("needs Docker")
	}
	addr := startMaster(t, nil, func(c *masterConfig) { c.Node = "e2e-" + strings.ToLower(t.Name()[:4]) + time.Now().Format("150405") })
	for name, src := range map[string]string{
		"hello.py":  "print('hello from python')\n",
		"hello.c":   "#include <stdio.h>\nint main(void){puts(\"hello from c\");return 0;}\n",
		"hello.cpp": "#include <iostream>\nint main(){std::cout<<\"hello from cpp\\n\";}\n",
	} {
		code, out, errOut := cli(t, "", "submit", "--server", addr, write(t, name, src))
		want := map[string]string{".py": "hello from python\n", ".c": "hello from c\n", ".cpp": "hello from cpp\n"}[filepath.Ext(name)]
		if code != 0 || out != want {
			t.Errorf("%s: code %d stdout %q stderr %q", name, code, out, errOut)
		}
	}
	// Interactive input through the whole chain.
	code, out, _ := cli(t, "Ada\n", "submit", "--server", addr, "--stdin", "-", write(t, "ask.py", "n = input('name? ')\nprint('hi', n)\n"))
	if code != 0 || out != "name? hi Ada\n" {
		t.Errorf("interactive: %d %q", code, out)
	}
}

// Two masters with the same --node on one engine (different ports) leave each other's
// sandbox containers alone: the second's reaper, at its start, does not touch the first's
// warm pool.
func TestMastersOfOneNameKeepTheirSandboxes(t *testing.T) {
	if testing.Short() {
		t.Skip("needs Docker")
	}
	node := fmt.Sprint("twin-", time.Now().UnixNano()%100000)
	owned := func() map[string]string { // container id -> owner, for this node's masters
		out, err := exec.Command("docker", "ps", "-a", "--filter", "label=runbox.sandbox=1", "--format", `{{.ID}} {{.Label "runbox.owner"}}`).Output()
		if err != nil {
			t.Fatalf("docker ps: %v", err)
		}
		m := map[string]string{}
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if id, owner, _ := strings.Cut(l, " "); strings.HasPrefix(owner, "runbox-"+node+"-") {
				m[id] = owner
			}
		}
		return m
	}
	addrA := startMaster(t, nil, func(c *masterConfig) { c.Node = node })
	deadline := time.Now().Add(2 * time.Minute)
	var first map[string]string
	for first = owned(); len(first) < 3; first = owned() { // one pooled container per language
		if time.Now().After(deadline) {
			t.Fatalf("the first master's pool never filled: %v", first)
		}
		time.Sleep(100 * time.Millisecond)
	}
	addrB := startMaster(t, nil, func(c *masterConfig) { c.Node = node })
	now := owned()
	for id, owner := range first {
		if now[id] != owner {
			t.Errorf("container %s of %s is gone after a second master named %s started", id, owner, node)
		}
	}
	for _, addr := range []string{addrA, addrB} {
		if code, out, errOut := cli(t, "", "submit", "--server", addr, write(t, "p.py", "print('twin')\n")); code != 0 || out != "twin\n" {
			t.Errorf("%s: code %d stdout %q stderr %q", addr, code, out, errOut)
		}
	}
}

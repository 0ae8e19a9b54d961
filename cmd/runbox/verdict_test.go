package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"runbox/sandbox/sandboxtest"
)

// testsDir writes files (name → content) into a fresh directory.
func testsDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestSubmitTests(t *testing.T) {
	t.Parallel()
	addr := startMaster(t, &sandboxtest.Fake{}, nil)
	// The Fake's "cat" echoes its input: a case passes when its .out is its .in.
	dir := testsDir(t, map[string]string{
		"1.in": "a\n", "1.out": "a\n",
		"2.in": "b\n", "2.out": "c\n",
		"10.out":   "", // no .in: empty input
		"notes.md": "ignored",
	})
	prog := write(t, "cat.py", "cat")
	code, out, errOut := cli(t, "", "submit", "--server", addr, "--tests", dir, prog)
	if code != 1 {
		t.Errorf("exit code %d, want 1; stderr %q", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 5 || !strings.HasPrefix(lines[0], "CASE") {
		t.Fatalf("output:\n%s", out)
	}
	for i, want := range [][]string{{"1 ", "accepted"}, {"2 ", "wrong_answer", `line 1: expected "c", got "b"`}, {"10 ", "accepted"}} {
		for _, w := range want {
			if !strings.Contains(lines[i+1], w) {
				t.Errorf("line %q lacks %q", lines[i+1], w)
			}
		}
	}
	if !strings.Contains(lines[4], "wrong_answer (2 of 3 test cases passed)") {
		t.Errorf("verdict line %q", lines[4])
	}

	// All accepted: exit 0. --compare tokens makes "a b" match "a\nb".
	good := testsDir(t, map[string]string{"x.in": "a b\n", "x.out": "a\nb"})
	if code, out, errOut := cli(t, "", "submit", "--server", addr, "--tests", good, "--compare", "tokens", prog); code != 0 || !strings.Contains(out, "accepted (1 of 1") {
		t.Errorf("tokens: code %d, stdout %q, stderr %q", code, out, errOut)
	}
	if code, out, _ := cli(t, "", "submit", "--server", addr, "--tests", good, "--compare", "exact", prog); code != 1 || !strings.Contains(out, "wrong_answer") {
		t.Errorf("exact: code %d, stdout %q", code, out)
	}

	// A compile error: no case runs, the compiler's output on stderr.
	code, out, errOut = cli(t, "", "submit", "--server", addr, "--tests", dir, write(t, "bad.c", "compile main.c:1: error: oops"))
	if code != 1 || !strings.Contains(out, "compile_error") || strings.Contains(out, "CASE") || !strings.Contains(errOut, "oops") {
		t.Errorf("compile error: code %d, stdout %q, stderr %q", code, out, errOut)
	}
}

func TestSubmitTestsJSON(t *testing.T) {
	t.Parallel()
	addr := startMaster(t, &sandboxtest.Fake{}, nil)
	dir := testsDir(t, map[string]string{"a.in": "1\n", "a.out": "1\n", "b.in": "2\n", "b.out": "3\n"})
	code, out, _ := cli(t, "", "submit", "--server", addr, "--json", "--tests", dir, write(t, "cat.py", "cat"), write(t, "ok.py", "out 1"))
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 1 || len(lines) != 2 {
		t.Fatalf("code %d, output:\n%s", code, out)
	}
	var r struct {
		Verdict string `json:"verdict"`
		Cases   []struct {
			Name, Verdict, Diff string
			TimeMS              *float64 `json:"time_ms"`
			MemoryBytes         *int64   `json:"memory_bytes"`
		} `json:"cases"`
	}
	json.Unmarshal([]byte(lines[0]), &r)
	if r.Verdict != "wrong_answer" || len(r.Cases) != 2 || r.Cases[0].Name != "a" || r.Cases[0].Verdict != "accepted" ||
		r.Cases[1].Verdict != "wrong_answer" || r.Cases[1].Diff == "" || r.Cases[0].TimeMS == nil || r.Cases[0].MemoryBytes == nil {
		t.Errorf("first: %s", lines[0])
	}
	json.Unmarshal([]byte(lines[1]), &r)
	if r.Verdict != "wrong_answer" || r.Cases[0].Verdict != "accepted" { // "out 1" passes a, fails b
		t.Errorf("second: %s", lines[1])
	}
	// All accepted: 0.
	code, out, _ = cli(t, "", "submit", "--server", addr, "--json", "--tests", dir, write(t, "c.py", "cat"))
	if code != 1 {
		t.Errorf("code %d: %s", code, out)
	}
	one := testsDir(t, map[string]string{"a.in": "1\n", "a.out": "1\n"})
	if code, out, _ = cli(t, "", "submit", "--server", addr, "--json", "--tests", one, write(t, "c.py", "cat")); code != 0 || !strings.Contains(out, `"verdict":"accepted"`) {
		t.Errorf("accepted: code %d: %s", code, out)
	}
}

func TestSubmitTestsUsageErrors(t *testing.T) {
	t.Parallel()
	prog := write(t, "p.py", "cat")
	for name, c := range map[string]struct {
		args []string
		want string
	}{
		"missing dir":    {[]string{"--tests", filepath.Join(t.TempDir(), "nope")}, "no such file"},
		"empty dir":      {[]string{"--tests", t.TempDir()}, "no test cases in"},
		"in without out": {[]string{"--tests", testsDir(t, map[string]string{"1.in": "x", "2.out": "y"})}, "1.in has no expected output"},
		"bad compare":    {[]string{"--tests", testsDir(t, map[string]string{"1.out": "y"}), "--compare", "fuzzy"}, "bad --compare"},
		"stdin":          {[]string{"--tests", testsDir(t, map[string]string{"1.out": "y"}), "--stdin", prog}, "do not go together"},
	} {
		args := append(append([]string{"submit", "--server", "127.0.0.1:1"}, c.args...), prog)
		code, _, errOut := cli(t, "", args...)
		if code != exitUsage || !strings.Contains(errOut, c.want) || strings.Count(errOut, "\n") != 1 {
			t.Errorf("%s: code %d, stderr %q", name, code, errOut)
		}
	}
	code, _, errOut := cli(t, "", "submit", "-h")
	if !strings.Contains(errOut, "--tests") || !strings.Contains(errOut, "with --tests: 0 when every case") {
		t.Errorf("help (code %d) does not document --tests and its exit codes:\n%s", code, errOut)
	}
}

// TestSubmitTestsOnASlave: a judged job is one job, placed on one node, which runs every
// case in its own sandbox; the cases come back through the master.
func TestSubmitTestsOnASlave(t *testing.T) {
	t.Parallel()
	local, remote := &sandboxtest.Fake{Node: "master"}, &sandboxtest.Fake{Node: "slave-1"}
	addr := startMaster(t, local, func(c *masterConfig) { c.MaxPrograms = 0 })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- serveSlave(ctx, slaveConfig{Master: addr, Node: "slave-1", MaxPrograms: 1}, slog.New(slog.DiscardHandler), remote)
	}()
	t.Cleanup(func() { cancel(); <-done })

	dir := testsDir(t, map[string]string{"1.in": "a\n", "1.out": "a\n", "2.in": "b\n", "2.out": "b\n", "3.in": "c\n", "3.out": "x\n"})
	prog := write(t, "cat.py", "cat")
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, out, errOut := cli(t, "", "submit", "--server", addr, "--json", "--tests", dir, prog)
		var r jsonResult
		json.Unmarshal([]byte(out), &r)
		if r.Node == "slave-1" {
			if code != 1 || r.Verdict != "wrong_answer" || len(r.Cases) != 3 || r.Cases[2].Verdict != "wrong_answer" || r.Cases[2].Diff == "" {
				t.Errorf("code %d: %s %s", code, out, errOut)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no judged job ran on the slave: %d %q %q", code, out, errOut)
		}
		time.Sleep(100 * time.Millisecond) // the slave is still joining
	}
	if runs, _ := remote.Runs(); runs != 3 {
		t.Errorf("the slave ran %d programs, want the 3 cases", runs)
	}
	if runs, _ := local.Runs(); runs != 0 {
		t.Errorf("the master ran %d programs", runs)
	}
}

// TestSubmitTestsDocker: CLI → master → judge → real sandbox, C compiled once: a correct
// solution is accepted, an off-by-one gets wrong_answer on its case, exit codes 0 and 1.
func TestSubmitTestsDocker(t *testing.T) {
	if testing.Short() {
		t.Skip("needs Docker")
	}
	addr := startMaster(t, nil, func(c *masterConfig) { c.Node = "judge-" + time.Now().Format("150405") })
	dir := testsDir(t, map[string]string{
		"1.in": "1\n", "1.out": "2\n",
		"2.in": "3\n", "2.out": "6\n",
		"3.in": "7\n", "3.out": "14\n",
	})
	good := write(t, "good.c", "#include <stdio.h>\nint main(void){long n; scanf(\"%ld\",&n); printf(\"%ld\\n\", 2*n); return 0;}\n")
	bad := write(t, "bad.c", "#include <stdio.h>\nint main(void){long n; scanf(\"%ld\",&n); printf(\"%ld\\n\", n == 3 ? 2*n+1 : 2*n); return 0;}\n")
	code, out, errOut := cli(t, "", "submit", "--server", addr, "--tests", dir, good)
	if code != 0 || !strings.Contains(out, "accepted (3 of 3 test cases passed)") {
		t.Errorf("good: code %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = cli(t, "", "submit", "--server", addr, "--tests", dir, bad)
	lines := strings.Split(out, "\n")
	if code != 1 || len(lines) < 5 || !strings.Contains(lines[2], "wrong_answer") || !strings.Contains(lines[2], `expected "6", got "7"`) ||
		!strings.Contains(out, "wrong_answer (2 of 3 test cases passed)") {
		t.Errorf("bad: code %d\n%s%s", code, out, errOut)
	}
}

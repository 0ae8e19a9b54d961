package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	"runbox/sandbox"
	"runbox/sandbox/sandboxtest"
)

// benchJSON runs `runbox bench --json` and decodes its report.
func benchJSON(t *testing.T, args ...string) (code int, rep benchReport, stderr string) {
	t.Helper()
	code, out, errOut := cli(t, "", append([]string{"bench", "--json"}, args...)...)
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("--json output is not one JSON object: %v\n%s\nstderr: %s", err, out, errOut)
	}
	return code, rep, errOut
}

func TestBenchCountsAndJSON(t *testing.T) {
	t.Parallel()
	addr := startMaster(t, &sandboxtest.Fake{}, func(c *masterConfig) { c.MaxPrograms = 4; c.Queue = 100 })

	// The Fake reads the program as a script: "out hello, world" is the hello-world's output.
	code, rep, _ := benchJSON(t, "--server", addr, "--clients", "5", "--jobs", "4", "--program", write(t, "hello.py", "out hello, world"))
	if code != 0 {
		t.Errorf("exit code %d", code)
	}
	s := rep.benchSummary
	if s.Planned != 20 || s.Answered != 20 || s.Ran != 20 || s.Busy != 0 || s.Failed != 0 || s.Statuses["ok"] != 20 || s.Nodes["master"] != 20 {
		t.Errorf("summary %+v", s)
	}
	if s.Language != "python" || s.Clients != 5 || s.JobsPerClient != 4 || s.Throughput <= 0 || s.WallMS <= 0 {
		t.Errorf("summary %+v", s)
	}
	if l := s.LatencyMS; l.P50 <= 0 || l.P50 > l.P95 || l.P95 > l.P99 || l.P99 > l.Max {
		t.Errorf("latencies %+v", l)
	}
	if rep.Baseline != nil || rep.Ratio != nil {
		t.Errorf("baseline without --baseline: %+v %+v", rep.Baseline, rep.Ratio)
	}

	// The field names are the documented ones.
	_, out, _ := cli(t, "", "bench", "--json", "--server", addr, "--clients", "1", "--jobs", "1", "--lang", "c")
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"target", "program", "language", "clients", "jobs_per_client", "planned", "answered", "ran", "busy",
		"failed", "interrupted", "wrong_output", "wall_ms", "throughput", "latency_ms", "statuses", "errors", "nodes", "stopped"} {
		if _, ok := m[f]; !ok {
			t.Errorf("field %s missing from %s", f, out)
		}
	}
	// The built-in C hello-world is not a Fake script: it runs and fails, and its output
	// is not the hello-world's.
	if m["language"] != "c" || m["statuses"].(map[string]any)["runtime_error"] != 1.0 || m["wrong_output"] != 1.0 {
		t.Errorf("c hello-world on the Fake: %s", out)
	}
}

func TestBenchCountsBusyAndErrors(t *testing.T) {
	t.Parallel()
	// One slot, no queue: of 4 clients submitting at once, some are told busy.
	addr := startMaster(t, &sandboxtest.Fake{}, func(c *masterConfig) { c.MaxPrograms = 1; c.Queue = 0 })
	code, rep, _ := benchJSON(t, "--server", addr, "--clients", "4", "--jobs", "5", "--program", write(t, "slow.py", "sleep 20ms\nout hello, world"))
	s := rep.benchSummary
	if code != 0 || s.Busy == 0 || s.Failed != 0 || s.Ran+s.Busy != 20 || s.Statuses["ok"] != s.Ran || len(s.Errors) != 0 {
		t.Errorf("code %d, summary %+v", code, s)
	}

	// Jobs that cannot run are counted by code, and the exit code says so.
	code, rep, _ = benchJSON(t, "--server", addr, "--clients", "2", "--jobs", "2", "--program", write(t, "empty.py", ""))
	if s := rep.benchSummary; code != 1 || s.Failed != 4 || s.Errors["invalid_request"] != 4 || s.Ran != 0 {
		t.Errorf("empty program: code %d, summary %+v", code, s)
	}

	// The text summary names them too.
	code, out, _ := cli(t, "", "bench", "--server", addr, "--clients", "4", "--jobs", "5", "--program", write(t, "slow.py", "sleep 20ms\nout x"))
	for _, want := range []string{"runbox bench: 4 clients x 5 jobs", "throughput", "p50", "p95", "p99", "max", "busy (explicit rejections)", "statuses", "ok ", "nodes", "master "} {
		if !strings.Contains(out, want) {
			t.Errorf("text summary lacks %q:\n%s", want, out)
		}
	}
	if code != 0 {
		t.Errorf("text: exit code %d", code)
	}
}

func TestBenchProgressLines(t *testing.T) {
	t.Parallel()
	addr := startMaster(t, &sandboxtest.Fake{}, nil)
	_, _, errOut := cli(t, "", "bench", "--server", addr, "--clients", "2", "--jobs", "10", "--progress-interval", "20ms",
		"--program", write(t, "p.py", "sleep 10ms\nout hello, world"))
	lines := strings.Split(strings.TrimSpace(errOut), "\n")
	if len(lines) < 2 || !strings.Contains(lines[0], "/20 jobs") || !strings.Contains(lines[0], "jobs/s") || strings.Contains(errOut, "\r") {
		t.Errorf("progress on a non-terminal: %q", errOut)
	}
}

func TestBenchUsageAndUnreachable(t *testing.T) {
	t.Parallel()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close()
	for _, c := range []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"no clients", []string{"--clients", "0"}, exitUsage, "--clients"},
		{"negative jobs", []string{"--jobs", "-1"}, exitUsage, "--jobs"},
		{"not a number", []string{"--clients", "many"}, exitUsage, "invalid value"},
		{"unknown lang", []string{"--lang", "cobol"}, exitUsage, "unknown --lang"},
		{"missing program", []string{"--program", "/nonexistent/p.py"}, exitUsage, "no such file"},
		{"unknown extension", []string{"--program", write(t, "p.cob", "x")}, exitUsage, "--lang"},
		{"arguments", []string{"p.py"}, exitUsage, "unexpected arguments"},
		{"unknown flag", []string{"--frobnicate"}, exitUsage, "frobnicate"},
		{"unreachable", []string{"--server", dead, "--clients", "3"}, exitUnavailable, "cannot reach server"},
	} {
		code, out, errOut := cli(t, "", append([]string{"bench"}, c.args...)...)
		if code != c.code || !strings.Contains(errOut, c.msg) || out != "" {
			t.Errorf("%s: code %d (want %d), stdout %q, stderr %q (want %q)", c.name, code, c.code, out, errOut, c.msg)
		}
		if c.name == "unreachable" && strings.Count(strings.TrimSpace(errOut), "\n") > 0 {
			t.Errorf("unreachable: not one line: %q", errOut)
		}
	}
}

func TestBenchInterruptPrintsPartialSummary(t *testing.T) {
	t.Parallel()
	addr := startMaster(t, &sandboxtest.Fake{}, func(c *masterConfig) { c.MaxPrograms = 4; c.Queue = 100 })
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(time.Second, cancel) // Ctrl-C
	var out, errOut bytes.Buffer
	start := time.Now()
	code := run(ctx, []string{"bench", "--json", "--server", addr, "--clients", "4", "--jobs", "1000",
		"--program", write(t, "p.py", "sleep 50ms\nout hello, world")}, strings.NewReader(""), &out, &errOut)
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("stopping took %v", took)
	}
	var rep benchReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("partial summary: %v\n%s", err, out.String())
	}
	s := rep.benchSummary
	if code != 130 || !s.Stopped || s.Ran == 0 || s.Ran >= 4000 || s.Failed != 0 || s.Answered != s.Ran+s.Busy {
		t.Errorf("code %d, summary %+v", code, s)
	}
}

// TestBenchBaselineDocker runs the plain container cycle next to a master (with the Fake:
// the protocol side needs no Docker here) and checks the ratios are reported.
func TestBenchBaselineDocker(t *testing.T) {
	if testing.Short() {
		t.Skip("needs Docker")
	}
	t.Parallel()
	addr := startMaster(t, &sandboxtest.Fake{}, nil)
	code, rep, errOut := benchJSON(t, "--server", addr, "--clients", "2", "--jobs", "2", "--baseline")
	if code != 0 || rep.Baseline == nil || rep.Ratio == nil {
		t.Fatalf("code %d, report %+v, stderr %s", code, rep, errOut)
	}
	b := rep.Baseline
	if b.Ran != 4 || b.Statuses["ok"] != 4 || b.WrongOutput != 0 || b.Failed != 0 || b.LatencyMS.P50 <= 0 {
		t.Errorf("baseline %+v", b)
	}
	if rep.Ratio.P50 <= 0 || rep.Ratio.Throughput <= 0 {
		t.Errorf("ratio %+v", rep.Ratio)
	}
}

// Every language of the table has its own hello-world for bench (a missing one would
// send Python to the Go sandbox).
func TestHelloWorldForEveryLanguage(t *testing.T) {
	t.Parallel()
	for _, l := range sandbox.Languages() {
		if l.Name != "python" && helloWorld(l.Name) == helloWorld("python") {
			t.Errorf("no hello-world in %s", l.Name)
		}
		if !strings.Contains(helloWorld(l.Name), "hello, world") {
			t.Errorf("the %s hello-world does not print %q", l.Name, helloOutput)
		}
	}
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"runbox/sandbox"
	"runbox/sandbox/docker"
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
	_, out, _ = cli(t, "", "bench", "--server", addr, "--clients", "1", "--jobs", "1", "--program", write(t, "one.py", "out x"))
	if !strings.Contains(out, "runbox bench: 1 client x 1 job, ") {
		t.Errorf("one client, one job:\n%s", out)
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
	// The figures name the engine they came from.
	if e := rep.Engine; e == nil || e.StorageDriver == "" || e.Version == "" || e.CPUs <= 0 {
		t.Errorf("engine %+v", e)
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

// enginedRunner is a tracingRunner that describes its engine, as docker.Plain does.
type enginedRunner struct {
	tracingRunner
	engine docker.EngineInfo
}

func (r *enginedRunner) Engine() docker.EngineInfo { return r.engine }

// A runner without an engine description gives none; the text form skips what the
// engine did not say.
func TestBenchEngineLine(t *testing.T) {
	t.Parallel()
	if e := engineOf(&sandboxtest.Fake{}); e != nil {
		t.Errorf("engineOf(Fake) = %+v", e)
	}
	if l := engineLine(nil); l != "" {
		t.Errorf("engineLine(nil) = %q", l)
	}
	if l := engineLine(&docker.EngineInfo{}); l != "engine: (it did not say)" {
		t.Errorf("engineLine(empty) = %q", l)
	}
	e := &docker.EngineInfo{StorageDriver: "fuse-overlayfs", Kernel: "6.18", CPUs: 2}
	if l := engineLine(e); l != "engine: storage driver fuse-overlayfs, 2 CPUs, kernel 6.18" {
		t.Errorf("engineLine = %q", l)
	}
}

// tracingRunner is the Fake whose results carry a trace, as the Docker runner's do.
type tracingRunner struct {
	sandboxtest.Fake
	trace sandbox.Trace
}

func (r *tracingRunner) Run(ctx context.Context, spec sandbox.Spec, st *sandbox.Streams) (sandbox.Result, error) {
	res, err := r.Fake.Run(ctx, spec, st)
	tr := r.trace
	res.Trace = &tr
	return res, err
}

// The report's arithmetic: nearest-rank percentiles, the ratios, the trace per phase with
// what it leaves of the latency, and the back-to-back over spaced figure.
func TestBenchReportMath(t *testing.T) {
	t.Parallel()
	msd := func(v ...int) []time.Duration {
		var ds []time.Duration
		for _, x := range v {
			ds = append(ds, time.Duration(x)*time.Millisecond)
		}
		return ds
	}
	// 20 values 1..20 ms, shuffled: p50 is the 10th, p95 the 19th, p99 the 20th.
	l := latencies(msd(20, 3, 1, 19, 2, 18, 4, 17, 5, 16, 6, 15, 7, 14, 8, 13, 9, 12, 10, 11))
	if l != (latencyMS{P50: 10, P95: 19, P99: 20, Max: 20, Mean: 10.5}) {
		t.Errorf("latencies: %+v", l)
	}
	if l := latencies(msd(7)); l.P50 != 7 || l.P95 != 7 || l.Max != 7 {
		t.Errorf("one value: %+v", l)
	}
	if l := latencies(nil); l != (latencyMS{}) {
		t.Errorf("none: %+v", l)
	}

	run := benchSummary{LatencyMS: latencyMS{P50: 50}, Throughput: 13}
	base := benchSummary{LatencyMS: latencyMS{P50: 200}, Throughput: 6.5}
	if r := ratioOf(run, base); r == nil || r.P50 != 0.25 || r.Throughput != 2 {
		t.Errorf("ratio: %+v", r)
	}
	if r := ratioOf(run, benchSummary{}); r != nil {
		t.Errorf("ratio against an empty baseline: %+v", r)
	}

	var tl tally
	tl.addTrace(&sandbox.Trace{Queue: time.Millisecond, Acquire: 3 * time.Millisecond, Pooled: true, Run: 20 * time.Millisecond}, 30*time.Millisecond)
	tl.addTrace(&sandbox.Trace{Queue: 3 * time.Millisecond, Acquire: 200 * time.Millisecond, Compile: 90 * time.Millisecond, Run: 40 * time.Millisecond}, 340*time.Millisecond)
	tl.addTrace(&sandbox.Trace{Run: 50 * time.Millisecond}, 40*time.Millisecond) // a clock skew: other is 0, not negative
	tl.addTrace(nil, time.Second)                                                // no trace: not counted
	tr := traceSummary(tl.phases)
	if tl.traced != 3 || tl.pooled != 1 {
		t.Errorf("traced %d, pooled %d", tl.traced, tl.pooled)
	}
	for phase, want := range map[string]latencyMS{
		"queue":   {P50: 1, P95: 3, P99: 3, Max: 3, Mean: 2},
		"acquire": {P50: 3, P95: 200, P99: 200, Max: 200, Mean: 101.5},
		"compile": {P50: 90, P95: 90, P99: 90, Max: 90, Mean: 90},
		"run":     {P50: 40, P95: 50, P99: 50, Max: 50, Mean: 36.666},
		"other":   {P50: 6, P95: 7, P99: 7, Max: 7, Mean: 4.333},
	} {
		if got, ok := tr[phase]; !ok || got != want {
			t.Errorf("trace_ms[%s] = %+v, want %+v", phase, got, want)
		}
	}
	if _, ok := tr["send"]; ok {
		t.Error("a phase no job had is in trace_ms")
	}
	if s := tracePhases(tr); s != "queue 1.0ms, acquire 3.0ms, compile 90.0ms, run 40.0ms, other 6.0ms" {
		t.Errorf("tracePhases: %q", s)
	}
	if traceSummary(nil) != nil {
		t.Error("trace_ms without traces")
	}

	rows := []suiteRow{
		{Case: "spaced", Language: "python", Runbox: benchSummary{LatencyMS: latencyMS{P50: 40}}},
		{Case: "1 client", Language: "python", Runbox: benchSummary{LatencyMS: latencyMS{P50: 60}}},
		{Case: "4 clients", Language: "python", Runbox: benchSummary{LatencyMS: latencyMS{P50: 900}}},
		{Case: "spaced", Language: "c", Runbox: benchSummary{LatencyMS: latencyMS{P50: 100}}},
	}
	if got := backToBack(rows); len(got) != 1 || got["python"] != 1.5 {
		t.Errorf("back to back over spaced: %v (c has no back-to-back row)", got)
	}
}

// The suite's plan is the issue's: spaced, then 1, 4 and 8 clients back to back.
func TestBenchSuiteCases(t *testing.T) {
	t.Parallel()
	got := suiteCases(300 * time.Millisecond)
	want := []suiteCase{{"spaced", 1, 300 * time.Millisecond}, {"1 client", 1, 0}, {"4 clients", 4, 0}, {"8 clients", 8, 0}}
	if !slices.Equal(got, want) {
		t.Errorf("suite cases %+v", got)
	}
}

// The whole suite against a master, with a Fake standing in for the plain cycle (no
// Docker): every case in both languages, both sides, their ratios, and the traces (those
// of the in-process plain side: whether a trace crosses the wire is transport's test).
func TestBenchSuiteAgainstFakes(t *testing.T) {
	t.Parallel()
	addr := startMaster(t, &sandboxtest.Fake{}, func(c *masterConfig) { c.MaxPrograms = 8; c.Queue = 100 })
	engine := docker.EngineInfo{Version: "28.5.2", StorageDriver: "overlay2", Runtime: "runc", CgroupVersion: "2", CPUs: 2}
	plain := &enginedRunner{tracingRunner{trace: sandbox.Trace{Acquire: 2 * time.Millisecond, Pooled: true, Run: 5 * time.Millisecond}}, engine}
	var errOut bytes.Buffer
	b := &bench{cfg: benchConfig{clientFlags: clientFlags{Server: addr}, Jobs: 3, Interval: 20 * time.Millisecond,
		Progress: time.Hour, JSON: true}, stderr: &errOut, plain: plain}
	var out bytes.Buffer
	// The Fake runs neither language's hello-world: each ends as a runtime_error, which
	// is a program that ran, so the suite still succeeds.
	if code := b.runSuite(context.Background(), &out, []string{"python", "c"}, nil); code != 0 {
		t.Fatalf("exit code %d: %s", code, errOut.String())
	}
	var rep suiteReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("--json: %v\n%s", err, out.String())
	}
	if len(rep.Cases) != 8 || rep.Stopped {
		t.Fatalf("%d cases, stopped %v: %s", len(rep.Cases), rep.Stopped, out.String())
	}
	if rep.Engine == nil || *rep.Engine != engine {
		t.Errorf("engine %+v, want the plain cycle's %+v", rep.Engine, engine)
	}
	for i, row := range rep.Cases {
		c := suiteCases(20 * time.Millisecond)[i%4]
		wantLang := []string{"python", "c"}[i/4]
		if row.Case != c.Name || row.Language != wantLang || row.Runbox.Clients != c.Clients || row.Runbox.Ran != 3*c.Clients ||
			row.Plain == nil || row.Plain.Ran != 3*c.Clients || row.Ratio == nil || row.Ratio.P50 <= 0 || row.Ratio.Throughput <= 0 {
			t.Errorf("row %d: %+v", i, row)
			continue
		}
		if row.Runbox.Language != wantLang || row.Runbox.IntervalMS != ms(c.Interval) {
			t.Errorf("row %d: language %s, interval %v ms", i, row.Runbox.Language, row.Runbox.IntervalMS)
		}
		if p := row.Plain; p.Traced != p.Ran || p.Pooled != p.Ran || p.TraceMS["acquire"].P50 != 2 || p.TraceMS["run"].P50 != 5 || p.TraceMS["other"].Max < 0 {
			t.Errorf("row %d: traces %d/%d, %+v", i, p.Traced, p.Pooled, p.TraceMS)
		}
	}
	// Spaced: 3 programs, one every 20 ms: the run lasts at least two intervals.
	if w := rep.Cases[0].Runbox.WallMS; w < 40 {
		t.Errorf("spaced run took %v ms, under two intervals", w)
	}
	if len(rep.BackToBack) != 2 || rep.BackToBack["python"] <= 0 || rep.BackToBack["c"] <= 0 {
		t.Errorf("back to back over spaced: %v", rep.BackToBack)
	}

	// The text table has a row per case and language, and the traces.
	b.cfg.JSON = false
	out.Reset()
	b.runSuite(context.Background(), &out, []string{"python"}, []byte("out hello, world"))
	text := out.String()
	for _, want := range []string{"runbox p50", "plain p50", "throughput ratio", "spaced (every 20ms)", "1 client", "4 clients", "8 clients",
		"python: one client back to back, p50", "where the time went", "acquire 2.0ms, run 5.0ms", "(24 traced, 24 from the pool)",
		"engine: Docker 28.5.2, storage driver overlay2, runtime runc, cgroup v2, 2 CPUs (the plain cycle's)"} {
		if !strings.Contains(text, want) {
			t.Errorf("text lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, " c ") {
		t.Errorf("a C row without asking for C:\n%s", text)
	}
}

// --interval paces each client; bad values of the new flags are usage errors.
func TestBenchIntervalAndSuiteFlags(t *testing.T) {
	t.Parallel()
	addr := startMaster(t, &sandboxtest.Fake{}, nil)
	code, rep, errOut := benchJSON(t, "--server", addr, "--clients", "2", "--jobs", "3", "--interval", "30ms",
		"--program", write(t, "p.py", "out hello, world"))
	if s := rep.benchSummary; code != 0 || s.Ran != 6 || s.IntervalMS != 30 || s.WallMS < 60 {
		t.Errorf("--interval 30ms: code %d, summary %+v, stderr %s", code, s, errOut)
	}
	for _, c := range []struct {
		args []string
		msg  string
	}{
		{[]string{"--interval", "-1s"}, "--interval"},
		{[]string{"--interval", "soon"}, "invalid value"},
		{[]string{"--suite", "--lang", "cobol"}, "unknown --lang"},
		{[]string{"--suite=maybe"}, "invalid boolean"},
	} {
		code, out, errOut := cli(t, "", append([]string{"bench"}, c.args...)...)
		if code != exitUsage || !strings.Contains(errOut, c.msg) || out != "" {
			t.Errorf("%q: code %d, stdout %q, stderr %q (want %q)", c.args, code, out, errOut, c.msg)
		}
	}
	if _, _, errOut := cli(t, "", "bench", "-h"); !strings.Contains(errOut, "-suite") || !strings.Contains(errOut, "8 clients") {
		t.Errorf("help lacks --suite:\n%s", errOut)
	}
}

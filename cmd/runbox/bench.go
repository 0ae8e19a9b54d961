package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"runbox/sandbox"
	"runbox/sandbox/docker"
	"runbox/scheduler"
	"runbox/transport"
)

const benchHelp = `Usage: runbox bench [flags]

Drives load at a server: --clients concurrent clients, each on its own connection, each
submit --jobs programs one after another (a hello-world in --lang, or --program FILE) and
wait for every result. A progress line on stderr shows jobs done, the rate, busy
rejections and errors; then a summary: wall time, throughput (jobs that ran per second),
latency from submit to result (p50, p95, p99, max), counts by status and by error code
(busy counted apart: explicit rejections, not failures) and the nodes that ran the jobs.
Ctrl-C stops the run and prints the summary of what was done.

--baseline then runs the same programs, as many, with the same concurrency, through a
plain container cycle on this machine's Docker engine (create, attach, start, wait,
remove: what 'docker run --rm' does, no warm pool, no server) and prints the ratios of
the p50 latencies and of the throughputs. --direct runs the jobs on an in-process
sandbox (the Docker runner 'runbox master' uses, with its warm pool) instead of a
server: the sandbox's own latency, without the protocol.

--interval D paces each client: a program every D (or as soon as the previous one
ended, when it took longer), instead of one right after the other.

--suite runs, in one go, the comparison of issue 15 for Python and C (or only --lang, or
--program, when given): for each case runbox (the server, or --direct) and then the plain
container cycle with the same programs and clients, side by side:
  spaced      1 client, a program every --interval (default 500ms)
  1 client    1 client, programs back to back
  4 clients   4 clients, back to back
  8 clients   8 clients, back to back
each with --jobs programs per client. It prints a table of p50, p95 and throughput for
both, with the ratios (p50 runbox/plain: below 1 is faster; throughput runbox/plain: above
1 does more), and how the back-to-back p50 compares with the spaced one. With --json, one
object: the cases, each with both summaries.

With --json, trace_ms summarises, phase by phase (queue, acquire, send, compile, gate, run,
result), the traces the results carry (p50, p95, p99, max, mean over the jobs that have
the phase), plus "other": the client's latency minus the traced phases (the protocol,
the round trip, anything not traced). traced counts the jobs that had a trace, pooled
those whose container came warm from the pool.

Exit codes:
  0    every job ran (whatever its program's status) or was refused busy
  1    some jobs could not run for another reason (the summary counts them by code)
  64   usage error (bad flags, unreadable --program)
  69   cannot reach the server, or (--baseline, --direct) the Docker engine
  77   unauthorized, rate_limited or quota
  130  interrupted: the partial summary was printed

Flags:
`

// benchConfig is `runbox bench`'s flags.
type benchConfig struct {
	clientFlags
	Clients    int
	Jobs       int
	Lang       string
	Program    string
	Baseline   bool
	Direct     bool
	JSON       bool
	Pool       int
	DockerHost string
	ImageTag   string
	Progress   time.Duration
	Interval   time.Duration // between the starts of a client's programs (0: back to back)
	Suite      bool
}

// helloWorld returns the benchmark program in lang; it prints helloOutput.
func helloWorld(lang string) string {
	switch lang {
	case "c":
		return "#include <stdio.h>\nint main(void) { puts(\"hello, world\"); return 0; }\n"
	case "cpp":
		return "#include <iostream>\nint main() { std::cout << \"hello, world\\n\"; }\n"
	case "go":
		return "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"hello, world\") }\n"
	case "java":
		return "public class Main { public static void main(String[] a) { System.out.println(\"hello, world\"); } }\n"
	case "javascript":
		return "console.log('hello, world');\n"
	}
	return "print('hello, world')\n"
}

const helloOutput = "hello, world\n"

func runBench(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("runbox bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg benchConfig
	cfg.register(fs)
	fs.IntVar(&cfg.Clients, "clients", 10, "concurrent clients, each with its own connection")
	fs.IntVar(&cfg.Jobs, "jobs", 10, "jobs each client submits, one after another")
	fs.StringVar(&cfg.Lang, "lang", "python", "language of the program: "+sandbox.LanguageNames())
	fs.StringVar(&cfg.Program, "program", "", "program file to submit instead of the hello-world (its extension sets the language unless --lang is given)")
	fs.BoolVar(&cfg.Baseline, "baseline", false, "also run the same jobs by a plain container cycle on the local Docker engine and print the ratios")
	fs.BoolVar(&cfg.Direct, "direct", false, "run the jobs on an in-process Docker sandbox with a warm pool instead of a server")
	fs.BoolVar(&cfg.JSON, "json", false, "print the summary as one JSON object")
	fs.IntVar(&cfg.Pool, "pool", docker.DefaultConfig().PoolSize, "with --direct: warm containers kept ready per language, as 'runbox master --pool'")
	fs.StringVar(&cfg.DockerHost, "docker-host", "", "with --baseline or --direct: Docker engine address (default: $DOCKER_HOST or the local socket)")
	fs.StringVar(&cfg.ImageTag, "image-tag", "latest", "with --baseline or --direct: tag of the runtime images")
	fs.DurationVar(&cfg.Interval, "interval", 0, "a program every D per client (0: back to back); with --suite, the spaced case's interval (default 500ms)")
	fs.BoolVar(&cfg.Suite, "suite", false, "run the side-by-side suite: runbox and the plain container cycle, spaced, 1, 4 and 8 clients, in Python and C (or --lang, or --program)")
	fs.DurationVar(&cfg.Progress, "progress-interval", 2*time.Second, "how often a progress line is printed when stderr is not a terminal (a terminal's line is redrawn in place)")
	fs.Usage = func() { fmt.Fprint(stderr, benchHelp); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "runbox bench: "+format+"\n", a...)
		return exitUsage
	}
	langSet := false
	fs.Visit(func(f *flag.Flag) { langSet = langSet || f.Name == "lang" })
	switch {
	case fs.NArg() > 0:
		return fail("unexpected arguments %q (the program comes from --lang or --program)", fs.Args())
	case cfg.Clients < 1:
		return fail("--clients %d: want at least 1", cfg.Clients)
	case cfg.Jobs < 1:
		return fail("--jobs %d: want at least 1", cfg.Jobs)
	case cfg.Progress <= 0:
		return fail("--progress-interval %v: want a positive duration", cfg.Progress)
	case cfg.Pool < 0:
		return fail("--pool %d: want 0 or more", cfg.Pool)
	case cfg.Interval < 0:
		return fail("--interval %v: want 0 or a positive duration", cfg.Interval)
	}
	lang, ok := sandbox.Lookup(cfg.Lang)
	if !ok {
		return fail("unknown --lang %q (known: %s)", cfg.Lang, sandbox.LanguageNames())
	}
	var src []byte
	if cfg.Program != "" {
		b, err := os.ReadFile(cfg.Program)
		if err != nil {
			return fail("--program: %v", err)
		}
		src = b
		if !langSet {
			l, ok := sandbox.Detect(cfg.Program)
			if !ok {
				return fail("cannot tell the language of %s from its extension; use --lang (%s)", cfg.Program, sandbox.LanguageNames())
			}
			lang = l
		}
	} else {
		src = []byte(helloWorld(lang.Name))
	}
	b := &bench{cfg: cfg, stderr: stderr, tty: isTerminal(stderr)}
	b.setProgram(lang.Name, src)
	if cfg.Suite {
		langs := []string{lang.Name}
		if !langSet && cfg.Program == "" {
			langs = suiteLanguages
		}
		return b.runSuite(ctx, stdout, langs, src)
	}
	return b.run(ctx, stdout)
}

// setProgram makes b run src in lang, or lang's hello-world when src is nil.
func (b *bench) setProgram(lang string, src []byte) {
	b.want, b.what = "", lang+" "+b.cfg.Program
	if src == nil || b.cfg.Program == "" {
		src = []byte(helloWorld(lang))
		b.want, b.what = helloOutput, lang+" hello-world"
	}
	b.spec = sandbox.Spec{Language: lang, Files: []sandbox.File{{Content: src}}}
}

// bench is one `runbox bench` run.
type bench struct {
	cfg    benchConfig
	spec   sandbox.Spec
	what   string // the program, for the summary
	want   string // the expected stdout; empty: not checked
	stderr io.Writer
	tty    bool
	plain  sandbox.Runner // the plain cycle of --suite; nil: docker.Plain (tests set a Fake)
}

// benchReport is what --json prints: the run's summary, and with --baseline the
// baseline's and the ratios.
type benchReport struct {
	benchSummary
	Baseline *benchSummary `json:"baseline,omitempty"`
	Ratio    *benchRatio   `json:"ratio,omitempty"`
	// Engine is the local engine's description, when the bench used it (--baseline,
	// --direct): the figures depend on it (its storage driver above all).
	Engine *docker.EngineInfo `json:"engine,omitempty"`
}

// engineOf is the engine description of a runner that has one (docker.Runner,
// docker.Plain), else nil.
func engineOf(r any) *docker.EngineInfo {
	if e, ok := r.(interface{ Engine() docker.EngineInfo }); ok {
		info := e.Engine()
		return &info
	}
	return nil
}

// engineLine is the one-line form of e for the text reports; empty for nil.
func engineLine(e *docker.EngineInfo) string {
	if e == nil {
		return ""
	}
	var parts []string
	add := func(format, v string) {
		if v != "" {
			parts = append(parts, fmt.Sprintf(format, v))
		}
	}
	add("Docker %s", e.Version)
	add("storage driver %s", e.StorageDriver)
	add("runtime %s", e.Runtime)
	add("cgroup v%s", e.CgroupVersion)
	if e.CPUs > 0 {
		parts = append(parts, fmt.Sprintf("%d CPUs", e.CPUs))
	}
	add("%s", e.OS)
	add("kernel %s", e.Kernel)
	if len(parts) == 0 {
		return "engine: (it did not say)"
	}
	return "engine: " + strings.Join(parts, ", ")
}

// benchRatio compares the run with the baseline: p50 is run/baseline (below 1: the run
// answers faster), throughput is run/baseline (above 1: the run does more per second).
type benchRatio struct {
	P50        float64 `json:"p50"`
	Throughput float64 `json:"throughput"`
}

// benchSummary is the outcome of one load run.
type benchSummary struct {
	Target        string         `json:"target"`
	Program       string         `json:"program"`
	Language      string         `json:"language"`
	Clients       int            `json:"clients"`
	JobsPerClient int            `json:"jobs_per_client"`
	Planned       int            `json:"planned"`
	Answered      int            `json:"answered"`     // ran + busy + failed
	Ran           int            `json:"ran"`          // got a result, whatever its status
	Busy          int            `json:"busy"`         // refused busy: explicit rejections
	Failed        int            `json:"failed"`       // could not run for another reason (see errors)
	Interrupted   int            `json:"interrupted"`  // cut short by Ctrl-C
	WrongOutput   int            `json:"wrong_output"` // ran, but printed something else than the hello-world's line
	WallMS        float64        `json:"wall_ms"`
	Throughput    float64        `json:"throughput"` // jobs that ran per second of wall time
	LatencyMS     latencyMS      `json:"latency_ms"` // submit to result, of the jobs that ran
	Statuses      map[string]int `json:"statuses"`
	Errors        map[string]int `json:"errors"` // by error code, busy excluded
	Nodes         map[string]int `json:"nodes"`
	Stopped       bool           `json:"stopped"`               // the run was interrupted
	IntervalMS    float64        `json:"interval_ms,omitempty"` // each client's pace (0: back to back)
	// Traced counts the jobs whose result carried a trace, Pooled those whose container
	// came warm from the pool; TraceMS summarises the traces phase by phase, with "other"
	// the latency the trace does not account for.
	Traced  int                  `json:"traced"`
	Pooled  int                  `json:"pooled"`
	TraceMS map[string]latencyMS `json:"trace_ms,omitempty"`
}

type latencyMS struct {
	P50  float64 `json:"p50"`
	P95  float64 `json:"p95"`
	P99  float64 `json:"p99"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

func (b *bench) run(ctx context.Context, stdout io.Writer) int {
	var plain *docker.Plain
	if b.cfg.Baseline { // before the load, so that a missing engine fails at once
		pcfg := b.dockerConfig()
		pcfg.Languages = []string{b.spec.Language}
		p, err := docker.NewPlain(ctx, pcfg)
		if err != nil {
			fmt.Fprintf(b.stderr, "runbox bench: --baseline needs the local Docker engine: %v\n", err)
			return exitUnavailable
		}
		defer p.Close()
		plain = p
	}

	var runners []sandbox.Runner
	var target string
	if b.cfg.Direct {
		dcfg := b.dockerConfig() // every language, as the master: their pools share the engine
		dcfg.PoolSize = b.cfg.Pool
		r, err := docker.New(ctx, dcfg)
		if err != nil {
			fmt.Fprintf(b.stderr, "runbox bench: --direct needs the local Docker engine: %v\n", err)
			return exitUnavailable
		}
		defer r.Close()
		if b.cfg.Pool > 0 {
			select { // the master's pool is full when a bench starts: let this one fill too
			case <-time.After(3 * time.Second):
			case <-ctx.Done():
			}
		}
		for range b.cfg.Clients {
			runners = append(runners, r)
		}
		target = fmt.Sprintf("in-process sandbox (Docker, warm pool %d)", b.cfg.Pool)
	} else {
		clients, err := b.dial(ctx)
		if err != nil {
			fmt.Fprintf(b.stderr, "runbox bench: %v\n", explain(err))
			return exitCodeOf(err)
		}
		defer func() {
			for _, c := range clients {
				c.Close()
			}
		}()
		for _, c := range clients {
			runners = append(runners, c.Runner())
		}
		target = "server " + b.cfg.Server
	}

	rep := benchReport{benchSummary: b.load(ctx, "runbox bench", target, runners)}
	if b.cfg.Direct && len(runners) > 0 {
		rep.Engine = engineOf(runners[0])
	}
	if plain != nil {
		rep.Engine = engineOf(plain)
	}
	if plain != nil && !rep.Stopped {
		runners = runners[:0]
		for range b.cfg.Clients {
			runners = append(runners, plain)
		}
		base := b.load(ctx, "baseline", "plain container cycle (create, attach, start, wait, remove)", runners)
		rep.Baseline = &base
		rep.Ratio = ratioOf(rep.benchSummary, base)
	}

	if b.cfg.JSON {
		enc := json.NewEncoder(stdout)
		enc.Encode(rep)
	} else {
		printBench(stdout, rep)
	}
	switch {
	case rep.Stopped || (rep.Baseline != nil && rep.Baseline.Stopped):
		return 130
	case rep.Failed > 0 || (rep.Baseline != nil && rep.Baseline.Failed > 0):
		return 1
	}
	return 0
}

// ratioOf compares run with base; nil when base has nothing to compare with.
func ratioOf(run, base benchSummary) *benchRatio {
	if base.LatencyMS.P50 <= 0 || base.Throughput <= 0 {
		return nil
	}
	return &benchRatio{P50: run.LatencyMS.P50 / base.LatencyMS.P50, Throughput: run.Throughput / base.Throughput}
}

func (b *bench) dockerConfig() docker.Config {
	cfg := docker.DefaultConfig()
	cfg.Host = b.cfg.DockerHost
	cfg.ImageTag = b.cfg.ImageTag
	cfg.Owner = fmt.Sprintf("runbox-bench-%d", os.Getpid()) // its own: the reaper leaves the master's alone
	return cfg
}

// dial connects the clients, a few at a time; the first failure closes them all.
func (b *bench) dial(ctx context.Context) ([]*transport.Client, error) {
	clients := make([]*transport.Client, b.cfg.Clients)
	errs := make([]error, b.cfg.Clients)
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			cfg, err := b.cfg.config()
			if err != nil {
				errs[i] = err
				return
			}
			cfg.Name = fmt.Sprintf("runbox-bench-%d", i+1)
			cfg.Reconnect = 10 * time.Second
			clients[i], errs[i] = transport.Dial(ctx, b.cfg.Server, cfg)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		for _, c := range clients {
			if c != nil {
				c.Close()
			}
		}
		for _, e := range errs { // one clear line: the first failure
			if e != nil {
				return nil, e
			}
		}
	}
	return clients, nil
}

// tally collects the outcomes of a load run.
type tally struct {
	mu          sync.Mutex
	lat         []time.Duration
	statuses    map[string]int
	errors      map[string]int
	nodes       map[string]int
	busy        int
	failed      int
	interrupted int
	wrong       int
	traced      int
	pooled      int
	phases      map[string][]time.Duration // of the traced jobs, by phase
}

func (t *tally) add(res sandbox.Result, err error, d time.Duration, want string, stopped bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case err == nil:
		t.lat = append(t.lat, d)
		t.statuses[string(res.Status)]++
		node := res.Node
		if node == "" {
			node = "local"
		}
		t.nodes[node]++
		if want != "" && string(res.Stdout) != want {
			t.wrong++
		}
		t.addTrace(res.Trace, d)
	case stopped && (errors.Is(err, context.Canceled) || errors.Is(err, scheduler.ErrCancelled)):
		t.interrupted++
	case errors.Is(err, scheduler.ErrBusy):
		t.busy++
	default:
		t.failed++
		t.errors[transport.Code(err)]++
	}
}

// otherPhase names, in trace_ms, the latency that a job's trace does not account for.
const otherPhase = "other"

// addTrace records the phases of a job's trace and what of its latency d they leave;
// t.mu is held.
func (t *tally) addTrace(tr *sandbox.Trace, d time.Duration) {
	if tr == nil {
		return
	}
	if t.phases == nil {
		t.phases = map[string][]time.Duration{}
	}
	t.traced++
	if tr.Pooled {
		t.pooled++
	}
	var sum time.Duration
	for _, p := range tr.Phases() {
		t.phases[p.Name] = append(t.phases[p.Name], p.Duration)
		sum += p.Duration
	}
	t.phases[otherPhase] = append(t.phases[otherPhase], max(d-sum, 0))
}

// traceSummary is trace_ms: the percentiles of each phase, over the jobs that had it.
func traceSummary(phases map[string][]time.Duration) map[string]latencyMS {
	if len(phases) == 0 {
		return nil
	}
	out := make(map[string]latencyMS, len(phases))
	for name, ds := range phases {
		out[name] = latencies(ds)
	}
	return out
}

func (t *tally) counts() (done, busy, failed int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.lat) + t.busy + t.failed, t.busy, t.failed
}

// load runs Clients workers, worker i on runners[i], each running Jobs programs in turn.
func (b *bench) load(ctx context.Context, label, target string, runners []sandbox.Runner) benchSummary {
	t := &tally{statuses: map[string]int{}, errors: map[string]int{}, nodes: map[string]int{}}
	total := b.cfg.Clients * b.cfg.Jobs
	start := time.Now()
	stopProgress := b.progress(label, total, start, t)
	var wg sync.WaitGroup
	for _, r := range runners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var next time.Time // the pace of --interval
			for range b.cfg.Jobs {
				if !sleepUntil(ctx, next) {
					return
				}
				t0 := time.Now()
				if b.cfg.Interval > 0 {
					next = t0.Add(b.cfg.Interval)
				}
				res, err := r.Run(ctx, b.spec, nil)
				t.add(res, err, time.Since(t0), b.want, ctx.Err() != nil)
			}
		}()
	}
	wg.Wait()
	wall := time.Since(start)
	stopProgress()

	s := benchSummary{Target: target, Program: b.what, Language: b.spec.Language, Clients: b.cfg.Clients,
		JobsPerClient: b.cfg.Jobs, Planned: total, Ran: len(t.lat), Busy: t.busy, Failed: t.failed,
		Interrupted: t.interrupted, WrongOutput: t.wrong, WallMS: ms(wall), Statuses: t.statuses,
		Errors: t.errors, Nodes: t.nodes, Stopped: ctx.Err() != nil, IntervalMS: ms(b.cfg.Interval),
		Traced: t.traced, Pooled: t.pooled, TraceMS: traceSummary(t.phases)}
	s.Answered = s.Ran + s.Busy + s.Failed
	if wall > 0 {
		s.Throughput = float64(s.Ran) / wall.Seconds()
	}
	s.LatencyMS = latencies(t.lat)
	return s
}

// sleepUntil waits until t (a zero t: not at all); false when ctx ended first.
func sleepUntil(ctx context.Context, t time.Time) bool {
	if d := time.Until(t); d > 0 {
		timer := time.NewTimer(d)
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-ctx.Done():
		}
	}
	return ctx.Err() == nil
}

// progress prints the progress line until the returned function is called: redrawn in
// place on a terminal, a plain line every Progress otherwise.
func (b *bench) progress(label string, total int, start time.Time, t *tally) (stop func()) {
	line := func() string {
		done, busy, failed := t.counts()
		el := time.Since(start)
		rate := 0.0
		if el > 0 {
			rate = float64(done) / el.Seconds()
		}
		return fmt.Sprintf("%s: %d/%d jobs (%.0f%%)  %.1f jobs/s  busy %d  errors %d  %v",
			label, done, total, 100*float64(done)/float64(total), rate, busy, failed, el.Round(100*time.Millisecond))
	}
	every := b.cfg.Progress
	if b.tty {
		every = 100 * time.Millisecond
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-done:
				if b.tty {
					fmt.Fprintf(b.stderr, "\r%s\x1b[K\n", line())
				}
				return
			case <-tick.C:
				if b.tty {
					fmt.Fprintf(b.stderr, "\r%s\x1b[K", line())
				} else {
					fmt.Fprintln(b.stderr, line())
				}
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func ms(d time.Duration) float64 { return math.Round(float64(d.Microseconds())) / 1000 }

// latencies returns the percentiles (nearest rank) of ds.
func latencies(ds []time.Duration) latencyMS {
	if len(ds) == 0 {
		return latencyMS{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := func(p float64) time.Duration { return s[max(int(math.Ceil(p*float64(len(s))))-1, 0)] }
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	return latencyMS{P50: ms(rank(0.50)), P95: ms(rank(0.95)), P99: ms(rank(0.99)), Max: ms(s[len(s)-1]), Mean: ms(sum / time.Duration(len(s)))}
}

func printBench(w io.Writer, rep benchReport) {
	if l := engineLine(rep.Engine); l != "" {
		fmt.Fprintln(w, l)
	}
	printSummary(w, "runbox bench", rep.benchSummary)
	if rep.Baseline != nil {
		fmt.Fprintln(w)
		printSummary(w, "baseline", *rep.Baseline)
	}
	if rep.Ratio != nil {
		fmt.Fprintf(w, "\nratio runbox/baseline: p50 %.2fx, throughput %.2fx\n", rep.Ratio.P50, rep.Ratio.Throughput)
	}
}

// plural is "1 job", "2 jobs".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

func printSummary(w io.Writer, label string, s benchSummary) {
	stopped := ""
	if s.Stopped {
		stopped = " (interrupted: partial results)"
	}
	fmt.Fprintf(w, "%s: %s x %s, %s, %s%s\n", label, plural(s.Clients, "client"), plural(s.JobsPerClient, "job"), s.Program, s.Target, stopped)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	jobs := fmt.Sprintf("%d planned, %d answered: %d ran, %d busy (explicit rejections), %d failed", s.Planned, s.Answered, s.Ran, s.Busy, s.Failed)
	if s.Interrupted > 0 {
		jobs += fmt.Sprintf(", %d interrupted", s.Interrupted)
	}
	fmt.Fprintf(tw, "  jobs\t%s\n", jobs)
	fmt.Fprintf(tw, "  wall time\t%v\n", time.Duration(s.WallMS*float64(time.Millisecond)).Round(time.Millisecond))
	fmt.Fprintf(tw, "  throughput\t%.1f jobs/s\n", s.Throughput)
	l := s.LatencyMS
	fmt.Fprintf(tw, "  latency\tp50 %s  p95 %s  p99 %s  max %s  mean %s\n", fmtMS(l.P50), fmtMS(l.P95), fmtMS(l.P99), fmtMS(l.Max), fmtMS(l.Mean))
	fmt.Fprintf(tw, "  statuses\t%s\n", counts(s.Statuses))
	errs := counts(s.Errors)
	if s.Busy > 0 {
		errs = fmt.Sprintf("busy %d (not failures), others: %s", s.Busy, errs)
	}
	fmt.Fprintf(tw, "  errors\t%s\n", errs)
	if s.WrongOutput > 0 {
		fmt.Fprintf(tw, "  wrong output\t%d jobs printed something else than %q\n", s.WrongOutput, helloOutput)
	}
	fmt.Fprintf(tw, "  nodes\t%s\n", counts(s.Nodes))
	if s.Traced > 0 {
		fmt.Fprintf(tw, "  trace p50\t%s (%d traced, %d from the pool)\n", tracePhases(s.TraceMS), s.Traced, s.Pooled)
	}
	tw.Flush()
}

// tracePhases formats the p50 of each phase of trace_ms, in the order they happen.
func tracePhases(tr map[string]latencyMS) string {
	var parts []string
	for _, name := range tracePhaseOrder {
		if l, ok := tr[name]; ok {
			parts = append(parts, name+" "+fmtMS(l.P50))
		}
	}
	return strings.Join(parts, ", ")
}

// tracePhaseOrder is sandbox.Trace's phases in the order they happen, then otherPhase.
var tracePhaseOrder = append(sandbox.TracePhaseNames(), otherPhase)

func fmtMS(v float64) string {
	if v >= 1000 {
		return fmt.Sprintf("%.2fs", v/1000)
	}
	return fmt.Sprintf("%.1fms", v)
}

// counts formats a count map as "a 3, b 1", largest first.
func counts(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		if m[a] != m[b] {
			return m[b] - m[a]
		}
		return strings.Compare(a, b)
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

// The suite of issue 15: runbox and the plain container cycle side by side.

// suiteLanguages are the languages of --suite without --lang or --program.
var suiteLanguages = []string{"python", "c"}

// suiteCase is one load of the suite.
type suiteCase struct {
	Name     string
	Clients  int
	Interval time.Duration // 0: back to back
}

// suiteCases are the suite's loads; spaced is the interval of the spaced case.
func suiteCases(spaced time.Duration) []suiteCase {
	return []suiteCase{
		{"spaced", 1, spaced},
		{"1 client", 1, 0},
		{"4 clients", 4, 0},
		{"8 clients", 8, 0},
	}
}

// suiteRow is one case in one language: runbox, the plain cycle, their ratios.
type suiteRow struct {
	Case     string        `json:"case"`
	Language string        `json:"language"`
	Runbox   benchSummary  `json:"runbox"`
	Plain    *benchSummary `json:"plain,omitempty"`
	Ratio    *benchRatio   `json:"ratio,omitempty"`
}

// suiteReport is what --suite --json prints.
type suiteReport struct {
	Target string     `json:"target"`
	Cases  []suiteRow `json:"cases"`
	// Engine is the local engine's, which runs the plain cycle (and runbox too with
	// --direct, or with a server on this machine).
	Engine *docker.EngineInfo `json:"engine,omitempty"`
	// BackToBack is, per language, runbox's p50 with one client back to back over its
	// spaced p50 (issue 15's goal: at most 1.5).
	BackToBack map[string]float64 `json:"back_to_back_over_spaced,omitempty"`
	Stopped    bool               `json:"stopped"`
}

// backToBack computes suiteReport.BackToBack from the rows.
func backToBack(rows []suiteRow) map[string]float64 {
	spaced, serial := map[string]float64{}, map[string]float64{}
	for _, r := range rows {
		switch r.Case {
		case "spaced":
			spaced[r.Language] = r.Runbox.LatencyMS.P50
		case "1 client":
			serial[r.Language] = r.Runbox.LatencyMS.P50
		}
	}
	out := map[string]float64{}
	for lang, sp := range spaced {
		if se, ok := serial[lang]; ok && sp > 0 && se > 0 {
			out[lang] = se / sp
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// runSuite runs every case of the suite in each of langs (src, when set, is the
// --program of the only language).
func (b *bench) runSuite(ctx context.Context, stdout io.Writer, langs []string, src []byte) int {
	plain := b.plain
	if plain == nil {
		pcfg := b.dockerConfig()
		pcfg.Languages = langs
		p, err := docker.NewPlain(ctx, pcfg)
		if err != nil {
			fmt.Fprintf(b.stderr, "runbox bench: --suite needs the local Docker engine for the plain cycle: %v\n", err)
			return exitUnavailable
		}
		defer p.Close()
		plain = p
	}

	// runners returns n runners of runbox for one case, and what closes them.
	var runners func(cb *bench) ([]sandbox.Runner, func(), error)
	target := "server " + b.cfg.Server
	if b.cfg.Direct {
		dcfg := b.dockerConfig()
		dcfg.PoolSize = b.cfg.Pool
		r, err := docker.New(ctx, dcfg)
		if err != nil {
			fmt.Fprintf(b.stderr, "runbox bench: --direct needs the local Docker engine: %v\n", err)
			return exitUnavailable
		}
		defer r.Close()
		sleepUntil(ctx, time.Now().Add(3*time.Second)) // let the pool fill, as a master's has
		target = fmt.Sprintf("in-process sandbox (Docker, warm pool %d)", b.cfg.Pool)
		runners = func(cb *bench) ([]sandbox.Runner, func(), error) {
			return slices.Repeat([]sandbox.Runner{r}, cb.cfg.Clients), func() {}, nil
		}
	} else {
		runners = func(cb *bench) ([]sandbox.Runner, func(), error) {
			clients, err := cb.dial(ctx)
			if err != nil {
				return nil, nil, err
			}
			var rs []sandbox.Runner
			for _, c := range clients {
				rs = append(rs, c.Runner())
			}
			return rs, func() {
				for _, c := range clients {
					c.Close()
				}
			}, nil
		}
	}

	spaced := b.cfg.Interval
	if spaced == 0 {
		spaced = 500 * time.Millisecond
	}
	rep := suiteReport{Target: target, Engine: engineOf(plain)}
	code := 0
run:
	for _, lang := range langs {
		for _, c := range suiteCases(spaced) {
			cb := *b
			cb.setProgram(lang, src)
			cb.cfg.Clients, cb.cfg.Interval = c.Clients, c.Interval
			rs, closeRunners, err := runners(&cb)
			if err != nil {
				fmt.Fprintf(b.stderr, "runbox bench: %v\n", explain(err))
				return exitCodeOf(err)
			}
			row := suiteRow{Case: c.Name, Language: lang}
			row.Runbox = cb.load(ctx, lang+" "+c.Name+" runbox", target, rs)
			closeRunners()
			if ctx.Err() == nil {
				base := cb.load(ctx, lang+" "+c.Name+" plain", "plain container cycle (create, attach, start, wait, remove)",
					slices.Repeat([]sandbox.Runner{plain}, c.Clients))
				row.Plain = &base
				row.Ratio = ratioOf(row.Runbox, base)
			}
			rep.Cases = append(rep.Cases, row)
			if row.Runbox.Failed > 0 || (row.Plain != nil && row.Plain.Failed > 0) {
				code = 1
			}
			if ctx.Err() != nil {
				rep.Stopped = true
				code = 130
				break run
			}
		}
	}
	rep.BackToBack = backToBack(rep.Cases)
	if b.cfg.JSON {
		json.NewEncoder(stdout).Encode(rep)
	} else {
		printSuite(stdout, rep)
	}
	return code
}

// caseLabel names a row in the text table.
func caseLabel(r suiteRow) string {
	if r.Runbox.IntervalMS > 0 {
		return fmt.Sprintf("%s (every %v)", r.Case, time.Duration(r.Runbox.IntervalMS*float64(time.Millisecond)))
	}
	return r.Case
}

func printSuite(w io.Writer, rep suiteReport) {
	stopped := ""
	if rep.Stopped {
		stopped = " (interrupted: partial results)"
	}
	fmt.Fprintf(w, "runbox bench --suite: runbox on %s, against the plain container cycle%s\n", rep.Target, stopped)
	if l := engineLine(rep.Engine); l != "" {
		fmt.Fprintf(w, "%s (the plain cycle's)\n", l)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "case\tlanguage\tjobs\trunbox p50\tp95\tjobs/s\tplain p50\tp95\tjobs/s\tp50 ratio\tthroughput ratio\tfailed (runbox/plain)")
	for _, r := range rep.Cases {
		rb := r.Runbox
		line := fmt.Sprintf("%s\t%s\t%d\t%s\t%s\t%.2f", caseLabel(r), r.Language, rb.Planned, fmtMS(rb.LatencyMS.P50), fmtMS(rb.LatencyMS.P95), rb.Throughput)
		if p := r.Plain; p != nil {
			line += fmt.Sprintf("\t%s\t%s\t%.2f", fmtMS(p.LatencyMS.P50), fmtMS(p.LatencyMS.P95), p.Throughput)
		} else {
			line += "\t-\t-\t-"
		}
		if r.Ratio != nil {
			line += fmt.Sprintf("\t%.2fx\t%.2fx", r.Ratio.P50, r.Ratio.Throughput)
		} else {
			line += "\t-\t-"
		}
		plainFailed := "-"
		if r.Plain != nil {
			plainFailed = fmt.Sprint(r.Plain.Failed + r.Plain.Busy)
		}
		line += fmt.Sprintf("\t%d/%s", rb.Failed+rb.Busy, plainFailed)
		fmt.Fprintln(tw, line)
	}
	tw.Flush()
	langs := slices.Sorted(maps.Keys(rep.BackToBack))
	for _, lang := range langs {
		fmt.Fprintf(w, "%s: one client back to back, p50 %.2fx the spaced p50\n", lang, rep.BackToBack[lang])
	}
	var traced bytes.Buffer
	tw = tabwriter.NewWriter(&traced, 0, 4, 2, ' ', 0)
	for _, r := range rep.Cases {
		for _, side := range []struct {
			name string
			s    *benchSummary
		}{{"runbox", &r.Runbox}, {"plain", r.Plain}} {
			if side.s != nil && side.s.Traced > 0 {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t(%d traced, %d from the pool)\n", caseLabel(r), r.Language, side.name,
					tracePhases(side.s.TraceMS), side.s.Traced, side.s.Pooled)
			}
		}
	}
	tw.Flush()
	if traced.Len() > 0 {
		fmt.Fprintln(w, "\nwhere the time went (p50 per phase, from the results' traces; other: the latency the trace leaves)")
		w.Write(traced.Bytes())
	}
}

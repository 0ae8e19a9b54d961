package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/docker/go-units"

	"runbox/sandbox"
	"runbox/scheduler"
	"runbox/transport"
)

const defaultServer = "127.0.0.1:7700"

// clientFlags are the connection flags shared by submit, status and bench.
type clientFlags struct {
	Server                 string
	Token                  string
	TLSCA, TLSCert, TLSKey string
}

func (c *clientFlags) register(fs *flag.FlagSet) {
	def := os.Getenv("RUNBOX_SERVER")
	if def == "" {
		def = defaultServer
	}
	fs.StringVar(&c.Server, "server", def, "server address HOST:PORT (default from $RUNBOX_SERVER)")
	fs.StringVar(&c.Token, "token", os.Getenv("RUNBOX_TOKEN"), "bearer token for a secured cluster (default from $RUNBOX_TOKEN)")
	fs.StringVar(&c.TLSCA, "tls-ca", os.Getenv("RUNBOX_TLS_CA"), "CA certificate of a TLS cluster: speak TLS and verify the master (default from $RUNBOX_TLS_CA)")
	fs.StringVar(&c.TLSCert, "tls-cert", os.Getenv("RUNBOX_TLS_CERT"), "client certificate to present, with --tls-key (optional; default from $RUNBOX_TLS_CERT)")
	fs.StringVar(&c.TLSKey, "tls-key", os.Getenv("RUNBOX_TLS_KEY"), "key of --tls-cert (default from $RUNBOX_TLS_KEY)")
}

// config returns the connection settings; the error is a bad TLS flag or file.
func (c *clientFlags) config() (transport.ClientConfig, error) {
	cfg := transport.DefaultClientConfig()
	cfg.Token = c.Token
	cfg.Name = "runbox-cli"
	t, err := clientTLS(c.TLSCA, c.TLSCert, c.TLSKey)
	cfg.TLS = t
	return cfg, err
}

// submitConfig is `runbox submit`'s flags.
type submitConfig struct {
	clientFlags
	Lang        string
	Stdin       string
	TimeLimit   time.Duration
	CompileTime time.Duration
	MemoryLimit string
	JSON        bool
	Verbose     bool
	Tests       string // directory of NAME.in/NAME.out test cases
	Compare     string
}

const submitHelp = `Usage: runbox submit [flags] FILE...

Sends each FILE as a program to the server, waits for it and prints its result. The
language is guessed from the extension (.py, .c, .cpp/.cc) unless --lang says otherwise.

Without --json, the program's output streams to stdout and stderr as it runs (compiler
errors go to stderr) and runbox exits with the program's exit code. With --json, one JSON
object per FILE and line: id, file, language, status, exit_code, stdout, stderr,
compile_output, time_ms, memory_bytes, node, attempts, and error {code, message} when the
program could not run.

Statuses: ok, compile_error, runtime_error, time_limit, memory_limit, output_limit.

With --tests DIR, each FILE is judged: compiled once, then run once per test case of
DIR, each in a fresh sandbox, its output compared with the expected one (--compare).
A case is NAME.out (the expected output) with NAME.in (its input; empty when missing),
in NAME order (numbers by value: 2 before 10). runbox prints a table per FILE, case,
verdict, time, memory and the first difference of a wrong answer, then the verdict:
accepted when every case passed, else the first failing case's (wrong_answer,
runtime_error, time_limit, memory_limit, output_limit), or compile_error. With --json the
object also has verdict and cases (name, verdict, exit_code, time_ms, cpu_time_ms,
memory_bytes, message, diff, stderr).

Exit codes:
  0-255  the program's own exit code (the last failing one with several FILEs);
         a program killed at a limit exits 128+signal, e.g. 137
  0, 1   with --tests: 0 when every case of every FILE was accepted, else 1
  64     usage error (bad flags, unreadable FILE)
  65     the request was refused: invalid_request, unknown_language, too_large,
         or not_found (the job is unknown to the server)
  69     cannot reach the server (unreachable), its sandbox is unavailable, or it is
         shutting down (shutting_down)
  70     internal error, the job's node crashed on every attempt (crashed_node), the
         job was cancelled on the server (cancelled), or a protocol error
  75     busy: the server is full; try another server (--server) or retry later
  77     unauthorized, rate_limited or quota
  130    interrupted (Ctrl-C): the job is cancelled on the server

Flags:
`

func runSubmit(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("runbox submit", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg submitConfig
	cfg.register(fs)
	fs.StringVar(&cfg.Lang, "lang", "", "language: "+sandbox.LanguageNames()+" (default: from the file extension)")
	fs.StringVar(&cfg.Stdin, "stdin", "", "file given to the program as standard input; - streams this terminal's input live")
	fs.DurationVar(&cfg.TimeLimit, "time-limit", 0, "run time limit, e.g. 2s or 500ms (default: the server's)")
	fs.DurationVar(&cfg.CompileTime, "compile-time", 0, "compile time limit of C, C++, Go and Java, e.g. 30s (default: the server's)")
	fs.StringVar(&cfg.MemoryLimit, "memory-limit", "", "memory limit, e.g. 128MiB (default: the server's)")
	fs.BoolVar(&cfg.JSON, "json", false, "print one JSON object per file instead of the program's output")
	fs.BoolVar(&cfg.Verbose, "v", false, "print the job id, node, time and memory on stderr")
	fs.StringVar(&cfg.Tests, "tests", "", "judge each FILE against the test cases of this directory: NAME.in (input, optional) and NAME.out (expected output)")
	fs.StringVar(&cfg.Compare, "compare", "trim", "with --tests, how outputs compare: exact (byte for byte), trim (trailing blanks of each line and trailing empty lines ignored) or tokens (whitespace-separated tokens)")
	fs.Usage = func() { fmt.Fprint(stderr, submitHelp); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "runbox submit: "+format+"\n", a...)
		return exitUsage
	}
	if fs.NArg() == 0 {
		return fail("no program file given (runbox submit FILE...)")
	}
	var limits sandbox.Limits
	limits.RunTime = cfg.TimeLimit
	limits.CompileTime = cfg.CompileTime
	if cfg.MemoryLimit != "" {
		n, err := units.RAMInBytes(cfg.MemoryLimit)
		if err != nil || n <= 0 {
			return fail("bad --memory-limit %q: use e.g. 128MiB, 1GiB or plain bytes", cfg.MemoryLimit)
		}
		limits.Memory = n
	}
	if cfg.Lang != "" {
		if _, ok := sandbox.Lookup(cfg.Lang); !ok {
			return fail("unknown --lang %q (known: %s)", cfg.Lang, sandbox.LanguageNames())
		}
	}
	var stdinData []byte
	live := cfg.Stdin == "-"
	if cfg.Stdin != "" && !live {
		b, err := os.ReadFile(cfg.Stdin)
		if err != nil {
			return fail("--stdin: %v", err)
		}
		stdinData = b
	}
	if live && fs.NArg() > 1 {
		return fail("--stdin - works with one FILE only")
	}
	var tests []sandbox.TestCase
	if !sandbox.Compare(cfg.Compare).Valid() || cfg.Compare == "" {
		return fail("bad --compare %q: exact, trim or tokens", cfg.Compare)
	}
	if cfg.Tests != "" {
		if cfg.Stdin != "" {
			return fail("--stdin and --tests do not go together: each test case has its input")
		}
		t, err := loadTests(cfg.Tests)
		if err != nil {
			return fail("%v", err)
		}
		tests = t
	}
	specs := make([]sandbox.Spec, fs.NArg())
	for i, path := range fs.Args() {
		src, err := os.ReadFile(path)
		if err != nil {
			return fail("%v", err)
		}
		lang := cfg.Lang
		if lang == "" {
			l, ok := sandbox.Detect(path)
			if !ok {
				return fail("cannot tell the language of %s from its extension; use --lang (%s)", path, sandbox.LanguageNames())
			}
			lang = l.Name
		}
		specs[i] = sandbox.Spec{Language: lang, Files: []sandbox.File{{Content: src}}, Stdin: stdinData, Limits: limits}
		if tests != nil {
			specs[i].Tests, specs[i].Compare = tests, sandbox.Compare(cfg.Compare)
		}
	}

	ccfg, err := cfg.config()
	if err != nil {
		return fail("%v", err)
	}
	client, err := transport.Dial(ctx, cfg.Server, ccfg)
	if err != nil {
		if cfg.JSON { // every FILE still gets its line, carrying the error
			enc := json.NewEncoder(stdout)
			for i, path := range fs.Args() {
				enc.Encode(toJSON("", path, specs[i], sandbox.Result{}, err))
			}
		}
		fmt.Fprintf(stderr, "runbox submit: %v\n", explain(err))
		return exitCodeOf(err)
	}
	defer client.Close()

	if cfg.JSON {
		return submitJSON(ctx, client, fs.Args(), specs, stdout)
	}
	code := 0
	for i, spec := range specs {
		var c int
		if tests != nil {
			c = submitJudged(ctx, client, fs.Arg(i), spec, &cfg, stdout, stderr)
		} else {
			c = submitText(ctx, client, fs.Arg(i), spec, live, &cfg, stdin, stdout, stderr)
		}
		if c != 0 {
			code = c
		}
	}
	return code
}

// submitText runs one program with its output streaming to stdout and stderr.
func submitText(ctx context.Context, client *transport.Client, file string, spec sandbox.Spec, live bool, cfg *submitConfig, stdin io.Reader, stdout, stderr io.Writer) int {
	var id string
	opts := transport.RunOptions{Handler: textHandler(file, &id, cfg.Verbose, stderr, func(c sandbox.Chunk) {
		if c.Stream == sandbox.Stdout {
			stdout.Write(c.Data)
		} else {
			stderr.Write(c.Data)
		}
	})}
	if live {
		ch := make(chan []byte)
		opts.Stdin = ch
		go pumpStdin(ctx, stdin, ch)
	}
	res, err := client.Run(ctx, spec, opts)
	if err != nil {
		fmt.Fprintf(stderr, "runbox submit: %s: %v\n", file, explain(err))
		return exitCodeOf(err)
	}
	switch res.Status {
	case sandbox.StatusOK, sandbox.StatusRuntimeError:
	case sandbox.StatusCompileError:
		fmt.Fprintf(stderr, "runbox: %s: compilation failed%s\n", file, suffix(res.Message))
	default:
		fmt.Fprintf(stderr, "runbox: %s: %s%s\n", file, strings.ReplaceAll(string(res.Status), "_", " "), suffix(res.Message))
	}
	if cfg.Verbose {
		fmt.Fprintf(stderr, "runbox: %s: job %s on %s: %s, exit %d, %v, %s\n", file, id, res.Node, res.Status, res.ExitCode,
			res.Time.Round(time.Millisecond), sandbox.FormatSize(res.Memory))
	}
	if res.ExitCode < 0 {
		return 1
	}
	return res.ExitCode
}

func suffix(msg string) string {
	if msg == "" {
		return ""
	}
	return ": " + msg
}

// pumpStdin forwards lines of r to ch until EOF or ctx ends.
func pumpStdin(ctx context.Context, r io.Reader, ch chan<- []byte) {
	defer close(ch)
	br := bufio.NewReader(r)
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			select {
			case ch <- line:
			case <-ctx.Done():
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// jsonResult is one line of `runbox submit --json`.
type jsonResult struct {
	ID            string     `json:"id"`
	File          string     `json:"file"`
	Language      string     `json:"language"`
	Status        string     `json:"status,omitempty"`
	ExitCode      int        `json:"exit_code"`
	Signal        string     `json:"signal,omitempty"`
	Stdout        string     `json:"stdout"`
	Stderr        string     `json:"stderr"`
	CompileOutput string     `json:"compile_output"`
	TimeMS        float64    `json:"time_ms"`
	CPUTimeMS     float64    `json:"cpu_time_ms"`
	MemoryBytes   int64      `json:"memory_bytes"`
	Message       string     `json:"message,omitempty"`
	Node          string     `json:"node"`
	Attempts      int        `json:"attempts"`
	Verdict       string     `json:"verdict,omitempty"` // with --tests
	Cases         []jsonCase `json:"cases,omitempty"`
	Error         *jsonError `json:"error,omitempty"`
}

type jsonError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func toJSON(id, file string, spec sandbox.Spec, res sandbox.Result, err error) jsonResult {
	lang, _ := sandbox.Lookup(spec.Language)
	out := jsonResult{ID: id, File: file, Language: lang.Name}
	if err != nil {
		out.ExitCode = -1
		out.Error = &jsonError{Code: transport.Code(err), Message: explain(err)}
		return out
	}
	out.Status = string(res.Status)
	out.ExitCode, out.Signal, out.Message = res.ExitCode, res.Signal, res.Message
	out.Stdout, out.Stderr, out.CompileOutput = string(res.Stdout), string(res.Stderr), string(res.CompileOutput)
	out.TimeMS = float64(res.Time.Microseconds()) / 1000
	out.CPUTimeMS = float64(res.CPUTime.Microseconds()) / 1000
	out.MemoryBytes, out.Node, out.Attempts = res.Memory, res.Node, res.Attempts
	out.Verdict, out.Cases = string(res.Verdict), casesToJSON(res.Cases)
	return out
}

// submitJSON runs the programs concurrently and prints their results in FILE order.
func submitJSON(ctx context.Context, client *transport.Client, files []string, specs []sandbox.Spec, stdout io.Writer) int {
	results := make([]jsonResult, len(specs))
	codes := make([]int, len(specs))
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i := range specs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			var id string
			res, err := client.Run(ctx, specs[i], transport.RunOptions{Handler: transport.Handler{Accepted: func(s string) { id = s }}})
			results[i] = toJSON(id, files[i], specs[i], res, err)
			switch {
			case len(specs[i].Tests) > 0:
				codes[i] = judgedExitCode(res, err)
			case err != nil:
				codes[i] = exitCodeOf(err)
			case res.ExitCode < 0:
				codes[i] = 1
			default:
				codes[i] = res.ExitCode
			}
		}()
	}
	wg.Wait()
	enc := json.NewEncoder(stdout)
	code := 0
	for i, r := range results {
		enc.Encode(r)
		if codes[i] != 0 {
			code = codes[i]
		}
	}
	return code
}

// exitCodeOf maps an error to the documented exit codes.
func exitCodeOf(err error) int {
	switch transport.Code(err) {
	case "busy":
		return exitBusy
	case "invalid_request", "unknown_language", "too_large", "not_found":
		return exitInvalid
	case "unauthorized", "rate_limited", "quota":
		return exitUnauthorized
	case "unavailable", "shutting_down":
		return exitUnavailable
	}
	if errors.Is(err, transport.ErrConnect) {
		return exitUnavailable
	}
	if errors.Is(err, context.Canceled) {
		return 130
	}
	return exitInternal
}

// explain turns an error into one clear line for a person.
func explain(err error) string {
	switch {
	case errors.Is(err, scheduler.ErrBusy):
		return fmt.Sprintf("server busy: %v", strings.TrimPrefix(err.Error(), "server busy: "))
	case errors.Is(err, transport.ErrConnect) && !strings.Contains(err.Error(), "TLS"):
		return fmt.Sprintf("%v (is a runbox master running there? start one with `make cluster` or `runbox master`)", err)
	case errors.Is(err, context.Canceled):
		return "interrupted"
	}
	return err.Error()
}

// textHandler is the Handler of a job followed in text: it keeps the job's id in *id,
// sends output to output, tells of a lost connection with the id, and with -v of the
// queue position and the node.
func textHandler(file string, id *string, verbose bool, stderr io.Writer, output func(sandbox.Chunk)) transport.Handler {
	h := transport.Handler{
		Accepted: func(s string) { *id = s },
		Output:   output,
		Reconnecting: func(err error) {
			fmt.Fprintf(stderr, "runbox: connection lost (%v); reconnecting to wait for job %s\n", err, *id)
		},
	}
	if verbose {
		h.Queued = func(p int) { fmt.Fprintf(stderr, "runbox: %s queued at position %d\n", file, p) }
		h.Started = func(n string) { fmt.Fprintf(stderr, "runbox: %s running on %s\n", file, n) }
	}
	return h
}

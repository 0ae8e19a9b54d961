package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"runbox/internal/clientconf"
	"runbox/sandbox"
	"runbox/sandbox/judge"
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
	fs.StringVar(&c.Token, "token", os.Getenv("RUNBOX_TOKEN"), "bearer token for a secured cluster (default from $RUNBOX_TOKEN, else the token make cluster wrote, over TLS with its CA)")
	fs.StringVar(&c.TLSCA, "tls-ca", os.Getenv("RUNBOX_TLS_CA"), "CA certificate of a TLS cluster: speak TLS and verify the master (default from $RUNBOX_TLS_CA, else the ca.crt make cluster wrote)")
	fs.StringVar(&c.TLSCert, "tls-cert", os.Getenv("RUNBOX_TLS_CERT"), "client certificate to present, with --tls-key (optional; default from $RUNBOX_TLS_CERT)")
	fs.StringVar(&c.TLSKey, "tls-key", os.Getenv("RUNBOX_TLS_KEY"), "key of --tls-cert (default from $RUNBOX_TLS_KEY)")
}

// config returns the connection settings; the error is a bad TLS flag or file. What no
// flag or variable gave comes from the client directory that make cluster writes
// (internal/clientconf): its CA, and its token only over TLS verified by that CA, so
// that the token never goes in clear, nor to another cluster.
func (c *clientFlags) config() (transport.ClientConfig, error) {
	cfg := transport.DefaultClientConfig()
	if err := c.clientDirDefaults(os.Getenv); err != nil {
		return cfg, err
	}
	cfg.Token = c.Token
	cfg.Name = "runbox-cli"
	t, err := clientTLS(c.TLSCA, c.TLSCert, c.TLSKey)
	cfg.TLS = t
	return cfg, err
}

// clientDirDefaults fills TLSCA and Token from the client directory when neither flag
// nor variable gave them (see config).
func (c *clientFlags) clientDirDefaults(getenv func(string) string) error {
	dir := clientconf.Dir(getenv)
	if dir == "" || c.TLSCert != "" {
		return nil
	}
	ca := filepath.Join(dir, clientconf.CAFile)
	if c.TLSCA == "" && c.Token == "" {
		if _, err := os.Stat(ca); err != nil {
			return nil // no cluster of make cluster's here: plaintext, as asked
		}
		c.TLSCA = ca
	}
	if c.TLSCA != ca || c.Token != "" {
		return nil
	}
	tok, err := clientconf.ReadToken(filepath.Join(dir, clientconf.TokenFile))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("%v (make cluster writes it; or give --token)", err)
	}
	c.Token = tok
	return nil
}

// submitConfig is `runbox submit`'s flags.
type submitConfig struct {
	clientFlags
	Lang        string
	Stdin       string
	TimeLimit   time.Duration
	CompileTime time.Duration
	MemoryLimit string
	CompileMem  string
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
program could not run. Every failure is such an object, whether the server or runbox
itself found it (a bad flag, an unreadable FILE, an unknown language, a FILE too large,
an unreachable server): a FILE that cannot be sent gets its error and the others run.

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
  64     usage error: bad flags, unreadable FILE, unknown --lang or extension
         (with --json: error.code usage or unknown_language)
  65     the request was refused: invalid_request, unknown_language, too_large
         (a FILE over 1 MiB or a --stdin over 8 MiB is refused before sending),
         or not_found (the job is unknown to the server)
  69     cannot reach the server (unreachable), its sandbox is unavailable, it is
         shutting down (shutting_down), or its journal cannot take a job (storage_full)
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
	fs.StringVar(&cfg.CompileMem, "compile-memory", "", "memory limit of the compile phase of C, C++, Go and Java, apart from the program's --memory-limit, e.g. 1GiB (default: the server's, 512MiB unless changed)")
	fs.BoolVar(&cfg.JSON, "json", false, "print one JSON object per file instead of the program's output")
	fs.BoolVar(&cfg.Verbose, "v", false, "print the job id, node, time and memory on stderr")
	fs.StringVar(&cfg.Tests, "tests", "", "judge each FILE against the test cases of this directory: NAME.in (input, optional) and NAME.out (expected output)")
	fs.StringVar(&cfg.Compare, "compare", "trim", "with --tests, how outputs compare: exact (byte for byte), trim (trailing blanks of each line and trailing empty lines ignored) or tokens (whitespace-separated tokens)")
	fs.Usage = func() { fmt.Fprint(stderr, submitHelp); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		if !errors.Is(err, flag.ErrHelp) && jsonRequested(args) { // the flag package said why on stderr
			json.NewEncoder(stdout).Encode(toJSON("", "", sandbox.Spec{}, sandbox.Result{}, usageErr("usage", "%v", err)))
		}
		return exitUsage
	}
	files := fs.Args()
	// fail reports a failure of the whole command: one line on stderr and, with --json,
	// one object per FILE (or one without a file when there is none).
	fail := func(err error) int {
		if cfg.JSON {
			enc := json.NewEncoder(stdout)
			if len(files) == 0 {
				enc.Encode(toJSON("", "", sandbox.Spec{}, sandbox.Result{}, err))
			}
			for _, path := range files {
				enc.Encode(toJSON("", path, sandbox.Spec{Language: cfg.Lang}, sandbox.Result{}, err))
			}
		}
		fmt.Fprintf(stderr, "runbox submit: %s\n", explain(err))
		return exitCodeOf(err)
	}
	if len(files) == 0 {
		return fail(usageErr("usage", "no program file given (runbox submit FILE...)"))
	}
	spec, err := cfg.baseSpec()
	if err != nil {
		return fail(err)
	}
	live := cfg.Stdin == "-"
	if live && len(files) > 1 {
		return fail(usageErr("usage", "--stdin - works with one FILE only"))
	}
	// Each FILE's program; with --json a FILE that cannot be sent gets its own error
	// object and the others still run, without it the command stops before sending any.
	specs := make([]sandbox.Spec, len(files))
	local := make([]error, len(files))
	for i, path := range files {
		specs[i], local[i] = cfg.fileSpec(spec, path)
		if local[i] != nil && !cfg.JSON {
			fmt.Fprintf(stderr, "runbox submit: %s\n", explain(local[i]))
			return exitCodeOf(local[i])
		}
	}

	ccfg, err := cfg.config()
	if err != nil {
		return fail(usageErr("usage", "%v", err))
	}
	var client *transport.Client
	if slices.Contains(local, nil) { // some FILE is to be sent
		if client, err = transport.Dial(ctx, cfg.Server, ccfg); err != nil {
			for i := range local { // every FILE still gets its line, carrying the error
				if local[i] == nil {
					local[i] = err
				}
			}
			fmt.Fprintf(stderr, "runbox submit: %v\n", explain(err))
			if cfg.JSON {
				return printJSON(stdout, files, specs, nil, local)
			}
			return exitCodeOf(err)
		}
		defer client.Close()
	}

	if cfg.JSON {
		return submitJSON(ctx, client, files, specs, local, stdout)
	}
	code := 0
	for i, spec := range specs {
		var c int
		if spec.Tests != nil {
			c = submitJudged(ctx, client, files[i], spec, &cfg, stdout, stderr)
		} else {
			c = submitText(ctx, client, files[i], spec, live, &cfg, stdin, stdout, stderr)
		}
		if c != 0 {
			code = c
		}
	}
	return code
}

// baseSpec is the Spec the flags describe, without a program: limits, stdin, tests.
func (cfg *submitConfig) baseSpec() (sandbox.Spec, error) {
	var spec sandbox.Spec
	spec.Limits.RunTime = cfg.TimeLimit
	spec.Limits.CompileTime = cfg.CompileTime
	if cfg.MemoryLimit != "" {
		n, err := sandbox.ParseSize(cfg.MemoryLimit)
		if err != nil || n <= 0 {
			return spec, usageErr("usage", "bad --memory-limit %q: use e.g. 128MiB, 1GiB or plain bytes", cfg.MemoryLimit)
		}
		spec.Limits.Memory = n
	}
	if cfg.CompileMem != "" {
		n, err := sandbox.ParseSize(cfg.CompileMem)
		if err != nil || n <= 0 {
			return spec, usageErr("usage", "bad --compile-memory %q: use e.g. 512MiB, 1GiB or plain bytes", cfg.CompileMem)
		}
		spec.Limits.CompileMemory = n
	}
	if cfg.Lang != "" {
		if _, ok := sandbox.Lookup(cfg.Lang); !ok {
			return spec, usageErr("unknown_language", "unknown --lang %q (known: %s)", cfg.Lang, sandbox.LanguageNames())
		}
	}
	if cfg.Stdin != "" && cfg.Stdin != "-" {
		b, err := readCapped(cfg.Stdin, "--stdin", sandbox.MaxStdinBytes, "a program's stdin")
		if err != nil {
			return spec, err
		}
		spec.Stdin = b
	}
	if !sandbox.Compare(cfg.Compare).Valid() || cfg.Compare == "" {
		return spec, usageErr("usage", "bad --compare %q: exact, trim or tokens", cfg.Compare)
	}
	if cfg.Tests != "" {
		if cfg.Stdin != "" {
			return spec, usageErr("usage", "--stdin and --tests do not go together: each test case has its input")
		}
		tests, err := judge.LoadDir(os.DirFS(cfg.Tests))
		if err != nil {
			return spec, usageErr("usage", "--tests %s: %v", cfg.Tests, err)
		}
		spec.Tests, spec.Compare = tests, sandbox.Compare(cfg.Compare)
	}
	return spec, nil
}

// fileSpec is base with the program of FILE path: its language (--lang, or from its
// extension) and its source, refused here when the server would refuse it for its size.
func (cfg *submitConfig) fileSpec(base sandbox.Spec, path string) (sandbox.Spec, error) {
	spec := base
	spec.Language = cfg.Lang
	if spec.Language == "" {
		l, ok := sandbox.Detect(path)
		if !ok {
			return spec, usageErr("unknown_language", "cannot tell the language of %s from its extension; use --lang (%s)", path, sandbox.LanguageNames())
		}
		spec.Language = l.Name
	}
	src, err := readCapped(path, path, sandbox.MaxSourceBytes, "a program's sources")
	if err != nil {
		return spec, err
	}
	spec.Files = []sandbox.File{{Content: src}}
	if err := transport.CheckRequest(spec); err != nil {
		return spec, fmt.Errorf("%s: %w", path, err)
	}
	return spec, nil
}

// readCapped reads the file at path, refusing it as too_large (without reading it) when
// it is over max bytes, the server's cap on what of a request.
func readCapped(path, name string, max int64, what string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, usageErr("usage", "%v", err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() && fi.Size() > max {
		return nil, fmt.Errorf("%w: %s is %s (%d bytes), over the %s cap on %s", sandbox.ErrTooLarge, name,
			sandbox.FormatSize(fi.Size()), fi.Size(), sandbox.FormatSize(max), what)
	}
	b, err := io.ReadAll(io.LimitReader(f, max+1)) // a pipe or device is not trusted to stop
	if err != nil {
		return nil, usageErr("usage", "%s: %v", name, err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%w: %s is over the %s cap on %s", sandbox.ErrTooLarge, name, sandbox.FormatSize(max), what)
	}
	return b, nil
}

// localError is a failure of the command itself, found before anything is sent (a bad
// flag, an unreadable FILE, an unknown language): exit code 64, and in --json the code
// it names (usage, unknown_language).
type localError struct {
	code string
	err  error
}

func (e localError) Error() string { return e.err.Error() }

func usageErr(code, format string, a ...any) error {
	return localError{code: code, err: fmt.Errorf(format, a...)}
}

// jsonRequested reports whether args ask for --json, for a command line the flag
// package could not parse.
func jsonRequested(args []string) bool {
	for _, a := range args {
		switch a {
		case "--":
			return false
		case "-json", "--json", "-json=true", "--json=true", "-json=1", "--json=1":
			return true
		}
	}
	return false
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
		out.Error = &jsonError{Code: errorCode(err), Message: explain(err)}
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

// submitJSON runs the programs concurrently and prints their results in FILE order; a
// FILE with a local error (local[i]) is not sent and gets its error.
func submitJSON(ctx context.Context, client *transport.Client, files []string, specs []sandbox.Spec, local []error, stdout io.Writer) int {
	results := make([]sandbox.Result, len(specs))
	errs := slices.Clone(local)
	ids := make([]string, len(specs))
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i := range specs {
		if errs[i] != nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			results[i], errs[i] = client.Run(ctx, specs[i], transport.RunOptions{Handler: transport.Handler{Accepted: func(s string) { ids[i] = s }}})
		}()
	}
	wg.Wait()
	return printJSON(stdout, files, specs, ids, errs, results...)
}

// printJSON prints one object per FILE, in order, and returns the exit code: the last
// failing FILE's.
func printJSON(w io.Writer, files []string, specs []sandbox.Spec, ids []string, errs []error, results ...sandbox.Result) int {
	enc := json.NewEncoder(w)
	code := 0
	for i := range files {
		var id string
		var res sandbox.Result
		if ids != nil {
			id = ids[i]
		}
		if results != nil {
			res = results[i]
		}
		enc.Encode(toJSON(id, files[i], specs[i], res, errs[i]))
		c := 0
		switch err := errs[i]; {
		case len(specs[i].Tests) > 0:
			c = judgedExitCode(res, err)
		case err != nil:
			c = exitCodeOf(err)
		case res.ExitCode < 0:
			c = 1
		default:
			c = res.ExitCode
		}
		if c != 0 {
			code = c
		}
	}
	return code
}

// errorCode is err's code in --json output: a local error's own, else the wire's.
func errorCode(err error) string {
	var le localError
	if errors.As(err, &le) {
		return le.code
	}
	return transport.Code(err)
}

// exitCodeOf maps an error to the documented exit codes.
func exitCodeOf(err error) int {
	if errors.As(err, new(localError)) {
		return exitUsage
	}
	switch transport.Code(err) {
	case "busy":
		return exitBusy
	case "invalid_request", "unknown_language", "too_large", "not_found":
		return exitInvalid
	case "unauthorized", "rate_limited", "quota":
		return exitUnauthorized
	case "unavailable", "shutting_down", "storage_full":
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

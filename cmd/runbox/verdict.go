package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"runbox/sandbox"
	"runbox/transport"
)

// submitJudged runs one judged program and prints its verdict table on stdout (compiler
// errors on stderr). It returns 0 when every case was accepted, 1 when not, and runbox's
// own codes when the job could not run.
func submitJudged(ctx context.Context, client *transport.Client, file string, spec sandbox.Spec, cfg *submitConfig, stdout, stderr io.Writer) int {
	var id string
	opts := transport.RunOptions{Handler: textHandler(file, &id, cfg.Verbose, stderr, func(c sandbox.Chunk) {
		if c.Stream == sandbox.Compile { // the cases' output is in the verdict table
			stderr.Write(c.Data)
		}
	})}
	res, err := client.Run(ctx, spec, opts)
	if err != nil {
		fmt.Fprintf(stderr, "runbox submit: %s: %v\n", file, explain(err))
		return exitCodeOf(err)
	}
	if res.Verdict == "" { // a server without the judge ran it as one program
		fmt.Fprintf(stderr, "runbox submit: %s: the server did not judge the test cases (it is older than this client)\n", file)
		return exitInternal
	}
	printVerdicts(stdout, file, res)
	if cfg.Verbose {
		fmt.Fprintf(stderr, "runbox: %s: job %s on %s: %s\n", file, id, res.Node, res.Verdict)
	}
	return judgedExitCode(res, nil)
}

// printVerdicts prints a judged run: one line per case (case, verdict, time, memory, and
// the diff or the message of a failure), then the overall verdict.
func printVerdicts(w io.Writer, file string, res sandbox.Result) {
	if res.Verdict == sandbox.Verdict(sandbox.StatusCompileError) {
		fmt.Fprintf(w, "%s: compile_error%s\n", file, suffix(res.Message))
		return
	}
	var table strings.Builder
	tw := tabwriter.NewWriter(&table, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CASE\tVERDICT\tTIME\tMEMORY\t")
	passed := 0
	for _, c := range res.Cases {
		note := c.Diff
		if note == "" {
			note = c.Message
		}
		if c.Verdict == sandbox.VerdictAccepted {
			passed++
		}
		fmt.Fprintf(tw, "%s\t%s\t%v\t%s\t%s\n", c.Name, c.Verdict, c.Time.Round(time.Millisecond), sandbox.FormatSize(c.Memory), note)
	}
	tw.Flush()
	for line := range strings.Lines(table.String()) {
		fmt.Fprintln(w, strings.TrimRight(line, " \n"))
	}
	fmt.Fprintf(w, "%s: %s (%d of %d test cases passed)\n", file, res.Verdict, passed, len(res.Cases))
}

// jsonCase is one case of a judged run in `runbox submit --json`.
type jsonCase struct {
	Name        string  `json:"name"`
	Verdict     string  `json:"verdict"`
	ExitCode    int     `json:"exit_code"`
	Signal      string  `json:"signal,omitempty"`
	TimeMS      float64 `json:"time_ms"`
	CPUTimeMS   float64 `json:"cpu_time_ms"`
	MemoryBytes int64   `json:"memory_bytes"`
	Message     string  `json:"message,omitempty"`
	Diff        string  `json:"diff,omitempty"`
	Stderr      string  `json:"stderr,omitempty"`
}

func casesToJSON(cases []sandbox.CaseResult) []jsonCase {
	out := make([]jsonCase, len(cases))
	for i, c := range cases {
		out[i] = jsonCase{Name: c.Name, Verdict: string(c.Verdict), ExitCode: c.ExitCode, Signal: c.Signal,
			TimeMS: float64(c.Time.Microseconds()) / 1000, CPUTimeMS: float64(c.CPUTime.Microseconds()) / 1000,
			MemoryBytes: c.Memory, Message: c.Message, Diff: c.Diff, Stderr: string(c.Stderr)}
	}
	return out
}

// judgedExitCode is the exit code of a judged FILE: 0 when accepted, 1 otherwise.
func judgedExitCode(res sandbox.Result, err error) int {
	switch {
	case err != nil:
		return exitCodeOf(err)
	case res.Verdict == sandbox.VerdictAccepted:
		return 0
	case res.Verdict == "":
		return exitInternal
	}
	return 1
}

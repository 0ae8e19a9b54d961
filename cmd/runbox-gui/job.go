package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/theme"

	"runbox/sandbox"
	"runbox/scheduler"
	"runbox/transport"
)

// phase is where a job is in its life, as the window shows it.
type phase int

const (
	phaseConnecting phase = iota // dialling the server and sending the program
	phaseQueued                  // accepted, waiting for a free slot
	phaseRunning                 // placed on a node
	phaseDone                    // the program ran (or failed to compile): see res
	phaseFailed                  // it could not run: busy, unreachable, refused; see err
	phaseCancelled               // the user cancelled it
)

// job is one program sent from the window. Only the UI goroutine touches it: the
// goroutine that runs it hands every event over with Config.Do.
type job struct {
	seq    int    // 1, 2, ... in the order of sending
	name   string // the file's name, or "untitled"
	lang   string
	server Server
	tests  []string // the names of the test cases sent: a judged run

	phase        phase
	id           string // the server's job id, once accepted
	position     int    // queue position while queued
	node         string // where it runs
	attempt      int    // 1 once started; more when a node died and the job moved
	reconnecting bool   // the connection broke; the client is trying again
	cancelling   bool   // Cancel was pressed, the answer is not in yet
	submitted    time.Time
	ended        time.Time

	stdout, stderr, compile []byte
	outputChanged           bool // output arrived since the view last showed it

	res sandbox.Result // when phaseDone
	err error          // when phaseFailed

	cancel context.CancelFunc
}

// active reports whether the job still waits for its end.
func (j *job) active() bool { return j.phase < phaseDone }

// elapsed is what the job's timer shows: from pressing Run to now, or to the end.
func (j *job) elapsed(now time.Time) time.Duration {
	if !j.active() {
		return j.ended.Sub(j.submitted)
	}
	return now.Sub(j.submitted)
}

// start records that the job was placed on node. A second start is a new attempt (the
// first node died): the output of the abandoned attempt goes, as the client's does.
func (j *job) start(node string) {
	j.phase, j.node = phaseRunning, node
	j.attempt++
	if j.attempt > 1 {
		j.stdout, j.stderr, j.compile = nil, nil, nil
		j.outputChanged = true
	}
}

func (j *job) appendOutput(c sandbox.Chunk) {
	switch c.Stream {
	case sandbox.Stdout:
		j.stdout = append(j.stdout, c.Data...)
	case sandbox.Stderr:
		j.stderr = append(j.stderr, c.Data...)
	case sandbox.Compile:
		j.compile = append(j.compile, c.Data...)
	}
	j.outputChanged = true
}

// finish records how Run ended.
func (j *job) finish(res sandbox.Result, err error, now time.Time) {
	j.ended = now
	j.reconnecting, j.cancelling = false, false
	switch {
	case err == nil:
		j.phase, j.res = phaseDone, res
		// The result carries the output of the attempt that ended: it has the last word
		// over what streamed in (the same bytes, unless a chunk went missing).
		if len(res.Stdout)+len(res.Stderr)+len(res.CompileOutput) > 0 {
			j.stdout, j.stderr, j.compile = res.Stdout, res.Stderr, res.CompileOutput
			j.outputChanged = true
		}
	case errors.Is(err, context.Canceled) || errors.Is(err, scheduler.ErrCancelled):
		j.phase = phaseCancelled
	default:
		j.phase, j.err = phaseFailed, err
	}
}

// formatElapsed prints a timer: 0.0 s, 12.3 s, 2:05.1.
func formatElapsed(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	tenths := int64(d / (100 * time.Millisecond))
	if tenths < 600 {
		return fmt.Sprintf("%d.%d s", tenths/10, tenths%10)
	}
	return fmt.Sprintf("%d:%02d.%d", tenths/600, tenths/10%60, tenths%10)
}

// formatDuration prints a measured time the way people read it: 35 ms, 1.24 s.
func formatDuration(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%d µs", d.Microseconds())
	case d < time.Second:
		return fmt.Sprintf("%d ms", d.Milliseconds())
	}
	return fmt.Sprintf("%.2f s", d.Seconds())
}

// statusTitle names a program's outcome.
func statusTitle(s sandbox.Status) string {
	switch s {
	case sandbox.StatusOK:
		return "OK"
	case sandbox.StatusCompileError:
		return "Compile error"
	case sandbox.StatusRuntimeError:
		return "Runtime error"
	case sandbox.StatusTimeLimit:
		return "Time limit exceeded"
	case sandbox.StatusMemoryLimit:
		return "Memory limit exceeded"
	case sandbox.StatusOutputLimit:
		return "Output limit exceeded"
	}
	return string(s)
}

// title is the one-line state of the job: in the job list and on the result banner.
func (j *job) title() string {
	switch j.phase {
	case phaseConnecting:
		return "Connecting to " + j.server.Addr
	case phaseQueued:
		if j.position > 0 {
			return fmt.Sprintf("Queued, position %d", j.position)
		}
		return "Queued"
	case phaseRunning:
		t := "Running"
		if j.node != "" {
			t += " on " + j.node
		}
		if j.attempt > 1 {
			t += fmt.Sprintf(" (attempt %d)", j.attempt)
		}
		return t
	case phaseDone:
		if j.res.Verdict != "" {
			return verdictTitle(j.res)
		}
		t := statusTitle(j.res.Status)
		if j.res.Status == sandbox.StatusRuntimeError {
			t += fmt.Sprintf(" (exit code %d)", j.res.ExitCode)
		}
		return t
	case phaseCancelled:
		return "Cancelled"
	case phaseFailed:
		return failureTitle(j.err)
	}
	return ""
}

// subtitle adds what is going on right now, if anything.
func (j *job) subtitle() string {
	switch {
	case j.cancelling:
		return "cancelling…"
	case j.reconnecting:
		return "connection lost, reconnecting…"
	}
	return ""
}

// tlsTrouble sorts out the failures that come from TLS: the CA file, or the two sides not
// agreeing on TLS, or the server's certificate. transport words them for `runbox submit`
// (with its flags) and keeps its sentinels for the token and the connection; the window
// names its own fields instead.
type tlsTrouble int

const (
	tlsOK            tlsTrouble = iota
	tlsBadCA                    // the CA file cannot be used
	tlsNeeded                   // a plaintext client at a TLS server
	tlsNotSpoken                // a TLS client at a plaintext server
	tlsCertRefused              // the server's certificate failed the CA's check
	tlsClientRefused            // the server refused this TLS connection
)

func tlsTroubleOf(err error) tlsTrouble {
	msg := err.Error()
	var ce *caError
	switch {
	case errors.As(err, &ce):
		return tlsBadCA
	// "this server requires TLS" (its refusal frame), "the server speaks TLS" (its TLS
	// answer to a plaintext hello).
	case strings.Contains(msg, "requires TLS"), strings.Contains(msg, "server speaks TLS"):
		return tlsNeeded
	case strings.Contains(msg, "does not speak TLS"), strings.Contains(msg, "does not use TLS"):
		return tlsNotSpoken
	case errors.Is(err, transport.ErrUnauthorized) && (strings.Contains(msg, "server's certificate") || strings.Contains(msg, "server presented")):
		return tlsCertRefused
	case errors.Is(err, transport.ErrUnauthorized) && strings.Contains(msg, "TLS connection"):
		return tlsClientRefused
	}
	return tlsOK
}

// failureTitle names why a program could not run.
func failureTitle(err error) string {
	switch tlsTroubleOf(err) {
	case tlsBadCA:
		return "TLS CA file unusable"
	case tlsNeeded:
		return "Server needs TLS"
	case tlsNotSpoken:
		return "Server without TLS"
	case tlsCertRefused, tlsClientRefused:
		return "Certificate refused"
	}
	switch {
	case errors.Is(err, scheduler.ErrBusy):
		return "Server busy"
	case errors.Is(err, transport.ErrConnect):
		return "Cannot reach the server"
	case errors.Is(err, transport.ErrUnauthorized):
		return "Token refused"
	case errors.Is(err, transport.ErrRateLimited):
		return "Too many programs"
	case errors.Is(err, transport.ErrQuota):
		return "Quota used up"
	case errors.Is(err, sandbox.ErrUnknownLanguage):
		return "Unknown language"
	case errors.Is(err, sandbox.ErrTooLarge):
		return "Program too large"
	case errors.Is(err, sandbox.ErrInvalidRequest):
		return "Request refused"
	case errors.Is(err, scheduler.ErrCrashedNode):
		return "Node crashed"
	case errors.Is(err, sandbox.ErrUnavailable):
		return "Sandbox unavailable"
	case errors.Is(err, scheduler.ErrShuttingDown):
		return "Server shutting down"
	}
	return "Error"
}

// explain tells the user, in a sentence or two, why a job could not run and what to do.
func explain(err error, addr string) string {
	msg := err.Error()
	var ce *caError
	switch tlsTroubleOf(err) {
	case tlsBadCA:
		errors.As(err, &ce)
		return fmt.Sprintf("The TLS CA file %s cannot be used: %s.\n"+
			"Pick the cluster's CA certificate (the ca.crt of `runbox certs init`) with the button next to TLS CA, "+
			"or clear the field for a server without TLS; then press Run again.", ce.file, ce.reason())
	case tlsNeeded:
		return fmt.Sprintf("The server %s needs TLS: it refuses plaintext connections.\n"+
			"Put the cluster's CA certificate (ca.crt) in the TLS CA field at the top and press Run again.", addr)
	case tlsNotSpoken:
		return fmt.Sprintf("The server %s does not use TLS (a master started without --tls-dir).\n"+
			"Clear the TLS CA field at the top and press Run again.", addr)
	case tlsCertRefused:
		return fmt.Sprintf("The server %s presented a certificate that the TLS CA does not vouch for:\n%s\n"+
			"Check that the TLS CA field holds this cluster's CA certificate, and that the server is a name "+
			"or address its master certificate names (runbox certs issue --host).", addr, msg)
	case tlsClientRefused:
		return fmt.Sprintf("The server %s refused this TLS connection: %s", addr, msg)
	}
	switch {
	case errors.Is(err, scheduler.ErrBusy):
		// "server busy: 1 program(s) running and 0 queued, the limit; try another ..."
		detail := strings.TrimPrefix(msg, scheduler.ErrBusy.Error()+": ")
		detail, _, _ = strings.Cut(detail, "; ")
		return fmt.Sprintf("The server %s is busy and refused the program (%s).\n"+
			"Enter another server or port at the top and press Run again.", addr, detail)
	case errors.Is(err, transport.ErrConnect):
		return fmt.Sprintf("Cannot reach a runbox server at %s:\n%s\n"+
			"Check the server and port at the top (is `runbox master` running there?) and press Run again.", addr, msg)
	case errors.Is(err, transport.ErrUnauthorized):
		return fmt.Sprintf("The server %s refused the token: %s\nCheck the Token field and press Run again.", addr, msg)
	case errors.Is(err, transport.ErrRateLimited), errors.Is(err, transport.ErrQuota):
		return fmt.Sprintf("The server %s limits what this token may send: %s\nWait a little and press Run again.", addr, msg)
	case errors.Is(err, sandbox.ErrUnavailable), errors.Is(err, scheduler.ErrShuttingDown):
		return fmt.Sprintf("The server %s cannot run programs now: %s\nTry another server or try again later.", addr, msg)
	}
	return msg
}

// colorName is the job's colour in the list and on the banner.
func (j *job) colorName() fyne.ThemeColorName {
	switch j.phase {
	case phaseConnecting, phaseQueued, phaseRunning:
		return theme.ColorNamePrimary
	case phaseCancelled:
		return theme.ColorNameDisabled
	case phaseFailed:
		if errors.Is(j.err, scheduler.ErrBusy) {
			return theme.ColorNameWarning
		}
		return theme.ColorNameError
	}
	if j.res.Verdict != "" {
		return verdictColor(j.res.Verdict)
	}
	switch j.res.Status {
	case sandbox.StatusOK:
		return theme.ColorNameSuccess
	case sandbox.StatusCompileError, sandbox.StatusRuntimeError:
		return theme.ColorNameError
	}
	return theme.ColorNameWarning // the limits
}

// facts are the result's numbers, for the line under the banner.
func (j *job) facts() string {
	var f []string
	add := func(format string, a ...any) { f = append(f, fmt.Sprintf(format, a...)) }
	add("%s", languageLabel(j.lang))
	if j.server.CAFile != "" {
		add("server %s (TLS)", j.server.Addr)
	} else {
		add("server %s", j.server.Addr)
	}
	if j.id != "" {
		add("job %s", j.id)
	}
	if len(j.tests) > 0 {
		add("%d %s", len(j.tests), plural(len(j.tests), "test", "tests"))
	}
	if j.phase == phaseDone && j.res.Verdict != "" {
		// A judged run: the numbers of each case are in the table; here, the largest.
		r := j.res
		if r.Node != "" {
			add("node %s", r.Node)
		}
		if len(r.Cases) > 0 {
			add("slowest %s", formatDuration(r.Time))
			if r.Memory > 0 {
				add("peak memory %s", sandbox.FormatSize(r.Memory))
			}
		}
		if r.CompileTime > 0 {
			add("compile %s", formatDuration(r.CompileTime))
		}
	} else if j.phase == phaseDone {
		r := j.res
		if r.Node != "" {
			add("node %s", r.Node)
		}
		add("exit code %d", r.ExitCode)
		if r.Signal != "" {
			add("signal %s", r.Signal)
		}
		if r.Status != sandbox.StatusCompileError {
			add("time %s", formatDuration(r.Time))
			if r.CPUTime > 0 {
				add("CPU %s", formatDuration(r.CPUTime))
			}
			if r.Memory > 0 {
				add("memory %s", sandbox.FormatSize(r.Memory))
			}
		}
		if r.CompileTime > 0 {
			add("compile %s", formatDuration(r.CompileTime))
		}
		if r.Attempts > 1 {
			add("%d attempts", r.Attempts)
		}
	} else if j.node != "" {
		add("node %s", j.node)
	}
	return strings.Join(f, "  ·  ")
}

// message is the longer text under the facts: a limit's explanation or why it failed.
func (j *job) message() string {
	switch j.phase {
	case phaseFailed:
		return explain(j.err, j.server.Addr)
	case phaseDone:
		if j.res.Status == sandbox.StatusCompileError && j.res.Message == "" {
			return "The compiler refused the program: see the Compiler tab."
		}
		return j.res.Message
	case phaseCancelled:
		return "The job was cancelled: the server stopped it and removed its sandbox."
	}
	return ""
}

// languageLabel is a language's name for people: its Title in the language table.
func languageLabel(name string) string {
	if l, ok := sandbox.Lookup(name); ok && l.Title != "" {
		return l.Title
	}
	return name
}

// languageByLabel maps the selector's labels back to names.
func languageByLabel(label string) string {
	for _, l := range sandbox.Languages() {
		if languageLabel(l.Name) == label {
			return l.Name
		}
	}
	return label
}

// languageLabels lists the selector's options in the language table's order.
func languageLabels() []string {
	var out []string
	for _, l := range sandbox.Languages() {
		out = append(out, languageLabel(l.Name))
	}
	return out
}

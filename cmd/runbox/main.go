// Command runbox is the runbox server and command-line client: `runbox master` and
// `runbox slave` run the cluster, `runbox submit` sends programs, `runbox status` shows
// the cluster, `runbox bench` drives load. Run `runbox help` for the list.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Exit codes of runbox's own failures (sysexits.h values, so they rarely collide with a
// program's own exit code; `--json` tells them apart for sure).
const (
	exitUsage        = 64 // bad flags or arguments
	exitInvalid      = 65 // the server refused the request: invalid_request, unknown_language, too_large
	exitUnavailable  = 69 // cannot reach the server, or its sandbox is unavailable
	exitInternal     = 70 // internal error, or the job's node crashed on every attempt
	exitBusy         = 75 // busy: the server is full, try another server or later
	exitUnauthorized = 77 // unauthorized, rate_limited, quota
)

type command struct {
	name, summary string
	run           func(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int
}

func commands() []command {
	return []command{
		{"master", "run the master server (accepts clients, runs and delegates programs)", runMaster},
		{"slave", "run a slave server (dials the master and runs what it delegates)", runSlave},
		{"submit", "send programs to a server and print their results", runSubmit},
		{"status", "show the cluster: nodes, load, running and queued jobs", runStatus},
		{"bench", "drive load at a server: N clients x M jobs, throughput and latency", runBench},
		{"certs", "make a secured cluster's CA, certificates and tokens", runCerts},
	}
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "runbox: run untrusted programs on a cluster of sandboxes.\n\nUsage: runbox COMMAND [flags]\n\nCommands:\n")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun `runbox COMMAND -h` for a command's flags.\n")
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	switch args[0] {
	case "help", "-h", "--help":
		usage(stdout)
		return 0
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(ctx, args[1:], stdin, stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "runbox: unknown command %q\n\n", args[0])
	usage(stderr)
	return exitUsage
}

package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"runbox/scheduler"
	"runbox/transport"
)

func runStatus(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("runbox status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cf clientFlags
	cf.register(fs)
	asJSON := fs.Bool("json", false, "print the cluster as one JSON object")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: runbox status [flags]\n\nShows the cluster as the master sees it: nodes and their load, running and queued\njobs, recent jobs and totals.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	ccfg, err := cf.config()
	if err != nil {
		fmt.Fprintf(stderr, "runbox status: %v\n", err)
		return exitUsage
	}
	client, err := transport.Dial(ctx, cf.Server, ccfg)
	if err != nil {
		fmt.Fprintf(stderr, "runbox status: %v\n", explain(err))
		return exitCodeOf(err)
	}
	defer client.Close()
	snap, err := client.Status(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "runbox status: %v\n", explain(err))
		return exitCodeOf(err)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(snap)
		return 0
	}
	printStatus(stdout, cf.Server, snap, time.Now())
	return 0
}

func printStatus(w io.Writer, server string, snap scheduler.Snapshot, now time.Time) {
	fmt.Fprintf(w, "cluster at %s: %d node(s), %d running, %d queued; %d accepted, %d finished, %d busy rejections\n\n",
		server, len(snap.Nodes), len(snap.Running), len(snap.Queued), snap.Totals.Accepted, snap.Totals.Finished, snap.Totals.Rejected)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tROLE\tRUNNING\tCAPACITY")
	for _, n := range snap.Nodes {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\n", n.Name, n.Role, n.Running, n.Capacity)
	}
	tw.Flush()
	jobs := func(title string, list []scheduler.Info, since func(scheduler.Info) time.Time) {
		if len(list) == 0 {
			return
		}
		fmt.Fprintf(w, "\n%s\n", title)
		tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "JOB\tLANGUAGE\tNODE\tSTATE\tAGE")
		for _, j := range list {
			state := string(j.State)
			if j.Status != "" {
				state = string(j.Status)
			} else if j.Error != "" {
				state = "error: " + j.Error
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%v\n", j.ID, j.Language, dash(j.Node), state, now.Sub(since(j)).Round(time.Millisecond))
		}
		tw.Flush()
	}
	jobs("RUNNING", snap.Running, func(i scheduler.Info) time.Time { return i.Started })
	jobs("QUEUED", snap.Queued, func(i scheduler.Info) time.Time { return i.Submitted })
	jobs("RECENT", snap.Recent, func(i scheduler.Info) time.Time { return i.Finished })
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

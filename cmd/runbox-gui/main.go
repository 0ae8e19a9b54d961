// Command runbox-gui is the desktop client of runbox: pick a server, open or type a
// program, press Run and watch it queue, run and end, with its output, while the window
// stays live. A busy or unreachable server is a message, not a dead end: change the server
// and press Run again. The Cluster tab shows the nodes and their load.
//
// Usage:
//
//	runbox-gui [-server HOST:PORT] [-token T] [-tls-ca FILE] [-tests DIR] [-run] [FILE]
//
// It is its own Go module (cgo, OpenGL, X11) so that the rest of runbox builds without
// them; docs/gui.md tells how to build and use it.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/app"
	"fyne.io/fyne/v2/storage"
	"fyne.io/fyne/v2/theme"
)

// appID names the app's preferences (~/.config/fyne/io.runbox.gui/).
const appID = "io.runbox.gui"

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("runbox-gui", flag.ContinueOnError)
	server := fs.String("server", os.Getenv("RUNBOX_SERVER"), "server HOST:PORT to show in the fields (default: the last one used, first 127.0.0.1:7700; $RUNBOX_SERVER)")
	token := fs.String("token", os.Getenv("RUNBOX_TOKEN"), "bearer token of a secured cluster (default $RUNBOX_TOKEN); never stored")
	tlsCA := fs.String("tls-ca", os.Getenv("RUNBOX_TLS_CA"), "CA certificate FILE of a TLS cluster, to show in the TLS CA field (default: $RUNBOX_TLS_CA, else the last one used)")
	testsDir := fs.String("tests", "", "attach the test cases of DIR (NAME.in and NAME.out), as the Tests… button does: Run then judges the program")
	autorun := fs.Bool("run", false, "send FILE at once, as if Run was pressed")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: runbox-gui [flags] [FILE]\n\nOpens the runbox client window, with FILE in the editor when given.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 1 {
		fmt.Fprintln(os.Stderr, "runbox-gui: give at most one FILE")
		return 2
	}
	var file string
	var src []byte
	if fs.NArg() == 1 {
		file = fs.Arg(0)
		var err error
		if src, err = os.ReadFile(file); err != nil {
			fmt.Fprintln(os.Stderr, "runbox-gui:", err)
			return 1
		}
	}
	if *autorun && file == "" {
		fmt.Fprintln(os.Stderr, "runbox-gui: -run needs a FILE")
		return 2
	}

	if *testsDir != "" {
		if _, err := loadTests(*testsDir); err != nil {
			fmt.Fprintln(os.Stderr, "runbox-gui: -tests:", err)
			return 2
		}
		if abs, err := filepath.Abs(*testsDir); err == nil {
			*testsDir = abs
		}
	}
	if *tlsCA != "" {
		if abs, err := filepath.Abs(*tlsCA); err == nil {
			*tlsCA = abs // remembered: it must not depend on where the next start is
		}
	}

	a := app.NewWithID(appID)
	a.SetIcon(theme.MediaPlayIcon())
	w := a.NewWindow("runbox")
	cfg := DefaultConfig(a)
	cfg.Server, cfg.Token, cfg.TLSCA = *server, *token, *tlsCA
	ui, err := New(w, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "runbox-gui:", err)
		return 2
	}
	if *testsDir != "" {
		ui.attachTests(*testsDir)
	}
	if file != "" {
		if abs, err := filepath.Abs(file); err == nil {
			file = abs
		}
		ui.load(storage.NewFileURI(file), bytes.NewReader(src))
		if *autorun {
			ui.run()
		}
	}
	w.Resize(fyne.NewSize(1240, 800))
	w.SetMaster()
	w.ShowAndRun()
	ui.Close()
	return 0
}

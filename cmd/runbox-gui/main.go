// Command runbox-gui is the desktop client of runbox: pick a server, open or type a
// program, press Run and watch it queue, run and end, with its output, while the window
// stays live. A busy or unreachable server is a message, not a dead end: change the server
// and press Run again. The Cluster tab shows the nodes and their load.
//
// Usage:
//
//	runbox-gui [-server HOST:PORT] [-token T] [-tls-ca FILE] [-tests DIR] [-run] [FILE]
//
// Given no token and no CA, it uses those of the client directory that `make cluster`
// writes (runbox/internal/clientconf): the CA shows in the TLS CA field, the token is
// sent to the servers that CA vouches for and never shown.
//
// It is its own Go module (cgo, OpenGL, X11) so that the rest of runbox builds without
// them; docs/gui.md tells how to build and use it.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/app"
	"fyne.io/fyne/v2/storage"
	"fyne.io/fyne/v2/theme"

	"runbox/internal/clientconf"
	"runbox/sandbox/judge"
)

// appID names the app's preferences (~/.config/fyne/io.runbox.gui/).
const appID = "io.runbox.gui"

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("runbox-gui", flag.ContinueOnError)
	server := fs.String("server", os.Getenv("RUNBOX_SERVER"), "server HOST:PORT to show in the fields (default: the last one used, first 127.0.0.1:7700; $RUNBOX_SERVER)")
	token := fs.String("token", "", "bearer token of a secured cluster, shown in the Token field (default: $RUNBOX_TOKEN, else the client directory's token, used but not shown); never stored")
	tlsCA := fs.String("tls-ca", os.Getenv("RUNBOX_TLS_CA"), "CA certificate FILE of a TLS cluster, to show in the TLS CA field (default: $RUNBOX_TLS_CA, else the last one used if it exists, else the client directory's ca.crt)")
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
		if _, err := judge.LoadDir(os.DirFS(*testsDir)); err != nil {
			fmt.Fprintf(os.Stderr, "runbox-gui: -tests %s: %v\n", *testsDir, err)
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
	d := clientDefaults(os.Getenv)
	cfg.DefaultToken, cfg.DefaultTokenFrom, cfg.DefaultTokenCA = d.token, d.tokenFrom, d.tokenCA
	cfg.DefaultTLSCA, cfg.Problem = d.ca, d.problem
	ui, err := New(w, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "runbox-gui:", err)
		return 2
	}
	if *testsDir != "" {
		ui.prog.attachTests(*testsDir)
	}
	if file != "" {
		if abs, err := filepath.Abs(file); err == nil {
			file = abs
		}
		ui.prog.load(storage.NewFileURI(file), bytes.NewReader(src))
		ui.showProblem() // opening the file answered it
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

// defaults are the credentials the window uses when the user gives none.
type defaults struct {
	token     string // $RUNBOX_TOKEN, else the client directory's token file
	tokenFrom string // where token comes from (the directory, or $RUNBOX_TOKEN), for the Token field's placeholder
	tokenCA   string // the CA file written with the token file: the token goes only with it
	ca        string // the client directory's ca.crt, when it exists
	problem   string // a token file that cannot be read, in words for the notice
}

// clientDefaults reads the client directory (clientconf.Load) and $RUNBOX_TOKEN.
// $RUNBOX_TLS_CA is the -tls-ca flag's default, so it is not read here.
func clientDefaults(getenv func(string) string) defaults {
	var d defaults
	dir := clientconf.Dir(getenv)
	if dir != "" {
		if ca := filepath.Join(dir, clientconf.CAFile); fileExists(ca) {
			d.ca = tildePath(ca, getenv)
		}
	}
	if tok := getenv("RUNBOX_TOKEN"); tok != "" {
		d.token, d.tokenFrom = tok, "$RUNBOX_TOKEN"
		return d
	}
	if dir == "" {
		return d
	}
	path := filepath.Join(dir, clientconf.TokenFile)
	tok, err := clientconf.ReadToken(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		var pe *fs.PathError
		reason := err.Error()
		if errors.As(err, &pe) {
			reason = pe.Err.Error()
		} else {
			_, reason, _ = strings.Cut(reason, ": ")
		}
		d.problem = fmt.Sprintf("The token file %s cannot be used (%s): programs go without a token. "+
			"Fix the file (make cluster writes it), or type the token in the Token field.", tildePath(path, getenv), reason)
	default:
		d.token, d.tokenFrom = tok, tildePath(dir, getenv)
		d.tokenCA = d.ca // "" when the directory holds no CA: the token goes everywhere
	}
	return d
}

// tildePath writes a path under $HOME from ~/, shorter in a field.
func tildePath(path string, getenv func(string) string) string {
	if home := getenv("HOME"); home != "" {
		if rel, err := filepath.Rel(home, path); err == nil && rel != "." && !strings.HasPrefix(rel, "..") {
			return "~/" + rel
		}
	}
	return path
}

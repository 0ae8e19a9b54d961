package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"fyne.io/fyne/v2/storage"
	"fyne.io/fyne/v2/test"

	"runbox/sandbox"
)

// clientDir writes a client directory as `make cluster` does, under a home of its own,
// and returns the environment that names it.
func clientDir(t *testing.T, token string) (env map[string]string, dir string) {
	t.Helper()
	home := t.TempDir()
	dir = filepath.Join(home, ".config", "runbox")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), []byte("-----BEGIN CERTIFICATE-----\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if token != "" {
		if err := os.WriteFile(filepath.Join(dir, "token"), []byte(token+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return map[string]string{"HOME": home}, dir
}

func getenv(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestClientDefaultsReadTheClientDirectory(t *testing.T) {
	env, _ := clientDir(t, "rbx_s3cret")
	d := clientDefaults(getenv(env))
	want := defaults{token: "rbx_s3cret", tokenFrom: "~/.config/runbox", tokenCA: "~/.config/runbox/ca.crt", ca: "~/.config/runbox/ca.crt"}
	if d != want {
		t.Fatalf("defaults %+v, want %+v", d, want)
	}

	// $RUNBOX_TOKEN wins over the file, and goes with any CA (the user set it).
	env["RUNBOX_TOKEN"] = "rbx_env"
	d = clientDefaults(getenv(env))
	if d.token != "rbx_env" || d.tokenFrom != "$RUNBOX_TOKEN" || d.tokenCA != "" || d.ca != "~/.config/runbox/ca.crt" {
		t.Fatalf("with $RUNBOX_TOKEN: %+v", d)
	}

	// No client directory: nothing.
	if d := clientDefaults(getenv(map[string]string{"HOME": t.TempDir()})); d != (defaults{}) {
		t.Fatalf("no client directory: %+v", d)
	}
}

func TestClientDefaultsSayWhyTheTokenFileIsUnusable(t *testing.T) {
	for name, write := range map[string]func(path string) error{
		"two lines":   func(p string) error { return os.WriteFile(p, []byte("rbx_a\nrbx_b\n"), 0o600) },
		"a directory": func(p string) error { return os.Mkdir(p, 0o700) },
	} {
		t.Run(name, func(t *testing.T) {
			env, dir := clientDir(t, "")
			if err := write(filepath.Join(dir, "token")); err != nil {
				t.Fatal(err)
			}
			d := clientDefaults(getenv(env))
			if d.token != "" || !strings.Contains(d.problem, "~/.config/runbox/token") || !strings.Contains(d.problem, "cannot be used") {
				t.Fatalf("defaults %+v, want no token and a problem naming the file", d)
			}
			if strings.Contains(d.problem, "rbx_") {
				t.Fatalf("the problem shows the file's content: %q", d.problem)
			}
			if d.ca != "~/.config/runbox/ca.crt" {
				t.Fatalf("CA %q: the CA is found all the same", d.ca)
			}
		})
	}
}

// withDefaults configures a window as main does with the client directory's credentials.
func withDefaults(ca string) func(*Config) {
	return func(c *Config) {
		c.DefaultToken, c.DefaultTokenFrom, c.DefaultTokenCA = "rbx_s3cret", "~/.config/runbox", ca
		c.DefaultTLSCA = ca
	}
}

func TestClientDirectoryTokenIsUsedNotShown(t *testing.T) {
	ca := filepath.Join(t.TempDir(), "ca.crt")
	fs := newFakeServers()
	h := newHarness(t, fs.dial, withDefaults(ca))
	u := h.ui
	if u.srv.tlsCA.Text != ca {
		t.Fatalf("TLS CA field %q, want the client directory's %s", u.srv.tlsCA.Text, ca)
	}
	if u.srv.token.Text != "" || u.srv.token.PlaceHolder != "from ~/.config/runbox" {
		t.Fatalf("token field %q, placeholder %q; want it empty, saying where the token comes from", u.srv.token.Text, u.srv.token.PlaceHolder)
	}
	h.typeProgram("print(1)")
	run := func(want Server) {
		t.Helper()
		test.Tap(u.prog.runBtn)
		r := fs.next(t)
		if r.server != want {
			t.Fatalf("dialled %+v, want %+v", r.server, want)
		}
		r.end(sandbox.Result{Status: sandbox.StatusOK}, nil)
		n := len(u.jobs)
		h.until("the result", func() bool { return !u.jobs[n-1].active() })
	}
	run(Server{Addr: "127.0.0.1:7700", Token: "rbx_s3cret", CAFile: ca})

	// A token typed in the field wins.
	test.Type(u.srv.token, "typed")
	run(Server{Addr: "127.0.0.1:7700", Token: "typed", CAFile: ca})
	u.srv.token.SetText("")

	// Another CA, or none: the directory's token does not go there (not in clear, not to
	// another cluster), and the placeholder says so.
	u.srv.tlsCA.SetText("")
	if u.srv.token.PlaceHolder != "none" {
		t.Fatalf("placeholder %q without the directory's CA, want none", u.srv.token.PlaceHolder)
	}
	run(Server{Addr: "127.0.0.1:7700"})
	other := filepath.Join(t.TempDir(), "other-ca.crt")
	u.srv.tlsCA.SetText(other)
	run(Server{Addr: "127.0.0.1:7700", CAFile: other})
	u.srv.tlsCA.SetText(ca)
	if u.srv.token.PlaceHolder != "from ~/.config/runbox" {
		t.Fatalf("placeholder %q with the directory's CA again", u.srv.token.PlaceHolder)
	}
	run(Server{Addr: "127.0.0.1:7700", Token: "rbx_s3cret", CAFile: ca})

	// Nothing shows the token: not the field, not the window's texts.
	if got := u.notice.text() + u.detail.title.Text + u.detail.message.Text + u.detail.facts.Text; strings.Contains(got, "rbx_s3cret") {
		t.Fatalf("the window shows the token: %q", got)
	}
}

func TestRememberedCAWinsOverTheClientDirectory(t *testing.T) {
	dir := t.TempDir()
	clientCA, picked := filepath.Join(dir, "client-ca.crt"), filepath.Join(dir, "picked.crt")
	if err := os.WriteFile(picked, []byte("pem"), 0o644); err != nil {
		t.Fatal(err)
	}
	fs := newFakeServers()
	h := newHarness(t, fs.dial, nil)
	prefs := h.app.Preferences()
	for _, tc := range []struct {
		remembered, flag, want string
	}{
		{remembered: "", want: clientCA},                                             // first start
		{remembered: picked, want: picked},                                           // a CA the user picked, still there
		{remembered: filepath.Join(dir, "gone.crt"), want: clientCA},                 // one that is gone
		{remembered: picked, flag: "/etc/runbox/ca.crt", want: "/etc/runbox/ca.crt"}, // -tls-ca wins
	} {
		prefs.SetString(prefTLSCA, tc.remembered)
		h2 := newHarness(t, fs.dial, func(c *Config) {
			c.Prefs, c.TLSCA = prefs, tc.flag
			withDefaults(clientCA)(c)
		})
		if h2.ui.srv.tlsCA.Text != tc.want {
			t.Errorf("remembered %q, -tls-ca %q: field shows %q, want %q", tc.remembered, tc.flag, h2.ui.srv.tlsCA.Text, tc.want)
		}
	}
}

func TestUnreadableTokenFileIsSaid(t *testing.T) {
	fs := newFakeServers()
	problem := "The token file ~/.config/runbox/token cannot be used (permission denied): programs go without a token."
	h := newHarness(t, fs.dial, func(c *Config) { c.Problem = problem })
	if got := h.ui.notice.text(); got != problem {
		t.Fatalf("notice %q, want %q", got, problem)
	}
	if h.ui.srv.token.PlaceHolder != "none" {
		t.Fatalf("placeholder %q, want none", h.ui.srv.token.PlaceHolder)
	}
	// Opening a file (as main does with FILE) answers the notices; main shows it again.
	h.ui.prog.load(storage.NewFileURI(filepath.Join(t.TempDir(), "p.py")), strings.NewReader("print(1)"))
	h.ui.showProblem()
	if got := h.ui.notice.text(); got != problem {
		t.Fatalf("notice after opening a file %q, want %q", got, problem)
	}
}

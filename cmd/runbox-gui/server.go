package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/container"
	"fyne.io/fyne/v2/dialog"
	"fyne.io/fyne/v2/storage"
	"fyne.io/fyne/v2/theme"
	"fyne.io/fyne/v2/widget"
)

// serverView is the row of connection fields at the top of the window: the server's
// address and port, the token and the cluster's TLS CA file. Every Run and the Cluster tab
// go to the server it names (server), and it remembers the address between runs
// (remember), never the token.
type serverView struct {
	u *UI

	host, port, token *widget.Entry
	tlsCA             *widget.Entry // path of the cluster's CA certificate; empty: plaintext
	browseCA          *widget.Button
	content           fyne.CanvasObject
}

func newServerView(u *UI) *serverView {
	cfg := u.cfg
	s := &serverView{u: u, host: widget.NewEntry(), port: widget.NewEntry(), token: widget.NewPasswordEntry(), tlsCA: widget.NewEntry()}
	s.host.SetPlaceHolder(DefaultHost)
	s.port.SetPlaceHolder(DefaultPort)
	s.token.SetText(cfg.Token)
	host, port := cfg.Prefs.StringWithFallback(prefHost, DefaultHost), cfg.Prefs.StringWithFallback(prefPort, DefaultPort)
	if cfg.Server != "" {
		host, port, _ = splitServer(cfg.Server)
	}
	s.host.SetText(host)
	s.port.SetText(port)
	s.tlsCA.SetPlaceHolder("none: plaintext")
	s.tlsCA.SetText(startCA(cfg))
	s.browseCA = widget.NewButtonWithIcon("", theme.FolderOpenIcon(), s.showBrowseCA)
	// Editing the server answers a notice about the server; Enter runs.
	for _, e := range []*widget.Entry{s.host, s.port, s.tlsCA} {
		e.OnChanged = func(string) { u.notice.hide() }
		e.OnSubmitted = func(string) { u.run() }
	}
	s.tlsCA.OnChanged = func(string) { u.notice.hide(); s.showTokenSource() }
	s.showTokenSource()

	label := func(s string) *widget.Label {
		return widget.NewLabelWithStyle(s, fyne.TextAlignTrailing, fyne.TextStyle{Bold: true})
	}
	s.content = container.NewHBox(
		label("Server"), withWidth(s.host, 220),
		label("Port"), withWidth(s.port, 90),
		label("Token"), withWidth(s.token, 200),
		label("TLS CA"), withWidth(s.tlsCA, 260), s.browseCA,
	)
	return s
}

// server reads the connection fields; the error says what to fix, in words for people.
func (s *serverView) server() (Server, error) {
	host := strings.TrimSpace(s.host.Text)
	if host == "" {
		return Server{}, errors.New("Enter the server's name or IP address in the Server field.")
	}
	p, err := strconv.Atoi(strings.TrimSpace(s.port.Text))
	if err != nil || p < 1 || p > 65535 {
		return Server{}, fmt.Errorf("The port %q is not a number between 1 and 65535.", s.port.Text)
	}
	ca := expandHome(strings.TrimSpace(s.tlsCA.Text))
	tok := strings.TrimSpace(s.token.Text)
	if tok == "" && s.defaultTokenFor(ca) {
		tok = s.u.cfg.DefaultToken
	}
	return Server{Addr: net.JoinHostPort(host, strconv.Itoa(p)), Token: tok, CAFile: ca}, nil
}

// remember keeps the fields of srv, a server a job was sent to, for the next start.
func (s *serverView) remember(srv Server) {
	prefs := s.u.cfg.Prefs
	prefs.SetString(prefHost, strings.TrimSpace(s.host.Text))
	prefs.SetString(prefPort, strings.TrimSpace(s.port.Text))
	prefs.SetString(prefTLSCA, srv.CAFile)
}

// showBrowseCA picks the TLS CA file with the file dialog.
func (s *serverView) showBrowseCA() {
	d := dialog.NewFileOpen(func(r fyne.URIReadCloser, err error) {
		if err != nil {
			s.u.notice.show(theme.ColorNameError, "Cannot open the file: "+err.Error())
			return
		}
		if r == nil {
			return // cancelled
		}
		r.Close()
		s.setCAFile(r.URI())
	}, s.u.win)
	d.SetFilter(storage.NewExtensionFileFilter([]string{".crt", ".pem", ".cer"}))
	dir := ""
	if cur := strings.TrimSpace(s.tlsCA.Text); cur != "" {
		dir = filepath.Dir(cur)
	}
	showIn(d, dir)
}

// setCAFile puts a picked CA certificate in the TLS CA field.
func (s *serverView) setCAFile(uri fyne.URI) {
	if uri.Scheme() != "file" {
		s.u.notice.show(theme.ColorNameError, fmt.Sprintf("The TLS CA must be a local file, not %s.", uri))
		return
	}
	s.tlsCA.SetText(filepath.Clean(uri.Path()))
}

// defaultTokenFor says whether the client directory's token goes to a server reached
// with the CA file ca (a path, ~ expanded).
func (s *serverView) defaultTokenFor(ca string) bool {
	cfg := s.u.cfg
	if cfg.DefaultToken == "" {
		return false
	}
	if cfg.DefaultTokenCA == "" {
		return true
	}
	return ca != "" && filepath.Clean(ca) == filepath.Clean(expandHome(cfg.DefaultTokenCA))
}

// showTokenSource sets the empty Token field's placeholder: where the token that goes
// instead comes from, or none. The token itself is never shown.
func (s *serverView) showTokenSource() {
	hint := "none"
	if s.defaultTokenFor(expandHome(strings.TrimSpace(s.tlsCA.Text))) {
		hint = "from " + s.u.cfg.DefaultTokenFrom
	}
	if s.token.PlaceHolder != hint {
		s.token.SetPlaceHolder(hint)
	}
}

// startCA is what the TLS CA field shows at start: -tls-ca (or $RUNBOX_TLS_CA), else the
// CA file remembered if it still exists, else the client directory's, else what is
// remembered (nothing, or a file gone).
func startCA(cfg Config) string {
	remembered := cfg.Prefs.String(prefTLSCA)
	switch {
	case cfg.TLSCA != "":
		return cfg.TLSCA
	case remembered != "" && fileExists(expandHome(remembered)):
		return remembered
	case cfg.DefaultTLSCA != "":
		return cfg.DefaultTLSCA
	}
	return remembered
}

// expandHome reads a leading ~/ as the home directory, as people type paths.
func expandHome(path string) string {
	if rest, ok := strings.CutPrefix(path, "~/"); ok {
		if home, err := os.UserHomeDir(); err == nil {
			return filepath.Join(home, rest)
		}
	}
	return path
}

func fileExists(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular()
}

// splitServer splits the -server flag.
func splitServer(s string) (host, port string, err error) {
	host, port, err = net.SplitHostPort(s)
	if err != nil {
		return "", "", fmt.Errorf("bad server %q, want HOST:PORT: %v", s, err)
	}
	return host, port, nil
}

// Package clientconf finds the client credentials of a cluster that `make cluster` set up:
// the token and the CA certificate that the CLI and the desktop client use when they are
// given none. `make cluster` writes them, once, into the client directory:
//
//	$RUNBOX_CONFIG_DIR, else $XDG_CONFIG_HOME/runbox, else $HOME/.config/runbox
//	  token       the client token (bearer), one line
//	  ca.crt      the cluster's CA certificate (PEM)
//	  http-token  the dashboard's token, one line
//
// A flag or an environment variable ($RUNBOX_TOKEN, $RUNBOX_TLS_CA) given by the user
// always wins over these files. The package reads no environment itself: callers pass
// their getenv, so that tests and libraries stay free of the process's environment.
package clientconf

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// File names in the client directory.
const (
	TokenFile     = "token"
	CAFile        = "ca.crt"
	HTTPTokenFile = "http-token"
)

// maxTokenFile bounds what is read of a token file: a token is one short line.
const maxTokenFile = 4 << 10

// Dir is the client directory (see the package comment), "" when none can be named.
func Dir(getenv func(string) string) string {
	if d := getenv("RUNBOX_CONFIG_DIR"); d != "" {
		return d
	}
	if d := getenv("XDG_CONFIG_HOME"); d != "" {
		return filepath.Join(d, "runbox")
	}
	if h := getenv("HOME"); h != "" {
		return filepath.Join(h, ".config", "runbox")
	}
	return ""
}

// Defaults are the credentials a client uses when given none.
type Defaults struct {
	// Token is $RUNBOX_TOKEN, else the token file's line ("" when neither).
	Token string
	// TLSCA is $RUNBOX_TLS_CA, else the path of ca.crt in the client directory when it
	// exists ("" when neither).
	TLSCA string
	// From names where Token or TLSCA came from when a file gave them, for messages.
	From string
}

// Load returns the defaults. A token file that exists but cannot be read, or that holds
// something other than one line, is an error that names the file: a client should say
// so rather than connect without the credentials the user set up.
func Load(getenv func(string) string) (Defaults, error) {
	d := Defaults{Token: getenv("RUNBOX_TOKEN"), TLSCA: getenv("RUNBOX_TLS_CA")}
	dir := Dir(getenv)
	if dir == "" {
		return d, nil
	}
	if d.Token == "" {
		tok, err := ReadToken(filepath.Join(dir, TokenFile))
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return d, err
		default:
			d.Token, d.From = tok, dir
		}
	}
	if d.TLSCA == "" {
		ca := filepath.Join(dir, CAFile)
		if _, err := os.Stat(ca); err == nil {
			d.TLSCA, d.From = ca, dir
		}
	}
	return d, nil
}

// ReadToken reads a token file: one line, at most a few KiB, surrounding blanks dropped.
func ReadToken(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxTokenFile+1))
	if err != nil {
		return "", fmt.Errorf("token file %s: %w", path, err)
	}
	if len(b) > maxTokenFile {
		return "", fmt.Errorf("token file %s: longer than %d bytes, not a token", path, maxTokenFile)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" || strings.ContainsAny(tok, "\n\r\t ") {
		return "", fmt.Errorf("token file %s: want one token on one line", path)
	}
	return tok, nil
}

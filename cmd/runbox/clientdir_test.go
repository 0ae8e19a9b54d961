package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"runbox/internal/clientconf"
	"runbox/scheduler"
)

// TestClientDirDefaults: the CLI takes make cluster's CA when given no TLS or token flag,
// and its token only with that CA (never in clear, never to another cluster's CA).
func TestClientDirDefaults(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := filepath.Join(dir, clientconf.CAFile)
	getenv := func(k string) string {
		if k == "RUNBOX_CONFIG_DIR" {
			return dir
		}
		return ""
	}
	os.WriteFile(ca, []byte("pem"), 0o600)
	os.WriteFile(filepath.Join(dir, clientconf.TokenFile), []byte("rbx_dir\n"), 0o600)
	for _, tc := range []struct {
		name              string
		in                clientFlags
		wantCA, wantToken string
	}{
		{"nothing given", clientFlags{}, ca, "rbx_dir"},
		{"its CA given", clientFlags{TLSCA: ca}, ca, "rbx_dir"},
		{"a token given", clientFlags{Token: "rbx_flag"}, "", "rbx_flag"},
		{"another CA", clientFlags{TLSCA: "/other/ca.crt"}, "/other/ca.crt", ""},
		{"a client certificate", clientFlags{TLSCA: "/other/ca.crt", TLSCert: "c", TLSKey: "k"}, "/other/ca.crt", ""},
	} {
		c := tc.in
		if err := c.clientDirDefaults(getenv); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
		if c.TLSCA != tc.wantCA || c.Token != tc.wantToken {
			t.Errorf("%s: CA %q token %q, want %q %q", tc.name, c.TLSCA, c.Token, tc.wantCA, tc.wantToken)
		}
	}

	// No CA there: plaintext, no token, no error.
	os.Remove(ca)
	c := clientFlags{}
	if err := c.clientDirDefaults(getenv); err != nil || c.TLSCA != "" || c.Token != "" {
		t.Errorf("without a CA: %+v %v", c, err)
	}
	// A token file that is not a token is said, with its path.
	os.WriteFile(ca, []byte("pem"), 0o600)
	os.WriteFile(filepath.Join(dir, clientconf.TokenFile), []byte("a\nb\n"), 0o600)
	c = clientFlags{}
	if err := c.clientDirDefaults(getenv); err == nil || !strings.Contains(err.Error(), dir) {
		t.Errorf("a bad token file: %v", err)
	}
}

// TestExitCodeOfServerCodes: every code a server may answer maps to its documented exit
// code (submit -h).
func TestExitCodeOfServerCodes(t *testing.T) {
	t.Parallel()
	for code, want := range map[string]int{
		"storage_full": exitUnavailable, "unavailable": exitUnavailable, "shutting_down": exitUnavailable,
		"busy": exitBusy, "too_large": exitInvalid, "unknown_language": exitInvalid,
		"crashed_node": exitInternal, "name_taken": exitInternal,
	} {
		if got := exitCodeOf(scheduler.ErrorOf(code, "from the server")); got != want {
			t.Errorf("%s: exit %d, want %d", code, got, want)
		}
	}
}

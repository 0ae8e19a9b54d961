package clientconf

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestDir(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"RUNBOX_CONFIG_DIR": "/c", "XDG_CONFIG_HOME": "/x", "HOME": "/h"}, "/c"},
		{map[string]string{"XDG_CONFIG_HOME": "/x", "HOME": "/h"}, "/x/runbox"},
		{map[string]string{"HOME": "/h"}, "/h/.config/runbox"},
		{map[string]string{}, ""},
	} {
		if got := Dir(env(tc.env)); got != tc.want {
			t.Errorf("Dir(%v) = %q, want %q", tc.env, got, tc.want)
		}
	}
}

func TestLoad(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	e := map[string]string{"RUNBOX_CONFIG_DIR": dir}
	// Nothing there: no defaults, no error.
	if d, err := Load(env(e)); err != nil || d != (Defaults{}) {
		t.Fatalf("empty dir: %+v %v", d, err)
	}
	os.WriteFile(filepath.Join(dir, TokenFile), []byte("rbx_abc\n"), 0o600)
	os.WriteFile(filepath.Join(dir, CAFile), []byte("pem"), 0o600)
	d, err := Load(env(e))
	if err != nil || d.Token != "rbx_abc" || d.TLSCA != filepath.Join(dir, CAFile) || d.From != dir {
		t.Fatalf("files: %+v %v", d, err)
	}
	// The environment wins over the files.
	e["RUNBOX_TOKEN"], e["RUNBOX_TLS_CA"] = "rbx_env", "/env/ca.crt"
	if d, err := Load(env(e)); err != nil || d.Token != "rbx_env" || d.TLSCA != "/env/ca.crt" {
		t.Fatalf("env: %+v %v", d, err)
	}
}

func TestBadTokenFile(t *testing.T) {
	t.Parallel()
	for name, content := range map[string]string{
		"empty":     "\n",
		"two lines": "rbx_a\nrbx_b\n",
		"huge":      strings.Repeat("x", maxTokenFile+10),
	} {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, TokenFile), []byte(content), 0o600)
		_, err := Load(env(map[string]string{"RUNBOX_CONFIG_DIR": dir}))
		if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, TokenFile)) {
			t.Errorf("%s: %v, want an error naming the file", name, err)
		}
	}
}

package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"runbox/sandbox/sandboxtest"
	"runbox/transport"
)

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestCertsCommands(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "pki")
	if code, out, errOut := cli(t, "", "certs", "init", "--dir", dir); code != 0 || !strings.Contains(out, "certs issue") {
		t.Fatalf("init: %d %q %q", code, out, errOut)
	}
	if mode(t, filepath.Join(dir, "ca.key")) != 0o600 || mode(t, dir) != 0o700 {
		t.Errorf("ca.key %v, dir %v", mode(t, filepath.Join(dir, "ca.key")), mode(t, dir))
	}
	if code, _, errOut := cli(t, "", "certs", "init", "--dir", dir); code != 1 || !strings.Contains(errOut, "already holds a CA") {
		t.Errorf("second init: %d %q", code, errOut)
	}
	code, out, errOut := cli(t, "", "certs", "issue", "--dir", dir, "--role", "master", "--name", "master", "--host", "runbox.example,10.0.0.5")
	if code != 0 || !strings.Contains(out, "hosts master,localhost,127.0.0.1,::1,runbox.example,10.0.0.5") || !strings.Contains(out, "runbox master --tls-dir "+filepath.Join(dir, "master")) {
		t.Errorf("issue master: %d %q %q", code, out, errOut)
	}
	for _, role := range []string{"slave", "client"} {
		if code, out, errOut := cli(t, "", "certs", "issue", "--dir", dir, "--role", role, "--name", role+"-1", "--days", "30"); code != 0 || !strings.Contains(out, "--tls-") {
			t.Errorf("issue %s: %d %q %q", role, code, out, errOut)
		}
		if m := mode(t, filepath.Join(dir, role+"-1", "tls.key")); m != 0o600 {
			t.Errorf("%s key mode %v", role, m)
		}
	}
	for _, bad := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"certs", "issue", "--dir", dir, "--role", "admin", "--name", "x"}, exitUsage, "--role"},
		{[]string{"certs", "issue", "--dir", dir, "--role", "slave", "--name", "slave-1"}, 1, "already holds a certificate"},
		{[]string{"certs", "issue", "--dir", dir, "--role", "slave", "--name", "x", "--host", "h"}, exitUsage, "master's certificate only"},
		{[]string{"certs", "issue", "--dir", t.TempDir(), "--role", "slave", "--name", "x"}, 1, "runbox certs init"},
		{[]string{"certs", "frob"}, exitUsage, "unknown subcommand"},
		{[]string{"certs", "token"}, exitUsage, "--name"},
		{[]string{"certs", "token", "--name", "x", "speed=9"}, exitUsage, "unknown key"},
	} {
		if code, _, errOut := cli(t, "", bad.args...); code != bad.code || !strings.Contains(errOut, bad.want) {
			t.Errorf("%q: %d %q, want %d and %q", bad.args, code, errOut, bad.code, bad.want)
		}
	}

	// A token and its line, printed.
	code, out, _ = cli(t, "", "certs", "token", "--name", "alice", "concurrent=2", "memory=256MiB")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 4 || !strings.HasPrefix(lines[3], "rbx_") {
		t.Fatalf("token: %d %q", code, out)
	}
	tok, err := transport.ParseToken(lines[1])
	if err != nil || tok.Name != "alice" || tok.Concurrent != 2 || transport.HashToken(lines[3]) != strings.Fields(lines[1])[1] {
		t.Errorf("token line %q: %+v %v", lines[1], tok, err)
	}
	// Appended to a tokens file: only the token is printed; a name is unique.
	file := filepath.Join(dir, "tokens")
	code, out, _ = cli(t, "", "certs", "token", "--name", "join", "--slave", "--tokens", file)
	if code != 0 || !strings.HasPrefix(out, "rbx_") || strings.Count(out, "\n") != 1 || mode(t, file) != 0o600 {
		t.Errorf("token --tokens: %d %q", code, out)
	}
	if code, _, errOut := cli(t, "", "certs", "token", "--name", "join", "--tokens", file); code != 1 || !strings.Contains(errOut, "twice") {
		t.Errorf("same name again: %d %q", code, errOut)
	}
	ts, err := transport.LoadTokens(file)
	if err != nil || ts.Len() != 1 {
		t.Errorf("tokens file: %v", err)
	}
	if code, _, errOut := cli(t, "", "certs", "-h"); code != 0 || !strings.Contains(errOut, "NAME SHA256HEX") {
		t.Errorf("help: %d %q", code, errOut)
	}
}

// TestSecuredCluster runs a master with --tls-dir and --tokens, a slave with its
// certificate, and the CLI with --tls-ca and --token, the way docs/security.md says.
func TestSecuredCluster(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "pki")
	tokens := filepath.Join(dir, "tokens")
	for _, args := range [][]string{
		{"certs", "init", "--dir", dir},
		{"certs", "issue", "--dir", dir, "--role", "master", "--name", "master"},
		{"certs", "issue", "--dir", dir, "--role", "slave", "--name", "slave-1"},
		{"certs", "issue", "--dir", dir, "--role", "client", "--name", "alice-cert"},
	} {
		if code, _, errOut := cli(t, "", args...); code != 0 {
			t.Fatalf("%q: %d %s", args, code, errOut)
		}
	}
	_, token, _ := cli(t, "", "certs", "token", "--name", "alice", "--tokens", tokens, "per-minute=600")
	token = strings.TrimSpace(token)
	_, bob, _ := cli(t, "", "certs", "token", "--name", "bob", "--tokens", tokens, "memory=64MiB")
	bob = strings.TrimSpace(bob)

	addr := startMaster(t, &sandboxtest.Fake{}, func(c *masterConfig) {
		c.MaxPrograms = 0
		c.TLSDir, c.Tokens = filepath.Join(dir, "master"), tokens
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- serveSlave(ctx, slaveConfig{Master: addr, Node: "slave-1", MaxPrograms: 1, TLSDir: filepath.Join(dir, "slave-1")},
			slog.New(slog.DiscardHandler), &sandboxtest.Fake{Node: "slave-1"})
	}()
	t.Cleanup(func() { cancel(); <-done })

	ca := filepath.Join(dir, "ca.crt")
	prog := write(t, "p.py", "out secured")
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, out, errOut := cli(t, "", "submit", "--server", addr, "--tls-ca", ca, "--token", token, "--json", prog)
		var r jsonResult
		json.Unmarshal([]byte(out), &r)
		if code == 0 && r.Stdout == "secured\n" && r.Node == "slave-1" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("submit over TLS: %d %q %q", code, out, errOut)
		}
		time.Sleep(100 * time.Millisecond) // the slave is still joining
	}
	if code, out, errOut := cli(t, "", "status", "--server", addr, "--tls-ca", ca, "--token", token); code != 0 || !strings.Contains(out, "slave-1") {
		t.Errorf("status over TLS: %d %q %q", code, out, errOut)
	}
	client := filepath.Join(dir, "alice-cert")
	if code, _, errOut := cli(t, "", "submit", "--server", addr, "--tls-ca", ca, "--tls-cert", filepath.Join(client, "tls.crt"),
		"--tls-key", filepath.Join(client, "tls.key"), "--token", token, prog); code != 0 {
		t.Errorf("with a client certificate: %d %q", code, errOut)
	}

	for _, c := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"plaintext", []string{"--token", token}, exitUnauthorized, "requires TLS"},
		{"no token", []string{"--tls-ca", ca}, exitUnauthorized, "needs a token"},
		{"wrong token", []string{"--tls-ca", ca, "--token", "rbx_nope"}, exitUnauthorized, "unknown token"},
		{"quota", []string{"--tls-ca", ca, "--token", bob, "--memory-limit", "128MiB"}, exitUnauthorized, "above the 64MiB"},
		{"wrong CA", []string{"--tls-ca", filepath.Join(client, "tls.crt"), "--token", token}, exitUnauthorized, "certificate was refused"},
		{"missing CA file", []string{"--tls-ca", "/nonexistent/ca.crt"}, exitUsage, "no such file"},
		{"cert without CA", []string{"--tls-cert", "x", "--tls-key", "y"}, exitUsage, "need --tls-ca"},
	} {
		args := append(append([]string{"submit", "--server", addr}, c.args...), prog)
		code, _, errOut := cli(t, "", args...)
		if code != c.code || !strings.Contains(errOut, c.want) || strings.Count(strings.TrimSpace(errOut), "\n") > 0 {
			t.Errorf("%s: code %d (want %d), stderr %q (want one line with %q)", c.name, code, c.code, errOut, c.want)
		}
	}
	// A TLS client to a plaintext master.
	plain := startMaster(t, &sandboxtest.Fake{}, nil)
	if code, _, errOut := cli(t, "", "submit", "--server", plain, "--tls-ca", ca, prog); code != exitUnavailable || !strings.Contains(errOut, "does not speak TLS") {
		t.Errorf("tls to a plaintext master: %d %q", code, errOut)
	}
	// A slave with a client's certificate is refused and stops with exit code 77.
	err := serveSlave(context.Background(), slaveConfig{Master: addr, Node: "rogue", MaxPrograms: 1, TLSDir: client},
		slog.New(slog.DiscardHandler), &sandboxtest.Fake{})
	if exitCodeOf(err) != exitUnauthorized || !strings.Contains(err.Error(), "cannot register as a slave") {
		t.Errorf("slave with a client certificate: %v", err)
	}
}

// TestMasterJoinToken: the master's join token is kept 0600 in its data directory from
// the first start on, read from --join-token-file when given, or made for one run; the
// slaves' CA is the --tls-dir's.
func TestMasterJoinToken(t *testing.T) {
	t.Parallel()
	log := slog.New(slog.DiscardHandler)
	data := filepath.Join(t.TempDir(), "data")
	c1, err := masterSlaveCredentials("", data, "", log)
	if err != nil || !strings.HasPrefix(c1.Token, "rbx_") || c1.CA != nil {
		t.Fatalf("first start: %+v %v", c1, err)
	}
	if m := mode(t, filepath.Join(data, "join-token")); m != 0o600 {
		t.Errorf("join-token mode %v, want 0600", m)
	}
	if m := mode(t, data); m != 0o700 {
		t.Errorf("data directory mode %v, want 0700", m)
	}
	if c2, err := masterSlaveCredentials("", data, "", log); err != nil || c2.Token != c1.Token {
		t.Errorf("second start: a token other than the first's (%v)", err)
	}
	if c3, _ := masterSlaveCredentials("", "", "", log); c3.Token == "" || c3.Token == c1.Token {
		t.Errorf("without --data: %q", c3.Token)
	}
	file := write(t, "join", "rbx_given\n")
	if c, err := masterSlaveCredentials(file, data, "", log); err != nil || c.Token != "rbx_given" {
		t.Errorf("--join-token-file: %q %v", c.Token, err)
	}
	if _, err := masterSlaveCredentials(filepath.Join(t.TempDir(), "none"), "", "", log); err == nil {
		t.Error("a missing --join-token-file: no error")
	}
	pki := filepath.Join(t.TempDir(), "pki")
	cli(t, "", "certs", "init", "--dir", pki)
	cli(t, "", "certs", "issue", "--dir", pki, "--role", "master", "--name", "m")
	ca, _ := os.ReadFile(filepath.Join(pki, "ca.crt"))
	if c, err := masterSlaveCredentials("", "", filepath.Join(pki, "m"), log); err != nil || string(c.CA) != string(ca) || len(ca) == 0 {
		t.Errorf("the slaves' CA: %q %v", c.CA, err)
	}
}

func TestSlaveTokenFile(t *testing.T) {
	t.Parallel()
	file := write(t, "tok", "rbx_from_file\n")
	for _, c := range []struct {
		token, file, want, err string
	}{
		{"rbx_flag", "", "rbx_flag", ""},
		{"", file, "rbx_from_file", ""},
		{"rbx_flag", file, "", "not both"},
		{"", file + ".none", "", "no such file"},
	} {
		got, err := slaveToken(c.token, c.file)
		if got != c.want || (err == nil) != (c.err == "") || (err != nil && !strings.Contains(err.Error(), c.err)) {
			t.Errorf("slaveToken(%q, %q) = %q, %v; want %q, %q", c.token, c.file, got, err, c.want, c.err)
		}
	}
	if code, _, errOut := cli(t, "", "slave", "--master", "127.0.0.1:1", "--token", "x", "--token-file", file); code != exitUsage || !strings.Contains(errOut, "not both") {
		t.Errorf("both: %d %q", code, errOut)
	}
}

// TestJoinTokenAdmitsSlavesWithoutTokensFile: a TLS master without --tokens admits a slave
// with its own join token (from its data directory) and no other; clients still need no
// token.
func TestJoinTokenAdmitsSlavesWithoutTokensFile(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "pki")
	for _, args := range [][]string{
		{"certs", "init", "--dir", dir},
		{"certs", "issue", "--dir", dir, "--role", "master", "--name", "master"},
	} {
		if code, _, errOut := cli(t, "", args...); code != 0 {
			t.Fatalf("%q: %d %s", args, code, errOut)
		}
	}
	data := t.TempDir()
	addr := startMaster(t, &sandboxtest.Fake{}, func(c *masterConfig) {
		c.MaxPrograms, c.TLSDir, c.Data = 0, filepath.Join(dir, "master"), data
	})
	ca := filepath.Join(dir, "ca.crt")
	log := slog.New(slog.DiscardHandler)
	err := serveSlave(context.Background(), slaveConfig{Master: addr, Node: "rogue", MaxPrograms: 1, TLSCA: ca, Token: "rbx_guess"}, log, &sandboxtest.Fake{})
	if exitCodeOf(err) != exitUnauthorized {
		t.Errorf("a slave with a wrong token: %v", err)
	}
	join, err := slaveToken("", filepath.Join(data, "join-token"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- serveSlave(ctx, slaveConfig{Master: addr, Node: "joined", MaxPrograms: 1, TLSCA: ca, Token: join},
			log, &sandboxtest.Fake{Node: "joined"})
	}()
	t.Cleanup(func() { cancel(); <-done })
	prog := write(t, "p.py", "out joined")
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, out, errOut := cli(t, "", "submit", "--server", addr, "--tls-ca", ca, "--json", prog)
		var r jsonResult
		json.Unmarshal([]byte(out), &r)
		if code == 0 && r.Node == "joined" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("submit: %d %q %q", code, out, errOut)
		}
		time.Sleep(100 * time.Millisecond) // the slave is still joining
	}
}

package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"runbox/internal/clientconf"
	"runbox/transport"
)

const certsHelp = `Usage: runbox certs init|issue|token [flags]

Credentials of a secured cluster (see docs/security.md).

  runbox certs init  --dir DIR [--name NAME] [--days N]
      Makes a private CA in DIR: ca.crt, and ca.key (0600; keep it off the cluster).
  runbox certs issue --dir DIR --role master|slave|client --name NAME [--host H,...] [--days N] [--out OUT]
      Signs a certificate for NAME with its role in it, into OUT (default DIR/NAME):
      ca.crt, tls.crt, tls.key (0600). A master's certificate names the hosts it is
      dialled at (--host; NAME, localhost, 127.0.0.1 and ::1 always). Use the directory
      with --tls-dir on the master and slaves, its files with --tls-ca, --tls-cert and
      --tls-key on clients.
  runbox certs token --name NAME [--slave] [--tokens FILE] [KEY=VALUE ...]
      Makes a random bearer token and the tokens-file line that admits it (the master
      keeps only its SHA-256). With --tokens the line is appended to FILE and only the
      token is printed. --slave makes a join token for slaves. KEYs set the token's limits.

`

func runCerts(_ context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 || slices.Contains([]string{"-h", "--help", "help"}, args[0]) {
		fmt.Fprint(stderr, certsHelp+transport.TokensFormat)
		if len(args) == 0 {
			return exitUsage
		}
		return 0
	}
	switch args[0] {
	case "init":
		return certsInit(args[1:], stdout, stderr)
	case "issue":
		return certsIssue(args[1:], stdout, stderr)
	case "token":
		return certsToken(args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "runbox certs: unknown subcommand %q (init, issue or token)\n", args[0])
	return exitUsage
}

func newCertsFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("runbox certs "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, certsHelp)
		fmt.Fprintf(stderr, "Flags of %s:\n", name)
		fs.PrintDefaults()
	}
	return fs
}

func certsInit(args []string, stdout, stderr io.Writer) int {
	fs := newCertsFlags("init", stderr)
	dir := fs.String("dir", "", "directory of the CA (created 0700)")
	name := fs.String("name", "runbox CA", "the CA's name")
	days := fs.Int("days", 3650, "validity in days")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if *dir == "" || *days < 1 || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "runbox certs init: --dir DIR is needed (and --days at least 1); see runbox certs -h")
		return exitUsage
	}
	ca, err := transport.NewCA(*name, time.Duration(*days)*24*time.Hour)
	if err == nil {
		err = ca.Write(*dir)
	}
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			err = fmt.Errorf("%v: %s already holds a CA; keep it, or remove it to start over (every certificate it signed stops working)", err, *dir)
		}
		fmt.Fprintln(stderr, "runbox certs init:", err)
		return 1
	}
	fmt.Fprintf(stdout, "CA %q written to %s (%s, and %s readable by you only: keep it off the cluster's machines)\n",
		*name, *dir, transport.CAFile, transport.CAKeyFile)
	fmt.Fprintf(stdout, "next: runbox certs issue --dir %s --role master --name master --host MASTER-HOST\n", *dir)
	return 0
}

func certsIssue(args []string, stdout, stderr io.Writer) int {
	fs := newCertsFlags("issue", stderr)
	dir := fs.String("dir", "", "directory of the CA (from runbox certs init)")
	role := fs.String("role", "", "the holder's role: master, slave or client")
	name := fs.String("name", "", "the holder's name: a node's name or a person's")
	hosts := fs.String("host", "", "comma-separated DNS names and IP addresses the master is dialled at (master only)")
	days := fs.Int("days", 365, "validity in days")
	out := fs.String("out", "", "directory to write ca.crt, tls.crt and tls.key into (default DIR/NAME)")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if *dir == "" || *name == "" || *days < 1 || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "runbox certs issue: --dir DIR, --role ROLE and --name NAME are needed; see runbox certs -h")
		return exitUsage
	}
	if *role != transport.RoleMaster && *role != transport.RoleSlave && *role != transport.RoleClient {
		fmt.Fprintf(stderr, "runbox certs issue: --role %q: want master, slave or client\n", *role)
		return exitUsage
	}
	if *hosts != "" && *role != transport.RoleMaster {
		fmt.Fprintln(stderr, "runbox certs issue: --host is for a master's certificate only")
		return exitUsage
	}
	if *out == "" {
		*out = filepath.Join(*dir, *name)
	}
	ca, err := transport.LoadCA(*dir)
	if err != nil {
		fmt.Fprintf(stderr, "runbox certs issue: %v (make one with runbox certs init --dir %s)\n", err, *dir)
		return 1
	}
	req := transport.CertRequest{Role: *role, Name: *name, NotBefore: time.Now().Add(-5 * time.Minute),
		NotAfter: time.Now().Add(time.Duration(*days) * 24 * time.Hour)}
	if *role == transport.RoleMaster {
		req.Hosts = []string{*name, "localhost", "127.0.0.1", "::1"}
		for h := range strings.SplitSeq(*hosts, ",") {
			if h = strings.TrimSpace(h); h != "" && !slices.Contains(req.Hosts, h) {
				req.Hosts = append(req.Hosts, h)
			}
		}
	}
	if req.NotAfter.After(ca.Cert.NotAfter) {
		req.NotAfter = ca.Cert.NotAfter
	}
	certPEM, keyPEM, err := ca.Issue(req)
	if err == nil {
		err = transport.WriteCertDir(*out, ca.CertPEM, certPEM, keyPEM)
	}
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			err = fmt.Errorf("%v: %s already holds a certificate; give another --out or remove it", err, *out)
		}
		fmt.Fprintln(stderr, "runbox certs issue:", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s certificate for %q (valid until %s", *role, *name, req.NotAfter.Format(time.DateOnly))
	if len(req.Hosts) > 0 {
		fmt.Fprintf(stdout, ", hosts %s", strings.Join(req.Hosts, ","))
	}
	fmt.Fprintf(stdout, ") written to %s\n", *out)
	switch *role {
	case transport.RoleMaster:
		fmt.Fprintf(stdout, "use: runbox master --tls-dir %s\n", *out)
	case transport.RoleSlave:
		fmt.Fprintf(stdout, "use: runbox slave --tls-dir %s --master MASTER-HOST:7700\n", *out)
	default:
		fmt.Fprintf(stdout, "use: runbox submit --tls-ca %s --tls-cert %s --tls-key %s ...\n", filepath.Join(*out, transport.CAFile),
			filepath.Join(*out, transport.CertFile), filepath.Join(*out, transport.KeyFile))
	}
	return 0
}

func certsToken(args []string, stdout, stderr io.Writer) int {
	fs := newCertsFlags("token", stderr)
	name := fs.String("name", "", "the holder's name, as the audit log shows it")
	slave := fs.Bool("slave", false, "a join token for slaves (role=slave)")
	file := fs.String("tokens", "", "tokens file to append the line to (created 0600); only the token is printed then")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if *name == "" {
		fmt.Fprintln(stderr, "runbox certs token: --name NAME is needed; see runbox certs -h")
		return exitUsage
	}
	token, hash := transport.NewToken()
	fields := append([]string{*name, hash}, fs.Args()...)
	if *slave {
		fields = append(fields, "role="+transport.RoleSlave)
	}
	line := strings.Join(fields, " ")
	if _, err := transport.ParseToken(line); err != nil {
		fmt.Fprintln(stderr, "runbox certs token:", err)
		return exitUsage
	}
	if *file == "" {
		fmt.Fprintf(stdout, "# add this line to the master's tokens file (runbox master --tokens FILE):\n%s\n", line)
		fmt.Fprintf(stdout, "# the token of %s, shown only now (give it as --token or $RUNBOX_TOKEN):\n%s\n", *name, token)
		return 0
	}
	if err := appendToken(*file, *name, line); err != nil {
		fmt.Fprintln(stderr, "runbox certs token:", err)
		return 1
	}
	fmt.Fprintf(stderr, "runbox certs token: %s added to %s (restart the master to load it)\n", *name, *file)
	fmt.Fprintln(stdout, token)
	return 0
}

// appendToken appends line to the tokens file, refusing a name it already holds.
func appendToken(path, name, line string) error {
	if b, err := os.ReadFile(path); err == nil {
		if _, err := transport.ParseTokens(strings.NewReader(string(b)+line+"\n"), path); err != nil {
			return err
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintln(f, line); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// secureMaster applies `runbox master --tls-dir` and `--tokens` to the server's config.
func secureMaster(cfg *transport.ServerConfig, tlsDir, tokens string, log *slog.Logger) error {
	log = log.With("component", "master")
	if tlsDir != "" {
		t, err := transport.ServerTLS(tlsDir)
		if err != nil {
			return fmt.Errorf("--tls-dir: %w", err)
		}
		cfg.TLS = t
	}
	if tokens != "" {
		ts, err := transport.LoadTokens(tokens)
		if err != nil {
			return fmt.Errorf("--tokens: %w", err)
		}
		cfg.Tokens = ts
	}
	switch {
	case tlsDir == "" && tokens == "":
		log.Warn("open cluster: no --tls-dir and no --tokens, so anyone who reaches the port may submit programs or join as a slave, and traffic is plaintext")
	case tlsDir == "":
		log.Warn("no --tls-dir: tokens and programs cross the network in clear")
	case tokens == "":
		log.Info("tls on; no --tokens: any client that reaches the port may submit programs; slaves need a slave certificate")
	default:
		log.Info("tls on; clients need a token", "tokens", cfg.Tokens.Len())
	}
	return nil
}

// joinTokenFile is the master's join token in its --data directory.
const joinTokenFile = "join-token"

// slaveCredentials are what a master gives the slaves it provisions: its join token, which
// its own token store admits as a slave join token even without a tokens file, and the
// cluster's CA certificate when it speaks TLS.
type slaveCredentials struct {
	Token string
	CA    []byte // PEM; nil without --tls-dir
	Store *transport.TokenStore
}

// masterSlaveCredentials reads or makes the master's join token (--join-token-file, else
// DATA/join-token, made 0600 at the first start, else one for this run only) and reads
// the CA certificate of --tls-dir.
func masterSlaveCredentials(tokenFile, data, tlsDir string, log *slog.Logger) (slaveCredentials, error) {
	var c slaveCredentials
	var err error
	switch {
	case tokenFile != "":
		if c.Token, err = clientconf.ReadToken(tokenFile); err != nil {
			return c, fmt.Errorf("--join-token-file: %w", err)
		}
	case data != "":
		if c.Token, err = dataJoinToken(filepath.Join(data, joinTokenFile)); err != nil {
			return c, fmt.Errorf("join token: %w", err)
		}
	default:
		c.Token, _ = transport.NewToken()
		log.Debug("no --data and no --join-token-file: the slaves' join token lasts this run only", "component", "master")
	}
	line := "master-join " + transport.HashToken(c.Token) + " role=" + transport.RoleSlave
	if c.Store, err = transport.ParseTokens(strings.NewReader(line), "join token"); err != nil {
		return c, err
	}
	if tlsDir != "" {
		if c.CA, err = os.ReadFile(filepath.Join(tlsDir, transport.CAFile)); err != nil {
			return c, fmt.Errorf("--tls-dir: the CA certificate for the slaves: %w", err)
		}
	}
	return c, nil
}

// dataJoinToken returns the join token kept at path, making it (0600, in a 0700
// directory) when there is none.
func dataJoinToken(path string) (string, error) {
	tok, err := clientconf.ReadToken(path)
	if !errors.Is(err, os.ErrNotExist) {
		return tok, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", err
	}
	tok, _ = transport.NewToken()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", err
	}
	_, err = fmt.Fprintln(f, tok)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return "", err
	}
	return tok, nil
}

// clientTLS builds a client's TLS configuration from --tls-ca, --tls-cert and --tls-key
// (nil when none is given).
func clientTLS(ca, cert, key string) (*tls.Config, error) {
	if ca == "" {
		if cert != "" || key != "" {
			return nil, errors.New("--tls-cert and --tls-key need --tls-ca (the cluster's CA certificate)")
		}
		return nil, nil
	}
	return transport.ClientTLS(ca, cert, key)
}

// slaveTLS builds a slave's TLS configuration from --tls-dir or --tls-ca (nil when neither).
func slaveTLS(dir, ca string) (*tls.Config, error) {
	switch {
	case dir != "" && ca != "":
		return nil, errors.New("give --tls-dir or --tls-ca, not both")
	case dir != "":
		return transport.ClientTLSDir(dir)
	}
	return clientTLS(ca, "", "")
}

package transport

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"runbox/sandbox/sandboxtest"
	"runbox/scheduler"
)

// pki is a CA and the TLS directories it issued, in a test's temporary directory.
type pki struct {
	t   testing.TB
	dir string
	ca  *CA
}

func newPKI(t testing.TB) *pki {
	t.Helper()
	ca, err := NewCA("runbox test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := ca.Write(dir); err != nil {
		t.Fatal(err)
	}
	return &pki{t: t, dir: dir, ca: ca}
}

// issue writes a TLS directory for name and returns its path.
func (p *pki) issue(role, name string, notBefore, notAfter time.Time) string {
	p.t.Helper()
	certPEM, keyPEM, err := p.ca.Issue(CertRequest{Role: role, Name: name, Hosts: []string{"localhost", "127.0.0.1"},
		NotBefore: notBefore, NotAfter: notAfter})
	if err != nil {
		p.t.Fatal(err)
	}
	dir := filepath.Join(p.dir, name)
	if err := WriteCertDir(dir, p.ca.CertPEM, certPEM, keyPEM); err != nil {
		p.t.Fatal(err)
	}
	return dir
}

func (p *pki) valid(role, name string) string {
	return p.issue(role, name, time.Now().Add(-time.Minute), time.Now().Add(time.Hour))
}

func (p *pki) serverTLS() *tls.Config {
	p.t.Helper()
	cfg, err := ServerTLS(p.valid(RoleMaster, "master"))
	if err != nil {
		p.t.Fatal(err)
	}
	return cfg
}

// clientTLS is a client's configuration: the CA only, or with the TLS directory's
// certificate when dir is not empty.
func (p *pki) clientTLS(dir string) *tls.Config {
	p.t.Helper()
	var cfg *tls.Config
	var err error
	if dir == "" {
		cfg, err = ClientTLS(filepath.Join(p.dir, CAFile), "", "")
	} else {
		cfg, err = ClientTLSDir(dir)
	}
	if err != nil {
		p.t.Fatal(err)
	}
	return cfg
}

// logBuffer collects a server's logs.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuffer) logger() *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }

// waitLog waits until the log holds every want.
func waitLog(t testing.TB, l *logBuffer, want ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s := l.String()
		missing := ""
		for _, w := range want {
			if !strings.Contains(s, w) {
				missing = w
			}
		}
		if missing == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the log never said %q; it holds:\n%s", missing, s)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stillServes checks that the server runs a job for a good client after a refusal.
func stillServes(t testing.TB, addr string, mod func(*ClientConfig)) {
	t.Helper()
	c := dialT(t, addr, mod)
	res, err := c.Run(context.Background(), prog("out still here"), RunOptions{})
	if err != nil || string(res.Stdout) != "still here\n" {
		t.Fatalf("after a refusal the server no longer serves: %v %+v", err, res)
	}
}

func dialErr(addr string, mod func(*ClientConfig)) error {
	cfg := DefaultClientConfig()
	cfg.DialTimeout = 5 * time.Second
	if mod != nil {
		mod(&cfg)
	}
	c, err := Dial(context.Background(), addr, cfg)
	if err == nil {
		c.Close()
	}
	return err
}

func TestCertificatesCarryTheirRole(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	for _, role := range []string{RoleMaster, RoleSlave, RoleClient} {
		dir := p.valid(role, role+"-1")
		b, err := os.ReadFile(filepath.Join(dir, CertFile))
		if err != nil {
			t.Fatal(err)
		}
		blk, _ := pem.Decode(b)
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if CertRole(c) != role || c.Subject.CommonName != role+"-1" || c.URIs[0].String() != "runbox://role/"+role {
			t.Errorf("%s: role %q name %q uris %v", role, CertRole(c), c.Subject.CommonName, c.URIs)
		}
		if fi, _ := os.Stat(filepath.Join(dir, KeyFile)); fi.Mode().Perm() != 0o600 {
			t.Errorf("%s key mode %v", role, fi.Mode().Perm())
		}
	}
	if fi, _ := os.Stat(filepath.Join(p.dir, CAKeyFile)); fi.Mode().Perm() != 0o600 {
		t.Errorf("ca key mode %v", fi.Mode().Perm())
	}
	if _, err := ServerTLS(p.valid(RoleClient, "not-a-master")); err == nil || !strings.Contains(err.Error(), "master") {
		t.Errorf("a client certificate served as the master's: %v", err)
	}
	// A key others can read is refused.
	dir := p.valid(RoleSlave, "leaky")
	os.Chmod(filepath.Join(dir, KeyFile), 0o644)
	if _, err := ClientTLSDir(dir); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("world-readable key: %v", err)
	}
	if err := p.ca.Write(p.dir); !errors.Is(err, os.ErrExist) {
		t.Errorf("a second CA over the first: %v", err)
	}
}

func TestTLSClientAndSlave(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	ts := startServer(t, func(s *scheduler.Config, c *ServerConfig) { s.MaxPrograms = 0; c.TLS = p.serverTLS() })
	sl, err := NewSlave(SlaveConfig{Master: ts.addr, Node: "secure-slave", Capacity: 1, LoadInterval: 100 * time.Millisecond,
		Client: ClientConfig{TLS: p.clientTLS(p.valid(RoleSlave, "slave-1"))}}, &sandboxtest.Fake{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sl.Run(ctx) }()
	defer func() { cancel(); <-done }()
	waitNodes(t, ts, 2)
	c := dialT(t, ts.addr, func(c *ClientConfig) { c.TLS = p.clientTLS("") })
	res, err := c.Run(context.Background(), prog("out over tls"), RunOptions{})
	if err != nil || string(res.Stdout) != "over tls\n" || res.Node != "secure-slave" {
		t.Errorf("%v %+v", err, res)
	}
}

func TestPlaintextClientToTLSMasterRefused(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	var log logBuffer
	ts := startServer(t, func(_ *scheduler.Config, c *ServerConfig) { c.TLS = p.serverTLS(); c.Logger = log.logger() })
	err := dialErr(ts.addr, nil)
	if !errors.Is(err, ErrUnauthorized) || !strings.Contains(err.Error(), "requires TLS") || !strings.Contains(err.Error(), "--tls-ca") {
		t.Errorf("plaintext client: %v", err)
	}
	waitLog(t, &log, "connection refused", "plaintext client on a TLS port")
	stillServes(t, ts.addr, func(c *ClientConfig) { c.TLS = p.clientTLS("") })
}

func TestTLSClientToPlaintextMasterIsClear(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	var log logBuffer
	ts := startServer(t, func(_ *scheduler.Config, c *ServerConfig) { c.Logger = log.logger() })
	err := dialErr(ts.addr, func(c *ClientConfig) { c.TLS = p.clientTLS("") })
	if !errors.Is(err, ErrConnect) || !strings.Contains(err.Error(), "does not speak TLS") {
		t.Errorf("tls client to a plaintext master: %v", err)
	}
	waitLog(t, &log, "tls client on a plaintext port")
	stillServes(t, ts.addr, nil)
}

func TestTLSWrongCA(t *testing.T) {
	t.Parallel()
	p, other := newPKI(t), newPKI(t)
	var log logBuffer
	ts := startServer(t, func(s *scheduler.Config, c *ServerConfig) { c.TLS = p.serverTLS(); c.Logger = log.logger() })

	// A client trusting another CA refuses the master.
	err := dialErr(ts.addr, func(c *ClientConfig) { c.TLS = other.clientTLS("") })
	if !errors.Is(err, ErrUnauthorized) || !strings.Contains(err.Error(), "certificate was refused") {
		t.Errorf("client with the wrong CA: %v", err)
	}
	// A slave whose certificate another CA signed is refused by the master.
	otherSlave := other.valid(RoleSlave, "impostor")
	cfg := p.clientTLS("")
	pair, err := tls.LoadX509KeyPair(filepath.Join(otherSlave, CertFile), filepath.Join(otherSlave, KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Certificates = []tls.Certificate{pair}
	sl, _ := NewSlave(SlaveConfig{Master: ts.addr, Node: "impostor", Capacity: 1, Client: ClientConfig{TLS: cfg}}, &sandboxtest.Fake{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := sl.Run(ctx); !errors.Is(err, ErrUnauthorized) || !strings.Contains(err.Error(), "refused this client's certificate") {
		t.Errorf("slave with another CA's certificate: %v", err)
	}
	waitLog(t, &log, "unknown authority")
	if n := len(ts.sched.Snapshot(0).Nodes); n != 1 {
		t.Errorf("%d nodes", n)
	}
	stillServes(t, ts.addr, func(c *ClientConfig) { c.TLS = p.clientTLS("") })
}

func TestTLSExpiredCertificate(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	var log logBuffer
	ts := startServer(t, func(s *scheduler.Config, c *ServerConfig) { c.TLS = p.serverTLS(); c.Logger = log.logger() })
	expired := p.issue(RoleSlave, "expired", time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour))
	sl, _ := NewSlave(SlaveConfig{Master: ts.addr, Node: "expired", Capacity: 1, Client: ClientConfig{TLS: p.clientTLS(expired)}}, &sandboxtest.Fake{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := sl.Run(ctx); !errors.Is(err, ErrUnauthorized) || !strings.Contains(err.Error(), "expired") {
		t.Errorf("slave with an expired certificate: %v", err)
	}
	waitLog(t, &log, "connection refused", "expired")
	if n := len(ts.sched.Snapshot(0).Nodes); n != 1 {
		t.Errorf("%d nodes", n)
	}

	// A master with an expired certificate: clients refuse it.
	exp, err := ServerTLS(p.issue(RoleMaster, "old-master", time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	old := startServer(t, func(_ *scheduler.Config, c *ServerConfig) { c.TLS = exp })
	if err := dialErr(old.addr, func(c *ClientConfig) { c.TLS = p.clientTLS("") }); !errors.Is(err, ErrUnauthorized) || !strings.Contains(err.Error(), "expired") {
		t.Errorf("master with an expired certificate: %v", err)
	}
	stillServes(t, ts.addr, func(c *ClientConfig) { c.TLS = p.clientTLS("") })
}

func TestClientCertificateCannotRegisterAsSlave(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	var log logBuffer
	ts := startServer(t, func(s *scheduler.Config, c *ServerConfig) { c.TLS = p.serverTLS(); c.Logger = log.logger() })
	for _, tc := range []struct{ name, dir string }{
		{"client certificate", p.valid(RoleClient, "alice")},
		{"no certificate", ""},
	} {
		sl, _ := NewSlave(SlaveConfig{Master: ts.addr, Node: "rogue", Capacity: 1, Client: ClientConfig{TLS: p.clientTLS(tc.dir)}}, &sandboxtest.Fake{})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := sl.Run(ctx)
		cancel()
		if !errors.Is(err, ErrUnauthorized) {
			t.Errorf("%s registering as a slave: %v", tc.name, err)
		}
	}
	waitLog(t, &log, "a client certificate (alice) cannot register as a slave", "a slave joins with a slave certificate")
	if n := len(ts.sched.Snapshot(0).Nodes); n != 1 {
		t.Errorf("%d nodes", n)
	}
	// The same client certificate is fine for a client.
	stillServes(t, ts.addr, func(c *ClientConfig) { c.TLS = p.clientTLS(p.valid(RoleClient, "alice-2")) })
}

func TestMasterMustPresentAMasterCertificate(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	// A slave's certificate served as a master's (as if a slave's key were stolen to pose
	// as the master): clients refuse it even though the CA signed it.
	dir := p.valid(RoleSlave, "posing")
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, func(_ *scheduler.Config, c *ServerConfig) {
		c.TLS = &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{pair}}
	})
	cfg := p.clientTLS("")
	cfg.ServerName = "posing"
	cfg.InsecureSkipVerify = false
	err = dialErr(ts.addr, func(c *ClientConfig) { c.TLS = cfg })
	if !errors.Is(err, ErrUnauthorized) {
		t.Errorf("a slave certificate as the master's: %v", err)
	}
}

// recordingProxy forwards connections to a server and records every byte, both ways.
type recordingProxy struct {
	ln     net.Listener
	mu     sync.Mutex
	up     bytes.Buffer // client to server
	down   bytes.Buffer // server to client
	wg     sync.WaitGroup
	closed bool
}

func newRecordingProxy(t testing.TB, target string) *recordingProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &recordingProxy{ln: ln}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.wg.Add(2)
			pipe := func(dst, src net.Conn, rec *bytes.Buffer) {
				defer p.wg.Done()
				defer dst.Close()
				buf := make([]byte, 32<<10)
				for {
					n, err := src.Read(buf)
					if n > 0 {
						p.mu.Lock()
						rec.Write(buf[:n])
						p.mu.Unlock()
						if _, err := dst.Write(buf[:n]); err != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}
			go pipe(s, c, &p.up)
			go pipe(c, s, &p.down)
		}
	}()
	t.Cleanup(func() { ln.Close(); p.wg.Wait() })
	return p
}

func (p *recordingProxy) addr() string { return p.ln.Addr().String() }

func (p *recordingProxy) bytes() (up, down []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return bytes.Clone(p.up.Bytes()), bytes.Clone(p.down.Bytes())
}

// TestCaptureShowsNoProgramText: with TLS, the bytes on the wire between a client and the
// master hold neither the program, its output nor the token; without TLS they hold all
// three (so the test can tell).
func TestCaptureShowsNoProgramText(t *testing.T) {
	t.Parallel()
	const program = "out TOP-SECRET-PROGRAM-4711"
	const output = "TOP-SECRET-PROGRAM-4711"
	token, hash := NewToken()
	for _, secure := range []bool{false, true} {
		p := newPKI(t)
		tokens, err := ParseTokens(strings.NewReader("alice "+hash+"\n"), "tokens")
		if err != nil {
			t.Fatal(err)
		}
		ts := startServer(t, func(_ *scheduler.Config, c *ServerConfig) {
			c.Tokens = tokens
			if secure {
				c.TLS = p.serverTLS()
			}
		})
		proxy := newRecordingProxy(t, ts.addr)
		c := dialT(t, proxy.addr(), func(c *ClientConfig) {
			c.Token = token
			if secure {
				c.TLS = withServerName(p.clientTLS(""), ts.addr) // the proxy's address is the master's host
			}
		})
		res, err := c.Run(context.Background(), prog(program), RunOptions{})
		if err != nil || string(res.Stdout) != output+"\n" {
			t.Fatalf("secure %v: %v %+v", secure, err, res)
		}
		c.Close()
		up, down := proxy.bytes()
		// The submit frame is JSON: the source travels base64-encoded, the output raw.
		src := []byte(base64.StdEncoding.EncodeToString([]byte(program)))
		seen := bytes.Contains(up, src) && bytes.Contains(down, []byte(output)) && bytes.Contains(up, []byte(token))
		leaked := bytes.Contains(up, src) || bytes.Contains(up, []byte(output)) || bytes.Contains(down, []byte(output)) || bytes.Contains(up, []byte(token))
		switch {
		case secure && leaked:
			t.Errorf("with TLS the capture (%d bytes up, %d down) holds the program, its output or the token", len(up), len(down))
		case !secure && !seen:
			t.Errorf("without TLS the capture (%d bytes up, %d down) should hold the program, its output and the token: the test cannot see", len(up), len(down))
		}
	}
}

// TestReplayedHandshakeRefused: a hello captured off a plaintext connection and replayed
// to a TLS master is refused; the bytes of a whole TLS session (a slave's, with its join
// token) replayed on a new connection open no session, since TLS keys are fresh per
// connection.
func TestReplayedHandshakeRefused(t *testing.T) {
	t.Parallel()
	token, hash := NewToken()
	joinToken, joinHash := NewToken()
	tokens, err := ParseTokens(strings.NewReader("alice "+hash+"\njoin "+joinHash+" role=slave\n"), "tokens")
	if err != nil {
		t.Fatal(err)
	}
	p := newPKI(t)
	var log logBuffer
	ts := startServer(t, func(s *scheduler.Config, c *ServerConfig) {
		s.HeartbeatTimeout = 500 * time.Millisecond
		c.TLS, c.Tokens, c.Logger = p.serverTLS(), tokens, log.logger()
	})

	// Capture a plaintext hello with a good token (on a plaintext master with the same tokens).
	plain := startServer(t, func(_ *scheduler.Config, c *ServerConfig) { c.Tokens = tokens })
	proxy := newRecordingProxy(t, plain.addr)
	dialT(t, proxy.addr(), func(c *ClientConfig) { c.Token = token }).Close()
	hello, _ := proxy.bytes()
	if !bytes.Contains(hello, []byte(token)) {
		t.Fatal("the capture holds no token")
	}
	conn, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	conn.Write(hello)
	reply, _ := io.ReadAll(conn)
	conn.Close()
	typ, payload, err := ReadFrame(bytes.NewReader(reply), 64<<10)
	if err != nil || typ != FrameError || !bytes.Contains(payload, []byte(`"code":"unauthorized"`)) || !bytes.Contains(payload, []byte("requires TLS")) {
		t.Errorf("replayed plaintext hello: %q %q %v", typ, payload, err)
	}

	// Capture a TLS slave session (join token, no certificate), then replay what the slave sent.
	tproxy := newRecordingProxy(t, ts.addr)
	sl, _ := NewSlave(SlaveConfig{Master: tproxy.addr(), Node: "recorded", Capacity: 1, LoadInterval: 50 * time.Millisecond,
		Client: ClientConfig{Token: joinToken, TLS: withServerName(p.clientTLS(""), ts.addr)}}, &sandboxtest.Fake{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sl.Run(ctx) }()
	waitNodes(t, ts, 2)
	// Barrier: the recording holds heartbeats, at least two of them seen by the master.
	var firstBeat time.Time
	waitUntil(t, func() bool {
		for _, n := range ts.sched.Snapshot(0).Nodes {
			if n.Name == "recorded" && !n.LastBeat.IsZero() {
				if firstBeat.IsZero() {
					firstBeat = n.LastBeat
				}
				return n.LastBeat.After(firstBeat)
			}
		}
		return false
	})
	cancel()
	<-done
	waitUntil(t, func() bool { return len(ts.sched.Snapshot(0).Nodes) == 1 })
	recorded, _ := tproxy.bytes()
	if bytes.Contains(recorded, []byte(joinToken)) {
		t.Error("the join token crossed the wire in clear")
	}
	conn, err = net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	conn.Write(recorded)
	reply, _ = io.ReadAll(conn) // the master's TLS handshake fails and it hangs up
	conn.Close()
	if bytes.Contains(reply, []byte("recorded")) {
		t.Errorf("the replay got a readable answer: %q", reply)
	}
	// Barrier: the master refused the replay at its TLS handshake, before any hello: no
	// registration can follow on that connection.
	waitLog(t, &log, "tls handshake")
	if n := len(ts.sched.Snapshot(0).Nodes); n != 1 {
		t.Errorf("the replay registered a slave: %d nodes", n)
	}
	stillServes(t, ts.addr, func(c *ClientConfig) { c.TLS, c.Token = p.clientTLS(""), token })
}

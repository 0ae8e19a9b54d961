package transport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"runbox/sandbox"
	"runbox/sandbox/sandboxtest"
	"runbox/scheduler"
)

func TestParseTokens(t *testing.T) {
	t.Parallel()
	_, hash := NewToken()
	ts, err := ParseTokens(strings.NewReader(fmt.Sprintf(`# the team
alice %s concurrent=2 per-minute=30 memory=256MiB run-time=10s cpus=0.5   # a comment
ci    %s per-minute=600 burst=50 output=4MiB pids=128 open-files=256 disk=1GiB file-size=64MiB compile-time=30s compile-memory=1GiB

join  %s role=slave
`, hash, strings.Repeat("ab", 32), strings.Repeat("CD", 32))), "tokens")
	if err != nil {
		t.Fatal(err)
	}
	if ts.Len() != 3 {
		t.Fatalf("%d tokens", ts.Len())
	}
	a, ci, join := ts.tokens[0], ts.tokens[1], ts.tokens[2]
	if a.Name != "alice" || a.Role != RoleClient || a.Concurrent != 2 || a.PerMinute != 30 || a.Burst != 30 ||
		a.Max.Memory != 256*sandbox.MiB || a.Max.RunTime != 10*time.Second || a.Max.CPUs != 0.5 || a.Max.Pids != 0 {
		t.Errorf("alice %+v", a)
	}
	if ci.Burst != 50 || ci.Max.Output != 4*sandbox.MiB || ci.Max.Pids != 128 || ci.Max.OpenFiles != 256 ||
		ci.Max.Disk != sandbox.GiB || ci.Max.FileSize != 64*sandbox.MiB || ci.Max.CompileTime != 30*time.Second ||
		ci.Max.CompileMemory != sandbox.GiB || a.Max.CompileMemory != 0 {
		t.Errorf("ci %+v", ci)
	}
	if join.Role != RoleSlave {
		t.Errorf("join %+v", join)
	}
	if ts.lookup(strings.Repeat("x", 10)) != nil || ts.lookup("") != nil {
		t.Error("an unknown token matched")
	}

	tok, _ := NewToken()
	for _, bad := range []struct{ text, want string }{
		{"alice", "want NAME SHA256HEX"},
		{"alice " + tok, "not the token"},
		{"al/ice " + hash, "name"},
		{"alice " + hash + "\nalice " + hash, "appears twice"},
		{"alice " + hash + " speed=9", "unknown key"},
		{"alice " + hash + " memory=lots", "memory=lots"},
		{"alice " + hash + " compile-memory=-1", "compile-memory=-1"},
		{"alice " + hash + " run-time=5", "run-time=5"},
		{"alice " + hash + " role=admin", "role=admin"},
		{"alice " + hash + " concurrent=-1", "concurrent=-1"},
		{"alice " + hash + " concurrent", "KEY=VALUE"},
		// Values that would lift a cap instead of setting one: NaN compares false with
		// everything, so cpus=NaN was no cap at all.
		{"alice " + hash + " cpus=NaN", "cpus=NaN"},
		{"alice " + hash + " cpus=nan", "cpus=nan"},
		{"alice " + hash + " cpus=Inf", "cpus=Inf"},
		{"alice " + hash + " cpus=-Inf", "cpus=-Inf"},
		{"alice " + hash + " cpus=-1", "cpus=-1"},
		{"alice " + hash + " cpus=1e9", "at most 1024"},
		{"alice " + hash + " run-time=10000h", "at most 24h"},
		{"alice " + hash + " memory=2048GiB", "at most 1024GiB"},
		{"alice " + hash + " pids=99999999999", "pids="},
		{"alice " + hash + " concurrent=99999999", "0 to 1000000"},
		{"# a comment\nalice " + hash + "\nbob " + hash + " cpus=NaN", "tokens:3:"},
	} {
		_, err := ParseTokens(strings.NewReader(bad.text), "tokens")
		if err == nil || !strings.Contains(err.Error(), bad.want) || !strings.Contains(err.Error(), "tokens:") {
			t.Errorf("%q: %v, want an error with %q", bad.text, err, bad.want)
		}
	}
	if a, b := HashToken("x"), HashToken("x"); a != b || len(a) != 64 {
		t.Errorf("hash %q", a)
	}
	if t1, _ := NewToken(); t1 == tok || !strings.HasPrefix(t1, "rbx_") || len(t1) < 40 {
		t.Errorf("token %q", t1)
	}
}

// tokenServer starts a server with a tokens file made of lines "NAME [KEY=VALUE ...]"
// (the hashes are filled in) and returns it with the tokens by name.
func tokenServer(t *testing.T, log *logBuffer, mod func(*scheduler.Config, *ServerConfig), lines ...string) (*testServer, map[string]string) {
	t.Helper()
	toks := map[string]string{}
	var file strings.Builder
	for _, l := range lines {
		name, rest, _ := strings.Cut(l, " ")
		tok, hash := NewToken()
		toks[name] = tok
		fmt.Fprintf(&file, "%s %s %s\n", name, hash, rest)
	}
	store, err := ParseTokens(strings.NewReader(file.String()), "tokens")
	if err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, func(s *scheduler.Config, c *ServerConfig) {
		c.Tokens = store
		if log != nil {
			c.Logger = log.logger()
		}
		if mod != nil {
			mod(s, c)
		}
	})
	return ts, toks
}

func withToken(tok string) func(*ClientConfig) { return func(c *ClientConfig) { c.Token = tok } }

func TestTokenMissingOrWrong(t *testing.T) {
	t.Parallel()
	var log logBuffer
	ts, toks := tokenServer(t, &log, nil, "alice", "join role=slave")
	for _, tc := range []struct{ name, token, want string }{
		{"missing", "", "needs a token"},
		{"wrong", "rbx_guessed", "unknown token"},
		{"a join token as a client's", toks["join"], "slave join token"},
	} {
		err := dialErr(ts.addr, withToken(tc.token))
		if !errors.Is(err, ErrUnauthorized) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want unauthorized: %s", tc.name, err, tc.want)
		}
	}
	waitLog(t, &log, "component=audit", "connection refused", "unknown token")
	stillServes(t, ts.addr, withToken(toks["alice"]))
}

func TestSlaveJoinToken(t *testing.T) {
	t.Parallel()
	ts, toks := tokenServer(t, nil, func(s *scheduler.Config, _ *ServerConfig) { s.MaxPrograms = 0 }, "alice", "join role=slave")
	for _, tc := range []struct{ name, token string }{{"no token", ""}, {"a client token", toks["alice"]}, {"a wrong token", "rbx_x"}} {
		sl, _ := NewSlave(SlaveConfig{Master: ts.addr, Node: "rogue", Capacity: 1, Client: ClientConfig{Token: tc.token}}, &sandboxtest.Fake{})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := sl.Run(ctx); !errors.Is(err, ErrUnauthorized) {
			t.Errorf("slave with %s: %v", tc.name, err)
		}
		cancel()
	}
	sl, _ := NewSlave(SlaveConfig{Master: ts.addr, Node: "joined", Capacity: 1, LoadInterval: 100 * time.Millisecond,
		Client: ClientConfig{Token: toks["join"]}}, &sandboxtest.Fake{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sl.Run(ctx) }()
	defer func() { cancel(); <-done }()
	waitNodes(t, ts, 2)
	c := dialT(t, ts.addr, withToken(toks["alice"]))
	if res, err := c.Run(context.Background(), prog("out hi"), RunOptions{}); err != nil || res.Node != "joined" {
		t.Errorf("%v %+v", err, res)
	}
}

// TestMastersJoinToken: the master's own join token (ServerConfig.JoinTokens) admits a
// slave over TLS with no tokens file, where clients stay free to connect without a token;
// with a tokens file it is still no client token.
func TestMastersJoinToken(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	join, hash := NewToken()
	store, err := ParseTokens(strings.NewReader("master-join "+hash+" role=slave\n"), "join token")
	if err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, func(s *scheduler.Config, c *ServerConfig) {
		s.MaxPrograms = 0
		c.TLS, c.JoinTokens = p.serverTLS(), store
	})
	withCA := func(c *ClientConfig) { c.TLS = p.clientTLS("") }
	for _, tok := range []string{"", "rbx_guessed"} {
		sl, _ := NewSlave(SlaveConfig{Master: ts.addr, Node: "rogue", Capacity: 1, Client: ClientConfig{Token: tok, TLS: p.clientTLS("")}}, &sandboxtest.Fake{})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := sl.Run(ctx); !errors.Is(err, ErrUnauthorized) {
			t.Errorf("slave with token %q: %v, want unauthorized", tok, err)
		}
		cancel()
	}
	sl, _ := NewSlave(SlaveConfig{Master: ts.addr, Node: "provisioned", Capacity: 1, LoadInterval: 100 * time.Millisecond,
		Client: ClientConfig{Token: join, TLS: p.clientTLS("")}}, &sandboxtest.Fake{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sl.Run(ctx) }()
	defer func() { cancel(); <-done }()
	waitNodes(t, ts, 2)
	c := dialT(t, ts.addr, withCA) // a client without a token: no tokens file
	if res, err := c.Run(context.Background(), prog("out hi"), RunOptions{}); err != nil || res.Node != "provisioned" {
		t.Errorf("%v %+v", err, res)
	}

	// With a tokens file, the master's join token is no client token.
	ts2, toks := tokenServer(t, nil, func(_ *scheduler.Config, c *ServerConfig) { c.JoinTokens = store }, "alice")
	if err := dialErr(ts2.addr, withToken(join)); !errors.Is(err, ErrUnauthorized) || !strings.Contains(err.Error(), "slave join token") {
		t.Errorf("the join token as a client's: %v", err)
	}
	stillServes(t, ts2.addr, withToken(toks["alice"]))
}

func TestRateLimitPerMinute(t *testing.T) {
	t.Parallel()
	ts, toks := tokenServer(t, nil, nil, "alice per-minute=2", "bob")
	alice := dialT(t, ts.addr, withToken(toks["alice"]))
	for i := range 2 {
		if _, err := alice.Run(context.Background(), prog("out ok"), RunOptions{}); err != nil {
			t.Fatalf("job %d: %v", i, err)
		}
	}
	_, err := alice.Run(context.Background(), prog("out ok"), RunOptions{})
	if !errors.Is(err, ErrRateLimited) || Code(err) != "rate_limited" || !strings.Contains(err.Error(), "2 job(s) per minute") {
		t.Errorf("third job in a minute: %v", err)
	}
	// Other tokens are not held back.
	stillServes(t, ts.addr, withToken(toks["bob"]))
}

func TestBusyGivesTheRateBack(t *testing.T) {
	t.Parallel()
	ts, toks := tokenServer(t, nil, func(s *scheduler.Config, _ *ServerConfig) { s.MaxPrograms = 1; s.Queue = 0 }, "alice per-minute=2")
	c := dialT(t, ts.addr, withToken(toks["alice"]))
	started := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		_, err := c.Run(context.Background(), prog("sleep 300ms"), RunOptions{Handler: Handler{Started: func(string) { close(started) }}})
		errc <- err
	}()
	<-started
	if _, err := c.Run(context.Background(), prog("out x"), RunOptions{}); !errors.Is(err, scheduler.ErrBusy) {
		t.Fatalf("want busy: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	// The busy refusal did not count: the second job of the minute runs.
	if _, err := c.Run(context.Background(), prog("out x"), RunOptions{}); err != nil {
		t.Errorf("second job: %v", err)
	}
}

func TestConcurrentJobsLimit(t *testing.T) {
	t.Parallel()
	ts, toks := tokenServer(t, nil, nil, "alice concurrent=1")
	c := dialT(t, ts.addr, withToken(toks["alice"]))
	started := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		_, err := c.Run(context.Background(), prog("sleep 500ms\nout first"), RunOptions{Handler: Handler{Started: func(string) { close(started) }}})
		errc <- err
	}()
	<-started
	_, err := c.Run(context.Background(), prog("out second"), RunOptions{})
	if !errors.Is(err, ErrRateLimited) || !strings.Contains(err.Error(), "running or queued") {
		t.Errorf("second job while the first runs: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	// The slot comes back when the job ends (the audit goroutine releases it just after).
	waitUntil(t, func() bool {
		_, err := c.Run(context.Background(), prog("out third"), RunOptions{})
		return err == nil
	})
}

// A judged job holds up to sandbox.MaxParallelCases sandboxes at once, and counts that
// many times against concurrent=N.
func TestConcurrentLimitCountsSlots(t *testing.T) {
	t.Parallel()
	ts, toks := tokenServer(t, nil, nil, "alice concurrent=2")
	c := dialT(t, ts.addr, withToken(toks["alice"]))
	judged := func(cases int) sandbox.Spec {
		spec := prog("out 1")
		for range cases {
			spec.Tests = append(spec.Tests, sandbox.TestCase{Name: fmt.Sprint(len(spec.Tests) + 1), Expected: []byte("1\n")})
		}
		return spec
	}
	// More than the token may ever hold: refused for good (quota), not "retry later".
	_, err := c.Run(context.Background(), judged(8), RunOptions{})
	if !errors.Is(err, ErrQuota) || !strings.Contains(err.Error(), "runs 4 at once") {
		t.Errorf("judged job of 4 slots for concurrent=2: %v, want quota", err)
	}
	// One job runs: a judged job of two cases (two slots) does not fit beside it.
	started := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		_, err := c.Run(context.Background(), prog("sleep 500ms\nout first"), RunOptions{Handler: Handler{Started: func(string) { close(started) }}})
		errc <- err
	}()
	<-started
	_, err = c.Run(context.Background(), judged(2), RunOptions{})
	if !errors.Is(err, ErrRateLimited) || !strings.Contains(err.Error(), "holds 1 of its 2") {
		t.Errorf("judged job of 2 slots beside a running job, concurrent=2: %v, want rate_limited", err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	// Alone, it fits (the first job's slot comes back just after it ends).
	waitUntil(t, func() bool {
		_, err := c.Run(context.Background(), judged(2), RunOptions{})
		return err == nil
	})
}

func TestQuotaOnLimits(t *testing.T) {
	t.Parallel()
	ts, toks := tokenServer(t, nil, nil, "alice memory=64MiB run-time=1s")
	c := dialT(t, ts.addr, withToken(toks["alice"]))
	spec := prog("out x")
	spec.Limits.Memory = 128 * sandbox.MiB
	_, err := c.Run(context.Background(), spec, RunOptions{})
	if !errors.Is(err, ErrQuota) || Code(err) != "quota" || !strings.Contains(err.Error(), "memory limit 128MiB is above the 64MiB") {
		t.Errorf("128MiB with a 64MiB cap: %v", err)
	}
	spec.Limits = sandbox.Limits{RunTime: 2 * time.Second}
	if _, err := c.Run(context.Background(), spec, RunOptions{}); !errors.Is(err, ErrQuota) {
		t.Errorf("2s with a 1s cap: %v", err)
	}
	// Under the floor is still invalid_request, as without a token.
	spec.Limits = sandbox.Limits{Memory: 1}
	if _, err := c.Run(context.Background(), spec, RunOptions{}); !errors.Is(err, sandbox.ErrInvalidRequest) {
		t.Errorf("1 byte: %v", err)
	}
	// Within the caps, and the defaults above them (256MiB, 5s) come down to them.
	spec.Limits = sandbox.Limits{Memory: 32 * sandbox.MiB}
	if _, err := c.Run(context.Background(), spec, RunOptions{}); err != nil {
		t.Errorf("32MiB: %v", err)
	}
	lim := sandbox.Limits{}
	srv := ts.srv
	id := Identity{Name: "alice", Role: RoleClient, token: &srv.cfg.Tokens.tokens[0]}
	sp := sandbox.Spec{Limits: lim}
	release, err := srv.admit(id, &sp)
	if err != nil {
		t.Fatal(err)
	}
	release(false)
	if sp.Limits.Memory != 64*sandbox.MiB || sp.Limits.RunTime != time.Second || sp.Limits.Pids != 0 {
		t.Errorf("defaults under the caps: %+v", sp.Limits)
	}
}

func TestOtherTokensJobsAreHidden(t *testing.T) {
	t.Parallel()
	ts, toks := tokenServer(t, nil, nil, "alice", "bob")
	alice := dialT(t, ts.addr, withToken(toks["alice"]))
	bob := dialT(t, ts.addr, withToken(toks["bob"]))
	var id string
	if _, err := alice.Run(context.Background(), prog("out alice's secret"), RunOptions{Handler: Handler{Accepted: func(s string) { id = s }}}); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Wait(context.Background(), id, Handler{}); !errors.Is(err, scheduler.ErrNotFound) {
		t.Errorf("bob reads alice's job: %v", err)
	}
	if err := bob.Cancel(context.Background(), id); !errors.Is(err, scheduler.ErrNotFound) {
		t.Errorf("bob cancels alice's job: %v", err)
	}
	if res, err := alice.Wait(context.Background(), id, Handler{}); err != nil || string(res.Stdout) != "alice's secret\n" {
		t.Errorf("alice reads her job: %v %+v", err, res)
	}
}

// TestJobOwnersSurviveRestart: the owner is journaled with the job, so after a master
// restart a token still cannot read, cancel or list another token's jobs.
func TestJobOwnersSurviveRestart(t *testing.T) {
	t.Parallel()
	toks := map[string]string{}
	var file strings.Builder
	for _, name := range []string{"alice", "bob"} {
		tok, hash := NewToken()
		toks[name] = tok
		fmt.Fprintf(&file, "%s %s\n", name, hash)
	}
	journal := scheduler.NewMemJournal(100)
	// serve starts a master on journal; stop stops it the way a dying master would
	// leave its journal (the scheduler is closed, the records stay).
	serve := func() (addr string, stop func()) {
		store, err := ParseTokens(strings.NewReader(file.String()), "tokens")
		if err != nil {
			t.Fatal(err)
		}
		sched, err := scheduler.New(scheduler.DefaultConfig(), &sandboxtest.Fake{}, journal)
		if err != nil {
			t.Fatal(err)
		}
		cfg := DefaultServerConfig()
		cfg.Tokens = store
		srv, err := NewServer(cfg, sched)
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go srv.Serve(ln)
		return ln.Addr().String(), func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			srv.Shutdown(ctx)
			sched.Close()
		}
	}
	addr, stop := serve()
	alice := dialT(t, addr, withToken(toks["alice"]))
	var id string
	if _, err := alice.Run(context.Background(), prog("out alice's secret"), RunOptions{Handler: Handler{Accepted: func(s string) { id = s }}}); err != nil {
		t.Fatal(err)
	}
	alice.Close()
	stop()

	addr, stop = serve()
	defer stop()
	bob := dialT(t, addr, withToken(toks["bob"]))
	if _, err := bob.Wait(context.Background(), id, Handler{}); !errors.Is(err, scheduler.ErrNotFound) {
		t.Errorf("after a restart bob reads alice's job: %v", err)
	}
	if err := bob.Cancel(context.Background(), id); !errors.Is(err, scheduler.ErrNotFound) {
		t.Errorf("after a restart bob cancels alice's job: %v", err)
	}
	alice = dialT(t, addr, withToken(toks["alice"]))
	if res, err := alice.Wait(context.Background(), id, Handler{}); err != nil || string(res.Stdout) != "alice's secret\n" {
		t.Errorf("after a restart alice reads her job: %v %+v", err, res)
	}
	// status lists a token's own jobs only.
	if _, err := bob.Run(context.Background(), prog("out bob"), RunOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Run(context.Background(), prog("out alice again"), RunOptions{}); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]*Client{"alice": alice, "bob": bob} {
		snap, err := c.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if len(snap.Recent) != 1 {
			t.Errorf("%s's status lists %d recent jobs, want her or his one: %+v", name, len(snap.Recent), snap.Recent)
		}
		for _, in := range snap.Recent {
			if in.Owner != name {
				t.Errorf("%s's status lists %s's job %s", name, in.Owner, in.ID)
			}
		}
	}
}

func TestAuditLog(t *testing.T) {
	t.Parallel()
	var log logBuffer
	ts, toks := tokenServer(t, &log, nil, "alice per-minute=1")
	c := dialT(t, ts.addr, withToken(toks["alice"]))
	var id string
	if _, err := c.Run(context.Background(), prog("out audited"), RunOptions{Handler: Handler{Accepted: func(s string) { id = s }}}); err != nil {
		t.Fatal(err)
	}
	c.Run(context.Background(), prog("out refused, and not of the same size"), RunOptions{})
	waitLog(t, &log, "msg=job component=audit who=alice via=token", "job="+id, "language=python",
		fmt.Sprintf("size=%d", len("out audited")), "node=master", "status=ok",
		`msg="job refused" component=audit who=alice`, "code=rate_limited")

	// Without tokens every job is audited too, as anonymous.
	var log2 logBuffer
	open := startServer(t, func(_ *scheduler.Config, c *ServerConfig) { c.Logger = log2.logger() })
	stillServes(t, open.addr, nil)
	waitLog(t, &log2, "msg=job component=audit who=anonymous via=none", "status=ok")
}

// compile-memory is a limit like the others: a token caps it (quota past the cap, the cap
// in place of a higher default), and the server's maximum refuses more (invalid_request).
func TestCompileMemoryLimit(t *testing.T) {
	t.Parallel()
	ts, toks := tokenServer(t, nil, nil, "alice compile-memory=256MiB", "bob")
	alice := dialT(t, ts.addr, withToken(toks["alice"]))
	spec := prog("out x")
	spec.Limits.CompileMemory = 512 * sandbox.MiB
	if _, err := alice.Run(context.Background(), spec, RunOptions{}); !errors.Is(err, ErrQuota) ||
		!strings.Contains(err.Error(), "compile-memory limit 512MiB is above the 256MiB") {
		t.Errorf("512MiB with a 256MiB cap: %v", err)
	}
	spec.Limits.CompileMemory = 200 * sandbox.MiB
	if _, err := alice.Run(context.Background(), spec, RunOptions{}); err != nil {
		t.Errorf("200MiB under a 256MiB cap: %v", err)
	}
	sp := sandbox.Spec{}
	release, err := ts.srv.admit(Identity{Name: "alice", Role: RoleClient, token: &ts.srv.cfg.Tokens.tokens[0]}, &sp)
	if err != nil {
		t.Fatal(err)
	}
	release(false)
	if sp.Limits.CompileMemory != 256*sandbox.MiB {
		t.Errorf("a zero compile memory under a 256MiB cap (the default is %s): %s", sandbox.FormatSize(sandbox.DefaultLimits().CompileMemory),
			sandbox.FormatSize(sp.Limits.CompileMemory))
	}

	bob := dialT(t, ts.addr, withToken(toks["bob"]))
	spec.Limits.CompileMemory = sandbox.MaxLimits().CompileMemory + sandbox.MiB
	if _, err := bob.Run(context.Background(), spec, RunOptions{}); !errors.Is(err, sandbox.ErrInvalidRequest) ||
		!strings.Contains(err.Error(), "compile memory") {
		t.Errorf("past the server's maximum: %v, want invalid_request", err)
	}
}

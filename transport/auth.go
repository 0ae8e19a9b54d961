package transport

import (
	"bufio"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"math"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"runbox/sandbox"
	"runbox/scheduler"
)

// Authentication and per-token limits.
//
// Who may open a session (Server.authenticate):
//   - A slave: with a verified certificate of role slave, or a join token (a tokens-file
//     line with role=slave). A certificate of another role is refused even with a token.
//     With neither TLS nor a tokens file the cluster is open and anyone may join. The
//     master's own join tokens (ServerConfig.JoinTokens) admit slaves the same way.
//   - A client: with a tokens file, a client token (the token's name is who it is in the
//     audit log, and its limits apply); without one, anyone (named by its certificate when
//     it presents one).
//
// Replay: a hello carries a bearer token and no nonce. Freshness comes from TLS: every TLS
// 1.3 session has its own keys, so recorded bytes replayed on a new connection do not
// decrypt, and a plaintext hello sent to a TLS port is refused. Without TLS, tokens cross
// the network in clear and anyone who sees one can use it: tokens without TLS only keep
// honest clients apart.

// Identity is who a session authenticated as.
type Identity struct {
	// Name is the token's name, the certificate's name, or "" for an anonymous peer.
	Name string
	// Role is the session's role, RoleClient or RoleSlave.
	Role string
	// Via tells how it authenticated: "token", "certificate" or "none".
	Via string
	// Remote is the peer's address.
	Remote string

	token *Token // the client token, whose limits apply; nil when none
}

// Who names the identity in logs.
func (id Identity) Who() string {
	if id.Name == "" {
		return "anonymous"
	}
	return id.Name
}

// Token is one line of a tokens file.
type Token struct {
	// Name identifies the token's holder in the audit log; unique in a file.
	Name string
	// Role is RoleClient, or RoleSlave for a join token.
	Role string
	// Hash is the SHA-256 of the token.
	Hash [sha256.Size]byte
	// Concurrent caps the holder's jobs running or queued at once (0: no cap); a judged
	// job counts as the sandboxes it holds at once (sandbox.Spec.Slots, up to 4).
	Concurrent int
	// PerMinute caps how many jobs the holder submits per minute, in bursts of up to
	// Burst (0: no cap).
	PerMinute, Burst int
	// Max caps the limits a request may ask for; zero fields leave the server's maximum.
	// A request that leaves a limit zero gets the default, or this cap when it is lower.
	Max sandbox.Limits
}

// TokensFormat documents the tokens file (`runbox master --tokens FILE`).
const TokensFormat = `A tokens file has one token per line; '#' starts a comment.

    NAME SHA256HEX [KEY=VALUE ...]

NAME names the holder in the audit log (letters, digits, '.', '_', '-'; unique).
SHA256HEX is the SHA-256 of the token in hex: the master never stores tokens themselves.
KEYs:
    role=client|slave   slave: a join token for slaves (default client)
    concurrent=N        jobs running or queued at once (a judged job counts as the
                        test cases it runs at once, up to 4)
    per-minute=N        jobs submitted per minute (a token bucket: bursts of up to
                        burst=N, default per-minute)
    burst=N
    compile-time=D run-time=D                      Go durations: 10s, 500ms (at most 24h)
    memory=SIZE disk=SIZE output=SIZE file-size=SIZE  128MiB, 1GiB or bytes (at most 1TiB)
    compile-memory=SIZE                            the compiler's memory, apart from the
                                                   program's (memory=)
    cpus=F pids=N open-files=N                     cpus at most 1024; counts at most 1000000
The limit keys cap what a request may ask for (past them: error quota); concurrent and
per-minute past their caps answer rate_limited. Omitted keys: no cap of the token's own.
'runbox certs token --name NAME [KEY=VALUE ...]' makes a token and its line.
`

var tokenName = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)

// limitField is one field of sandbox.Limits, by its tokens-file key.
type limitField struct {
	key  string
	p    any // *time.Duration, *int64 or *float64
	size bool
}

func limitFields(l *sandbox.Limits) []limitField {
	return []limitField{
		{"compile-time", &l.CompileTime, false}, {"run-time", &l.RunTime, false},
		{"output", &l.Output, true}, {"cpus", &l.CPUs, false}, {"memory", &l.Memory, true},
		{"compile-memory", &l.CompileMemory, true},
		{"pids", &l.Pids, false}, {"disk", &l.Disk, true}, {"open-files", &l.OpenFiles, false},
		{"file-size", &l.FileSize, true},
	}
}

func (f limitField) value() float64 {
	switch p := f.p.(type) {
	case *time.Duration:
		return float64(*p)
	case *int64:
		return float64(*p)
	case *float64:
		return *p
	}
	return 0
}

func (f limitField) set(v float64) {
	switch p := f.p.(type) {
	case *time.Duration:
		*p = time.Duration(v)
	case *int64:
		*p = int64(v)
	case *float64:
		*p = v
	}
}

// Upper bounds on a tokens file's values: a value past them is a typo (or an attempt to
// lift a cap by overflow), not a limit.
const (
	maxTokenCount    = 1_000_000 // concurrent, per-minute, burst, pids, open-files
	maxTokenCPUs     = 1024
	maxTokenDuration = 24 * time.Hour
	maxTokenSize     = 1 << 40 // 1 TiB
)

func (f limitField) parse(s string) error {
	switch p := f.p.(type) {
	case *time.Duration:
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 || d > maxTokenDuration {
			return fmt.Errorf("%s=%s: want a positive Go duration like 10s, at most %v", f.key, s, maxTokenDuration)
		}
		*p = d
	case *float64:
		// ParseFloat takes NaN and Inf, which compare false with everything: a cap of NaN
		// would be no cap at all.
		v, err := strconv.ParseFloat(s, 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) || v <= 0 || v > maxTokenCPUs {
			return fmt.Errorf("%s=%s: want a positive number, at most %d", f.key, s, maxTokenCPUs)
		}
		*p = v
	case *int64:
		var v int64
		var err error
		bound := int64(maxTokenCount)
		if f.size {
			v, err = sandbox.ParseSize(s)
			bound = maxTokenSize
		} else {
			v, err = strconv.ParseInt(s, 10, 64)
		}
		if err != nil || v <= 0 || v > bound {
			what := "integer, at most " + strconv.FormatInt(bound, 10)
			if f.size {
				what = "size like 128MiB, at most " + sandbox.FormatSize(bound)
			}
			return fmt.Errorf("%s=%s: want a positive %s", f.key, s, what)
		}
		*p = v
	}
	return nil
}

func (f limitField) format(v float64) string {
	switch f.p.(type) {
	case *time.Duration:
		return time.Duration(v).String()
	case *int64:
		if f.size {
			return sandbox.FormatSize(int64(v))
		}
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}

// ParseToken parses one line of a tokens file (see TokensFormat).
func ParseToken(line string) (Token, error) {
	fields := strings.Fields(line)
	if len(fields) < 2 {
		return Token{}, fmt.Errorf("want NAME SHA256HEX [KEY=VALUE ...]")
	}
	t := Token{Name: fields[0], Role: RoleClient}
	if !tokenName.MatchString(t.Name) {
		return Token{}, fmt.Errorf("name %q: use letters, digits, '.', '_' and '-'", t.Name)
	}
	h, err := hex.DecodeString(fields[1])
	if err != nil || len(h) != sha256.Size {
		return Token{}, fmt.Errorf("%s: the second field must be the token's SHA-256 in hex (64 digits), not the token", t.Name)
	}
	copy(t.Hash[:], h)
	for _, kv := range fields[2:] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return Token{}, fmt.Errorf("%s: %q: want KEY=VALUE", t.Name, kv)
		}
		switch k {
		case "role":
			if v != RoleClient && v != RoleSlave {
				return Token{}, fmt.Errorf("%s: role=%s: want client or slave", t.Name, v)
			}
			t.Role = v
		case "concurrent", "per-minute", "burst":
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n > maxTokenCount {
				return Token{}, fmt.Errorf("%s: %s=%s: want a count, 0 to %d", t.Name, k, v, maxTokenCount)
			}
			switch k {
			case "concurrent":
				t.Concurrent = n
			case "per-minute":
				t.PerMinute = n
			default:
				t.Burst = n
			}
		default:
			found := false
			for _, f := range limitFields(&t.Max) {
				if f.key == k {
					if err := f.parse(v); err != nil {
						return Token{}, fmt.Errorf("%s: %v", t.Name, err)
					}
					found = true
				}
			}
			if !found {
				return Token{}, fmt.Errorf("%s: unknown key %q", t.Name, k)
			}
		}
	}
	if t.Burst == 0 {
		t.Burst = t.PerMinute
	}
	return t, nil
}

// TokenStore holds a tokens file and what its holders are using: it authenticates tokens
// in constant time (the presented token's hash is compared with every line's) and keeps
// the per-token counters behind the limits. It is safe for concurrent use.
type TokenStore struct {
	tokens []Token

	mu       sync.Mutex
	running  map[string]int           // by token name: jobs admitted and not ended
	limiters map[string]*rate.Limiter // by token name
}

// ParseTokens reads a tokens file (see TokensFormat); name is used in errors.
func ParseTokens(r io.Reader, name string) (*TokenStore, error) {
	ts := &TokenStore{running: map[string]int{}, limiters: map[string]*rate.Limiter{}}
	seen := map[string]bool{}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		if strings.TrimSpace(line) == "" {
			continue
		}
		t, err := ParseToken(line)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %v", name, n, err)
		}
		if seen[t.Name] {
			return nil, fmt.Errorf("%s:%d: name %q appears twice", name, n, t.Name)
		}
		seen[t.Name] = true
		if t.PerMinute > 0 {
			ts.limiters[t.Name] = rate.NewLimiter(rate.Limit(float64(t.PerMinute)/60), max(t.Burst, 1))
		}
		ts.tokens = append(ts.tokens, t)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %v", name, err)
	}
	return ts, nil
}

// LoadTokens reads the tokens file at path.
func LoadTokens(path string) (*TokenStore, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("tokens: %w", err)
	}
	defer f.Close()
	return ParseTokens(f, path)
}

// Len returns how many tokens the store holds.
func (ts *TokenStore) Len() int { return len(ts.tokens) }

// NewToken returns a new random token (256 bits) and its SHA-256 in hex, for a tokens file.
func NewToken() (token, hash string) {
	var b [32]byte
	rand.Read(b[:])
	token = "rbx_" + base64.RawURLEncoding.EncodeToString(b[:])
	return token, HashToken(token)
}

// HashToken returns a token's SHA-256 in hex, as a tokens file holds it.
func HashToken(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

// lookup returns the token whose hash matches, comparing with every line in constant time.
func (ts *TokenStore) lookup(token string) *Token {
	if token == "" {
		return nil
	}
	h := sha256.Sum256([]byte(token))
	var found *Token
	for i := range ts.tokens {
		if subtle.ConstantTimeCompare(h[:], ts.tokens[i].Hash[:]) == 1 {
			found = &ts.tokens[i]
		}
	}
	return found
}

// authenticate decides whether a hello may open a session (see the rules at the top of
// this file) and names who it is. A refusal wraps ErrUnauthorized.
func (s *Server) authenticate(hello Hello, state *tls.ConnectionState, remote string) (Identity, error) {
	id := Identity{Role: hello.Role, Via: "none", Remote: remote}
	if s.cfg.Authenticate != nil {
		if err := s.cfg.Authenticate(hello); err != nil {
			return id, err
		}
	}
	certRole, certName := PeerCert(state)
	var tok *Token
	if s.cfg.Tokens != nil {
		tok = s.cfg.Tokens.lookup(hello.Token)
	}
	if j := s.cfg.JoinTokens; tok == nil && j != nil {
		if t := j.lookup(hello.Token); t != nil && t.Role == RoleSlave {
			tok = t
		}
	}
	switch hello.Role {
	case RoleSlave:
		switch {
		case certRole == RoleSlave:
			id.Name, id.Via = certName, "certificate"
		case certRole != "":
			return id, fmt.Errorf("%w: a %s certificate (%s) cannot register as a slave", ErrUnauthorized, certRole, certName)
		case tok != nil && tok.Role == RoleSlave:
			id.Name, id.Via = tok.Name, "token"
		case tok != nil:
			return id, fmt.Errorf("%w: token %s is a client token, not a slave join token", ErrUnauthorized, tok.Name)
		case state != nil || s.cfg.Tokens != nil:
			return id, fmt.Errorf("%w: a slave joins with a slave certificate (runbox certs issue --role slave) or a join token (role=slave)", ErrUnauthorized)
		}
	default:
		if certRole != "" {
			id.Name, id.Via = certName, "certificate"
		}
		if s.cfg.Tokens == nil {
			break
		}
		switch {
		case hello.Token == "":
			return id, fmt.Errorf("%w: this server needs a token: pass --token (or $RUNBOX_TOKEN)", ErrUnauthorized)
		case tok == nil:
			return id, fmt.Errorf("%w: unknown token", ErrUnauthorized)
		case tok.Role != RoleClient:
			return id, fmt.Errorf("%w: token %s is a slave join token, not a client token", ErrUnauthorized, tok.Name)
		}
		id.Name, id.Via, id.token = tok.Name, "token", tok
	}
	return id, nil
}

// admit checks a job against its submitter's token before submission: its limits against
// the token's caps (quota; zero limits get the token's cap when it is below the default),
// then its jobs in flight and per minute (rate_limited). release, never nil, must be
// called once: with false when the job was not accepted after all (its share of the rate
// is given back), or with true when the accepted job has ended.
func (s *Server) admit(id Identity, spec *sandbox.Spec) (release func(ended bool), err error) {
	nop := func(bool) {}
	t := id.token
	if t == nil || s.cfg.Tokens == nil {
		return nop, nil
	}
	if err := spec.Limits.Check(sandbox.Limits{}); err != nil {
		return nop, err // below a floor: invalid_request, as without a token
	}
	def := sandbox.DefaultLimits()
	capf, deff := limitFields(&t.Max), limitFields(&def)
	for i, f := range limitFields(&spec.Limits) {
		v, c := f.value(), capf[i].value()
		switch {
		case c == 0:
		case v > c:
			return nop, fmt.Errorf("%w: %s limit %s is above the %s this token (%s) may ask for", ErrQuota,
				f.key, f.format(v), f.format(c), t.Name)
		case v == 0 && deff[i].value() > c:
			f.set(c)
		}
	}
	// A judged job holds up to sandbox.MaxParallelCases sandboxes at once: it counts as
	// that many jobs.
	slots := spec.Slots()
	if t.Concurrent > 0 && slots > t.Concurrent {
		return nop, fmt.Errorf("%w: a judged job with %d test cases runs %d at once, and token %s may hold %d job(s) at once (concurrent=%d); ask for a token with a higher concurrent",
			ErrQuota, len(spec.Tests), slots, t.Name, t.Concurrent, t.Concurrent)
	}
	ts := s.cfg.Tokens
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if t.Concurrent > 0 && ts.running[t.Name]+slots > t.Concurrent {
		return nop, fmt.Errorf("%w: token %s holds %d of its %d job(s) running or queued (a judged job counts as the test cases it runs at once, up to %d); retry when one ends",
			ErrRateLimited, t.Name, ts.running[t.Name], t.Concurrent, sandbox.MaxParallelCases)
	}
	var res *rate.Reservation
	now := time.Now()
	if lim := ts.limiters[t.Name]; lim != nil {
		res = lim.ReserveN(now, 1)
		if d := res.DelayFrom(now); d > 0 {
			res.CancelAt(now)
			return nop, fmt.Errorf("%w: token %s may submit %d job(s) per minute; retry in %v", ErrRateLimited, t.Name, t.PerMinute, d.Round(time.Second)+time.Second)
		}
	}
	ts.running[t.Name] += slots
	return func(ended bool) {
		ts.mu.Lock()
		ts.running[t.Name] -= slots
		ts.mu.Unlock()
		if !ended && res != nil {
			res.CancelAt(now) // as if never reserved
		}
	}, nil
}

// ownerOf is the owner a job that id submits is journaled with: the token's name when the
// server has a tokens file, "" (anyone's) on a server without one.
func (s *Server) ownerOf(id Identity) string {
	if s.cfg.Tokens == nil {
		return ""
	}
	return id.Name
}

// mayAccess reports, as scheduler.ErrNotFound (not telling whether it exists), when id
// asks for a job another token submitted. The owner is journaled with the job, so this
// holds after a master restart too; a job journaled without one (by a server without a
// tokens file) is no token's.
func (s *Server) mayAccess(id Identity, job *scheduler.Job) error {
	if s.cfg.Tokens != nil && job.Owner != s.ownerOf(id) {
		return fmt.Errorf("%w: %s", scheduler.ErrNotFound, job.ID)
	}
	return nil
}

// visible keeps, on a server with a tokens file, the jobs of a snapshot that id submitted:
// a token sees the nodes and its own jobs, never another's job ids.
func (s *Server) visible(id Identity, snap scheduler.Snapshot) scheduler.Snapshot {
	if s.cfg.Tokens == nil {
		return snap
	}
	owner := s.ownerOf(id)
	mine := func(jobs []scheduler.Info) []scheduler.Info {
		return slices.DeleteFunc(jobs, func(in scheduler.Info) bool { return in.Owner != owner })
	}
	snap.Running, snap.Queued, snap.Recent = mine(snap.Running), mine(snap.Queued), mine(snap.Recent)
	return snap
}

// auditJob waits for an admitted job's end, then releases its slot and writes its audit
// line: who, language, size, node, status.
// size is the program's, measured when it was admitted: a finished job no longer holds
// its sources.
func (s *Server) auditJob(job *scheduler.Job, id Identity, size int, release func(bool)) {
	defer s.wg.Done()
	defer release(true)
	defer s.recoverPanic(s.log, "audit", nil)
	select {
	case <-job.Done():
	case <-s.ctx.Done():
		return
	}
	info := job.Info()
	attrs := []any{"who", id.Who(), "via", id.Via, "remote", id.Remote, "job", job.ID,
		"language", job.Spec.Language, "size", size, "node", info.Node, "attempts", info.Attempts}
	if info.Error != "" {
		attrs = append(attrs, "status", "error", "error", info.Error)
	} else {
		attrs = append(attrs, "status", string(info.Status))
	}
	s.audit.Info("job", attrs...)
}

// auditRefused writes the audit line of a job refused before it was accepted.
func (s *Server) auditRefused(id Identity, spec sandbox.Spec, err error) {
	s.audit.Info("job refused", "who", id.Who(), "via", id.Via, "remote", id.Remote,
		"language", spec.Language, "size", specSize(spec), "status", "refused", "code", Code(err), "error", err.Error())
}

func specSize(spec sandbox.Spec) int {
	n := 0
	for _, f := range spec.Files {
		n += len(f.Content)
	}
	return n
}

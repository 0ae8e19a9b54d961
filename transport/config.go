package transport

// The configurations of the Server, the Client and the Slave, in one place: each has its
// Default function (the values of the runbox commands), withDefaults (a zero field takes
// the default: the only place defaults are applied) and Validate (a negative value, or a
// missing required field, is refused, naming the field). The library reads no
// environment: whatever a variable decides is set here by cmd.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/hashicorp/yamux"

	"runbox/scheduler"
)

// ServerConfig configures a Server.
type ServerConfig struct {
	// Node is the server's node name, sent in the welcome. Required.
	Node string
	// TLS, when set, wraps every accepted connection (ServerTLS builds it); a plaintext
	// client is then refused with a message saying TLS is required.
	TLS *tls.Config
	// HandshakeTimeout bounds the preamble and hello of a new connection.
	HandshakeTimeout time.Duration
	// FirstFrameTimeout bounds how long a new stream may stay silent: its first frame's
	// header must arrive within it, and its payload within it plus the payload's size at
	// MinRequestRate. A slave's control stream and its registration get as long.
	FirstFrameTimeout time.Duration
	// MinRequestRate is the slowest, in bytes per second, that a request's payload may
	// arrive: a 16 MiB request at the default 128 KiB/s gets 2 minutes.
	MinRequestRate int64
	// KeepAlive is the yamux keepalive period; a peer silent for about two periods is dead.
	KeepAlive time.Duration
	// ControlTimeout is how long a slave's control stream may stay silent (its heartbeats
	// stopped) before the master closes its session. The scheduler declares the node lost
	// sooner, on its own heartbeat timeout: this only frees what a peer that stopped
	// forever holds.
	ControlTimeout time.Duration
	// CancelGrace is how long a job on a slave may take, once the scheduler cancelled it,
	// to answer before the master gives up on its stream.
	CancelGrace time.Duration
	// Authenticate, when set, accepts or refuses a hello (wrap ErrUnauthorized to refuse).
	Authenticate func(Hello) error
	// Tokens, when set, makes clients authenticate with a bearer token and applies the
	// token's limits; slaves then join with a slave certificate or a join token (auth.go).
	Tokens *TokenStore
	// JoinTokens, when set, are more slave join tokens (role=slave lines; others are
	// ignored): the master's own, for the slaves it provisions. Unlike Tokens they do not
	// make clients need a token.
	JoinTokens *TokenStore
	// Logger receives the server's logs; nil discards them.
	Logger *slog.Logger
	// MuxLogger receives the yamux sessions' own logs (keepalive failures, streams reset
	// past the backlog); nil discards them.
	MuxLogger *slog.Logger
	// RequestBytes bounds the request payloads being received at once, over every
	// connection (SessionRequestBytes over one): every request frame reserves its declared
	// size before its bytes are read, and a request that does not fit is answered busy
	// (its bytes read and dropped, never held).
	RequestBytes, SessionRequestBytes int64
	// MaxStreams caps the streams of one client session being served at once (requests
	// being read, jobs being followed); a stream past it is answered busy at once and
	// closed. A session that holds more than 2*MaxStreams+StreamBacklog streams (its peer
	// keeps open the streams the server closed) is closed, and counts against its address
	// until yamux has let go of them (2 x KeepAlive).
	MaxStreams int
	// StreamBacklog caps the streams a peer opened that the server has not accepted yet
	// (yamux's accept backlog); yamux resets a stream past it at once. Each such stream
	// may hold a yamux receive window (256 KiB) of data.
	StreamBacklog int
	// MaxConnsPerAddress caps the connections from one IP address at once, from accept
	// to close, handshakes included. Past it a connection is answered busy after its
	// hello; past twice it, it is closed at once without a word.
	MaxConnsPerAddress int
	// DrainBytes caps how much of a refused request (busy, too_large) the server reads
	// and drops so that its sender, whose writes wait for the stream's window, gets to
	// read the answer; a larger refused request's stream is closed unread.
	DrainBytes int64
}

// Defaults of the caps above.
const (
	// Request budgets: 16 requests of the largest size at once, 4 per connection.
	DefaultRequestBytes        = 16 * MaxRequestFrame
	DefaultSessionRequestBytes = 4 * MaxRequestFrame
	DefaultMinRequestRate      = 128 << 10
	DefaultMaxStreams          = 32
	DefaultStreamBacklog       = 64
	DefaultMaxConnsPerAddress  = 64
	DefaultDrainBytes          = 4 * MaxRequestFrame
)

// DefaultServerConfig returns the defaults of `runbox master`. A zero field of a
// ServerConfig takes its value from here.
func DefaultServerConfig() ServerConfig {
	return ServerConfig{Node: "master", HandshakeTimeout: 5 * time.Second, FirstFrameTimeout: 5 * time.Second,
		KeepAlive: 5 * time.Second, ControlTimeout: time.Minute, CancelGrace: time.Second,
		MinRequestRate: DefaultMinRequestRate, RequestBytes: DefaultRequestBytes, SessionRequestBytes: DefaultSessionRequestBytes,
		MaxStreams: DefaultMaxStreams, StreamBacklog: DefaultStreamBacklog, MaxConnsPerAddress: DefaultMaxConnsPerAddress,
		DrainBytes: DefaultDrainBytes}
}

// Validate reports the first invalid field: no node name, or a negative value (zero
// takes the default).
func (c ServerConfig) Validate() error {
	if c.Node == "" {
		return errors.New("transport: server config: Node is empty; want the server's node name")
	}
	return nonNegative("server config",
		field{"HandshakeTimeout", int64(c.HandshakeTimeout)}, field{"FirstFrameTimeout", int64(c.FirstFrameTimeout)},
		field{"KeepAlive", int64(c.KeepAlive)}, field{"ControlTimeout", int64(c.ControlTimeout)},
		field{"CancelGrace", int64(c.CancelGrace)},
		field{"MinRequestRate", c.MinRequestRate}, field{"RequestBytes", c.RequestBytes},
		field{"SessionRequestBytes", c.SessionRequestBytes}, field{"MaxStreams", int64(c.MaxStreams)},
		field{"StreamBacklog", int64(c.StreamBacklog)}, field{"MaxConnsPerAddress", int64(c.MaxConnsPerAddress)},
		field{"DrainBytes", c.DrainBytes})
}

// withDefaults returns c with its zero timeouts and caps set to their defaults.
func (c ServerConfig) withDefaults() ServerConfig {
	def := DefaultServerConfig()
	orDefault(&c.HandshakeTimeout, def.HandshakeTimeout)
	orDefault(&c.FirstFrameTimeout, def.FirstFrameTimeout)
	orDefault(&c.KeepAlive, def.KeepAlive)
	orDefault(&c.ControlTimeout, def.ControlTimeout)
	orDefault(&c.CancelGrace, def.CancelGrace)
	orDefault(&c.MinRequestRate, def.MinRequestRate)
	orDefault(&c.RequestBytes, def.RequestBytes)
	orDefault(&c.SessionRequestBytes, def.SessionRequestBytes)
	orDefault(&c.DrainBytes, def.DrainBytes)
	orDefault(&c.MaxStreams, def.MaxStreams)
	orDefault(&c.StreamBacklog, def.StreamBacklog)
	orDefault(&c.MaxConnsPerAddress, def.MaxConnsPerAddress)
	return c
}

// mux returns the yamux configuration of the server's sessions.
func (c ServerConfig) mux() *yamux.Config {
	return withMuxLogger(yamuxConfig(c.KeepAlive, c.StreamBacklog), c.MuxLogger)
}

// ClientConfig configures a Client.
type ClientConfig struct {
	// Role is RoleClient (the default) or RoleSlave.
	Role string
	// Name identifies the client in the server's logs.
	Name string
	// Token is the bearer token, when the server asks for one.
	Token string
	// TLS, when set, wraps the connection.
	TLS *tls.Config
	// DialTimeout bounds one connection attempt, handshake included.
	DialTimeout time.Duration
	// KeepAlive is the yamux keepalive period.
	KeepAlive time.Duration
	// Reconnect is how long a job's watcher keeps trying to reach the server again after
	// the connection broke; 0 gives up at once (it is the one field whose zero is not
	// the default).
	Reconnect time.Duration
	// Backoff is the first wait between reconnect attempts; it doubles up to MaxBackoff.
	Backoff, MaxBackoff time.Duration
	// CancelGrace is how long a job whose ctx ended waits for the server's answer to its
	// cancel before it gives up on the stream.
	CancelGrace time.Duration
	// Logger receives reconnect notices; nil discards them.
	Logger *slog.Logger
	// MuxLogger receives the yamux session's own logs; nil discards them.
	MuxLogger *slog.Logger
}

// DefaultClientConfig returns the defaults of `runbox submit`. A zero field of a
// ClientConfig, but Reconnect, takes its value from here.
func DefaultClientConfig() ClientConfig {
	return ClientConfig{Role: RoleClient, DialTimeout: 5 * time.Second, KeepAlive: 5 * time.Second, Reconnect: 2 * time.Minute,
		Backoff: 100 * time.Millisecond, MaxBackoff: 5 * time.Second, CancelGrace: 2 * time.Second}
}

// Validate reports the first invalid field: an unknown role or a negative duration.
func (c ClientConfig) Validate() error {
	if c.Role != "" && c.Role != RoleClient && c.Role != RoleSlave {
		return fmt.Errorf("transport: client config: Role is %q; want %s or %s", c.Role, RoleClient, RoleSlave)
	}
	return nonNegative("client config",
		field{"DialTimeout", int64(c.DialTimeout)}, field{"KeepAlive", int64(c.KeepAlive)},
		field{"Reconnect", int64(c.Reconnect)}, field{"Backoff", int64(c.Backoff)},
		field{"MaxBackoff", int64(c.MaxBackoff)}, field{"CancelGrace", int64(c.CancelGrace)})
}

// withDefaults returns c with its zero fields (but Reconnect) set to their defaults.
func (c ClientConfig) withDefaults() ClientConfig {
	def := DefaultClientConfig()
	orDefault(&c.Role, def.Role)
	orDefault(&c.DialTimeout, def.DialTimeout)
	orDefault(&c.KeepAlive, def.KeepAlive)
	orDefault(&c.Backoff, def.Backoff)
	orDefault(&c.MaxBackoff, def.MaxBackoff)
	orDefault(&c.CancelGrace, def.CancelGrace)
	return c
}

// mux returns the yamux configuration of the client's session: its accept backlog is
// clientBacklog, the streams its server opens to it (job streams to a slave) that it has
// not accepted yet.
func (c ClientConfig) mux() *yamux.Config {
	return withMuxLogger(yamuxConfig(c.KeepAlive, clientBacklog), c.MuxLogger)
}

// clientBacklog is the accept backlog of a client's (or slave's) session.
const clientBacklog = 1024

// SlaveConfig configures a Slave.
type SlaveConfig struct {
	// Master is the master's address, host:port. Required.
	Master string
	// Node is this slave's name in the cluster (unique). Required.
	Node string
	// Capacity is how many programs it runs at once, at least 1.
	Capacity int
	// Languages it serves, with their image versions.
	Languages map[string]string
	// Client holds the connection settings (token, TLS, timeouts); its Role is set to
	// slave and its Name to Node.
	Client ClientConfig
	// LoadInterval is how often the slave reports its load (its heartbeat).
	LoadInterval time.Duration
	// FrameTimeout bounds how long the slave waits for a frame the master owes it: the
	// answer to its registration, a job stream's first frame, the close of a finished
	// job's stream.
	FrameTimeout time.Duration
	// Load samples the slave's load; nil reports zeros (still a heartbeat).
	Load func() scheduler.Load
	// Backoff is the first wait between attempts to reach the master; it doubles up to
	// MaxBackoff.
	Backoff, MaxBackoff time.Duration
	// Logger receives the slave's logs; nil discards them.
	Logger *slog.Logger
}

// DefaultSlaveConfig returns the defaults of `runbox slave`, but the master's address and
// the node's name. A zero field of a SlaveConfig takes its value from here.
func DefaultSlaveConfig() SlaveConfig {
	return SlaveConfig{Capacity: 1, Client: DefaultClientConfig(), LoadInterval: time.Second, FrameTimeout: 10 * time.Second,
		Backoff: 100 * time.Millisecond, MaxBackoff: 10 * time.Second}
}

// Validate reports the first invalid field: no master or node, a negative capacity or
// duration, or an invalid Client.
func (c SlaveConfig) Validate() error {
	if c.Master == "" || c.Node == "" {
		return errors.New("transport: slave config: a slave needs a master address (Master) and a node name (Node)")
	}
	if err := nonNegative("slave config", field{"Capacity", int64(c.Capacity)},
		field{"LoadInterval", int64(c.LoadInterval)}, field{"FrameTimeout", int64(c.FrameTimeout)},
		field{"Backoff", int64(c.Backoff)}, field{"MaxBackoff", int64(c.MaxBackoff)}); err != nil {
		return err
	}
	return c.Client.Validate()
}

// withDefaults returns c with its zero fields set to their defaults, and its Client's
// role and name set to a slave's.
func (c SlaveConfig) withDefaults() SlaveConfig {
	def := DefaultSlaveConfig()
	orDefault(&c.Capacity, def.Capacity)
	orDefault(&c.LoadInterval, def.LoadInterval)
	orDefault(&c.FrameTimeout, def.FrameTimeout)
	orDefault(&c.Backoff, def.Backoff)
	orDefault(&c.MaxBackoff, def.MaxBackoff)
	c.Client.Role, c.Client.Name = RoleSlave, c.Node
	c.Client = c.Client.withDefaults()
	return c
}

// orDefault sets *p to def when it is zero.
func orDefault[T comparable](p *T, def T) {
	var zero T
	if *p == zero {
		*p = def
	}
}

// field is a named value for nonNegative.
type field struct {
	name string
	v    int64
}

// nonNegative reports the first negative field of what.
func nonNegative(what string, fields ...field) error {
	for _, f := range fields {
		if f.v < 0 {
			return fmt.Errorf("transport: %s: %s is %d; want 0 (the default) or more", what, f.name, f.v)
		}
	}
	return nil
}

// yamuxConfig is the yamux configuration of a session, its logs discarded; backlog caps
// the streams the peer opened and this side has not accepted yet.
func yamuxConfig(keepAlive time.Duration, backlog int) *yamux.Config {
	cfg := yamux.DefaultConfig()
	cfg.EnableKeepAlive = true
	cfg.KeepAliveInterval = keepAlive
	cfg.ConnectionWriteTimeout = 2 * keepAlive
	cfg.StreamOpenTimeout = 2 * keepAlive
	cfg.StreamCloseTimeout = 2 * keepAlive
	cfg.LogOutput = nil
	cfg.Logger = muxLogger{slog.New(slog.DiscardHandler)}
	cfg.AcceptBacklog = backlog
	return cfg
}

// withMuxLogger sends cfg's logs to log (nil: discarded).
func withMuxLogger(cfg *yamux.Config, log *slog.Logger) *yamux.Config {
	if log != nil {
		cfg.Logger = muxLogger{log.With("component", "yamux")}
	}
	return cfg
}

// muxLogger is yamux's logger on slog: yamux's "[ERR] yamux: keepalive failed: ..."
// becomes an error record "yamux: keepalive failed: ...", its [WARN] a warning, anything
// else a debug record.
type muxLogger struct{ log *slog.Logger }

func (l muxLogger) Print(v ...any)                 { l.write(fmt.Sprint(v...)) }
func (l muxLogger) Println(v ...any)               { l.write(fmt.Sprintln(v...)) }
func (l muxLogger) Printf(format string, v ...any) { l.write(fmt.Sprintf(format, v...)) }

func (l muxLogger) write(msg string) {
	msg = strings.TrimSpace(msg)
	level := slog.LevelDebug
	for prefix, lv := range map[string]slog.Level{"[ERR]": slog.LevelError, "[WARN]": slog.LevelWarn, "[DEBUG]": slog.LevelDebug} {
		if rest, ok := strings.CutPrefix(msg, prefix); ok {
			msg, level = strings.TrimSpace(rest), lv
		}
	}
	l.log.Log(context.Background(), level, msg)
}

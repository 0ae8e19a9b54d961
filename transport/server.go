package transport

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
	"golang.org/x/sync/semaphore"

	"runbox/internal/frame"
	"runbox/sandbox"
	"runbox/scheduler"
)

// ServerConfig configures a Server.
type ServerConfig struct {
	// Node is the server's node name, sent in the welcome.
	Node string
	// TLS, when set, wraps every accepted connection (ServerTLS builds it); a plaintext
	// client is then refused with a message saying TLS is required.
	TLS *tls.Config
	// HandshakeTimeout bounds the preamble and hello of a new connection.
	HandshakeTimeout time.Duration
	// FirstFrameTimeout bounds how long a new stream may stay silent.
	FirstFrameTimeout time.Duration
	// KeepAlive is the yamux keepalive period; a peer silent for about two periods is dead.
	KeepAlive time.Duration
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
	// RequestBytes bounds the request payloads being received at once, over every
	// connection (SessionRequestBytes over one): a request frame larger than 64 KiB reserves
	// its declared size before its bytes are read, and a request that does not fit is
	// answered busy (its bytes are read and dropped). Zero takes the default.
	RequestBytes, SessionRequestBytes int64
}

// Default request budgets: 16 requests of the largest size at once, 4 per connection.
const (
	DefaultRequestBytes        = 16 * MaxRequestFrame
	DefaultSessionRequestBytes = 4 * MaxRequestFrame
)

// DefaultServerConfig returns the defaults of `runbox master`.
func DefaultServerConfig() ServerConfig {
	return ServerConfig{Node: "master", HandshakeTimeout: 5 * time.Second, FirstFrameTimeout: 10 * time.Second, KeepAlive: 5 * time.Second}
}

// Validate reports the first invalid field.
func (c ServerConfig) Validate() error {
	if c.Node == "" || c.HandshakeTimeout <= 0 || c.FirstFrameTimeout <= 0 || c.KeepAlive <= 0 {
		return errors.New("transport: server config needs a node name and positive timeouts")
	}
	return nil
}

// Server serves the cluster protocol for a Scheduler.
type Server struct {
	cfg   ServerConfig
	sched *scheduler.Scheduler
	log   *slog.Logger
	audit *slog.Logger // one line per job and per refused connection

	requestBytes *semaphore.Weighted // request payloads being received (ServerConfig.RequestBytes)

	ctx    context.Context // cancelled by Shutdown: every stream ends
	cancel context.CancelFunc
	wg     sync.WaitGroup // connection and stream goroutines

	mu        sync.Mutex
	listeners map[net.Listener]bool
	conns     map[net.Conn]bool
	closed    bool
}

// NewServer returns a Server for sched.
func NewServer(cfg ServerConfig, sched *scheduler.Scheduler) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.RequestBytes <= 0 {
		cfg.RequestBytes = DefaultRequestBytes
	}
	if cfg.SessionRequestBytes <= 0 {
		cfg.SessionRequestBytes = DefaultSessionRequestBytes
	}
	s := &Server{cfg: cfg, sched: sched, log: log.With("component", "transport"), audit: log.With("component", "audit"),
		listeners: map[net.Listener]bool{}, conns: map[net.Conn]bool{}, requestBytes: semaphore.NewWeighted(cfg.RequestBytes)}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("transport: server closed")

// Serve accepts connections on ln until Shutdown. It always returns a non-nil error.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.listeners[ln] = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()
	backoff := 5 * time.Millisecond
	for {
		conn, err := ln.Accept()
		if err != nil {
			if s.ctx.Err() != nil {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(backoff)
				backoff = min(2*backoff, time.Second)
				continue
			}
			return err
		}
		backoff = 5 * time.Millisecond
		if !s.track(conn) {
			conn.Close()
			return ErrServerClosed
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.untrack(conn)
			s.serveConn(conn)
		}()
	}
}

func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = true
	return true
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	c.Close()
}

// Shutdown stops accepting, ends every connection and stream and waits for their
// goroutines, or returns ctx's error when it ends first. Jobs keep running in the scheduler.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	for ln := range s.listeners {
		ln.Close()
	}
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.cancel()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func yamuxConfig(keepAlive time.Duration) *yamux.Config {
	cfg := yamux.DefaultConfig()
	cfg.EnableKeepAlive = true
	cfg.KeepAliveInterval = keepAlive
	cfg.ConnectionWriteTimeout = 2 * keepAlive
	cfg.StreamOpenTimeout = 2 * keepAlive
	cfg.StreamCloseTimeout = 2 * keepAlive
	cfg.LogOutput = io.Discard
	if os.Getenv("RUNBOX_YAMUX_LOG") != "" {
		cfg.LogOutput = os.Stderr
	}
	cfg.AcceptBacklog = 1024
	return cfg
}

// serveConn runs the handshake and then serves the connection's streams.
func (s *Server) serveConn(conn net.Conn) {
	log := s.log.With("remote", conn.RemoteAddr().String())
	conn.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	conn, state, err := s.secure(conn)
	if err != nil {
		log.Debug("handshake refused", "err", err)
		return
	}
	hello, id, err := s.handshake(conn, state)
	if err != nil {
		log.Debug("handshake refused", "err", err)
		return
	}
	conn.SetDeadline(time.Time{})
	sess, err := yamux.Server(newBatchConn(conn), yamuxConfig(s.cfg.KeepAlive))
	if err != nil {
		return
	}
	defer sess.Close()
	log = log.With("role", hello.Role, "peer", hello.Name, "who", id.Who())
	log.Debug("session open")
	stop := context.AfterFunc(s.ctx, func() { sess.Close() })
	defer stop()
	if hello.Role == RoleSlave {
		s.serveSlave(sess, hello, log)
		return
	}
	budget := semaphore.NewWeighted(s.cfg.SessionRequestBytes)
	for {
		st, err := sess.AcceptStream()
		if err != nil {
			log.Debug("session closed", "err", err)
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer st.Close()
			s.serveStream(st, hello, id, budget, log)
		}()
	}
}

// readRequest reads a stream's first frame. A payload over eagerPayload first reserves
// its size in the session's and the server's budgets; when either is spent the request is
// refused with ErrBusy, its bytes read and dropped, never held.
func (s *Server) readRequest(r io.Reader, session *semaphore.Weighted) (typ byte, payload []byte, err error) {
	typ, n, err := readHeader(r, MaxRequestFrame)
	if err != nil {
		return typ, nil, err
	}
	if n > eagerPayload {
		// A refused request's bytes are read and dropped (no memory), so that the sender,
		// blocked on the stream's window until they are, gets to read the answer.
		if !session.TryAcquire(int64(n)) {
			io.CopyN(io.Discard, r, int64(n))
			return typ, nil, fmt.Errorf("%w: this connection is already sending %d MiB of requests; wait for them to be accepted", scheduler.ErrBusy, s.cfg.SessionRequestBytes>>20)
		}
		defer session.Release(int64(n))
		if !s.requestBytes.TryAcquire(int64(n)) {
			io.CopyN(io.Discard, r, int64(n))
			return typ, nil, fmt.Errorf("%w: the server is receiving too many large requests; try again or try another server", scheduler.ErrBusy)
		}
		defer s.requestBytes.Release(int64(n))
	}
	payload, err = frame.ReadPayload(r, n)
	return typ, payload, err
}

// handshake reads the preamble and hello, authenticates the hello (state is the TLS
// state, nil in plaintext) and answers with a welcome or an error frame.
func (s *Server) handshake(conn net.Conn, state *tls.ConnectionState) (Hello, Identity, error) {
	var pre [len(Preamble)]byte
	if _, err := io.ReadFull(conn, pre[:]); err != nil {
		return Hello{}, Identity{}, err
	}
	if !bytes.Equal(pre[:6], Preamble[:6]) {
		return Hello{}, Identity{}, fmt.Errorf("%w: bad preamble %q", ErrProtocol, pre[:])
	}
	if pre[6] != Version {
		err := fmt.Errorf("%w: client speaks protocol %d, this server %d; upgrade the older side", ErrVersion, pre[6], Version)
		writeError(conn, err)
		return Hello{}, Identity{}, err
	}
	typ, payload, err := ReadFrame(conn, 64<<10)
	if err != nil {
		return Hello{}, Identity{}, err
	}
	var hello Hello
	if typ != FrameHello || json.Unmarshal(payload, &hello) != nil || (hello.Role != RoleClient && hello.Role != RoleSlave) {
		err := fmt.Errorf("%w: expected a hello frame with role client or slave", ErrProtocol)
		writeError(conn, err)
		return Hello{}, Identity{}, err
	}
	id, err := s.authenticate(hello, state, conn.RemoteAddr().String())
	if err != nil {
		writeError(conn, err)
		s.audit.Warn("connection refused", "remote", id.Remote, "role", hello.Role, "peer", hello.Name, "reason", err.Error())
		return Hello{}, Identity{}, err
	}
	b, _ := json.Marshal(Welcome{Version: Version, Node: s.cfg.Node})
	return hello, id, WriteFrame(conn, FrameWelcome, b)
}

// payloadTimeout bounds reading a request frame's payload once its header arrived.
const payloadTimeout = 60 * time.Second

// extendOnRead calls extend once, after the first successful read.
type extendOnRead struct {
	r      io.Reader
	extend func()
	done   bool
}

func (e *extendOnRead) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if n > 0 && !e.done {
		e.done = true
		e.extend()
	}
	return n, err
}

func writeError(w io.Writer, err error) error {
	b, _ := json.Marshal(Error{Code: Code(err), Message: err.Error()})
	return WriteFrame(w, FrameError, b)
}

func writeJSON(w io.Writer, typ byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return WriteFrame(w, typ, b)
}

// serveStream dispatches on a stream's first frame.
func (s *Server) serveStream(st *yamux.Stream, hello Hello, id Identity, budget *semaphore.Weighted, log *slog.Logger) {
	// A silent stream is dropped after FirstFrameTimeout; once the frame has begun, a
	// slow sender gets longer for a large payload.
	st.SetReadDeadline(time.Now().Add(s.cfg.FirstFrameTimeout))
	typ, payload, err := s.readRequest(&extendOnRead{r: st, extend: func() { st.SetReadDeadline(time.Now().Add(payloadTimeout)) }}, budget)
	if err != nil {
		if errors.Is(err, ErrProtocol) || errors.Is(err, scheduler.ErrBusy) {
			writeError(st, err)
		}
		return
	}
	st.SetReadDeadline(time.Time{})
	if hello.Role != RoleClient {
		writeError(st, fmt.Errorf("%w: a %s session cannot submit jobs", ErrUnauthorized, hello.Role))
		return
	}
	switch typ {
	case FrameSubmit:
		var sub Submit
		if err := json.Unmarshal(payload, &sub); err != nil {
			writeError(st, fmt.Errorf("%w: bad submit frame: %v", sandbox.ErrInvalidRequest, err))
			return
		}
		if sub.Interactive && len(sub.Spec.Tests) > 0 {
			writeError(st, fmt.Errorf("%w: a judged program (with tests) reads each case's input, not live stdin: submit it without interactive", sandbox.ErrInvalidRequest))
			return
		}
		release, err := s.admit(id, &sub.Spec)
		if err != nil {
			s.auditRefused(id, sub.Spec, err)
			writeError(st, err)
			return
		}
		job, err := s.sched.SubmitAs(s.ownerOf(id), sub.Spec, sub.Interactive)
		if err != nil {
			release(false)
			s.auditRefused(id, sub.Spec, err)
			writeError(st, err)
			return
		}
		s.wg.Add(1)
		go s.auditJob(job, id, release)
		log.Debug("job accepted", "job", job.ID, "language", sub.Spec.Language)
		s.serveJob(st, job, 0)
	case FrameWait:
		var w Wait
		if err := json.Unmarshal(payload, &w); err != nil {
			writeError(st, fmt.Errorf("%w: bad wait frame: %v", sandbox.ErrInvalidRequest, err))
			return
		}
		job, err := s.sched.Get(w.ID)
		if err == nil {
			err = s.mayAccess(id, job)
		}
		if err != nil {
			writeError(st, err)
			return
		}
		from := w.From
		if w.Epoch != s.sched.Epoch() {
			from = 0
		}
		s.serveJob(st, job, from)
	case FrameCancel:
		var c Cancel
		if err := json.Unmarshal(payload, &c); err != nil {
			writeError(st, fmt.Errorf("%w: bad cancel frame: %v", sandbox.ErrInvalidRequest, err))
			return
		}
		job, err := s.sched.Get(c.ID)
		if err == nil {
			err = s.mayAccess(id, job)
		}
		if err == nil {
			err = s.sched.Cancel(c.ID)
		}
		if err != nil {
			writeError(st, err)
			return
		}
		writeJSON(st, FrameAccepted, Accepted{ID: c.ID})
	case FrameStatus:
		writeJSON(st, FrameStatus, s.visible(id, s.sched.Snapshot(20)))
	default:
		writeError(st, fmt.Errorf("%w: unexpected first frame %q", ErrProtocol, typ))
	}
}

// serveJob sends the job's id and then its events from index from, while forwarding the
// client's stdin and cancel frames. It returns when the job's last event is written, the
// client goes away, or the server shuts down; the job itself runs on regardless (the
// client may come back for it by id).
func (s *Server) serveJob(st *yamux.Stream, job *scheduler.Job, from int) {
	if err := writeJSON(st, FrameAccepted, Accepted{ID: job.ID, Epoch: s.sched.Epoch()}); err != nil {
		return
	}
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()

	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() { // the client's side of the stream
		defer wg.Done()
		defer cancel() // the client went away: stop writing
		for {
			typ, payload, err := ReadFrame(st, MaxFrame)
			if err != nil {
				if errors.Is(err, ErrProtocol) {
					writeError(st, err)
				}
				return
			}
			switch typ {
			case FrameStdin:
				if err := job.SendStdin(ctx, payload); err != nil {
					return
				}
			case FrameStdinEnd:
				job.CloseStdin()
			case FrameCancel:
				s.sched.Cancel(job.ID)
			default:
				return
			}
		}
	}()

	// end closes our side, which ends the client's reads; the reader goroutine ends with
	// the client's close, or at the deadline if the client never closes.
	end := func() {
		st.Close()
		st.SetReadDeadline(time.Now().Add(s.cfg.FirstFrameTimeout))
	}
	var buf bytes.Buffer // the events at hand leave in one stream write
	for {
		events, done, err := job.Events(ctx, from)
		if err != nil {
			if ctx.Err() == nil { // a cursor out of range
				writeError(st, err)
				end()
			}
			return
		}
		from += len(events)
		buf.Reset()
		for _, e := range events {
			writeEvent(&buf, e)
		}
		if _, err := st.Write(buf.Bytes()); err != nil {
			return
		}
		if done {
			end()
			return
		}
	}
}

func writeEvent(w io.Writer, e scheduler.Event) error {
	switch e.Kind {
	case scheduler.EventQueued:
		return writeJSON(w, FrameQueued, Queued{Position: e.Position})
	case scheduler.EventStarted:
		return writeJSON(w, FrameStarted, Started{Node: e.Node})
	case scheduler.EventOutput:
		typ := FrameStdout
		switch e.Chunk.Stream {
		case sandbox.Stderr:
			typ = FrameStderr
		case sandbox.Compile:
			typ = FrameCompile
		}
		return WriteFrame(w, typ, e.Chunk.Data) // at most scheduler.MaxChunk bytes
	case scheduler.EventDone:
		if e.Err != nil {
			return writeError(w, e.Err)
		}
		return writeJSON(w, FrameResult, resultToWire(e.Result))
	}
	return nil
}

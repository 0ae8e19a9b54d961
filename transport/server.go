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
	"math"
	"net"
	"runtime/debug"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
	"golang.org/x/sync/semaphore"

	"runbox/internal/frame"
	"runbox/sandbox"
	"runbox/scheduler"
)

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
	perAddr   map[string]int // connections by remote IP address
	closed    bool
}

// NewServer returns a Server for sched.
func NewServer(cfg ServerConfig, sched *scheduler.Scheduler) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, sched: sched, log: log.With("component", "transport"), audit: log.With("component", "audit"),
		listeners: map[net.Listener]bool{}, conns: map[net.Conn]bool{}, perAddr: map[string]int{},
		requestBytes: semaphore.NewWeighted(cfg.RequestBytes)}
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
		addr := remoteIP(conn)
		n, ok := s.track(conn, addr)
		if !ok {
			conn.Close()
			return ErrServerClosed
		}
		if n > 2*s.cfg.MaxConnsPerAddress { // a flood: no goroutine, no handshake, no word
			s.untrack(conn, addr)
			s.log.Debug("connection closed at once: too many from its address", "remote", addr, "connections", n-1)
			continue
		}
		var refuse error
		if n > s.cfg.MaxConnsPerAddress {
			refuse = fmt.Errorf("%w: %d connections from %s already, the most one address may hold; close some, or try another server", scheduler.ErrBusy, n-1, addr)
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.untrack(conn, addr)
			s.serveConn(conn, refuse)
		}()
	}
}

// remoteIP is the IP address of c's peer (its whole address when it has no port).
func remoteIP(c net.Conn) string {
	a := c.RemoteAddr().String()
	if host, _, err := net.SplitHostPort(a); err == nil {
		return host
	}
	return a
}

// track records a new connection from addr and returns how many addr holds with it.
func (s *Server) track(c net.Conn, addr string) (int, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, false
	}
	s.conns[c] = true
	s.perAddr[addr]++
	return s.perAddr[addr], true
}

func (s *Server) untrack(c net.Conn, addr string) {
	s.mu.Lock()
	delete(s.conns, c)
	if s.perAddr[addr]--; s.perAddr[addr] <= 0 {
		delete(s.perAddr, addr)
	}
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

// serveConn runs the handshake and then serves the connection's streams. refuse, when
// set, is the answer to a hello that comes over a cap (too many connections).
func (s *Server) serveConn(conn net.Conn, refuse error) {
	log := s.log.With("remote", conn.RemoteAddr().String())
	defer s.recoverPanic(log, "connection", nil)
	conn.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	conn, state, err := s.secure(conn)
	if err != nil {
		log.Debug("handshake refused", "err", err)
		return
	}
	hello, id, err := s.handshake(conn, state, refuse)
	if err != nil {
		log.Debug("handshake refused", "err", err)
		return
	}
	conn.SetDeadline(time.Time{})
	sess, err := yamux.Server(newBatchConn(conn), s.cfg.mux())
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
	slots := make(chan struct{}, s.cfg.MaxStreams) // the streams being served
	held := 2*s.cfg.MaxStreams + s.cfg.StreamBacklog
	for {
		st, err := sess.AcceptStream()
		if err != nil {
			log.Debug("session closed", "err", err)
			return
		}
		// yamux forgets a stream once both sides closed it: a peer that leaves open the
		// streams the server closed (refused ones above all) makes them pile up.
		if n := sess.NumStreams(); n > held {
			log.Warn("session closed: its peer holds too many streams open", "streams", n, "limit", held)
			// yamux lets go of the streams the peer left open StreamCloseTimeout after
			// they were closed: until then the session still counts against its address,
			// so that a peer cannot pile them up by reconnecting.
			sess.Close()
			select {
			case <-time.After(s.cfg.mux().StreamCloseTimeout):
			case <-s.ctx.Done():
			}
			return
		}
		select {
		case slots <- struct{}{}:
		default:
			s.refuseStream(st, fmt.Errorf("%w: this connection has %d requests in progress, the most one connection may have; wait for one to end", scheduler.ErrBusy, s.cfg.MaxStreams))
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() { <-slots }()
			defer st.Close()
			defer s.recoverPanic(log, "stream", st)
			s.serveStream(st, hello, id, budget, log)
		}()
	}
}

// refuseStream answers a stream with err and closes it, without a goroutine of its own:
// the answer is one small frame, which the stream's window always has room for.
func (s *Server) refuseStream(st *yamux.Stream, err error) {
	st.SetWriteDeadline(time.Now().Add(s.cfg.FirstFrameTimeout))
	writeError(st, err)
	st.Close()
}

// recoverPanic, deferred, turns a panic into an error log with the stack and, when st is
// set, an internal error frame on it: the job, stream or session it happened in ends,
// the process does not.
func (s *Server) recoverPanic(log *slog.Logger, in string, st io.Writer) {
	if r := recover(); r != nil {
		log.Error("panic", "in", in, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
		if st != nil {
			writeError(st, fmt.Errorf("%w: the server failed while handling this %s (a bug, logged)", scheduler.ErrInternal, in))
		}
	}
}

// requestTooLarge is the refusal of a request frame of n bytes, over MaxRequestFrame:
// the server's answer, and the client's own before it sends one.
func requestTooLarge(n int64) error {
	return fmt.Errorf("%w: the request is %s (%d bytes), over the %s cap on one request (its sources, stdin and test data, base64-encoded; sources are capped at %s, stdin and test data at %s)",
		sandbox.ErrTooLarge, sandbox.FormatSize(n), n, sandbox.FormatSize(MaxRequestFrame), sandbox.FormatSize(sandbox.MaxSourceBytes), sandbox.FormatSize(sandbox.MaxStdinBytes))
}

// readRequest reads a stream's first frame. Its header must come within FirstFrameTimeout
// and its payload within that plus its size at MinRequestRate. Every payload first
// reserves its size in the session's and the server's budgets, and its buffer grows with
// the bytes that arrive. A request that is refused (too large, or over a budget: busy)
// is answered on st, its bytes read and dropped (up to DrainBytes) so that the sender,
// whose writes wait for the stream's window, gets to read the answer: the session
// serves on. Any error has been answered, when it could be.
func (s *Server) readRequest(st *yamux.Stream, session *semaphore.Weighted) (typ byte, payload []byte, err error) {
	st.SetReadDeadline(time.Now().Add(s.cfg.FirstFrameTimeout))
	typ, n, err := frame.ReadHeader(st, math.MaxUint32)
	if err != nil {
		return typ, nil, err
	}
	st.SetReadDeadline(time.Now().Add(s.cfg.FirstFrameTimeout + time.Duration(float64(n)/float64(s.cfg.MinRequestRate)*float64(time.Second))))
	refuse := func(err error) (byte, []byte, error) {
		st.SetWriteDeadline(time.Now().Add(s.cfg.FirstFrameTimeout))
		writeError(st, err)
		if int64(n) <= s.cfg.DrainBytes {
			io.CopyN(io.Discard, st, int64(n))
		}
		return typ, nil, err
	}
	if n > MaxRequestFrame {
		return refuse(requestTooLarge(int64(n)))
	}
	if n > 0 {
		if !session.TryAcquire(int64(n)) {
			return refuse(fmt.Errorf("%w: this connection is already sending %s of requests; wait for them to be accepted", scheduler.ErrBusy, sandbox.FormatSize(s.cfg.SessionRequestBytes)))
		}
		defer session.Release(int64(n))
		if !s.requestBytes.TryAcquire(int64(n)) {
			return refuse(fmt.Errorf("%w: the server is receiving too many large requests; try again or try another server", scheduler.ErrBusy))
		}
		defer s.requestBytes.Release(int64(n))
	}
	payload, err = readPayload(st, n)
	return typ, payload, err
}

// handshake reads the preamble and hello, authenticates the hello (state is the TLS
// state, nil in plaintext) and answers with a welcome or an error frame.
// A hello that comes over a cap gets refuse instead, unauthenticated.
func (s *Server) handshake(conn net.Conn, state *tls.ConnectionState, refuse error) (Hello, Identity, error) {
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
	typ, payload, err := ReadFrame(conn, MaxHelloFrame)
	if err != nil {
		return Hello{}, Identity{}, err
	}
	var hello Hello
	if typ != FrameHello || json.Unmarshal(payload, &hello) != nil || (hello.Role != RoleClient && hello.Role != RoleSlave) {
		err := fmt.Errorf("%w: expected a hello frame with role client or slave", ErrProtocol)
		writeError(conn, err)
		return Hello{}, Identity{}, err
	}
	if refuse != nil {
		writeError(conn, refuse)
		return Hello{}, Identity{}, refuse
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
	typ, payload, err := s.readRequest(st, budget)
	if err != nil {
		return // a silent or broken stream, or a refusal readRequest answered
	}
	st.SetReadDeadline(time.Time{})
	st.SetWriteDeadline(time.Time{})
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
		go s.auditJob(job, id, specSize(sub.Spec), release)
		log.Debug("job accepted", "job", job.ID, "language", sub.Spec.Language)
		s.serveJob(st, job, 0, log)
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
		s.serveJob(st, job, from, log)
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
func (s *Server) serveJob(st *yamux.Stream, job *scheduler.Job, from int, log *slog.Logger) {
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
		defer s.recoverPanic(log, "job stream", st)
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
		return writeChunk(w, e.Chunk) // at most scheduler.MaxChunk bytes
	case scheduler.EventDone:
		if e.Err != nil {
			return writeError(w, e.Err)
		}
		return writeJSON(w, FrameResult, resultToWire(e.Result))
	}
	return nil
}

package transport

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"time"

	"github.com/hashicorp/yamux"

	"runbox/sandbox"
	"runbox/scheduler"
)

// Client talks to one server over one yamux session, redialled when it breaks. It is
// safe for concurrent use: each call opens its own stream.
type Client struct {
	addr string
	cfg  ClientConfig
	log  *slog.Logger

	mu      sync.Mutex
	sess    *yamux.Session
	welcome Welcome
	closed  bool
}

// Dial connects to addr (host:port) and runs the handshake.
func Dial(ctx context.Context, addr string, cfg ClientConfig) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Client{addr: addr, cfg: cfg, log: log.With("component", "client", "server", addr)}
	if _, err := c.session(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// Node returns the server's node name from the last handshake.
func (c *Client) Node() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.welcome.Node
}

// Close ends the session.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	if c.sess != nil {
		return c.sess.Close()
	}
	return nil
}

// errClientClosed: the Client was closed; a job being followed stops waiting.
var errClientClosed = fmt.Errorf("%w: client closed", ErrConnect)

// session returns the live session, dialling a new one if there is none.
func (c *Client) session(ctx context.Context) (*yamux.Session, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errClientClosed
	}
	if c.sess != nil && !c.sess.IsClosed() {
		return c.sess, nil
	}
	sess, w, err := dial(ctx, c.addr, c.cfg)
	if err != nil {
		return nil, err
	}
	c.sess, c.welcome = sess, w
	return sess, nil
}

// dial connects, handshakes and starts a yamux client session.
func dial(ctx context.Context, addr string, cfg ClientConfig) (*yamux.Session, Welcome, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, Welcome{}, fmt.Errorf("%w %s: %v", ErrConnect, addr, err)
	}
	if cfg.TLS != nil {
		tc := tls.Client(conn, withServerName(cfg.TLS, addr))
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return nil, Welcome{}, dialTLSError(addr, err)
		}
		conn = tc
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	w, err := clientHandshake(conn, cfg)
	if err != nil {
		conn.Close()
		return nil, Welcome{}, err
	}
	conn.SetDeadline(time.Time{})
	sess, err := yamux.Client(newBatchConn(conn), cfg.mux())
	if err != nil {
		conn.Close()
		return nil, Welcome{}, err
	}
	return sess, w, nil
}

func clientHandshake(conn net.Conn, cfg ClientConfig) (Welcome, error) {
	hello, _ := json.Marshal(Hello{Role: cfg.Role, Name: cfg.Name, Token: cfg.Token})
	var buf bytes.Buffer
	buf.Write(Preamble[:])
	WriteFrame(&buf, FrameHello, hello)
	if _, err := conn.Write(buf.Bytes()); err != nil {
		return Welcome{}, fmt.Errorf("%w: handshake: %v", ErrConnect, err)
	}
	typ, payload, err := ReadFrame(conn, MaxHelloFrame)
	if err != nil {
		if e := handshakeReadError(conn, typ, err); e != nil {
			return Welcome{}, e
		}
		return Welcome{}, fmt.Errorf("%w: handshake: %v (is it a runbox server?)", ErrConnect, err)
	}
	var w Welcome
	if err := decodeReply(typ, payload, FrameWelcome, &w); err != nil {
		return Welcome{}, err
	}
	return w, nil
}

// openStream opens a stream on the live session, redialling once if the session died.
func (c *Client) openStream(ctx context.Context) (*yamux.Stream, error) {
	for attempt := 0; ; attempt++ {
		sess, err := c.session(ctx)
		if err != nil {
			return nil, err
		}
		st, err := sess.OpenStream()
		if err == nil {
			return st, nil
		}
		sess.Close()
		if attempt > 0 {
			return nil, fmt.Errorf("%w: open stream: %v", ErrConnect, err)
		}
	}
}

// Handler receives a job's progress; any field may be nil.
type Handler struct {
	// Accepted is called with the job's id once the server journaled it.
	Accepted func(id string)
	// Queued is called with the job's queue position when it changes.
	Queued func(position int)
	// Started is called with the node the job was placed on.
	Started func(node string)
	// Output is called with live output as it arrives.
	Output func(sandbox.Chunk)
	// Reconnecting is called when the connection broke and the client tries again.
	Reconnecting func(err error)
}

// RunOptions are the options of Run.
type RunOptions struct {
	// Stdin, when set, makes the job interactive: each value is sent as live input and
	// closing the channel ends the program's input.
	Stdin <-chan []byte
	// Handler receives progress.
	Handler Handler
}

// Run submits spec and waits for its result, calling the handler on the way. When the
// connection breaks after the job was accepted, Run reconnects (with backoff, up to
// ClientConfig.Reconnect) and resumes waiting for the job by id, without repeating any
// event. Cancelling ctx cancels the job on the server. The error wraps the server's
// sentinel (scheduler.ErrBusy, sandbox.ErrInvalidRequest, ...) or ErrConnect.
func (c *Client) Run(ctx context.Context, spec sandbox.Spec, opts RunOptions) (sandbox.Result, error) {
	// Encode before opening the stream: the server gives a new stream only a short
	// while to start talking, and a large program takes a while to encode.
	sub, err := encodeSubmit(spec, opts.Stdin != nil)
	if err != nil {
		return sandbox.Result{ExitCode: -1}, err
	}
	st, err := c.openStream(ctx)
	if err != nil {
		return sandbox.Result{ExitCode: -1}, err
	}
	if err := WriteFrame(st, FrameSubmit, sub); err != nil {
		st.Close()
		return sandbox.Result{ExitCode: -1}, fmt.Errorf("%w: send: %v", ErrConnect, err)
	}
	w := &watch{c: c, h: opts.Handler}
	return w.run(ctx, st, opts.Stdin)
}

// encodeSubmit encodes a submit frame's payload, refusing (as the server would) one over
// MaxRequestFrame: it is sandbox.ErrTooLarge, with the server's message, and nothing is sent.
func encodeSubmit(spec sandbox.Spec, interactive bool) ([]byte, error) {
	sub, err := json.Marshal(Submit{Spec: spec, Interactive: interactive})
	if err != nil {
		return nil, fmt.Errorf("%w: encode: %v", sandbox.ErrInvalidRequest, err)
	}
	if len(sub) > MaxRequestFrame {
		return nil, requestTooLarge(int64(len(sub)))
	}
	return sub, nil
}

// CheckRequest reports, without a connection, whether spec fits in one request: a
// request over the protocol's cap is sandbox.ErrTooLarge with the message the server
// would answer. The server checks everything else.
func CheckRequest(spec sandbox.Spec) error {
	_, err := encodeSubmit(spec, false)
	return err
}

// Wait resumes waiting for a job accepted earlier (by id), from its first event.
func (c *Client) Wait(ctx context.Context, id string, h Handler) (sandbox.Result, error) {
	w := &watch{c: c, h: h, id: id}
	return w.resume(ctx, nil)
}

// Cancel cancels a job by id.
func (c *Client) Cancel(ctx context.Context, id string) error {
	st, err := c.openStream(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := writeJSON(st, FrameCancel, Cancel{ID: id}); err != nil {
		return fmt.Errorf("%w: %v", ErrConnect, err)
	}
	typ, payload, err := readFrameCtx(ctx, st)
	if err != nil {
		return err
	}
	return decodeReply(typ, payload, FrameAccepted, nil)
}

// Status returns the server's view of the cluster.
func (c *Client) Status(ctx context.Context) (scheduler.Snapshot, error) {
	var snap scheduler.Snapshot
	st, err := c.openStream(ctx)
	if err != nil {
		return snap, err
	}
	defer st.Close()
	if err := WriteFrame(st, FrameStatus, nil); err != nil {
		return snap, fmt.Errorf("%w: %v", ErrConnect, err)
	}
	typ, payload, err := readFrameCtx(ctx, st)
	if err != nil {
		return snap, err
	}
	err = decodeReply(typ, payload, FrameStatus, &snap)
	return snap, err
}

// readFrameCtx reads one frame, giving up when ctx ends.
func readFrameCtx(ctx context.Context, st *yamux.Stream) (byte, []byte, error) {
	stop := context.AfterFunc(ctx, func() { st.SetReadDeadline(time.Now()) })
	defer stop()
	typ, payload, err := ReadFrame(st, MaxRequestFrame)
	if err != nil {
		if ctx.Err() != nil {
			return 0, nil, ctx.Err()
		}
		return 0, nil, fmt.Errorf("%w: %v", ErrConnect, err)
	}
	return typ, payload, nil
}

// watch follows one job across reconnects.
type watch struct {
	c     *Client
	h     Handler
	id    string
	epoch string // the master run whose event log seen counts
	seen  int    // events received, to resume from

	stdout, stderr, compile bytes.Buffer
}

func (w *watch) run(ctx context.Context, st *yamux.Stream, stdin <-chan []byte) (sandbox.Result, error) {
	res, err, retry := w.follow(ctx, st, stdin)
	if !retry {
		return res, err
	}
	return w.resume(ctx, err)
}

// resume reconnects and follows the job by id until it ends or the reconnect budget is spent.
func (w *watch) resume(ctx context.Context, lastErr error) (sandbox.Result, error) {
	deadline := time.Now().Add(w.c.cfg.Reconnect)
	backoff := w.c.cfg.Backoff
	first := lastErr == nil
	for {
		if !first {
			if time.Now().After(deadline) {
				return sandbox.Result{ExitCode: -1}, fmt.Errorf("%w: gave up on job %s after %v: %v", ErrConnect, w.id, w.c.cfg.Reconnect, lastErr)
			}
			if w.h.Reconnecting != nil {
				w.h.Reconnecting(lastErr)
			}
			w.c.log.Info("reconnecting", "job", w.id, "err", lastErr, "in", backoff)
			select {
			case <-ctx.Done():
				return sandbox.Result{ExitCode: -1}, ctx.Err()
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, w.c.cfg.MaxBackoff)
		}
		first = false
		st, err := w.c.openStream(ctx)
		if err != nil {
			lastErr = err
			if ctx.Err() != nil {
				return sandbox.Result{ExitCode: -1}, ctx.Err()
			}
			if errors.Is(err, errClientClosed) {
				return sandbox.Result{ExitCode: -1}, err
			}
			continue
		}
		if err := writeJSON(st, FrameWait, Wait{ID: w.id, From: w.seen, Epoch: w.epoch}); err != nil {
			st.Close()
			lastErr = err
			continue
		}
		res, err, retry := w.follow(ctx, st, nil)
		if !retry {
			return res, err
		}
		lastErr = err
	}
}

// follow reads a job stream to its end. retry reports a broken connection after the job
// was accepted (worth resuming by id).
func (w *watch) follow(ctx context.Context, st *yamux.Stream, stdin <-chan []byte) (res sandbox.Result, err error, retry bool) {
	defer st.Close()
	fail := sandbox.Result{ExitCode: -1}
	defer func() { // a panic while reading (a Handler's, say) ends this job, not the process
		if r := recover(); r != nil {
			w.c.log.Error("panic", "in", "job stream", "job", w.id, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			res, err, retry = fail, fmt.Errorf("%w: the client failed while following job %s: %v", scheduler.ErrInternal, w.id, r), false
		}
	}()
	done := make(chan struct{})
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(done)
	wg.Add(1)
	go func() {
		defer wg.Done()
		sendInput(ctx, st, stdin, done, w.c.cfg.CancelGrace)
	}()

	accepted := w.id != ""
	out := map[sandbox.Stream]*bytes.Buffer{sandbox.Stdout: &w.stdout, sandbox.Stderr: &w.stderr, sandbox.Compile: &w.compile}
	r, refused, err := readJob(st, jobFrames{
		before: func(typ byte) error {
			if !accepted {
				return fmt.Errorf("%w: frame %q before the job was accepted", ErrProtocol, typ)
			}
			w.seen++
			return nil
		},
		accepted: func(a Accepted) error {
			if w.id == "" && w.h.Accepted != nil {
				w.h.Accepted(a.ID)
			}
			if a.Epoch != w.epoch {
				w.seen = 0 // a new master run replays the job's log from its start
			}
			w.id, w.epoch, accepted = a.ID, a.Epoch, true
			return nil
		},
		queued: func(q Queued) error {
			if w.h.Queued != nil {
				w.h.Queued(q.Position)
			}
			return nil
		},
		started: func(s Started) error {
			// A new attempt: what came before belonged to one that was abandoned.
			for _, b := range out {
				b.Reset()
			}
			if w.h.Started != nil {
				w.h.Started(s.Node)
			}
			return nil
		},
		output: func(c sandbox.Chunk) error {
			if b := out[c.Stream]; b != nil {
				b.Write(c.Data)
			}
			if w.h.Output != nil {
				w.h.Output(c)
			}
			return nil
		},
	})
	switch {
	case err != nil && ctx.Err() != nil:
		return fail, ctx.Err(), false
	case errors.Is(err, ErrProtocol):
		return fail, err, false
	case err != nil:
		return fail, fmt.Errorf("%w: connection lost: %v", ErrConnect, err), accepted && w.c.cfg.Reconnect > 0
	case refused != nil:
		if ctx.Err() != nil && errors.Is(refused, scheduler.ErrCancelled) {
			return fail, ctx.Err(), false
		}
		return fail, refused, false
	}
	return r.sandboxResult(w.stdout.Bytes(), w.stderr.Bytes(), w.compile.Bytes()), nil, false
}

// Runner adapts a Client to sandbox.Runner: every Run is a job on the server. The Runner
// contract (sandboxtest.Contract) runs through it against a master on loopback.
func (c *Client) Runner() sandbox.Runner { return clientRunner{c} }

type clientRunner struct{ c *Client }

func (r clientRunner) Run(ctx context.Context, spec sandbox.Spec, streams *sandbox.Streams) (sandbox.Result, error) {
	var opts RunOptions
	if streams != nil {
		opts.Stdin = streams.Stdin
		opts.Handler.Output = streams.Output
		if streams.Started != nil {
			var once sync.Once
			opts.Handler.Started = func(string) { once.Do(streams.Started) }
		}
	}
	return r.c.Run(ctx, spec, opts)
}

// sendInput forwards live stdin to a job stream (end of input when the channel closes)
// until done closes. When ctx ends first it asks the far side to cancel and gives the
// answer grace to arrive before reads on the stream fail.
//
// A write blocked on the stream's window (a far side that stopped reading) gives up grace
// after ctx ends.
func sendInput(ctx context.Context, st *yamux.Stream, stdin <-chan []byte, done <-chan struct{}, grace time.Duration) {
	stop := context.AfterFunc(ctx, func() { st.SetWriteDeadline(time.Now().Add(grace)) })
	defer stop()
	for {
		select {
		case <-done:
			return
		case <-ctx.Done():
			st.SetReadDeadline(time.Now().Add(grace))
			WriteFrame(st, FrameCancel, nil)
			return
		case data, ok := <-stdin:
			if !ok {
				WriteFrame(st, FrameStdinEnd, nil)
				stdin = nil
				continue
			}
			for len(data) > 0 {
				n := min(len(data), ChunkSize)
				if WriteFrame(st, FrameStdin, data[:n]) != nil {
					return
				}
				data = data[n:]
			}
		}
	}
}

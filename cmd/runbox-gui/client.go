package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"sync"

	"runbox/sandbox"
	"runbox/scheduler"
	"runbox/transport"
)

// Client is what the window needs from one server. *transport.Client implements it; the
// tests hand in fakes.
type Client interface {
	// Run submits spec and blocks until its result, calling opts.Handler on the way (from
	// the calling goroutine or the client's own). Cancelling ctx cancels the job on the
	// server. The error wraps scheduler.ErrBusy, transport.ErrConnect,
	// transport.ErrUnauthorized, sandbox.ErrInvalidRequest, ... or the context's error.
	Run(ctx context.Context, spec sandbox.Spec, opts transport.RunOptions) (sandbox.Result, error)
	// Status returns the server's view of the cluster.
	Status(ctx context.Context) (scheduler.Snapshot, error)
	// Close ends the connection; calls in flight fail.
	Close() error
}

var _ Client = (*transport.Client)(nil)

// Server is where the user sends programs: the connection fields at the top of the window.
type Server struct {
	// Addr is host:port.
	Addr string
	// Token is the bearer token of a secured cluster; empty for none.
	Token string
	// CAFile is the path of the cluster's CA certificate (PEM, the ca.crt of `runbox
	// certs init`): the client speaks TLS and accepts only a master certificate signed by
	// it. Empty: plaintext.
	CAFile string
}

// caError: the TLS CA file cannot be read or holds no certificate. The program was not
// sent anywhere.
type caError struct {
	file string
	err  error // from transport.ClientTLS
}

func (e *caError) Error() string { return fmt.Sprintf("unusable TLS CA file %s: %v", e.file, e.err) }
func (e *caError) Unwrap() error { return e.err }

// reason says what is wrong with the file, without repeating its name: "no such file or
// directory", "permission denied", "it holds no PEM certificate".
func (e *caError) reason() string {
	var pe *fs.PathError
	if errors.As(e.err, &pe) {
		return pe.Err.Error()
	}
	msg := strings.TrimPrefix(e.err.Error(), "tls: ")
	if strings.HasPrefix(msg, "no certificate in ") {
		return "it holds no PEM certificate"
	}
	return msg
}

// Dialer connects to a server. Its error wraps transport.ErrConnect when the server cannot
// be reached and transport.ErrUnauthorized when it refused the token.
type Dialer func(ctx context.Context, s Server) (Client, error)

// dialTransport is the Dialer of the real window.
func dialTransport(ctx context.Context, s Server) (Client, error) {
	cfg := transport.DefaultClientConfig()
	cfg.Token = s.Token
	cfg.Name = "runbox-gui"
	if s.CAFile != "" {
		tc, err := transport.ClientTLS(s.CAFile, "", "")
		if err != nil {
			return nil, &caError{file: s.CAFile, err: err}
		}
		cfg.TLS = tc
	}
	c, err := transport.Dial(ctx, s.Addr, cfg)
	if err != nil {
		return nil, err // not a typed nil inside the interface
	}
	return c, nil
}

// errClosed is returned by a pool that was closed (the window is going away).
var errClosed = errors.New("window closed")

// pool keeps one Client per server, dialled on first use and reused by the jobs and the
// cluster tab that follow. A failed dial is not kept: the next Run dials again. It is safe
// for concurrent use; dialling one server never waits for another.
type pool struct {
	dial Dialer

	mu     sync.Mutex
	conns  map[Server]*poolEntry
	closed bool
}

type poolEntry struct {
	mu sync.Mutex // held while dialling
	c  Client
}

func newPool(dial Dialer) *pool { return &pool{dial: dial, conns: map[Server]*poolEntry{}} }

// get returns the Client of s, dialling it if needed.
func (p *pool) get(ctx context.Context, s Server) (Client, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, errClosed
	}
	e := p.conns[s]
	if e == nil {
		e = &poolEntry{}
		p.conns[s] = e
	}
	p.mu.Unlock()

	e.mu.Lock()
	defer e.mu.Unlock()
	if e.c != nil {
		return e.c, nil
	}
	c, err := p.dial(ctx, s)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	if closed {
		c.Close()
		return nil, errClosed
	}
	e.c = c
	return c, nil
}

// Close closes every Client; later gets fail.
func (p *pool) Close() error {
	p.mu.Lock()
	p.closed = true
	entries := p.conns
	p.conns = nil
	p.mu.Unlock()
	var errs []error
	for s, e := range entries {
		e.mu.Lock()
		if e.c != nil {
			if err := e.c.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close %s: %w", s.Addr, err))
			}
		}
		e.mu.Unlock()
	}
	return errors.Join(errs...)
}

// Package transport is runbox's cluster protocol: yamux sessions over TCP (TLS when
// configured), a versioned handshake, one yamux stream per job carrying length-prefixed
// frames, and stable error codes that become the same sentinel errors on the other side.
// docs/protocol.md specifies the bytes; golden files in testdata/ pin them.
package transport

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"runbox/internal/frame"
	"runbox/sandbox"
	"runbox/scheduler"
)

// Version is the protocol version this package speaks.
const Version = 1

// Preamble opens every connection, before the hello frame: "RUNBOX" and the version byte.
var Preamble = [7]byte{'R', 'U', 'N', 'B', 'O', 'X', Version}

// Frame types. Client to server:
const (
	FrameHello    byte = 'H' // handshake: JSON Hello
	FrameSubmit   byte = 'J' // first frame of a job stream: JSON Submit
	FrameWait     byte = 'W' // first frame of a resume stream: JSON Wait
	FrameStatus   byte = 'T' // first frame of a status stream (empty); the reply is 'T' too
	FrameCancel   byte = 'K' // on a job stream (empty), or first frame of a cancel stream (JSON Cancel)
	FrameStdin    byte = 'I' // live stdin bytes for an interactive job
	FrameStdinEnd byte = 'D' // end of live stdin (empty)
)

// Server to client:
const (
	FrameWelcome  byte = 'w' // handshake accepted: JSON Welcome
	FrameAccepted byte = 'A' // JSON Accepted: the job id, once journaled
	FrameQueued   byte = 'Q' // JSON Queued: the job's queue position changed
	FrameStarted  byte = 'S' // JSON Started: the job was placed on a node
	FrameStdout   byte = 'O' // raw stdout bytes
	FrameStderr   byte = 'E' // raw stderr bytes
	FrameCompile  byte = 'C' // raw compiler output bytes
	FrameResult   byte = 'R' // JSON Result: the job's end; the stream closes after it
	FrameError    byte = 'X' // JSON Error: the request was refused or the job could not run
)

// Frame types of the slave protocol. A slave opens one control stream after the
// handshake; the master opens one job stream per job on the same session.
const (
	FrameRegister byte = 'G' // slave → master, first frame of the control stream: JSON scheduler.NodeSpec
	FrameLoad     byte = 'L' // slave → master, control stream, every load interval: JSON scheduler.Load
	FrameCapacity byte = 'P' // slave → master, control stream: JSON Capacity (0 while draining)
)

// Caps on what a peer may send.
const (
	// MaxRequestFrame caps the first frame of a stream (a submit carries sources and stdin).
	MaxRequestFrame = 16 << 20
	// MaxHelloFrame caps the handshake's frames: the hello, the welcome or the error.
	MaxHelloFrame = 64 << 10
	// MaxFrame caps every other frame.
	MaxFrame = 1 << 20
	// ChunkSize is the largest data frame a sender writes.
	ChunkSize = 32 << 10
)

// Errors of the transport itself.
var (
	// ErrProtocol: the peer broke the protocol (bad preamble, unexpected frame, oversized frame).
	ErrProtocol = errors.New("protocol error")
	// ErrVersion: the peers speak different protocol versions.
	ErrVersion = errors.New("unsupported protocol version")
	// ErrUnauthorized: the credentials were refused.
	ErrUnauthorized = errors.New("unauthorized")
	// ErrConnect: the server could not be reached.
	ErrConnect = errors.New("cannot reach server")
	// ErrRateLimited and ErrQuota: per-token limits (security).
	ErrRateLimited = errors.New("rate limited")
	ErrQuota       = errors.New("quota exceeded")
)

// codes are the transport's additions to scheduler's code table.
var codes = []scheduler.CodedError{
	{Code: "protocol", Err: ErrProtocol},
	{Code: "unsupported_version", Err: ErrVersion},
	{Code: "unauthorized", Err: ErrUnauthorized},
	{Code: "rate_limited", Err: ErrRateLimited},
	{Code: "quota", Err: ErrQuota},
	{Code: "unreachable", Err: ErrConnect}, // never sent; names a local failure in --json output
}

// Code returns err's stable wire code.
func Code(err error) string { return scheduler.CodeOf(err, codes...) }

// errorFromWire rebuilds an error from a wire Error.
func errorFromWire(e Error) error { return scheduler.ErrorOf(e.Code, e.Message, codes...) }

// errorFrame decodes an Error frame's payload into the error it stands for: its code's
// sentinel, with its message as the text. A payload that is not an Error is an internal
// error (the code table's fallback), as a code this side does not know.
func errorFrame(payload []byte) error {
	var e Error
	json.Unmarshal(payload, &e)
	return errorFromWire(e)
}

// decodeReply decodes the one frame that answers a request: a frame of type want into v
// (nil: its payload is not read), an Error frame into its error (see errorFrame), and
// anything else is ErrProtocol.
func decodeReply(typ byte, payload []byte, want byte, v any) error {
	switch typ {
	case want:
		if v != nil {
			if err := json.Unmarshal(payload, v); err != nil {
				return fmt.Errorf("%w: bad %q frame: %v", ErrProtocol, typ, err)
			}
		}
		return nil
	case FrameError:
		return errorFrame(payload)
	}
	return fmt.Errorf("%w: unexpected frame %q, want %q", ErrProtocol, typ, want)
}

// outputFrames is the table of output streams and the frame types that carry them.
var outputFrames = [...]struct {
	stream sandbox.Stream
	typ    byte
}{
	{sandbox.Stdout, FrameStdout},
	{sandbox.Stderr, FrameStderr},
	{sandbox.Compile, FrameCompile},
}

// outputFrame returns the frame type that carries stream (stdout's for an unknown one).
func outputFrame(stream sandbox.Stream) byte {
	for _, o := range outputFrames {
		if o.stream == stream {
			return o.typ
		}
	}
	return FrameStdout
}

// outputStream returns the stream a frame type carries, and whether it carries output.
func outputStream(typ byte) (sandbox.Stream, bool) {
	for _, o := range outputFrames {
		if o.typ == typ {
			return o.stream, true
		}
	}
	return "", false
}

// writeChunk writes a chunk of output as its stream's frame.
func writeChunk(w io.Writer, c sandbox.Chunk) error {
	return WriteFrame(w, outputFrame(c.Stream), c.Data)
}

// jobFrames receives what a job stream carries, frame by frame, for readJob. A nil
// callback makes its frame unexpected (ErrProtocol); a callback's error ends the read.
type jobFrames struct {
	// before, when set, sees every frame's type before it is decoded, except Accepted and
	// Error.
	before   func(typ byte) error
	accepted func(Accepted) error
	queued   func(Queued) error
	started  func(Started) error
	output   func(sandbox.Chunk) error
}

// readJob reads a job stream's frames, handing each to h, up to its end: a Result frame
// (res), or an Error frame (refused: the job could not run, as its sentinel). err is the
// stream's failure: a read error, or ErrProtocol for a frame out of place or that does
// not decode (or a callback's error). Queued and Started payloads that do not decode are
// passed on as their zero values: they only inform.
func readJob(r io.Reader, h jobFrames) (res Result, refused, err error) {
	for {
		typ, payload, err := ReadFrame(r, MaxFrame)
		if err != nil {
			return Result{}, nil, err
		}
		if h.before != nil && typ != FrameAccepted && typ != FrameError {
			if err := h.before(typ); err != nil {
				return Result{}, nil, err
			}
		}
		stream, isOutput := outputStream(typ)
		switch {
		case typ == FrameAccepted && h.accepted != nil:
			var a Accepted
			if err := json.Unmarshal(payload, &a); err != nil {
				return Result{}, nil, fmt.Errorf("%w: bad accepted frame: %v", ErrProtocol, err)
			}
			err = h.accepted(a)
		case typ == FrameQueued && h.queued != nil:
			var q Queued
			json.Unmarshal(payload, &q)
			err = h.queued(q)
		case typ == FrameStarted && h.started != nil:
			var s Started
			json.Unmarshal(payload, &s)
			err = h.started(s)
		case isOutput && h.output != nil:
			err = h.output(sandbox.Chunk{Stream: stream, Data: payload})
		case typ == FrameResult:
			if err := json.Unmarshal(payload, &res); err != nil {
				return Result{}, nil, fmt.Errorf("%w: bad result frame: %v", ErrProtocol, err)
			}
			return res, nil, nil
		case typ == FrameError:
			return Result{}, errorFrame(payload), nil
		default:
			return Result{}, nil, fmt.Errorf("%w: unexpected frame %q on a job stream", ErrProtocol, typ)
		}
		if err != nil {
			return Result{}, nil, err
		}
	}
}

// WriteFrame writes one frame: type, 4-byte big-endian length, payload.
func WriteFrame(w io.Writer, typ byte, payload []byte) error { return frame.Write(w, typ, payload) }

// ReadFrame reads one frame whose payload is at most max bytes; a larger declared length
// is ErrProtocol and nothing more is read. Past 4 KiB the payload's buffer grows with the
// bytes that arrive, never to a length the peer only declared.
func ReadFrame(r io.Reader, max int) (typ byte, payload []byte, err error) {
	typ, n, err := readHeader(r, max)
	if err != nil {
		return typ, nil, err
	}
	payload, err = readPayload(r, n)
	if err != nil {
		return typ, nil, err
	}
	return typ, payload, nil
}

// eagerPayload is the largest payload read into a buffer of its declared size at once;
// past it the buffer starts at this size and doubles as the bytes arrive, so that a
// header that lies costs its reader no more than this.
const eagerPayload = 4 << 10

// readPayload reads exactly n bytes of payload, its buffer growing past eagerPayload with
// what arrives.
func readPayload(r io.Reader, n int) ([]byte, error) {
	return frame.ReadPayloadEager(r, n, eagerPayload)
}

// readHeader reads a frame's type and payload length, at most max (else ErrProtocol).
func readHeader(r io.Reader, max int) (typ byte, n int, err error) {
	typ, n, err = frame.ReadHeader(r, max)
	if errors.Is(err, frame.ErrTooLarge) {
		err = fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	return typ, n, err
}

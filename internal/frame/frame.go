// Package frame is the length-prefixed framing that runbox speaks twice: on the cluster
// protocol's yamux streams (transport) and between a Runner and runbox-init over a
// sandbox container's stdin and stdout (sandbox/boxinit). A frame is a 1-byte type, a
// 4-byte big-endian payload length and the payload. Each user names its own frame types
// and caps, and turns ErrTooLarge into its own error.
//
// It is internal, outside the design's layout, because it is a byte format that two
// layers share and neither owns (docs/report.md, section 2.1).
package frame

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
)

// HeaderSize is the size of a frame's type and length.
const HeaderSize = 5

// ErrTooLarge: a frame's declared length is over the reader's cap, or a payload over 4 GiB
// was given to Write.
var ErrTooLarge = errors.New("frame too large")

// Write writes one frame in one Write call.
func Write(w io.Writer, typ byte, payload []byte) error {
	if int64(len(payload)) > 1<<32-1 {
		return ErrTooLarge
	}
	buf := make([]byte, HeaderSize+len(payload))
	buf[0] = typ
	binary.BigEndian.PutUint32(buf[1:HeaderSize], uint32(len(payload)))
	copy(buf[HeaderSize:], payload)
	_, err := w.Write(buf)
	return err
}

// Read reads one frame whose payload is at most max bytes. A larger declared length is
// ErrTooLarge (with the type) and nothing more is read. A stream that ends inside a frame
// is io.ErrUnexpectedEOF; one that ends before it, io.EOF.
func Read(r io.Reader, max int) (typ byte, payload []byte, err error) {
	typ, n, err := ReadHeader(r, max)
	if err != nil {
		return typ, nil, err
	}
	payload, err = ReadPayload(r, n)
	if err != nil {
		return typ, nil, err
	}
	return typ, payload, nil
}

// ReadHeader reads a frame's type and payload length, which it checks against max.
func ReadHeader(r io.Reader, max int) (typ byte, n int, err error) {
	var hdr [HeaderSize]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, 0, err
	}
	size := binary.BigEndian.Uint32(hdr[1:HeaderSize])
	if int64(size) > int64(max) {
		return hdr[0], 0, fmt.Errorf("%w: frame %q of %d bytes is over the %d byte cap", ErrTooLarge, hdr[0], size, max)
	}
	return hdr[0], int(size), nil
}

// Eager is the largest payload read into a buffer of its declared size at once. Above it
// the buffer grows with the bytes that arrive, so a peer that declares a large frame and
// sends nothing holds no more than this much of the reader's memory.
const Eager = 64 << 10

// ReadPayload reads exactly n bytes of payload: ReadPayloadEager with Eager.
func ReadPayload(r io.Reader, n int) ([]byte, error) { return ReadPayloadEager(r, n, Eager) }

// ReadPayloadEager reads exactly n bytes of payload. A payload of at most eager bytes is
// read into a buffer of its size at once; a larger one's buffer starts at eager bytes and
// doubles as the bytes arrive, so that a length that lies costs its reader no more than
// eager bytes. A stream that ends inside the payload is io.ErrUnexpectedEOF.
func ReadPayloadEager(r io.Reader, n, eager int) ([]byte, error) {
	if n <= eager {
		payload := make([]byte, n)
		if _, err := io.ReadFull(r, payload); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		return payload, nil
	}
	payload := make([]byte, 0, max(eager, 1))
	for len(payload) < n {
		if len(payload) == cap(payload) {
			payload = slices.Grow(payload, min(n, 2*cap(payload))-len(payload))
		}
		m, err := r.Read(payload[len(payload):min(n, cap(payload))])
		payload = payload[:len(payload)+m]
		if err != nil && len(payload) < n {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
	return payload, nil
}

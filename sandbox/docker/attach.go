package docker

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/docker/docker/pkg/stdcopy"
)

// attachStream is a box's attach stream as runbox-init's two-way stream
// (boxinit.Exchange): Read demultiplexes what the engine sends (stdcopy's framing, as
// stdcopy.StdCopy reads it) and returns runbox-init's stdout, keeping the first
// initStderrMax bytes of its stderr for the error of a run without a result; Write goes to
// its stdin; Close closes the stream.
type attachStream struct {
	b   *box
	hdr [8]byte
	buf []byte // the current engine frame: stdout bytes not yet read

	mu  sync.Mutex // guards err (Read appends, stderr reads)
	err []byte
}

// initStderrMax caps what is kept of runbox-init's own stderr.
const initStderrMax = 4 << 10

func newAttachStream(b *box) *attachStream { return &attachStream{b: b} }

func (s *attachStream) Read(p []byte) (int, error) {
	for len(s.buf) == 0 {
		if err := s.next(); err != nil {
			return 0, err
		}
	}
	n := copy(p, s.buf)
	s.buf = s.buf[n:]
	return n, nil
}

// next reads the engine's next frame whole: stdout (or stdin) bytes become buf, stderr
// bytes are kept (up to the cap). A stream cut inside a frame ends at the frame before
// it, as with stdcopy.StdCopy.
func (s *attachStream) next() error {
	r := s.b.conn.Reader
	if _, err := io.ReadFull(r, s.hdr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return io.EOF
		}
		return err
	}
	size := int64(binary.BigEndian.Uint32(s.hdr[4:]))
	// Read as it comes, not into a buffer of the size the header declares.
	frame, err := io.ReadAll(io.LimitReader(r, size))
	if err != nil {
		return err
	}
	if int64(len(frame)) < size {
		return io.EOF
	}
	switch stdcopy.StdType(s.hdr[0]) {
	case stdcopy.Stdin, stdcopy.Stdout:
		s.buf = frame
	case stdcopy.Stderr:
		s.mu.Lock()
		s.err = append(s.err, frame[:min(len(frame), initStderrMax-len(s.err))]...)
		s.mu.Unlock()
	case stdcopy.Systemerr:
		return fmt.Errorf("error from daemon in stream: %s", frame)
	default:
		return fmt.Errorf("unrecognized input header: %d", s.hdr[0])
	}
	return nil
}

func (s *attachStream) Write(p []byte) (int, error) { return s.b.conn.Conn.Write(p) }

func (s *attachStream) Close() error {
	s.b.closeStream()
	return nil
}

// stderr returns what was kept of runbox-init's stderr.
func (s *attachStream) stderr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return string(s.err)
}

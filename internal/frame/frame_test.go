package frame

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	for _, n := range []int{0, 1, Eager, Eager + 1, 5*Eager + 3} {
		var buf bytes.Buffer
		payload := bytes.Repeat([]byte{'p'}, n)
		if err := Write(&buf, 'J', payload); err != nil {
			t.Fatal(err)
		}
		// One byte at a time: the reader copes with short reads.
		typ, got, err := Read(iotest.OneByteReader(&buf), n)
		if err != nil || typ != 'J' || !bytes.Equal(got, payload) {
			t.Errorf("%d bytes: %q %d %v", n, typ, len(got), err)
		}
	}
}

func TestReadErrors(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	Write(&buf, 'X', make([]byte, 100))
	if _, _, err := Read(bytes.NewReader(buf.Bytes()), 99); !errors.Is(err, ErrTooLarge) {
		t.Errorf("over the cap: %v", err)
	}
	if _, _, err := Read(bytes.NewReader(buf.Bytes()[:50]), 100); err != io.ErrUnexpectedEOF {
		t.Errorf("truncated payload: %v", err)
	}
	big := buf.Bytes()[:HeaderSize]
	big[1], big[2], big[3], big[4] = 0, 0x10, 0, 0 // declares 1 MiB, sends nothing more
	if _, _, err := Read(bytes.NewReader(big), 2<<20); err != io.ErrUnexpectedEOF {
		t.Errorf("large declared, nothing sent: %v", err)
	}
	if _, _, err := Read(bytes.NewReader(nil), 10); err != io.EOF {
		t.Errorf("no frame: %v", err)
	}
	if _, _, err := Read(bytes.NewReader([]byte{'X', 0}), 10); err != io.ErrUnexpectedEOF {
		t.Errorf("truncated header: %v", err)
	}
}

// A payload past eager bytes is read into a buffer that grows with what arrives, through
// short reads; a length that lies ends in io.ErrUnexpectedEOF (the transport's
// TestDeclaredSizeIsNotAllocated measures the heap it costs).
func TestReadPayloadEager(t *testing.T) {
	t.Parallel()
	for _, eager := range []int{0, 1, 4 << 10, Eager} {
		for _, n := range []int{0, 1, eager, eager + 1, 3*eager + 7} {
			payload := bytes.Repeat([]byte{'q'}, n)
			got, err := ReadPayloadEager(iotest.HalfReader(bytes.NewReader(payload)), n, eager)
			if err != nil || !bytes.Equal(got, payload) {
				t.Errorf("eager %d, %d bytes: %d %v", eager, n, len(got), err)
			}
		}
		// Declares 1 GiB, sends 10 bytes: the buffer never reached the declared size.
		got, err := ReadPayloadEager(bytes.NewReader(make([]byte, 10)), 1<<30, eager)
		if err != io.ErrUnexpectedEOF || got != nil {
			t.Errorf("eager %d, a lying length: %d bytes, %v", eager, len(got), err)
		}
	}
}

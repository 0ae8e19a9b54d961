package docker

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"

	"github.com/docker/docker/api/types"
	"github.com/docker/docker/pkg/stdcopy"

	"runbox/sandbox"
	"runbox/sandbox/boxinit"
	"runbox/sandbox/sandboxtest"
)

// engineStream returns an attach stream reading what the engine sent: stdcopy frames.
func engineStream(sent []byte) *attachStream {
	return newAttachStream(&box{conn: types.HijackedResponse{Reader: bufio.NewReader(bytes.NewReader(sent))}})
}

// engineFrame is one frame of the engine's multiplexed stream.
func engineFrame(std stdcopy.StdType, payload string) []byte {
	var b bytes.Buffer
	stdcopy.NewStdWriter(&b, std).Write([]byte(payload))
	if payload == "" { // the writer writes nothing for nothing: an empty frame by hand
		return []byte{byte(std), 0, 0, 0, 0, 0, 0, 0}
	}
	return b.Bytes()
}

// The attach stream reads the engine's multiplexed stream as stdcopy.StdCopy does:
// runbox-init's stdout (and what the engine calls stdin) as the stream's bytes, its stderr
// kept apart up to a cap, an error from the engine as the stream's error, a stream cut
// inside a frame as its end, before that frame.
func TestAttachStreamDemultiplexes(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("e", initStderrMax)
	for _, c := range []struct {
		name           string
		sent           [][]byte
		stdout, stderr string
		err            string // of the read that ends the stream; "" for io.EOF
	}{
		{"both streams", [][]byte{engineFrame(stdcopy.Stdout, "out1 "), engineFrame(stdcopy.Stderr, "err1 "), engineFrame(stdcopy.Stdin, "out2"), engineFrame(stdcopy.Stdout, ""), engineFrame(stdcopy.Stderr, "err2")}, "out1 out2", "err1 err2", ""},
		{"stderr capped", [][]byte{engineFrame(stdcopy.Stderr, "x"), engineFrame(stdcopy.Stderr, long), engineFrame(stdcopy.Stdout, "out")}, "out", "x" + long[1:], ""},
		{"cut in a header", [][]byte{engineFrame(stdcopy.Stdout, "whole"), engineFrame(stdcopy.Stdout, "cut")[:5]}, "whole", "", ""},
		{"cut in a frame", [][]byte{engineFrame(stdcopy.Stdout, "whole"), engineFrame(stdcopy.Stdout, "cut")[:9]}, "whole", "", ""},
		{"error from the engine", [][]byte{engineFrame(stdcopy.Stdout, "out"), engineFrame(stdcopy.Systemerr, "boom")}, "out", "", "error from daemon in stream: boom"},
		{"unknown stream", [][]byte{engineFrame(stdcopy.Stdout, "out"), engineFrame(7, "x")}, "out", "", "unrecognized input header: 7"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			s := engineStream(bytes.Join(c.sent, nil))
			got, err := io.ReadAll(s)
			if string(got) != c.stdout || s.stderr() != c.stderr {
				t.Errorf("stdout %q stderr %q, want %q and %q", got, s.stderr(), c.stdout, c.stderr)
			}
			if (c.err == "" && err != nil) || (c.err != "" && (err == nil || err.Error() != c.err)) {
				t.Errorf("err %v, want %q", err, c.err)
			}
		})
	}
}

// A container whose runbox-init ends without a result fails the run with what it wrote
// on its stderr.
func TestRunWithoutAResultSaysWhatInitWrote(t *testing.T) {
	t.Parallel()
	f := newFakeEngine()
	f.serve = func(c net.Conn) {
		go io.Copy(io.Discard, c)
		stdcopy.NewStdWriter(c, stdcopy.Stdout).Write(frame(boxinit.FrameStarted, ""))
		stdcopy.NewStdWriter(c, stdcopy.Stderr).Write([]byte("runbox-init: read request: bad frame"))
	}
	r, _ := newFakeRunner(t, f, nil)
	_, err := r.Run(context.Background(), sandboxtest.Program("python", "print('hi')"), nil)
	if !errors.Is(err, sandbox.ErrUnavailable) || !strings.Contains(err.Error(), "without a result") || !strings.Contains(err.Error(), "runbox-init: read request: bad frame") {
		t.Errorf("err %v, want ErrUnavailable with runbox-init's stderr", err)
	}
}

// FuzzAttachStream reads any bytes as the engine's stream: no panic, and no more of
// runbox-init's stderr kept than the cap.
func FuzzAttachStream(f *testing.F) {
	f.Add(bytes.Join([][]byte{engineFrame(stdcopy.Stdout, "out"), engineFrame(stdcopy.Stderr, "err")}, nil))
	f.Add(engineFrame(stdcopy.Systemerr, "boom"))
	f.Add([]byte{2, 0, 0, 0, 0, 0, 0x20, 0})
	f.Fuzz(func(t *testing.T, sent []byte) {
		s := engineStream(sent)
		got, _ := io.ReadAll(s)
		if len(got)+len(s.stderr()) > len(sent) || len(s.stderr()) > initStderrMax {
			t.Errorf("read %d bytes and kept %d of stderr from %d", len(got), len(s.stderr()), len(sent))
		}
	})
}

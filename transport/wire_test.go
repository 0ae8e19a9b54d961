package transport

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"runbox/sandbox"
	"runbox/scheduler"
)

// Every output stream has one frame type and back; a frame that is not output has none.
func TestOutputFrames(t *testing.T) {
	t.Parallel()
	seen := map[byte]bool{}
	for _, s := range []sandbox.Stream{sandbox.Stdout, sandbox.Stderr, sandbox.Compile} {
		typ := outputFrame(s)
		if back, ok := outputStream(typ); !ok || back != s || seen[typ] {
			t.Errorf("%s: frame %q, back %q %v", s, typ, back, ok)
		}
		seen[typ] = true
	}
	for _, typ := range []byte{FrameResult, FrameStarted, FrameStdin, 0} {
		if s, ok := outputStream(typ); ok {
			t.Errorf("frame %q carries %s", typ, s)
		}
	}
}

// readJob: frames in order to the callbacks, the end as a Result or the X's sentinel, a
// frame without its callback as ErrProtocol, a stream that ends early as its read error.
func TestReadJob(t *testing.T) {
	t.Parallel()
	stream := func(frames ...any) io.Reader {
		var buf bytes.Buffer
		for i := 0; i < len(frames); i += 2 {
			b, err := encodeGolden(frames[i].(byte), frames[i+1])
			if err != nil {
				t.Fatal(err)
			}
			buf.Write(b)
		}
		return &buf
	}
	var got []string
	h := jobFrames{
		before:   func(typ byte) error { got = append(got, "before "+string(typ)); return nil },
		accepted: func(a Accepted) error { got = append(got, "accepted "+a.ID); return nil },
		queued:   func(q Queued) error { got = append(got, "queued"); return nil },
		started:  func(s Started) error { got = append(got, "started "+s.Node); return nil },
		output:   func(c sandbox.Chunk) error { got = append(got, string(c.Stream)+" "+string(c.Data)); return nil },
	}
	res, refused, err := readJob(stream(FrameAccepted, Accepted{ID: "j"}, FrameQueued, Queued{Position: 1},
		FrameStarted, Started{Node: "n"}, FrameCompile, []byte("c"), FrameStdout, []byte("o"), FrameStderr, []byte("e"),
		FrameResult, Result{Status: sandbox.StatusOK, ExitCode: 3}), h)
	want := "accepted j|before Q|queued|before S|started n|before C|compile c|before O|stdout o|before E|stderr e|before R"
	if err != nil || refused != nil || res.Status != sandbox.StatusOK || res.ExitCode != 3 || strings.Join(got, "|") != want {
		t.Errorf("a whole job: %v %v %+v\n%s\nwant\n%s", err, refused, res, strings.Join(got, "|"), want)
	}

	_, refused, err = readJob(stream(FrameError, Error{Code: "busy", Message: "full"}), jobFrames{})
	if err != nil || !errors.Is(refused, scheduler.ErrBusy) || refused.Error() != "full" {
		t.Errorf("an error frame: %v %v", err, refused)
	}
	for name, r := range map[string]io.Reader{
		"no callback for Q": stream(FrameQueued, Queued{}),
		"unknown frame":     stream(byte('Z'), nil),
		"bad result":        stream(FrameResult, []byte("{")),
		"bad accepted":      stream(FrameAccepted, []byte("{")),
	} {
		h := jobFrames{accepted: func(Accepted) error { return nil }}
		if _, _, err := readJob(r, h); !errors.Is(err, ErrProtocol) {
			t.Errorf("%s: %v, want ErrProtocol", name, err)
		}
	}
	if _, _, err := readJob(stream(FrameStdout, []byte("o")), jobFrames{output: func(sandbox.Chunk) error { return nil }}); err != io.EOF {
		t.Errorf("a stream that ends before its result: %v, want EOF", err)
	}
	stop := errors.New("stop")
	if _, _, err := readJob(stream(FrameStarted, Started{}), jobFrames{started: func(Started) error { return stop }}); err != stop {
		t.Errorf("a callback's error: %v", err)
	}
}

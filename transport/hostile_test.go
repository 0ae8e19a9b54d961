package transport

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"runbox/sandbox"
	"runbox/scheduler"
)

// A request over the frame cap: the client refuses it before sending, with too_large and
// the server's own message; a client that sends it anyway gets that answer on its stream
// (the server reads and drops the bytes) and its session serves the next job.
func TestOversizeRequest(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	c := dialT(t, ts.addr, nil)
	ctx := context.Background()
	sess, _ := c.session(ctx)
	spec := prog("out big\n" + strings.Repeat("#", 24<<20))

	_, err := c.Run(ctx, spec, RunOptions{})
	if !errors.Is(err, sandbox.ErrTooLarge) || Code(err) != "too_large" || !strings.Contains(err.Error(), "16MiB cap") {
		t.Fatalf("client: %v, want too_large with the cap", err)
	}
	if n := sess.NumStreams(); n != 0 {
		t.Errorf("the client opened %d stream(s) for a request it refused", n)
	}

	// A raw client sends it anyway, on the same session.
	body, _ := json.Marshal(Submit{Spec: spec})
	st, err := c.openStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sent := make(chan error, 1)
	go func() { sent <- WriteFrame(st, FrameSubmit, body) }()
	st.SetReadDeadline(time.Now().Add(time.Minute))
	typ, p, err := ReadFrame(st, MaxFrame)
	var e Error
	json.Unmarshal(p, &e)
	if err != nil || typ != FrameError || e.Code != "too_large" || e.Message != err2msg(c.Run(ctx, spec, RunOptions{})) {
		t.Errorf("server: %q %s %v, want too_large with the client's message", typ, p, err)
	}
	if err := <-sent; err != nil {
		t.Errorf("the oversize request was not read to its end: %v", err)
	}
	st.Close()

	// A header that declares more than the server drains: answered, the stream closed
	// unread, the session kept.
	st, err = c.openStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st.Write([]byte{FrameSubmit, 0x40, 0, 0, 0}) // 1 GiB
	st.SetReadDeadline(time.Now().Add(time.Minute))
	if typ, p, err := ReadFrame(st, MaxFrame); err != nil || typ != FrameError || !strings.Contains(string(p), `"too_large"`) || !strings.Contains(string(p), "1GiB") {
		t.Errorf("1 GiB declared: %q %s %v", typ, p, err)
	}
	st.Close()

	res, err := c.Run(ctx, prog("out next"), RunOptions{})
	if err != nil || string(res.Stdout) != "next\n" {
		t.Errorf("the next job: %v %+v", err, res)
	}
	if again, _ := c.session(ctx); again != sess {
		t.Error("the client had to dial again: the server dropped the session")
	}
}

func err2msg(_ sandbox.Result, err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// panicOn is a slog handler that panics on one message: a panic in the middle of the
// server's handling of a stream.
type panicOn struct {
	slog.Handler
	msg string
}

func (h panicOn) Enabled(context.Context, slog.Level) bool { return true }
func (h panicOn) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == h.msg {
		panic("boom: " + h.msg)
	}
	return nil
}
func (h panicOn) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h panicOn) WithGroup(string) slog.Handler      { return h }

// A panic while the server handles a stream ends that stream with internal; the session
// and the server serve on. So does a panic in the handshake (the Authenticate hook).
func TestServerPanicEndsOnlyTheStream(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(_ *scheduler.Config, c *ServerConfig) {
		c.Logger = slog.New(panicOn{msg: "job accepted"})
		c.Authenticate = func(h Hello) error {
			if h.Name == "evil" {
				panic("boom: hello")
			}
			return nil
		}
	})
	c := dialT(t, ts.addr, nil)
	_, err := c.Run(context.Background(), prog("out x"), RunOptions{})
	if !errors.Is(err, scheduler.ErrInternal) || Code(err) != "internal" {
		t.Errorf("job whose stream panicked: %v, want internal", err)
	}
	if _, err := Dial(context.Background(), ts.addr, ClientConfig{Name: "evil"}); err == nil {
		t.Error("a hello whose check panicked was welcomed")
	}
	if snap, err := c.Status(context.Background()); err != nil || len(snap.Nodes) != 1 {
		t.Errorf("the same session after the panic: %v", err)
	}
}

// Closing a Client ends the jobs it follows: they do not keep trying to reconnect for
// the whole reconnect budget.
func TestClientCloseEndsRuns(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	c := dialT(t, ts.addr, func(cfg *ClientConfig) { cfg.Reconnect = time.Hour })
	errc := make(chan error, 1)
	go func() {
		_, err := c.Run(context.Background(), prog("sleep 60s"), RunOptions{Handler: Handler{Started: func(string) { c.Close() }}})
		errc <- err
	}()
	select {
	case err := <-errc:
		if !errors.Is(err, ErrConnect) || !strings.Contains(err.Error(), "client closed") {
			t.Errorf("err %v, want client closed", err)
		}
	case <-time.After(time.Minute): // a hang detector: the reconnect budget is an hour
		t.Fatal("Run kept going after Close")
	}
}

package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"runbox/sandbox/sandboxtest"
)

// logRecorder is a slog.Handler that keeps the master's records for the test.
type logRecorder struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logRecorder) WithGroup(string) slog.Handler            { return l }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.recs = append(l.recs, r.Clone())
	return nil
}

// attr returns the value of key in the first record with message msg ("" when none).
func (l *logRecorder) attr(msg, key string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range l.recs {
		if r.Message != msg {
			continue
		}
		var v string
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == key {
				v = a.Value.String()
				return false
			}
			return true
		})
		return v
	}
	return ""
}

// messages returns the messages of level and above.
func (l *logRecorder) messages(level slog.Level) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, r := range l.recs {
		if r.Level >= level {
			out = append(out, r.Message)
		}
	}
	return out
}

// startMasterHTTP starts a master with its HTTP server on a free loopback port, and
// returns that server's base URL and the master's log.
func startMasterHTTP(t *testing.T, mod func(*masterConfig)) (string, *logRecorder) {
	t.Helper()
	rec := &logRecorder{}
	startMasterLog(t, &sandboxtest.Fake{}, slog.New(rec), func(c *masterConfig) {
		c.HTTP = "127.0.0.1:0"
		if mod != nil {
			mod(c)
		}
	})
	addr := rec.attr("master ready", "http")
	if addr == "" {
		t.Fatal(`no "http" address in the "master ready" log`)
	}
	return "http://" + addr, rec
}

// status GETs url with an optional bearer token and returns the status code; a stream
// (/events) is closed as soon as its headers came.
func status(t *testing.T, url, token string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		io.Copy(io.Discard, resp.Body)
	}
	return resp.StatusCode
}

func TestMasterHTTPToken(t *testing.T) {
	t.Parallel()
	file := write(t, "http-token", "s3cret\n")
	for _, tc := range []struct {
		name        string
		file, env   string
		right, miss string
	}{
		{name: "file", file: file, right: "s3cret", miss: "from-env"},
		{name: "file wins over env", file: file, env: "from-env", right: "s3cret", miss: "from-env"},
		{name: "env", env: "from-env", right: "from-env", miss: "s3cret"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			base, rec := startMasterHTTP(t, func(c *masterConfig) { c.HTTPTokenFile, c.HTTPToken = tc.file, tc.env })
			for _, path := range []string{"/api/status", "/events", "/metrics", "/"} {
				if code := status(t, base+path, ""); code != http.StatusUnauthorized {
					t.Errorf("%s without a token: %d, want 401", path, code)
				}
				if code := status(t, base+path, tc.miss); code != http.StatusUnauthorized {
					t.Errorf("%s with %q: %d, want 401", path, tc.miss, code)
				}
				if code := status(t, base+path, tc.right); code != http.StatusOK {
					t.Errorf("%s with %q: %d, want 200", path, tc.right, code)
				}
			}
			if code := status(t, base+"/healthz", ""); code != http.StatusOK {
				t.Errorf("/healthz without a token: %d, want 200", code)
			}
			for _, w := range rec.messages(slog.LevelWarn) {
				if strings.Contains(w, "dashboard") {
					t.Errorf("a warning about the dashboard of a master with a token on loopback: %q", w)
				}
			}
		})
	}
}

func TestMasterHTTPWithoutToken(t *testing.T) {
	t.Parallel()
	base, rec := startMasterHTTP(t, nil)
	if code := status(t, base+"/api/status", ""); code != http.StatusOK {
		t.Errorf("/api/status of a master without a token, on loopback: %d, want 200", code)
	}
	for _, w := range rec.messages(slog.LevelWarn) {
		if strings.Contains(w, "dashboard") {
			t.Errorf("a loopback dashboard is said open to everyone: %q", w)
		}
	}
}

func TestMasterHTTPTokenFileUnreadable(t *testing.T) {
	t.Parallel()
	for name, path := range map[string]string{
		"missing":   t.TempDir() + "/nope",
		"two lines": write(t, "two", "a\nb\n"),
		"empty":     write(t, "empty", "\n"),
	} {
		cfg := masterConfig{Listen: "127.0.0.1:0", HTTP: "127.0.0.1:0", Node: "master", MaxPrograms: 1, Queue: 1,
			HTTPTokenFile: path, HTTPToken: "from-env"}
		err := serveMaster(context.Background(), cfg, slog.New(slog.DiscardHandler), &sandboxtest.Fake{}, nil)
		if err == nil || !strings.Contains(err.Error(), "--http-token-file") || !strings.Contains(err.Error(), path) {
			t.Errorf("%s token file: %v, want an error naming --http-token-file and the file", name, err)
		}
	}
}

func TestMasterHTTPFlags(t *testing.T) {
	t.Parallel()
	// The token never is a flag's value: every user sees a process's arguments.
	if code, _, errOut := cli(t, "", "master", "--http-token", "s3cret"); code != exitUsage || !strings.Contains(errOut, "http-token") {
		t.Errorf("--http-token: code %d, stderr %q; want a usage error", code, errOut)
	}
	_, _, help := cli(t, "", "master", "-h")
	for _, want := range []string{"-http-token-file", "RUNBOX_HTTP_TOKEN", `(default "127.0.0.1:7780")`} {
		if !strings.Contains(help, want) {
			t.Errorf("master -h lacks %q:\n%s", want, help)
		}
	}
}

func TestIsLoopback(t *testing.T) {
	t.Parallel()
	for addr, want := range map[string]bool{
		"127.0.0.1:7780": true, "127.1.2.3:7780": true, "[::1]:7780": true,
		"0.0.0.0:7780": false, "[::]:7780": false, "10.0.0.5:7780": false, "[2001:db8::1]:7780": false,
	} {
		a, err := net.ResolveTCPAddr("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if got := isLoopback(a); got != want {
			t.Errorf("isLoopback(%s) = %v, want %v", addr, got, want)
		}
	}
}

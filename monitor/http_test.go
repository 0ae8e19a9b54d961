package monitor_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"runbox/monitor"
)

// serve runs m behind the http.Server that m.Server returns (its timeouts and header
// bound), on loopback.
func serve(t *testing.T, m *monitor.Monitor) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(m)
	srv.Config = m.Server()
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

// dribble opens a connection to addr, sends start, then one byte of more every few
// milliseconds, as a slowloris client does, until the server closes the connection; the
// channel closes then.
func dribble(t *testing.T, addr, start string, more byte) <-chan struct{} {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(conn, start); err != nil {
		t.Fatal(err)
	}
	cut := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		defer close(cut)
		io.Copy(io.Discard, conn) // whatever the server answers, until it closes
	}()
	go func() {
		defer wg.Done()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-cut:
				return
			case <-tick.C:
				if _, err := conn.Write([]byte{more}); err != nil {
					return
				}
			}
		}
	}()
	t.Cleanup(func() { conn.Close(); wg.Wait() })
	return cut
}

// waitCut fails the test unless cut closes. The wait only turns a hang into a failure.
func waitCut(t *testing.T, what string, cut <-chan struct{}) {
	t.Helper()
	select {
	case <-cut:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: still connected after 30s", what)
	}
}

func TestServerCutsSlowClients(t *testing.T) {
	t.Parallel()
	cfg := monitor.DefaultConfig()
	cfg.Token = "s3cret"
	cfg.ReadHeaderTimeout, cfg.ReadTimeout = 200*time.Millisecond, 400*time.Millisecond
	m, err := monitor.New(cfg, &fakeSource{snap: cluster()})
	if err != nil {
		t.Fatal(err)
	}
	srv := serve(t, m)
	addr := srv.Listener.Addr().String()

	// Headers dribbled one byte at a time never end; a body dribbled likewise neither.
	headers := dribble(t, addr, "GET /api/status HTTP/1.1\r\nHost: runbox\r\nX-Slow: ", 'a')
	body := dribble(t, addr, "POST / HTTP/1.1\r\nHost: runbox\r\nContent-Type: application/x-www-form-urlencoded\r\n"+
		"Content-Length: 100000\r\n\r\ntoken=", 'a')

	// Meanwhile the others are served.
	if resp, _ := get(t, srv.URL+"/healthz"); resp.StatusCode != 200 {
		t.Errorf("/healthz beside the slow clients: %s", resp.Status)
	}
	if resp, _ := get(t, srv.URL+"/api/status", "Authorization", "Bearer s3cret"); resp.StatusCode != 200 {
		t.Errorf("/api/status beside the slow clients: %s", resp.Status)
	}
	waitCut(t, "a client dribbling its headers", headers)
	waitCut(t, "a client dribbling its body", body)
	if resp, _ := get(t, srv.URL+"/healthz"); resp.StatusCode != 200 {
		t.Errorf("/healthz after the slow clients: %s", resp.Status)
	}
}

func TestServerClosesIdleConnections(t *testing.T) {
	t.Parallel()
	cfg := monitor.DefaultConfig()
	cfg.IdleTimeout = 200 * time.Millisecond
	m, err := monitor.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := serve(t, m)
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: runbox\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Close {
		t.Fatalf("/healthz: %s, close %v; want 200 on a kept-alive connection", resp.Status, resp.Close)
	}
	// The connection stays idle: the server closes it (EOF), not our deadline.
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("idle connection: %v, want EOF (closed by the server)", err)
	}
}

func TestServerBoundsHeaders(t *testing.T) {
	t.Parallel()
	cfg := monitor.DefaultConfig()
	cfg.MaxHeaderBytes = 8 << 10
	m, err := monitor.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := serve(t, m)
	if resp, _ := get(t, srv.URL+"/healthz", "X-Big", strings.Repeat("a", 64<<10)); resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("64 KiB of headers: %s, want 431", resp.Status)
	}
	if resp, _ := get(t, srv.URL+"/healthz", "X-Small", strings.Repeat("a", 1<<10)); resp.StatusCode != 200 {
		t.Errorf("1 KiB of headers: %s, want 200", resp.Status)
	}
}

// A stream outlives the server's read and write timeouts: it extends its own write
// deadline for each event.
func TestEventsOutliveServerTimeouts(t *testing.T) {
	t.Parallel()
	cfg := monitor.DefaultConfig()
	cfg.ReadHeaderTimeout, cfg.ReadTimeout, cfg.WriteTimeout = 100*time.Millisecond, 100*time.Millisecond, 100*time.Millisecond
	cfg.Interval = 20 * time.Millisecond
	m, err := monitor.New(cfg, &fakeSource{snap: cluster()})
	if err != nil {
		t.Fatal(err)
	}
	run(t, m)
	srv := serve(t, m)
	events := readEvents(t, srv.URL+"/events")
	if e := next(t, events); e.name != "history" {
		t.Fatalf("first event %q, want history", e.name)
	}
	// Samples spanning ten timeouts arrive on the one stream.
	var first int64
	for {
		u := decodeUpdate(t, next(t, events))
		if u.Sample == nil {
			continue
		}
		if first == 0 {
			first = u.Sample.At
		}
		if u.Sample.At-first >= 10*cfg.ReadTimeout.Milliseconds() {
			return
		}
	}
}

// streamWriter is a ResponseWriter for /events called in the process, with a remote
// address of the test's choosing.
type streamWriter struct {
	header  http.Header
	once    sync.Once
	started chan struct{} // closed at the status line
	code    int           // set before started closes
}

func (w *streamWriter) Header() http.Header { return w.header }
func (w *streamWriter) WriteHeader(code int) {
	w.once.Do(func() { w.code = code; close(w.started) })
}
func (w *streamWriter) Write(b []byte) (int, error) { w.WriteHeader(http.StatusOK); return len(b), nil }
func (w *streamWriter) Flush()                      {}

// openStream asks m for /events from remote, and returns the answer's status and, for a
// stream, the function that ends it (the test's end does too).
func openStream(t *testing.T, m *monitor.Monitor, remote string, header ...string) (int, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req := httptest.NewRequestWithContext(ctx, "GET", "/events", nil)
	req.RemoteAddr = remote
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	w := &streamWriter{header: http.Header{}, started: make(chan struct{})}
	done := make(chan struct{})
	go func() { defer close(done); m.ServeHTTP(w, req) }()
	select {
	case <-w.started:
	case <-time.After(20 * time.Second):
		t.Fatalf("/events from %s: no answer in 20s", remote)
	}
	end := sync.OnceFunc(func() { cancel(); <-done })
	t.Cleanup(end)
	if w.code != http.StatusOK {
		end()
	}
	return w.code, end
}

func TestEventsKeepSlotsForTheOperator(t *testing.T) {
	t.Parallel()
	cfg := monitor.DefaultConfig()
	cfg.MaxStreams, cfg.ReservedStreams, cfg.MaxStreamsPerAddr = 5, 2, 1
	m, err := monitor.New(cfg, &fakeSource{snap: cluster()})
	if err != nil {
		t.Fatal(err)
	}
	want := func(remote string, code int) func() {
		t.Helper()
		got, end := openStream(t, m, remote)
		if got != code {
			t.Fatalf("/events from %s: %d, want %d", remote, got, code)
		}
		return end
	}
	// Anonymous viewers: one stream an address (an IPv6 /64 counts as one), three in all.
	endA := want("203.0.113.1:5000", 200)
	want("203.0.113.1:5001", http.StatusTooManyRequests)
	want("[2001:db8::1]:5000", 200)
	want("[2001:db8::2]:5000", http.StatusTooManyRequests) // the same /64
	want("[2001:db8:0:1::1]:5000", 200)
	want("203.0.113.3:5000", http.StatusServiceUnavailable) // the anonymous share is full
	// The operator on the master's machine takes the reserved slots, then all are taken.
	want("127.0.0.1:6000", 200)
	want("[::1]:6000", 200)
	want("127.0.0.1:6001", http.StatusServiceUnavailable)
	// An anonymous viewer leaves: another one takes its place.
	endA()
	want("203.0.113.3:5000", 200)
}

func TestEventsWithTokenCountOnlyTheTotal(t *testing.T) {
	t.Parallel()
	cfg := monitor.DefaultConfig()
	cfg.Token = "s3cret"
	cfg.MaxStreams, cfg.ReservedStreams, cfg.MaxStreamsPerAddr = 3, 1, 1
	m, err := monitor.New(cfg, &fakeSource{snap: cluster()})
	if err != nil {
		t.Fatal(err)
	}
	// Without the token: refused before a slot is taken, however many.
	for range 10 {
		if code, _ := openStream(t, m, "203.0.113.1:5000"); code != http.StatusUnauthorized {
			t.Fatalf("/events without the token: %d, want 401", code)
		}
	}
	// Token holders behind one address (a proxy, a tunnel) take every slot.
	for i := range 3 {
		if code, _ := openStream(t, m, "203.0.113.1:5000", "Authorization", "Bearer s3cret"); code != 200 {
			t.Fatalf("stream %d with the token: %d, want 200", i+1, code)
		}
	}
	if code, _ := openStream(t, m, "203.0.113.2:5000", "Authorization", "Bearer s3cret"); code != http.StatusServiceUnavailable {
		t.Fatalf("stream past MaxStreams: %d, want 503", code)
	}
}

func TestTokenRequired(t *testing.T) {
	t.Parallel()
	cfg := monitor.DefaultConfig()
	cfg.Token = "s3cret"
	m, err := monitor.New(cfg, &fakeSource{snap: cluster()})
	if err != nil {
		t.Fatal(err)
	}
	srv := serve(t, m)

	if resp, _ := get(t, srv.URL+"/healthz"); resp.StatusCode != 200 {
		t.Errorf("/healthz without a token: %s, want 200", resp.Status)
	}
	for _, path := range []string{"/", "/static/app.js", "/events", "/api/status", "/metrics", "/readyz"} {
		resp, body := get(t, srv.URL+path)
		if resp.StatusCode != 401 || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("%s without a token: %s %q, want 401 with WWW-Authenticate: Bearer", path, resp.Status, body)
		}
		if resp, _ := get(t, srv.URL+path, "Authorization", "Bearer wrong"); resp.StatusCode != 401 {
			t.Errorf("%s with a wrong token: %s, want 401", path, resp.Status)
		}
		if resp, _ := get(t, srv.URL+path, "Cookie", "runbox_token=s3cret"); resp.StatusCode != 401 {
			t.Errorf("%s with the token itself as the cookie: %s, want 401", path, resp.Status)
		}
		// A token in the address would be logged by proxies: refused, even the right one.
		for _, tok := range []string{"wrong", "s3cret"} {
			if resp, _ := get(t, srv.URL+path+"?token="+tok, "Authorization", "Bearer s3cret"); resp.StatusCode != 401 {
				t.Errorf("%s?token=%s: %s, want 401", path, tok, resp.Status)
			}
		}
	}
	for _, path := range []string{"/", "/api/status", "/metrics", "/readyz"} {
		if resp, _ := get(t, srv.URL+path, "Authorization", "Bearer s3cret"); resp.StatusCode != 200 {
			t.Errorf("%s with the bearer token: %s, want 200", path, resp.Status)
		}
	}
	readEvents(t, srv.URL+"/events", "Authorization", "Bearer s3cret") // fails the test unless 200

	// A browser asking for the page gets a form that posts the token: it never is in an
	// address.
	resp, body := get(t, srv.URL+"/", "Accept", "text/html")
	if resp.StatusCode != 401 || !strings.Contains(body, `<form method="post" action="/">`) || !strings.Contains(body, `name="token"`) {
		t.Errorf("page without a token: %s, want 401 and a form that posts the token:\n%s", resp.Status, body)
	}
	resp, body = post(t, srv.URL+"/", url.Values{"token": {"wrong"}}, "Accept", "text/html")
	if resp.StatusCode != 401 || !strings.Contains(body, "wrong token") || len(resp.Cookies()) != 0 {
		t.Errorf("form with a wrong token: %s, cookies %v, want 401 and the form again:\n%s", resp.Status, resp.Cookies(), body)
	}
	resp, _ = post(t, srv.URL+"/", url.Values{"token": {"s3cret"}}, "Accept", "text/html")
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
		t.Fatalf("form with the token: %s to %q, want 303 to /", resp.Status, resp.Header.Get("Location"))
	}
	var cookie *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == "runbox_token" {
			cookie = c
		}
	}
	if cookie == nil || !cookie.HttpOnly || cookie.SameSite != http.SameSiteStrictMode || strings.Contains(cookie.Value, "s3cret") {
		t.Fatalf("cookie %+v, want an HttpOnly SameSite=Strict runbox_token that does not carry the token", cookie)
	}
	for _, path := range []string{"/", "/static/app.css", "/api/status", "/metrics"} {
		if resp, _ := get(t, srv.URL+path, "Cookie", cookie.Name+"="+cookie.Value); resp.StatusCode != 200 {
			t.Errorf("%s with the cookie: %s, want 200", path, resp.Status)
		}
	}
	readEvents(t, srv.URL+"/events", "Cookie", cookie.Name+"="+cookie.Value)
	if resp, _ := get(t, srv.URL+"/api/status", "Cookie", cookie.Name+"=wrong"); resp.StatusCode != 401 {
		t.Errorf("/api/status with a wrong cookie: %s, want 401", resp.Status)
	}
	// A huge form is refused without being read whole.
	if resp, _ := post(t, srv.URL+"/", url.Values{"token": {strings.Repeat("a", 1<<20)}}); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("1 MiB login form: %s, want 400", resp.Status)
	}

	// Another monitor, with another token, does not take this one's cookie.
	cfg.Token = "other"
	m2, err := monitor.New(cfg, &fakeSource{snap: cluster()})
	if err != nil {
		t.Fatal(err)
	}
	if resp, _ := get(t, serve(t, m2).URL+"/api/status", "Cookie", cookie.Name+"="+cookie.Value); resp.StatusCode != 401 {
		t.Errorf("another token's cookie: %s, want 401", resp.Status)
	}
}

func post(t *testing.T, u string, form url.Values, header ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest("POST", u, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return do(t, req, header...)
}

func TestOwnersOnlyBehindAToken(t *testing.T) {
	t.Parallel()
	snap := cluster()
	snap.Running[0].Owner, snap.Queued[0].Owner, snap.Recent[0].Owner = "alice", "bob", "carol"
	for _, token := range []string{"", "s3cret"} {
		cfg := monitor.DefaultConfig()
		cfg.Token = token
		cfg.Interval, cfg.History = time.Hour, 2*time.Hour
		m, err := monitor.New(cfg, &fakeSource{snap: snap})
		if err != nil {
			t.Fatal(err)
		}
		run(t, m)
		srv := serve(t, m)
		auth := []string{"Authorization", "Bearer " + token}
		_, body := get(t, srv.URL+"/api/status", auth...)
		var v monitor.View
		if err := json.Unmarshal([]byte(body), &v); err != nil {
			t.Fatal(err)
		}
		events := readEvents(t, srv.URL+"/events", auth...)
		next(t, events)
		u := decodeUpdate(t, next(t, events))
		for where, view := range map[string]monitor.View{"/api/status": v, "/events": u.View} {
			got := []string{view.Running[0].Owner, view.Queued[0].Owner, view.Recent[0].Owner}
			want := []string{"alice", "bob", "carol"}
			if token == "" {
				want = []string{"", "", ""}
			}
			if strings.Join(got, ",") != strings.Join(want, ",") {
				t.Errorf("token %q: owners on %s %q, want %q", token, where, got, want)
			}
		}
		if token == "" && strings.Contains(body, "alice") {
			t.Errorf("/api/status without a token names an owner:\n%s", body)
		}
	}
	// The dashboard has an owner column for the job lists.
	js, err := os.ReadFile("static/app.js")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(js), "j.owner") {
		t.Error("app.js does not show the jobs' owners")
	}
}

func TestNoTokenRefusesOtherHostNamesOnLoopback(t *testing.T) {
	t.Parallel()
	m, err := monitor.New(monitor.DefaultConfig(), &fakeSource{snap: cluster()})
	if err != nil {
		t.Fatal(err)
	}
	srv := serve(t, m)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	do := func(host, path string) int {
		t.Helper()
		req, err := http.NewRequest("GET", srv.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	// A page of evil.example that rebinds its name to 127.0.0.1 reads nothing.
	for _, path := range []string{"/", "/api/status", "/events", "/metrics"} {
		if code := do("evil.example:"+port, path); code != http.StatusForbidden {
			t.Errorf("%s with Host evil.example: %d, want 403", path, code)
		}
	}
	if code := do("evil.example:"+port, "/healthz"); code != 200 {
		t.Errorf("/healthz with Host evil.example: %d, want 200", code)
	}
	for _, host := range []string{"127.0.0.1:" + port, "localhost:" + port, "LOCALHOST", "[::1]:" + port, "dash.localhost:" + port} {
		if code := do(host, "/api/status"); code != 200 {
			t.Errorf("/api/status with Host %s: %d, want 200", host, code)
		}
	}
}

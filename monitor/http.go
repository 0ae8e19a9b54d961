package monitor

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

//go:embed static
var staticFS embed.FS

// tokenCookie keeps the dashboard's login: its value is derived from the token
// (sessionValue), so the token itself stays out of the browser's cookie jar.
const tokenCookie = "runbox_token"

// maxLoginForm bounds the login form's body: one field holding one token.
const maxLoginForm = 8 << 10

// ServeHTTP serves the dashboard (/), its assets (/static/), its event stream (/events),
// /api/status, /metrics, /healthz and /readyz.
func (m *Monitor) ServeHTTP(w http.ResponseWriter, r *http.Request) { m.handler.ServeHTTP(w, r) }

// Server returns an HTTP server of the monitor with the Config's timeouts and header
// bound: a client that dribbles its request, or holds a connection idle, is cut off
// while the others are served. Serve it on a listener; to stop, Shutdown it and end Run
// (Shutdown waits for requests to end, and the /events streams end with Run).
func (m *Monitor) Server() *http.Server {
	return &http.Server{
		Handler:           m,
		ReadHeaderTimeout: m.cfg.ReadHeaderTimeout,
		ReadTimeout:       m.cfg.ReadTimeout,
		WriteTimeout:      m.cfg.WriteTimeout,
		IdleTimeout:       m.cfg.IdleTimeout,
		MaxHeaderBytes:    m.cfg.MaxHeaderBytes,
		// What net/http logs is about clients (bad TLS, bad requests): debug, so that
		// a hostile client cannot fill the master's log.
		ErrorLog: slog.NewLogLogger(m.log.Handler(), slog.LevelDebug),
	}
}

func (m *Monitor) routes() http.Handler {
	static, err := fs.Sub(staticFS, "static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", m.serveIndex)
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	mux.HandleFunc("GET /events", m.serveEvents)
	mux.HandleFunc("GET /api/status", m.serveStatus)
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.metrics.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", m.serveReady)
	return m.secure(mux)
}

// secure adds the security headers, and, with a Token configured, requires it on every
// path but /healthz, and serves the login form's POST.
func (m *Monitor) secure(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		// Everything the page uses comes from this server: the browser refuses the rest.
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		if r.URL.Path == "/healthz" {
			next.ServeHTTP(w, r)
			return
		}
		if m.cfg.Token == "" {
			if !hostOK(r) {
				// A page elsewhere that rebinds its name to 127.0.0.1 would read the
				// cluster through its visitor's browser.
				http.Error(w, "forbidden: without a token this dashboard answers on loopback to an IP address or localhost only", http.StatusForbidden)
				return
			}
			next.ServeHTTP(w, r)
			return
		}
		if r.URL.Query().Has("token") {
			// An address is logged by proxies and kept in histories: a token there is
			// refused, right or wrong, so that no link or scrape config is built on it.
			m.unauthorized(w, r, "a token in the address is refused: send it in an Authorization header, or with the form")
			return
		}
		if r.Method == http.MethodPost && r.URL.Path == "/" {
			m.login(w, r)
			return
		}
		if auth := r.Header.Get("Authorization"); auth != "" {
			tok, ok := strings.CutPrefix(auth, "Bearer ")
			if !ok || !m.tokenOK(strings.TrimSpace(tok)) {
				m.unauthorized(w, r, "wrong token")
				return
			}
			next.ServeHTTP(w, r)
			return
		}
		if c, err := r.Cookie(tokenCookie); err == nil && subtle.ConstantTimeCompare([]byte(c.Value), []byte(m.session)) == 1 {
			next.ServeHTTP(w, r)
			return
		}
		m.unauthorized(w, r, "a token is required")
	})
}

// hostOK guards a monitor without a token against DNS rebinding: a request that came in
// on a loopback address must name the host by an IP address or as localhost, as a
// browser does when the user typed that address, and not by another name.
func hostOK(r *http.Request) bool {
	local, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if !ok {
		return true // not from a server (a test calling ServeHTTP)
	}
	if ap, err := netip.ParseAddrPort(local.String()); err != nil || !ap.Addr().IsLoopback() {
		return true
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.ToLower(strings.TrimSuffix(strings.Trim(host, "[]"), "."))
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	_, err := netip.ParseAddr(host)
	return err == nil
}

// login answers the login form: the right token sets the cookie and sends the browser
// to the dashboard (303, so that a reload does not post the token again).
func (m *Monitor) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxLoginForm)
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad login form", http.StatusBadRequest)
		return
	}
	if !m.tokenOK(r.PostForm.Get("token")) {
		m.unauthorized(w, r, "wrong token")
		return
	}
	http.SetCookie(w, &http.Cookie{Name: tokenCookie, Value: m.session, Path: "/", HttpOnly: true,
		Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func (m *Monitor) tokenOK(tok string) bool {
	return subtle.ConstantTimeCompare([]byte(tok), []byte(m.cfg.Token)) == 1
}

// sessionValue is the login cookie's value for token: a MAC of a fixed text under the
// token, so that the cookie opens the dashboard but does not carry the token, and a new
// token ends every login. "" without a token.
func sessionValue(token string) string {
	if token == "" {
		return ""
	}
	mac := hmac.New(sha256.New, []byte(token))
	io.WriteString(mac, "runbox dashboard session v1")
	return hex.EncodeToString(mac.Sum(nil))
}

// loginPage asks for the token. It stands alone: the stylesheet, like every path but
// /healthz, needs the token too. The form posts the token, so that it never is in an
// address (which proxies log and browsers keep).
var loginPage = template.Must(template.New("login").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}} · token required</title><link rel="icon" href="data:,"></head>
<body><main><h1>{{.Title}}</h1>
<p>This cluster's dashboard needs a token{{if .Why}} ({{.Why}}){{end}}.</p>
<form method="post" action="/"><label for="token">Token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
<button type="submit">Open the dashboard</button></form></main></body></html>
`))

// unauthorized answers 401: the token form for a browser asking for the page, a line of
// text for anything else.
func (m *Monitor) unauthorized(w http.ResponseWriter, r *http.Request, why string) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="runbox"`)
	w.Header().Set("Cache-Control", "no-store")
	if r.URL.Path == "/" && strings.Contains(r.Header.Get("Accept"), "text/html") {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(http.StatusUnauthorized)
		loginPage.Execute(w, struct{ Title, Why string }{m.cfg.Title, why})
		return
	}
	http.Error(w, "unauthorized: "+why, http.StatusUnauthorized)
}

func (m *Monitor) serveIndex(w http.ResponseWriter, r *http.Request) {
	page, err := staticFS.ReadFile("static/index.html")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	title := template.HTMLEscapeString(m.cfg.Title)
	w.Write([]byte(strings.ReplaceAll(string(page), "{{title}}", title)))
}

func (m *Monitor) serveStatus(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(m.view())
}

// serveReady answers 200 when the scheduler answers a Snapshot within a few seconds.
// Only one probe waits on the scheduler at a time; while it waits, others answer 503.
func (m *Monitor) serveReady(w http.ResponseWriter, r *http.Request) {
	src := m.source()
	if src == nil {
		http.Error(w, "not ready: no scheduler yet", http.StatusServiceUnavailable)
		return
	}
	if !m.probing.CompareAndSwap(false, true) {
		http.Error(w, "not ready: the scheduler has not answered the last probe", http.StatusServiceUnavailable)
		return
	}
	done := make(chan struct{})
	go func() {
		defer m.probing.Store(false)
		defer close(done)
		src.Snapshot(0)
	}()
	t := time.NewTimer(m.cfg.ReadyTimeout)
	defer t.Stop()
	select {
	case <-done:
		io.WriteString(w, "ok\n")
	case <-t.C:
		http.Error(w, "not ready: the scheduler does not answer", http.StatusServiceUnavailable)
	case <-r.Context().Done():
	}
}

// serveEvents streams the dashboard's updates as Server-Sent Events: a "history" event
// (the chart samples so far), then an "update" event (the view, and the new sample when
// there is one) after every sample and change, until the client goes or Run ends.
func (m *Monitor) serveEvents(w http.ResponseWriter, r *http.Request) {
	addr, loopback := addrKey(r.RemoteAddr)
	// Past secure, a request holds the token when one is set.
	authorised := m.cfg.Token != "" || loopback
	if code, why := m.takeStream(addr, authorised); code != 0 {
		w.Header().Set("Retry-After", "10")
		http.Error(w, why, code)
		return
	}
	defer m.releaseStream(addr, authorised)
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)

	send := func(event string, data []byte) bool {
		rc.SetWriteDeadline(time.Now().Add(m.cfg.StreamWriteTimeout)) // a stalled client is dropped
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, data); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	hist, err := json.Marshal(historyEvent{IntervalMS: m.cfg.Interval.Milliseconds(),
		WindowMS: m.cfg.History.Milliseconds(), Samples: m.History()})
	if err != nil {
		m.log.Error("encode history", "err", err)
		return
	}
	// The publish to wait for is taken before the view is, and again with each view sent:
	// a change published while one is being built or sent is the next one sent, never lost.
	m.mu.Lock()
	changed := m.changed
	m.mu.Unlock()
	first, err := json.Marshal(update{View: m.view()})
	if err != nil {
		m.log.Error("encode view", "err", err)
		return
	}
	if _, err := io.WriteString(w, "retry: 2000\n\n"); err != nil || !send("history", hist) || !send("update", first) {
		return
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case <-m.stopped:
			return
		case <-changed:
		}
		m.mu.Lock()
		data := m.latest
		changed = m.changed
		m.mu.Unlock()
		if !send("update", data) {
			return
		}
	}
}

// streamSlots counts the open /events streams.
type streamSlots struct {
	mu      sync.Mutex
	total   int            // every open stream
	anon    int            // the streams of viewers not authorised
	perAddr map[string]int // anon's streams by address key; no zero entries
}

// takeStream takes a stream slot for a viewer at addr (an addrKey), or returns the
// status and the message of the refusal. Anonymous viewers share MaxStreams minus
// ReservedStreams, at most MaxStreamsPerAddr each address.
func (m *Monitor) takeStream(addr string, authorised bool) (code int, why string) {
	s := &m.streams
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.total >= m.cfg.MaxStreams:
		return http.StatusServiceUnavailable, fmt.Sprintf("too many dashboards open (%d)", m.cfg.MaxStreams)
	case authorised:
	case s.anon >= m.cfg.MaxStreams-m.cfg.ReservedStreams:
		return http.StatusServiceUnavailable, fmt.Sprintf("too many dashboards open (%d of the %d streams are kept for the operator)",
			m.cfg.ReservedStreams, m.cfg.MaxStreams)
	case s.perAddr[addr] >= m.cfg.MaxStreamsPerAddr:
		return http.StatusTooManyRequests, fmt.Sprintf("too many dashboards open from one address (%d)", m.cfg.MaxStreamsPerAddr)
	default:
		s.anon++
		s.perAddr[addr]++
	}
	s.total++
	return 0, ""
}

// releaseStream gives back a slot that takeStream gave.
func (m *Monitor) releaseStream(addr string, authorised bool) {
	s := &m.streams
	s.mu.Lock()
	defer s.mu.Unlock()
	s.total--
	if authorised {
		return
	}
	s.anon--
	if s.perAddr[addr]--; s.perAddr[addr] <= 0 {
		delete(s.perAddr, addr)
	}
}

// addrKey names a viewer's address for the per-address bound: the IPv4 address, or the
// IPv6 /64 (one host may hold a whole /64); and says whether it is a loopback address.
func addrKey(remote string) (key string, loopback bool) {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return remote, false
	}
	a := ap.Addr().Unmap().WithZone("")
	if a.Is6() {
		if p, err := a.Prefix(64); err == nil {
			return p.String(), a.IsLoopback()
		}
	}
	return a.String(), a.IsLoopback()
}

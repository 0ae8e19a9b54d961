package monitor

import (
	"crypto/subtle"
	"embed"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

//go:embed static
var staticFS embed.FS

// tokenCookie keeps the dashboard's token once it came as ?token=.
const tokenCookie = "runbox_token"

// ServeHTTP serves the dashboard (/), its assets (/static/), its event stream (/events),
// /api/status, /metrics, /healthz and /readyz.
func (m *Monitor) ServeHTTP(w http.ResponseWriter, r *http.Request) { m.handler.ServeHTTP(w, r) }

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
// path but /healthz.
func (m *Monitor) secure(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		// Everything the page uses comes from this server: the browser refuses the rest.
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		if m.cfg.Token == "" || r.URL.Path == "/healthz" {
			next.ServeHTTP(w, r)
			return
		}
		if q := r.URL.Query().Get("token"); q != "" {
			if !m.tokenOK(q) {
				m.unauthorized(w, r, "wrong token")
				return
			}
			// Keep the token in a cookie and drop it from the address, so that it stays
			// out of the history and of links copied from the address bar.
			http.SetCookie(w, &http.Cookie{Name: tokenCookie, Value: q, Path: "/", HttpOnly: true,
				Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
			if r.URL.Path == "/" {
				u := *r.URL
				qs := u.Query()
				qs.Del("token")
				u.RawQuery = qs.Encode()
				http.Redirect(w, r, u.RequestURI(), http.StatusSeeOther)
				return
			}
			next.ServeHTTP(w, r)
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
		if c, err := r.Cookie(tokenCookie); err == nil && m.tokenOK(c.Value) {
			next.ServeHTTP(w, r)
			return
		}
		m.unauthorized(w, r, "a token is required")
	})
}

func (m *Monitor) tokenOK(tok string) bool {
	return subtle.ConstantTimeCompare([]byte(tok), []byte(m.cfg.Token)) == 1
}

// loginPage asks for the token. It stands alone: the stylesheet, like every path but
// /healthz, needs the token too.
var loginPage = template.Must(template.New("login").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}} · token required</title><link rel="icon" href="data:,"></head>
<body><main><h1>{{.Title}}</h1>
<p>This cluster's dashboard needs a token{{if .Why}} ({{.Why}}){{end}}.</p>
<form method="get" action="/"><label for="token">Token</label>
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
	t := time.NewTimer(3 * time.Second)
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
	if n := m.streams.Add(1); int(n) > m.cfg.MaxStreams {
		m.streams.Add(-1)
		http.Error(w, fmt.Sprintf("too many dashboards open (%d)", m.cfg.MaxStreams), http.StatusServiceUnavailable)
		return
	}
	defer m.streams.Add(-1)
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)

	send := func(event string, data []byte) bool {
		rc.SetWriteDeadline(time.Now().Add(10 * time.Second)) // a stalled client is dropped
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
	first, err := json.Marshal(update{View: m.view()})
	if err != nil {
		m.log.Error("encode view", "err", err)
		return
	}
	if _, err := io.WriteString(w, "retry: 2000\n\n"); err != nil || !send("history", hist) || !send("update", first) {
		return
	}
	for {
		m.mu.Lock()
		changed := m.changed
		m.mu.Unlock()
		select {
		case <-r.Context().Done():
			return
		case <-m.stopped:
			return
		case <-changed:
		}
		m.mu.Lock()
		data := m.latest
		m.mu.Unlock()
		if !send("update", data) {
			return
		}
	}
}

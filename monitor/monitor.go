// Package monitor watches a runbox cluster from the master and shows it: a live dashboard
// page (embedded in the binary, updated by Server-Sent Events), Prometheus metrics on
// /metrics, a JSON view on /api/status, and /healthz and /readyz for orchestrators.
//
// It is a top-level package because its responsibility fits none of the others: it is not
// part of the scheduler's domain (it only reads the scheduler's Snapshot and hears its
// Observer calls), it is not the cluster protocol (transport), and the command package
// stays a thin layer of flags. It imports scheduler and sandbox for their nouns, and the
// Prometheus client library, which stays inside it: no Prometheus type leaves the package.
//
// A Monitor is a scheduler.Observer (the master passes it as scheduler.Config.Observer) and
// an http.Handler. Its Run loop samples the cluster every Config.Interval, keeps the last
// Config.History of per-node CPU and memory for the charts, and pushes a fresh view to the
// dashboard's event streams on every sample and soon after every change the Observer hears.
package monitor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"runbox/sandbox"
	"runbox/scheduler"
)

// Source is where the Monitor reads the cluster; *scheduler.Scheduler is one.
type Source interface {
	// Snapshot returns the cluster now, with up to recent finished jobs, newest first.
	// It must not block for long: /readyz calls it to see that the scheduler answers.
	Snapshot(recent int) scheduler.Snapshot
}

// Config configures a Monitor.
type Config struct {
	// Title names the cluster on the dashboard (the master's node name, say).
	Title string
	// Token, when set, is required on every path but /healthz: as an `Authorization:
	// Bearer` header, or the cookie that the dashboard's login form (a POST, so that the
	// token never is in an address) sets. A token in the address (`?token=`) is refused.
	// Empty: the monitor is open to whoever reaches its port, and shows no job owners.
	Token string
	// Interval is how often the cluster is sampled for the charts and pushed to the
	// dashboard (changes are pushed sooner).
	Interval time.Duration
	// History is how far back the charts go.
	History time.Duration
	// Recent is how many finished jobs the dashboard and /api/status list.
	Recent int

	// MaxStreams bounds the dashboards connected at once (each holds an /events stream);
	// past it /events answers 503.
	MaxStreams int
	// ReservedStreams of the MaxStreams are kept for authorised viewers: holders of the
	// Token, or, when no Token is set, viewers on the master's own machine (loopback).
	// Others share the rest, so that a flood of anonymous viewers cannot lock the
	// operator out.
	ReservedStreams int
	// MaxStreamsPerAddr bounds the streams of one anonymous viewer's address (an IPv4
	// address or an IPv6 /64); past it /events answers 429. Authorised viewers are bound
	// by MaxStreams only (a proxy or an SSH tunnel shows them all from one address).
	MaxStreamsPerAddr int
	// StreamWriteTimeout bounds the sending of one event: a viewer that stops reading is
	// dropped after it. It replaces WriteTimeout on /events, whose response never ends.
	StreamWriteTimeout time.Duration

	// ReadHeaderTimeout bounds the reading of a request's headers: a client that dribbles
	// them is cut off.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds the reading of a whole request, headers and body.
	ReadTimeout time.Duration
	// WriteTimeout bounds a response, from the end of its request's headers (/events
	// excepted: see StreamWriteTimeout).
	WriteTimeout time.Duration
	// IdleTimeout closes a kept-alive connection that sends no new request.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's headers (the request line included); past it the
	// server answers 431.
	MaxHeaderBytes int
	// ReadyTimeout bounds /readyz's wait for the scheduler's answer; past it the master is
	// not ready (503).
	ReadyTimeout time.Duration

	// Logger receives the monitor's logs; nil discards them.
	Logger *slog.Logger
}

// DefaultConfig returns the master's defaults: a sample a second, ten minutes of charts,
// the last 30 jobs, 32 dashboards (8 of them kept for the operator, 4 per anonymous
// address), and timeouts that cut a slow client within seconds.
func DefaultConfig() Config {
	return Config{Title: "runbox", Interval: time.Second, History: 10 * time.Minute, Recent: 30,
		MaxStreams: 32, ReservedStreams: 8, MaxStreamsPerAddr: 4, StreamWriteTimeout: 10 * time.Second,
		ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second,
		IdleTimeout: 60 * time.Second, MaxHeaderBytes: 32 << 10, ReadyTimeout: 3 * time.Second}
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	switch {
	case c.Interval <= 0:
		return errors.New("monitor: interval must be positive")
	case c.History < c.Interval:
		return fmt.Errorf("monitor: history %v shorter than the interval %v", c.History, c.Interval)
	case c.Recent < 0:
		return fmt.Errorf("monitor: recent %d, want 0 or more", c.Recent)
	case c.MaxStreams < 1:
		return fmt.Errorf("monitor: max streams %d, want at least 1", c.MaxStreams)
	case c.ReservedStreams < 0 || c.ReservedStreams > c.MaxStreams:
		return fmt.Errorf("monitor: reserved streams %d, want 0 to max streams (%d)", c.ReservedStreams, c.MaxStreams)
	case c.MaxStreamsPerAddr < 1:
		return fmt.Errorf("monitor: max streams per address %d, want at least 1", c.MaxStreamsPerAddr)
	case c.StreamWriteTimeout <= 0 || c.ReadHeaderTimeout <= 0 || c.ReadTimeout <= 0 || c.WriteTimeout <= 0 || c.IdleTimeout <= 0 || c.ReadyTimeout <= 0:
		return errors.New("monitor: the stream write, read header, read, write, idle and ready timeouts must be positive")
	case c.ReadTimeout < c.ReadHeaderTimeout:
		return fmt.Errorf("monitor: read timeout %v shorter than the read header timeout %v", c.ReadTimeout, c.ReadHeaderTimeout)
	case c.MaxHeaderBytes < 4<<10:
		return fmt.Errorf("monitor: max header bytes %d, want at least 4 KiB", c.MaxHeaderBytes)
	}
	return nil
}

// Autoscaler event kinds for AutoscalerEvent.
const (
	AutoscaleStart = "start" // the autoscaler started a slave
	AutoscaleStop  = "stop"  // the autoscaler stopped a slave

	// autoscaleStartFailed counts the scheduler's NodeEventStartFailed.
	autoscaleStartFailed = "start_failed"
)

// Monitor serves the dashboard, /metrics, /api/status, /healthz and /readyz, and hears
// the scheduler as its Observer. Its methods are safe for concurrent use.
type Monitor struct {
	cfg     Config
	log     *slog.Logger
	now     func() time.Time
	metrics *metrics
	handler http.Handler

	src     atomic.Pointer[sourceBox] // nil until Attach
	probing atomic.Bool               // a /readyz probe waits on the source
	session string                    // the login cookie's value; "" without a Token
	streams streamSlots               // open /events streams
	poke    chan struct{}             // buffered(1): something changed, publish soon
	stopped chan struct{}             // closed when Run returns
	running atomic.Bool               // Run was called

	mu        sync.Mutex
	history   []Sample              // oldest first, within cfg.History
	results   map[string]jobResult  // what JobFinished heard, by job id
	order     []string              // results' keys, oldest first (bounded)
	autoscale []scheduler.NodeEvent // autoscaler events, newest last (bounded)
	latest    []byte                // the last published update event (JSON)
	changed   chan struct{}         // closed and replaced on every publish
}

type sourceBox struct{ Source }

// jobResult is what the Observer heard of a finished job that Info does not carry.
type jobResult struct {
	status  string // result status or error code
	time    time.Duration
	compile time.Duration
	memory  int64
	wait    time.Duration
}

// New returns a Monitor reading the cluster from src. src may be nil when the Monitor
// must exist before the scheduler does (it is the scheduler's Observer): Attach it then;
// until it is attached /readyz answers 503 and the views are empty.
func New(cfg Config, src Source) (*Monitor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &Monitor{cfg: cfg, log: log.With("component", "monitor"), now: time.Now,
		poke: make(chan struct{}, 1), stopped: make(chan struct{}),
		results: map[string]jobResult{}, changed: make(chan struct{}),
		session: sessionValue(cfg.Token), streams: streamSlots{perAddr: map[string]int{}}}
	m.metrics = newMetrics(m.snapshotForMetrics)
	m.handler = m.routes()
	if src != nil {
		m.Attach(src)
	}
	return m, nil
}

// Attach sets the source the Monitor reads (replacing any earlier one).
func (m *Monitor) Attach(src Source) {
	if src == nil {
		m.src.Store(nil)
		return
	}
	m.src.Store(&sourceBox{src})
	m.signal()
}

// source returns the attached source, or nil.
func (m *Monitor) source() Source {
	if b := m.src.Load(); b != nil {
		return b.Source
	}
	return nil
}

// snapshot reads the source, or returns an empty snapshot when none is attached.
func (m *Monitor) snapshot(recent int) (scheduler.Snapshot, bool) {
	src := m.source()
	if src == nil {
		return scheduler.Snapshot{}, false
	}
	return src.Snapshot(recent), true
}

func (m *Monitor) snapshotForMetrics() (scheduler.Snapshot, bool) { return m.snapshot(0) }

// Run samples the cluster every Config.Interval and publishes the dashboard's view until
// ctx ends; the dashboard streams end with it. Call it once.
func (m *Monitor) Run(ctx context.Context) error {
	if !m.running.CompareAndSwap(false, true) {
		return errors.New("monitor: Run called twice")
	}
	defer close(m.stopped)
	t := time.NewTicker(m.cfg.Interval)
	defer t.Stop()
	m.sample(m.now())
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			m.sample(m.now())
		case <-m.poke:
			m.publish(nil)
		}
	}
}

// signal asks Run to publish a fresh view; it never blocks.
func (m *Monitor) signal() {
	select {
	case m.poke <- struct{}{}:
	default:
	}
}

// JobFinished implements scheduler.Observer: it counts the job by language and status,
// records its run time, wait and memory, and pushes the change to the dashboards.
func (m *Monitor) JobFinished(info scheduler.Info, res *sandbox.Result, err error, wait time.Duration) {
	lang := languageLabel(info.Language)
	r := jobResult{wait: wait}
	switch {
	case err != nil || res == nil:
		r.status = scheduler.CodeOf(err)
	case res.Status.Valid():
		r.status = string(res.Status)
		r.time, r.memory, r.compile = res.Time, res.Memory, res.CompileTime
	default:
		r.status = "unknown"
	}
	m.metrics.finished(lang, r, !info.Started.IsZero(), res != nil && err == nil)
	m.metrics.phases.observe(res)

	m.mu.Lock()
	if _, ok := m.results[info.ID]; !ok {
		m.order = append(m.order, info.ID)
	}
	m.results[info.ID] = r
	// Keep a few times what the views show: a result outlives its place in Recent.
	for keep := max(4*m.cfg.Recent, 64); len(m.order) > keep; m.order = m.order[1:] {
		delete(m.results, m.order[0])
	}
	m.mu.Unlock()
	m.signal()
}

// JobRejected implements scheduler.Observer: it counts a busy rejection.
func (m *Monitor) JobRejected() {
	m.metrics.rejected.Inc()
	m.signal()
}

// NodeChanged implements scheduler.Observer: it counts node events by kind (one series
// per scheduler.NodeEventKinds, "other" for a kind it does not know; the autoscaler's
// starting, start_failed and stopped count as autoscaler events too) and pushes the
// change to the dashboards.
func (m *Monitor) NodeChanged(e scheduler.NodeEvent) {
	m.metrics.nodeEvent(e.Kind)
	m.signal()
}

// AutoscalerEvent counts a slave an autoscaler started (AutoscaleStart) or stopped
// (AutoscaleStop), and lists it among the dashboard's node events; other kinds count as
// "other". It is for an autoscaler that does not note its work through the scheduler:
// scheduler.Autoscaler does (NodeChanged hears its starting and stopped events), so the
// master does not call this.
func (m *Monitor) AutoscalerEvent(kind string) {
	if kind != AutoscaleStart && kind != AutoscaleStop {
		kind = "other"
	}
	m.metrics.autoscaler.WithLabelValues(kind).Inc()
	m.mu.Lock()
	// Listed with the scheduler's node events under the monitor's own kinds (start, stop,
	// other), which the dashboard shows as they are.
	m.autoscale = append(m.autoscale, scheduler.NodeEvent{At: m.now(), Node: "autoscaler", Kind: scheduler.NodeEventKind(kind)})
	if len(m.autoscale) > 100 {
		m.autoscale = m.autoscale[len(m.autoscale)-100:]
	}
	m.mu.Unlock()
	m.signal()
}

var _ scheduler.Observer = (*Monitor)(nil)

// languageLabel bounds the language label to the languages runbox knows.
func languageLabel(name string) string {
	if l, ok := sandbox.Lookup(name); ok {
		return l.Name
	}
	return "other"
}

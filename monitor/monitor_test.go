package monitor_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"runbox/monitor"
	"runbox/sandbox"
	"runbox/scheduler"
)

// fakeSource is a scheduler as the monitor sees it: a Snapshot the test sets.
type fakeSource struct {
	mu    sync.Mutex
	snap  scheduler.Snapshot
	block chan struct{} // when set, Snapshot waits for it to close
}

func (f *fakeSource) Snapshot(recent int) scheduler.Snapshot {
	f.mu.Lock()
	block := f.block
	f.mu.Unlock()
	if block != nil {
		<-block
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.snap
	s.Recent = s.Recent[:min(recent, len(s.Recent))]
	return s
}

func (f *fakeSource) set(fn func(s *scheduler.Snapshot)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(&f.snap)
}

var t0 = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

// cluster returns a snapshot of a master and a slave, one job running on each, one queued,
// one finished.
func cluster() scheduler.Snapshot {
	return scheduler.Snapshot{
		Nodes: []scheduler.NodeInfo{
			{Name: "m1", Role: scheduler.RoleMaster, State: scheduler.NodeReady, Capacity: 2, Running: 1, Done: 5,
				Load: scheduler.Load{CPU: 42.5, MemUsed: 1 << 30, MemTotal: 4 << 30}, Joined: t0},
			{Name: "s1", Role: scheduler.RoleSlave, State: scheduler.NodeReady, Capacity: 3, Running: 1, Done: 7,
				Load: scheduler.Load{CPU: 10, MemUsed: 512 << 20, MemTotal: 2 << 30}, Joined: t0, LastBeat: t0},
		},
		Running: []scheduler.Info{
			{ID: "run1", Language: "python", State: scheduler.StateRunning, Node: "m1", Attempts: 1, Submitted: t0, Started: t0},
			{ID: "run2", Language: "c", State: scheduler.StateRunning, Node: "s1", Attempts: 1, Submitted: t0, Started: t0},
		},
		Queued: []scheduler.Info{{ID: "q1", Language: "cpp", State: scheduler.StateQueued, Submitted: t0}},
		Recent: []scheduler.Info{{ID: "done1", Language: "python", State: scheduler.StateDone, Node: "s1", Attempts: 1,
			Submitted: t0, Started: t0.Add(time.Second), Finished: t0.Add(2 * time.Second), Status: sandbox.StatusOK}},
		NodeEvents: []scheduler.NodeEvent{{At: t0, Node: "s1", Kind: scheduler.NodeEventJoined, Reason: "capacity 3"}},
		Totals:     scheduler.Totals{Accepted: 4, Finished: 1, ByStatus: map[string]int{"ok": 1}},
	}
}

func newMonitor(t *testing.T, cfg monitor.Config, src monitor.Source) (*monitor.Monitor, *httptest.Server) {
	t.Helper()
	m, err := monitor.New(cfg, src)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(m)
	t.Cleanup(srv.Close)
	return m, srv
}

// run starts m.Run until the end of the test, and waits for it then.
func run(t *testing.T, m *monitor.Monitor) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

func get(t *testing.T, url string, header ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return do(t, req, header...)
}

// do sends req with the header's name, value pairs, without following redirects, and
// returns the response and its body.
func do(t *testing.T, req *http.Request, header ...string) (*http.Response, string) {
	t.Helper()
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	if err := monitor.DefaultConfig().Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	for name, mod := range map[string]func(*monitor.Config){
		"zero interval":    func(c *monitor.Config) { c.Interval = 0 },
		"short history":    func(c *monitor.Config) { c.History = c.Interval / 2 },
		"negative recent":  func(c *monitor.Config) { c.Recent = -1 },
		"no streams":       func(c *monitor.Config) { c.MaxStreams = 0 },
		"reserve past max": func(c *monitor.Config) { c.ReservedStreams = c.MaxStreams + 1 },
		"negative reserve": func(c *monitor.Config) { c.ReservedStreams = -1 },
		"no per address":   func(c *monitor.Config) { c.MaxStreamsPerAddr = 0 },
		"no stream write":  func(c *monitor.Config) { c.StreamWriteTimeout = 0 },
		"no header read":   func(c *monitor.Config) { c.ReadHeaderTimeout = 0 },
		"no read":          func(c *monitor.Config) { c.ReadTimeout = 0 },
		"read < header":    func(c *monitor.Config) { c.ReadTimeout = c.ReadHeaderTimeout / 2 },
		"no write":         func(c *monitor.Config) { c.WriteTimeout = 0 },
		"no idle":          func(c *monitor.Config) { c.IdleTimeout = 0 },
		"tiny headers":     func(c *monitor.Config) { c.MaxHeaderBytes = 100 },
		"no ready timeout": func(c *monitor.Config) { c.ReadyTimeout = 0 },
	} {
		c := monitor.DefaultConfig()
		mod(&c)
		if _, err := monitor.New(c, nil); err == nil {
			t.Errorf("%s: New accepted %+v", name, c)
		}
	}
}

// externalRef matches what would make a browser fetch from another host.
var externalRef = regexp.MustCompile(`(?i)(https?:|wss?:|ftp:)//|(src|href|action)\s*=\s*["']?//|url\(\s*["']?(https?:)?//|@import`)

func TestPageHasNoExternalReference(t *testing.T) {
	t.Parallel()
	cfg := monitor.DefaultConfig()
	cfg.Title = `m1 <script>alert(1)</script>`
	_, srv := newMonitor(t, cfg, &fakeSource{snap: cluster()})

	resp, page := get(t, srv.URL+"/")
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /: %s %s", resp.Status, resp.Header.Get("Content-Type"))
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "connect-src 'self'") {
		t.Errorf("Content-Security-Policy = %q, want everything limited to this server", csp)
	}
	if strings.Contains(page, "<script>alert") || !strings.Contains(page, "m1 &lt;script&gt;") {
		t.Errorf("title not escaped in the page:\n%s", page)
	}
	assets := regexp.MustCompile(`(?:src|href)="(/static/[^"]+)"`).FindAllStringSubmatch(page, -1)
	if len(assets) < 2 {
		t.Fatalf("page links %d assets, want the stylesheet and the script:\n%s", len(assets), page)
	}
	files := map[string]string{"/": page}
	for _, a := range assets {
		resp, body := get(t, srv.URL+a[1])
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %s", a[1], resp.Status)
		}
		files[a[1]] = body
	}
	for name, body := range files {
		// The script names the SVG namespace to create elements; that is no fetch.
		body = strings.ReplaceAll(body, `"http://www.w3.org/2000/svg"`, `""`)
		if loc := externalRef.FindStringIndex(body); loc != nil {
			t.Errorf("%s refers outside the server: %q", name, body[max(loc[0]-40, 0):min(loc[1]+40, len(body))])
		}
	}
	if !strings.Contains(files["/static/app.js"], `new EventSource("/events")`) {
		t.Error("app.js does not read /events")
	}
}

func TestHealthAndReady(t *testing.T) {
	t.Parallel()
	cfg := monitor.DefaultConfig()
	cfg.ReadyTimeout = time.Second // the stuck scheduler below is waited for this long
	m, srv := newMonitor(t, cfg, nil)
	if resp, _ := get(t, srv.URL+"/healthz"); resp.StatusCode != 200 {
		t.Errorf("/healthz without a scheduler: %s, want 200", resp.Status)
	}
	if resp, body := get(t, srv.URL+"/readyz"); resp.StatusCode != 503 {
		t.Errorf("/readyz without a scheduler: %s %q, want 503", resp.Status, body)
	}
	src := &fakeSource{snap: cluster()}
	m.Attach(src)
	if resp, body := get(t, srv.URL+"/readyz"); resp.StatusCode != 200 {
		t.Errorf("/readyz: %s %q, want 200", resp.Status, body)
	}

	// A scheduler that does not answer (a lock held forever) makes the master unready.
	block := make(chan struct{})
	src.set(func(*scheduler.Snapshot) {})
	src.mu.Lock()
	src.block = block
	src.mu.Unlock()
	defer close(block)
	if resp, body := get(t, srv.URL+"/readyz"); resp.StatusCode != 503 {
		t.Errorf("/readyz with a stuck scheduler: %s %q, want 503", resp.Status, body)
	}
	if resp, _ := get(t, srv.URL+"/healthz"); resp.StatusCode != 200 {
		t.Errorf("/healthz with a stuck scheduler: %s, want 200 (the process lives)", resp.Status)
	}
}

func TestStatusJSON(t *testing.T) {
	t.Parallel()
	src := &fakeSource{snap: cluster()}
	cfg := monitor.DefaultConfig()
	cfg.Title = "m1"
	m, srv := newMonitor(t, cfg, src)
	done := cluster().Recent[0]
	m.JobFinished(done, &sandbox.Result{Status: sandbox.StatusOK, Time: 1500 * time.Millisecond, Memory: 12 << 20}, nil, time.Second)
	src.set(func(s *scheduler.Snapshot) {
		s.Recent = append([]scheduler.Info{{ID: "err1", Language: "c", State: scheduler.StateDone, Attempts: 3,
			Submitted: t0, Started: t0, Finished: t0.Add(3 * time.Second), Error: "node crashed"}}, s.Recent...)
	})
	m.JobFinished(src.snap.Recent[0], nil, fmt.Errorf("%w: on each of 3 attempts", scheduler.ErrCrashedNode), 0)

	resp, body := get(t, srv.URL+"/api/status")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("/api/status: %s %s", resp.Status, resp.Header.Get("Content-Type"))
	}
	var v monitor.View
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatalf("decode: %v\n%s", err, body)
	}
	if v.Title != "m1" || !v.Ready || len(v.Nodes) != 2 || len(v.Running) != 2 || len(v.Queued) != 1 || v.Capacity != 5 {
		t.Fatalf("view: title %q ready %v, %d nodes, %d running, %d queued, capacity %d; want m1 true 2 2 1 5",
			v.Title, v.Ready, len(v.Nodes), len(v.Running), len(v.Queued), v.Capacity)
	}
	if v.Nodes[0].Load.CPU != 42.5 || v.Nodes[1].Role != "slave" {
		t.Errorf("nodes: %+v", v.Nodes)
	}
	if len(v.Recent) != 2 {
		t.Fatalf("recent: %+v", v.Recent)
	}
	crashed, ok := v.Recent[0], v.Recent[1]
	if crashed.Outcome != "crashed_node" || crashed.TimeMS != nil || crashed.MemoryBytes != nil {
		t.Errorf("crashed job: outcome %q time %v memory %v, want crashed_node and no time or memory", crashed.Outcome, crashed.TimeMS, crashed.MemoryBytes)
	}
	if ok.Outcome != "ok" || ok.TimeMS == nil || *ok.TimeMS != 1500 || ok.MemoryBytes == nil || *ok.MemoryBytes != 12<<20 || ok.WaitMS == nil || *ok.WaitMS != 1000 {
		t.Errorf("ok job: %+v", ok)
	}
	if len(v.NodeEvents) != 1 || v.NodeEvents[0].Kind != scheduler.NodeEventJoined {
		t.Errorf("node events: %+v", v.NodeEvents)
	}
	if !strings.Contains(body, `"time_ms": 1500`) || !strings.Contains(body, `"memory_bytes": 12582912`) {
		t.Errorf("JSON lacks time_ms or memory_bytes:\n%s", body)
	}
}

func TestMetricsAfterKnownJobs(t *testing.T) {
	t.Parallel()
	src := &fakeSource{snap: cluster()}
	m, srv := newMonitor(t, monitor.DefaultConfig(), src)
	info := func(lang string) scheduler.Info {
		return scheduler.Info{ID: "j-" + lang, Language: lang, State: scheduler.StateDone, Submitted: t0, Started: t0.Add(time.Second)}
	}
	m.JobFinished(info("python"), &sandbox.Result{Status: sandbox.StatusOK, Time: 100 * time.Millisecond, Memory: 8 << 20}, nil, 2*time.Second)
	m.JobFinished(info("python"), &sandbox.Result{Status: sandbox.StatusOK, Time: 200 * time.Millisecond, Memory: 8 << 20}, nil, 0)
	m.JobFinished(info("c"), &sandbox.Result{Status: sandbox.StatusCompileError}, nil, 0)
	m.JobFinished(info("cpp"), nil, scheduler.ErrCrashedNode, 0)
	queuedThenCancelled := scheduler.Info{ID: "x", Language: "python", State: scheduler.StateDone, Submitted: t0}
	m.JobFinished(queuedThenCancelled, nil, scheduler.ErrCancelled, 0)
	m.JobFinished(info("cobol"), &sandbox.Result{Status: sandbox.StatusOK}, nil, 0) // never a label of its own
	for range 3 {
		m.JobRejected()
	}
	m.NodeChanged(scheduler.NodeEvent{Node: "s1", Kind: scheduler.NodeEventJoined})
	m.NodeChanged(scheduler.NodeEvent{Node: "s2", Kind: scheduler.NodeEventJoined})
	m.NodeChanged(scheduler.NodeEvent{Node: "s2", Kind: scheduler.NodeEventLost})
	// scheduler.Autoscaler notes its work as node events; another autoscaler may call
	// AutoscalerEvent.
	m.NodeChanged(scheduler.NodeEvent{Node: "m1-slave-1", Kind: scheduler.NodeEventStarting})
	m.NodeChanged(scheduler.NodeEvent{Node: "m1-slave-1", Kind: scheduler.NodeEventStopped})
	m.NodeChanged(scheduler.NodeEvent{Node: "m1-slave-2", Kind: scheduler.NodeEventStartFailed})
	m.NodeChanged(scheduler.NodeEvent{Node: "m1-slave-2", Kind: "exploded"})
	m.AutoscalerEvent(monitor.AutoscaleStart)
	m.AutoscalerEvent(monitor.AutoscaleStop)

	expected := `
# HELP runbox_jobs_finished_total Jobs that ended, by language and status: a program status (ok, compile_error, runtime_error, time_limit, memory_limit, output_limit) or the error code of a job that could not run (cancelled, crashed_node, internal, ...).
# TYPE runbox_jobs_finished_total counter
runbox_jobs_finished_total{language="c",status="compile_error"} 1
runbox_jobs_finished_total{language="cpp",status="crashed_node"} 1
runbox_jobs_finished_total{language="other",status="ok"} 1
runbox_jobs_finished_total{language="python",status="cancelled"} 1
runbox_jobs_finished_total{language="python",status="ok"} 2
# HELP runbox_jobs_rejected_total Submissions refused because every slot and the queue were full (busy).
# TYPE runbox_jobs_rejected_total counter
runbox_jobs_rejected_total 3
# HELP runbox_queue_depth Accepted jobs waiting for a slot.
# TYPE runbox_queue_depth gauge
runbox_queue_depth 1
# HELP runbox_jobs_running Jobs running now, on every node.
# TYPE runbox_jobs_running gauge
runbox_jobs_running 2
# HELP runbox_capacity Programs the ready nodes run at once (sum of their slots).
# TYPE runbox_capacity gauge
runbox_capacity 5
# HELP runbox_nodes Nodes by role (master, slave) and state (ready, draining).
# TYPE runbox_nodes gauge
runbox_nodes{role="master",state="draining"} 0
runbox_nodes{role="master",state="ready"} 1
runbox_nodes{role="slave",state="draining"} 0
runbox_nodes{role="slave",state="ready"} 1
# HELP runbox_node_cpu_percent A node's CPU use, percent of its CPU budget (0-100).
# TYPE runbox_node_cpu_percent gauge
runbox_node_cpu_percent{node="m1",role="master"} 42.5
runbox_node_cpu_percent{node="s1",role="slave"} 10
# HELP runbox_node_memory_used_bytes A node's memory in use.
# TYPE runbox_node_memory_used_bytes gauge
runbox_node_memory_used_bytes{node="m1",role="master"} 1.073741824e+09
runbox_node_memory_used_bytes{node="s1",role="slave"} 5.36870912e+08
# HELP runbox_node_events_total Node events by kind: joined, lost (missed heartbeats or broken connection), left (after draining), draining, and the autoscaler's starting, start_failed, stopped.
# TYPE runbox_node_events_total counter
runbox_node_events_total{kind="draining"} 0
runbox_node_events_total{kind="joined"} 2
runbox_node_events_total{kind="left"} 0
runbox_node_events_total{kind="lost"} 1
runbox_node_events_total{kind="other"} 1
runbox_node_events_total{kind="start_failed"} 1
runbox_node_events_total{kind="starting"} 1
runbox_node_events_total{kind="stopped"} 1
# HELP runbox_autoscaler_events_total Slaves the autoscaler started (kind=start), failed to start (kind=start_failed) and stopped (kind=stop).
# TYPE runbox_autoscaler_events_total counter
runbox_autoscaler_events_total{kind="start"} 2
runbox_autoscaler_events_total{kind="start_failed"} 1
runbox_autoscaler_events_total{kind="stop"} 2
`
	names := []string{"runbox_jobs_finished_total", "runbox_jobs_rejected_total", "runbox_queue_depth", "runbox_jobs_running",
		"runbox_capacity", "runbox_nodes", "runbox_node_cpu_percent", "runbox_node_memory_used_bytes",
		"runbox_node_events_total", "runbox_autoscaler_events_total"}
	if err := testutil.ScrapeAndCompare(srv.URL+"/metrics", strings.NewReader(expected), names...); err != nil {
		t.Error(err)
	}

	// Histograms: the two python runs (0.1 s and 0.2 s), the waits of the jobs that started.
	_, body := get(t, srv.URL+"/metrics")
	for _, want := range []string{
		`runbox_job_duration_seconds_count{language="python"} 2`,
		`runbox_job_duration_seconds_sum{language="python"} 0.30000000000000004`,
		`runbox_job_duration_seconds_bucket{language="python",le="0.1"} 1`,
		`runbox_job_duration_seconds_bucket{language="python",le="0.25"} 2`,
		`runbox_job_duration_seconds_count{language="c"} 1`,
		`runbox_job_wait_seconds_count{language="python"} 2`, // the cancelled one never started
		`runbox_job_wait_seconds_sum{language="python"} 2`,
		`runbox_job_memory_bytes_count{language="python"} 2`,
		`go_goroutines `,
		`process_start_time_seconds `,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if strings.Contains(body, "j-python") || strings.Contains(body, `="x"`) {
		t.Error("/metrics carries a job id in a label")
	}
	if strings.Contains(body, "cobol") {
		t.Error("/metrics carries an unknown language as a label")
	}
}

func TestMetricsWithoutSchedulerHaveNoClusterGauges(t *testing.T) {
	t.Parallel()
	_, srv := newMonitor(t, monitor.DefaultConfig(), nil)
	resp, body := get(t, srv.URL+"/metrics")
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics: %s", resp.Status)
	}
	if strings.Contains(body, "runbox_queue_depth") {
		t.Error("queue depth reported before a scheduler is attached")
	}
	if !strings.Contains(body, "runbox_jobs_rejected_total 0") {
		t.Error("counters missing before a scheduler is attached")
	}
}

// sseEvent is one Server-Sent Event.
type sseEvent struct {
	name string
	data string
}

// readEvents reads the stream at url into a channel until the test ends.
func readEvents(t *testing.T, url string, header ...string) <-chan sseEvent {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("GET %s: %s %s", url, resp.Status, resp.Header.Get("Content-Type"))
	}
	ch := make(chan sseEvent, 64)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(ch)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
		var e sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if e.name != "" {
					select {
					case ch <- e:
					case <-ctx.Done():
						return
					}
				}
				e = sseEvent{}
			case strings.HasPrefix(line, "event: "):
				e.name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				e.data += strings.TrimPrefix(line, "data: ")
			}
		}
	}()
	t.Cleanup(func() { cancel(); resp.Body.Close(); <-done })
	return ch
}

// next returns the next event, failing the test after a generous wait.
func next(t *testing.T, ch <-chan sseEvent) sseEvent {
	t.Helper()
	select {
	case e, ok := <-ch:
		if !ok {
			t.Fatal("event stream ended")
		}
		return e
	case <-time.After(20 * time.Second):
		t.Fatal("no event in 20s")
	}
	panic("unreachable")
}

type updateEvent struct {
	View   monitor.View    `json:"view"`
	Sample *monitor.Sample `json:"sample"`
}

func decodeUpdate(t *testing.T, e sseEvent) updateEvent {
	t.Helper()
	if e.name != "update" {
		t.Fatalf("event %q, want update", e.name)
	}
	var u updateEvent
	if err := json.Unmarshal([]byte(e.data), &u); err != nil {
		t.Fatalf("decode update: %v\n%s", err, e.data)
	}
	return u
}

func TestEventsDeliverUpdateAfterJobFinishes(t *testing.T) {
	t.Parallel()
	src := &fakeSource{snap: cluster()}
	cfg := monitor.DefaultConfig()
	cfg.Interval, cfg.History = time.Hour, 2*time.Hour // no tick during the test: only the change pushes
	m, srv := newMonitor(t, cfg, src)
	run(t, m)

	events := readEvents(t, srv.URL+"/events")
	if e := next(t, events); e.name != "history" {
		t.Fatalf("first event %q, want history", e.name)
	}
	first := decodeUpdate(t, next(t, events))
	if len(first.View.Running) != 2 || len(first.View.Recent) != 1 {
		t.Fatalf("first update: %d running, %d recent; want 2, 1", len(first.View.Running), len(first.View.Recent))
	}

	// run1 finishes: the scheduler's snapshot changes, then it tells its Observer.
	finished := cluster().Running[0]
	finished.State, finished.Finished, finished.Status = scheduler.StateDone, t0.Add(3*time.Second), sandbox.StatusTimeLimit
	src.set(func(s *scheduler.Snapshot) {
		s.Running = s.Running[1:]
		s.Recent = append([]scheduler.Info{finished}, s.Recent...)
		s.Totals.Finished++
	})
	m.JobFinished(finished, &sandbox.Result{Status: sandbox.StatusTimeLimit, Time: 2 * time.Second, Memory: 3 << 20}, nil, 0)

	for {
		u := decodeUpdate(t, next(t, events))
		if len(u.View.Recent) == 0 || u.View.Recent[0].ID != "run1" {
			continue // an update published before the change
		}
		got := u.View.Recent[0]
		if got.Outcome != "time_limit" || got.TimeMS == nil || *got.TimeMS != 2000 || len(u.View.Running) != 1 || u.View.Totals.Finished != 2 {
			t.Fatalf("update after the job finished: recent[0] %+v, %d running, %d finished", got, len(u.View.Running), u.View.Totals.Finished)
		}
		return
	}
}

func TestEventsTickWithSamples(t *testing.T) {
	t.Parallel()
	src := &fakeSource{snap: cluster()}
	cfg := monitor.DefaultConfig()
	cfg.Interval = 20 * time.Millisecond
	m, srv := newMonitor(t, cfg, src)
	run(t, m)
	events := readEvents(t, srv.URL+"/events")
	var hist struct {
		IntervalMS int64            `json:"interval_ms"`
		WindowMS   int64            `json:"window_ms"`
		Samples    []monitor.Sample `json:"samples"`
	}
	e := next(t, events)
	if err := json.Unmarshal([]byte(e.data), &hist); e.name != "history" || err != nil {
		t.Fatalf("first event %q (%v), want history", e.name, err)
	}
	if hist.IntervalMS != 20 || hist.WindowMS != 600000 {
		t.Errorf("history interval %d ms, window %d ms; want 20, 600000", hist.IntervalMS, hist.WindowMS)
	}
	var last int64
	for samples := 0; samples < 3; {
		u := decodeUpdate(t, next(t, events))
		if u.Sample == nil {
			continue
		}
		if u.Sample.At <= last {
			t.Fatalf("sample at %d after %d", u.Sample.At, last)
		}
		last = u.Sample.At
		n, ok := u.Sample.Nodes["s1"]
		if !ok || n.CPU != 10 || n.MemTotal != 2<<30 || u.Sample.Running != 2 || u.Sample.Queued != 1 || u.Sample.Capacity != 5 {
			t.Fatalf("sample %+v", u.Sample)
		}
		samples++
	}
	if h := m.History(); len(h) < 3 {
		t.Errorf("History has %d samples after 3 ticks", len(h))
	}
}

func TestEventsStreamsAreBounded(t *testing.T) {
	t.Parallel()
	cfg := monitor.DefaultConfig()
	cfg.MaxStreams, cfg.ReservedStreams = 1, 0
	_, srv := newMonitor(t, cfg, &fakeSource{snap: cluster()})
	events := readEvents(t, srv.URL+"/events")
	next(t, events) // the first stream is open
	if resp, _ := get(t, srv.URL+"/events"); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("second stream: %s, want 503", resp.Status)
	}
}

func TestObserverDoesNotBlock(t *testing.T) {
	t.Parallel()
	// No Run loop drains the monitor's signals: the Observer calls must still return.
	m, err := monitor.New(monitor.DefaultConfig(), &fakeSource{snap: cluster()})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 1000 {
			m.JobFinished(scheduler.Info{ID: fmt.Sprint(i), Language: "python"}, nil, errors.New("x"), 0)
			m.JobRejected()
			m.NodeChanged(scheduler.NodeEvent{Kind: scheduler.NodeEventJoined})
			m.AutoscalerEvent("resize")
		}
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Observer calls blocked")
	}
}

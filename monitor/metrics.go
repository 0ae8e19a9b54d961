package monitor

import (
	"slices"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"runbox/scheduler"
)

// metrics are the Monitor's Prometheus metrics, on a registry of their own. Counters and
// histograms are fed by the Observer calls; gauges are read from a fresh Snapshot at each
// scrape (so a node that left has no stale series).
type metrics struct {
	reg        *prometheus.Registry
	jobs       *prometheus.CounterVec   // language, status
	rejected   prometheus.Counter       // busy
	duration   *prometheus.HistogramVec // language: the run phase's wall time
	wait       *prometheus.HistogramVec // language: submission to (last) start
	memory     *prometheus.HistogramVec // language: peak memory
	nodeEvents *prometheus.CounterVec   // kind
	autoscaler *prometheus.CounterVec   // kind: start, stop, other
	phases     *phaseMetrics            // phase (phase.go)
}

// Label values the series start with, so that dashboards and rate() see zeros before the
// first event.
var (
	autoscaleKinds = []string{AutoscaleStart, AutoscaleStop, autoscaleStartFailed}
	nodeRoles      = []string{scheduler.RoleMaster, scheduler.RoleSlave}
	nodeStates     = []string{scheduler.NodeReady, scheduler.NodeDraining}
)

func newMetrics(snapshot func() (scheduler.Snapshot, bool)) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		jobs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "runbox_jobs_finished_total",
			Help: "Jobs that ended, by language and status: a program status (ok, compile_error, runtime_error, time_limit, memory_limit, output_limit) or the error code of a job that could not run (cancelled, crashed_node, internal, ...).",
		}, []string{"language", "status"}),
		rejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "runbox_jobs_rejected_total",
			Help: "Submissions refused because every slot and the queue were full (busy).",
		}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "runbox_job_duration_seconds",
			Help:    "Wall time of the run phase of jobs that ran (compile time excluded), by language.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"language"}),
		wait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "runbox_job_wait_seconds",
			Help:    "Time from submission to the job's last dispatch to a node, by language.",
			Buckets: []float64{.001, .005, .01, .05, .1, .5, 1, 5, 10, 30, 60, 300},
		}, []string{"language"}),
		memory: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "runbox_job_memory_bytes",
			Help:    "Peak resident memory of the run phase of jobs that ran, by language.",
			Buckets: prometheus.ExponentialBuckets(1<<20, 4, 7), // 1 MiB .. 4 GiB
		}, []string{"language"}),
		nodeEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "runbox_node_events_total",
			Help: "Node events by kind: joined, lost (missed heartbeats or broken connection), left (after draining), draining, and the autoscaler's starting, start_failed, stopped.",
		}, []string{"kind"}),
		autoscaler: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "runbox_autoscaler_events_total",
			Help: "Slaves the autoscaler started (kind=start), failed to start (kind=start_failed) and stopped (kind=stop).",
		}, []string{"kind"}),
	}
	for _, k := range scheduler.NodeEventKinds() {
		m.nodeEvents.WithLabelValues(string(k))
	}
	for _, k := range autoscaleKinds {
		m.autoscaler.WithLabelValues(k)
	}
	m.phases = newPhaseMetrics(m.reg)
	m.reg.MustRegister(m.jobs, m.rejected, m.duration, m.wait, m.memory, m.nodeEvents, m.autoscaler,
		&clusterCollector{snapshot: snapshot},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// finished records one ended job; started says it was dispatched (its wait counts), ran
// that it has a program result (its time and memory count).
func (m *metrics) finished(lang string, r jobResult, started, ran bool) {
	m.jobs.WithLabelValues(lang, r.status).Inc()
	if started {
		m.wait.WithLabelValues(lang).Observe(r.wait.Seconds())
	}
	if ran {
		m.duration.WithLabelValues(lang).Observe(r.time.Seconds())
		m.memory.WithLabelValues(lang).Observe(float64(r.memory))
	}
}

// nodeEvent counts a node event; the autoscaler's (noted through the scheduler as
// starting, start_failed and stopped) count as autoscaler events too.
func (m *metrics) nodeEvent(kind scheduler.NodeEventKind) {
	switch kind {
	case scheduler.NodeEventStarting:
		m.autoscaler.WithLabelValues(AutoscaleStart).Inc()
	case scheduler.NodeEventStopped:
		m.autoscaler.WithLabelValues(AutoscaleStop).Inc()
	case scheduler.NodeEventStartFailed:
		m.autoscaler.WithLabelValues(autoscaleStartFailed).Inc()
	}
	label := string(kind)
	if !slices.Contains(scheduler.NodeEventKinds(), kind) {
		label = "other"
	}
	m.nodeEvents.WithLabelValues(label).Inc()
}

// clusterCollector turns a Snapshot into gauges at scrape time.
type clusterCollector struct {
	snapshot func() (scheduler.Snapshot, bool)
}

var (
	descQueue     = prometheus.NewDesc("runbox_queue_depth", "Accepted jobs waiting for a slot.", nil, nil)
	descRunning   = prometheus.NewDesc("runbox_jobs_running", "Jobs running now, on every node.", nil, nil)
	descCapacity  = prometheus.NewDesc("runbox_capacity", "Programs the ready nodes run at once (sum of their slots).", nil, nil)
	descNodes     = prometheus.NewDesc("runbox_nodes", "Nodes by role (master, slave) and state (ready, draining).", []string{"role", "state"}, nil)
	descAccepted  = prometheus.NewDesc("runbox_jobs_accepted_total", "Jobs accepted (journaled) since the master started.", nil, nil)
	descRetried   = prometheus.NewDesc("runbox_jobs_retried_total", "Dispatches repeated because a node was lost.", nil, nil)
	descNodeCPU   = prometheus.NewDesc("runbox_node_cpu_percent", "A node's CPU use, percent of its CPU budget (0-100).", []string{"node", "role"}, nil)
	descNodeMem   = prometheus.NewDesc("runbox_node_memory_used_bytes", "A node's memory in use.", []string{"node", "role"}, nil)
	descNodeTotal = prometheus.NewDesc("runbox_node_memory_total_bytes", "Memory available to a node.", []string{"node", "role"}, nil)
	descNodeRun   = prometheus.NewDesc("runbox_node_jobs_running", "Jobs running on a node.", []string{"node", "role"}, nil)
	descNodeCap   = prometheus.NewDesc("runbox_node_capacity", "Programs a node runs at once.", []string{"node", "role"}, nil)
	descNodeDone  = prometheus.NewDesc("runbox_node_jobs_done_total", "Jobs a node finished since it joined.", []string{"node", "role"}, nil)
)

func (c *clusterCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descQueue, descRunning, descCapacity, descNodes, descAccepted, descRetried,
		descNodeCPU, descNodeMem, descNodeTotal, descNodeRun, descNodeCap, descNodeDone} {
		ch <- d
	}
}

func (c *clusterCollector) Collect(ch chan<- prometheus.Metric) {
	snap, ok := c.snapshot()
	if !ok {
		return // no scheduler yet: no cluster gauges rather than zeros that look real
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge(descQueue, float64(len(snap.Queued)))
	gauge(descRunning, float64(len(snap.Running)))
	counter(descAccepted, float64(snap.Totals.Accepted))
	counter(descRetried, float64(snap.Totals.Retried))
	count := map[[2]string]int{}
	capacity := 0
	for _, n := range snap.Nodes {
		count[[2]string{n.Role, n.State}]++
		if n.State == scheduler.NodeReady {
			capacity += n.Capacity
		}
		gauge(descNodeCPU, n.Load.CPU, n.Name, n.Role)
		gauge(descNodeMem, float64(n.Load.MemUsed), n.Name, n.Role)
		gauge(descNodeTotal, float64(n.Load.MemTotal), n.Name, n.Role)
		gauge(descNodeRun, float64(n.Running), n.Name, n.Role)
		gauge(descNodeCap, float64(n.Capacity), n.Name, n.Role)
		counter(descNodeDone, float64(n.Done), n.Name, n.Role)
	}
	gauge(descCapacity, float64(capacity))
	for _, role := range nodeRoles {
		for _, state := range nodeStates {
			gauge(descNodes, float64(count[[2]string{role, state}]), role, state)
			delete(count, [2]string{role, state})
		}
	}
	for k, v := range count { // a role or state this code does not know yet
		gauge(descNodes, float64(v), k[0], k[1])
	}
}

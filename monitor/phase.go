package monitor

import (
	"github.com/prometheus/client_golang/prometheus"

	"runbox/sandbox"
)

// phaseMetrics is runbox_job_phase_seconds: where the time of finished jobs went, phase
// by phase, from each Result.Trace (a job without a trace, or a phase that did not happen,
// adds nothing).
type phaseMetrics struct {
	seconds *prometheus.HistogramVec // phase
}

// newPhaseMetrics returns the phase histogram, registered on reg.
func newPhaseMetrics(reg prometheus.Registerer) *phaseMetrics {
	p := &phaseMetrics{seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "runbox_job_phase_seconds",
		Help:    "Where finished jobs' time went, by phase: queue (waiting in the scheduler), acquire (a warm container from the pool, or one created and started), send (the program to the sandbox), compile, gate (the program's own memory limit set after its compile), run, result (the program's end to its result in hand).",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
	}, []string{"phase"})}
	// Every phase's series exists from the start, at zero, so that rate() and the
	// dashboards see it before its first job.
	for _, name := range sandbox.TracePhaseNames() {
		p.seconds.WithLabelValues(name)
	}
	reg.MustRegister(p.seconds)
	return p
}

// observe adds the measured phases of res's trace; res may be nil.
func (p *phaseMetrics) observe(res *sandbox.Result) {
	if res == nil {
		return
	}
	for _, ph := range res.Trace.Phases() {
		p.seconds.WithLabelValues(ph.Name).Observe(ph.Duration.Seconds())
	}
}

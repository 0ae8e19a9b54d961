package monitor_test

import (
	"strings"
	"testing"
	"time"

	"runbox/monitor"
	"runbox/sandbox"
	"runbox/scheduler"
)

// Each finished job's Result.Trace feeds runbox_job_phase_seconds, phase by phase; a
// result without a trace, a job that could not run and a phase that did not happen add
// nothing, and every phase has its series from the start.
func TestPhaseHistogram(t *testing.T) {
	t.Parallel()
	m, srv := newMonitor(t, monitor.DefaultConfig(), &fakeSource{snap: cluster()})
	info := scheduler.Info{ID: "j", Language: "python", State: scheduler.StateDone, Submitted: t0, Started: t0.Add(time.Millisecond)}
	m.JobFinished(info, &sandbox.Result{Status: sandbox.StatusOK, Trace: &sandbox.Trace{
		Queue: 2 * time.Millisecond, Acquire: 30 * time.Millisecond, Pooled: true, Run: 40 * time.Millisecond, Result: time.Millisecond}}, nil, 0)
	info.Language = "c"
	m.JobFinished(info, &sandbox.Result{Status: sandbox.StatusOK, Trace: &sandbox.Trace{
		Acquire: 500 * time.Millisecond, Send: 3 * time.Millisecond, Compile: 300 * time.Millisecond, Gate: 20 * time.Millisecond, Run: 60 * time.Millisecond}}, nil, 0)
	m.JobFinished(info, &sandbox.Result{Status: sandbox.StatusOK}, nil, 0) // no trace: a runner that does not measure
	m.JobFinished(info, nil, scheduler.ErrCrashedNode, 0)

	_, body := get(t, srv.URL+"/metrics")
	for _, want := range []string{
		`runbox_job_phase_seconds_count{phase="queue"} 1`,
		`runbox_job_phase_seconds_sum{phase="queue"} 0.002`,
		`runbox_job_phase_seconds_count{phase="acquire"} 2`,
		`runbox_job_phase_seconds_sum{phase="acquire"} 0.53`,
		`runbox_job_phase_seconds_bucket{phase="acquire",le="0.05"} 1`,
		`runbox_job_phase_seconds_bucket{phase="acquire",le="0.5"} 2`,
		`runbox_job_phase_seconds_count{phase="send"} 1`,
		`runbox_job_phase_seconds_count{phase="compile"} 1`,
		`runbox_job_phase_seconds_sum{phase="compile"} 0.3`,
		`runbox_job_phase_seconds_count{phase="gate"} 1`,
		`runbox_job_phase_seconds_sum{phase="gate"} 0.02`,
		`runbox_job_phase_seconds_count{phase="run"} 2`,
		`runbox_job_phase_seconds_sum{phase="run"} 0.1`,
		`runbox_job_phase_seconds_count{phase="result"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	// Before any job: every phase is there, at zero.
	_, srv = newMonitor(t, monitor.DefaultConfig(), nil)
	_, body = get(t, srv.URL+"/metrics")
	for _, phase := range sandbox.TracePhaseNames() {
		if want := `runbox_job_phase_seconds_count{phase="` + phase + `"} 0`; !strings.Contains(body, want) {
			t.Errorf("/metrics of a new monitor lacks %q", want)
		}
	}
}

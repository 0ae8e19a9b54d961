package sandbox

import "time"

// Trace says where one job's time went, phase by phase, so that a claim about speed is
// measured rather than guessed. A zero phase did not happen or was not measured. The
// Runner fills the container phases; the scheduler fills Queue; a client adds what it
// sees on its side (the round trip) itself.
type Trace struct {
	// Queue is the wait in the scheduler before a node took the job.
	Queue time.Duration `json:"queue,omitempty"`
	// Acquire is getting a container ready for the program: a warm one from the pool, or
	// one created, attached and started for this job (Pooled tells which).
	Acquire time.Duration `json:"acquire,omitempty"`
	Pooled  bool          `json:"pooled,omitempty"`
	// Send is handing the program (sources, stdin, tests) to runbox-init.
	Send time.Duration `json:"send,omitempty"`
	// Compile and Run are the phases inside the container, as the Runner saw them.
	Compile time.Duration `json:"compile,omitempty"`
	// Gate is between the two, for a program that compiled in a box with the compiler's
	// memory: the engine setting the program's own limit before its run.
	Gate time.Duration `json:"gate,omitempty"`
	Run  time.Duration `json:"run,omitempty"`
	// Result is from the program's end to the Runner holding its result (the final
	// frames, the cgroup readings).
	Result time.Duration `json:"result,omitempty"`
}

// TracePhase is one named phase of a Trace.
type TracePhase struct {
	Name     string
	Duration time.Duration
}

// TracePhaseNames names a Trace's phases in the order they happen, as metrics and
// reports label them. It returns a new slice each time.
func TracePhaseNames() []string {
	return []string{"queue", "acquire", "send", "compile", "gate", "run", "result"}
}

// Phases lists t's measured phases in the order they happen, by their metric names.
func (t *Trace) Phases() []TracePhase {
	var out []TracePhase
	for _, p := range t.All() {
		if p.Duration > 0 {
			out = append(out, p)
		}
	}
	return out
}

// All lists every phase of t, measured or not (zero), negative ones too (a trace from
// outside, to be checked), in the order of TracePhaseNames.
func (t *Trace) All() []TracePhase {
	if t == nil {
		return nil
	}
	durations := []time.Duration{t.Queue, t.Acquire, t.Send, t.Compile, t.Gate, t.Run, t.Result}
	out := make([]TracePhase, len(durations))
	for i, name := range TracePhaseNames() {
		out[i] = TracePhase{name, durations[i]}
	}
	return out
}

// Merge returns the phases of a and b summed, Pooled only when both runs were pooled; a
// nil side counts for nothing. A judged run merges its containers' traces: its cases run
// side by side, so the sums are container time and may pass the job's wall time.
func Merge(a, b *Trace) *Trace {
	switch {
	case a == nil && b == nil:
		return nil
	case a == nil:
		c := *b
		return &c
	case b == nil:
		c := *a
		return &c
	}
	return &Trace{
		Queue:   a.Queue + b.Queue,
		Acquire: a.Acquire + b.Acquire,
		Pooled:  a.Pooled && b.Pooled,
		Send:    a.Send + b.Send,
		Compile: a.Compile + b.Compile,
		Gate:    a.Gate + b.Gate,
		Run:     a.Run + b.Run,
		Result:  a.Result + b.Result,
	}
}

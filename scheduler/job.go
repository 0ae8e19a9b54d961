package scheduler

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"fmt"
	"strings"
	"sync"
	"time"

	"runbox/sandbox"
)

// State is where a job is in its life.
type State string

// Job states.
const (
	StateQueued  State = "queued"
	StateRunning State = "running"
	StateDone    State = "done"
)

// EventKind tells what an Event carries.
type EventKind uint8

// Event kinds, in the order a job can produce them: Queued (any number of times, with
// the new position), Started, Output (any number of times), then exactly one Done.
const (
	EventQueued EventKind = iota + 1
	EventStarted
	EventOutput
	EventDone
)

// Event is one entry of a job's log. The log is append-only, so a watcher that lost its
// connection resumes from the index of the first event it did not see.
type Event struct {
	Kind EventKind
	// Position is the 1-based queue position (EventQueued).
	Position int
	// Node names where the job runs (EventStarted).
	Node string
	// Chunk is live output (EventOutput).
	Chunk sandbox.Chunk
	// Result and Err end the job (EventDone): Err is set when the program could not run.
	Result *sandbox.Result
	Err    error
}

// Job is one accepted program. Its methods are safe for concurrent use.
type Job struct {
	ID string
	// Spec is what the job runs. When the job ends its inputs are dropped (see
	// WithoutInputs: files' contents, stdin, test cases' data), so that a retained result
	// does not keep them in memory; read them before Done is closed, or keep a copy.
	Spec        sandbox.Spec
	Interactive bool
	Submitted   time.Time
	// Owner is who submitted the job (a token's name; "" when the server has no
	// tokens). It is journaled, so that it still decides who may see the job after a
	// restart.
	Owner string

	stdin     chan []byte   // live stdin for interactive jobs, nil otherwise
	stdinMu   sync.Mutex    // serialises sends with CloseStdin
	stdinDone bool          // under stdinMu
	doneCh    chan struct{} // closed when the job ends

	mu        sync.Mutex
	state     State
	node      string
	attempts  int
	started   time.Time
	finished  time.Time
	events    []Event
	changed   chan struct{} // closed and replaced on every append
	cancel    context.CancelFunc
	cancelled bool
	lease     int  // bumped on every dispatch and re-queue; a result under an old lease is stale
	accepted  bool // journaled; under the scheduler's mu
	ending    bool // finish has begun: a job ends once
	ended     bool // EventDone appended and doneCh closed

	slots int // Spec.Slots(), fixed at submission

	// Under the scheduler's mu:
	bytes     int64   // what the finished job holds in memory (events and result)
	unsynced  *Record // its final record, while the journal has not taken it
	finishErr string  // the last journal error for it, logged once
}

// currentLease reports whether lease is the job's current one.
func (j *Job) currentLease(lease int) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.lease == lease
}

func newJob(id, owner string, spec sandbox.Spec, interactive bool, now time.Time) *Job {
	j := &Job{ID: id, Owner: owner, Spec: spec, Interactive: interactive, Submitted: now, state: StateQueued,
		changed: make(chan struct{}), doneCh: make(chan struct{}), slots: spec.Slots()}
	if interactive {
		j.stdin = make(chan []byte, 16)
	}
	return j
}

// appendLocked adds an event and wakes the watchers.
func (j *Job) appendLocked(e Event) {
	j.events = append(j.events, e)
	close(j.changed)
	j.changed = make(chan struct{})
}

// MaxChunk is the most output one event carries; longer output is split, so that every
// event fits one wire frame.
const MaxChunk = 32 << 10

// appendOutput appends a copy of data as output events of at most MaxChunk bytes.
func (j *Job) appendOutput(s sandbox.Stream, data []byte) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.appendOutputLocked(s, data)
}

// appendOutputLease is appendOutput for the dispatch under lease; output of a stale
// lease is dropped.
func (j *Job) appendOutputLease(lease int, s sandbox.Stream, data []byte) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.lease == lease {
		j.appendOutputLocked(s, data)
	}
}

func (j *Job) appendOutputLocked(s sandbox.Stream, data []byte) {
	for len(data) > 0 {
		n := min(len(data), MaxChunk)
		j.appendLocked(Event{Kind: EventOutput, Chunk: sandbox.Chunk{Stream: s, Data: append([]byte(nil), data[:n]...)}})
		data = data[n:]
	}
}

func (j *Job) append(e Event) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.appendLocked(e)
}

// Events returns the events from index from on, waiting until there is at least one or
// ctx ends. done reports that the returned events end with EventDone. The log is
// append-only, so from must be between 0 and the number of events; from past the end of
// a finished job's log returns its last event (EventDone) again, so that a watcher never
// waits for what cannot come. A from out of range wraps sandbox.ErrInvalidRequest.
func (j *Job) Events(ctx context.Context, from int) (events []Event, done bool, err error) {
	for {
		j.mu.Lock()
		n := len(j.events)
		if from < 0 || from > n {
			j.mu.Unlock()
			return nil, false, fmt.Errorf("%w: resume from event %d of job %s, which has %d", sandbox.ErrInvalidRequest, from, j.ID, n)
		}
		if from == n && n > 0 && j.events[n-1].Kind == EventDone {
			from = n - 1
		}
		if from < len(j.events) {
			events = j.events[from:len(j.events):len(j.events)]
			done = events[len(events)-1].Kind == EventDone
			j.mu.Unlock()
			return events, done, nil
		}
		ch := j.changed
		j.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, false, ctx.Err()
		case <-ch:
		}
	}
}

// Info is a snapshot of a job for status views.
type Info struct {
	ID       string `json:"id"`
	Owner    string `json:"owner,omitempty"`
	Language string `json:"language"`
	// Slots is how many program slots the job holds while it runs (Spec.Slots).
	Slots     int            `json:"slots,omitempty"`
	State     State          `json:"state"`
	Node      string         `json:"node,omitempty"`
	Attempts  int            `json:"attempts"`
	Submitted time.Time      `json:"submitted"`
	Started   time.Time      `json:"started,omitzero"`
	Finished  time.Time      `json:"finished,omitzero"`
	Status    sandbox.Status `json:"status,omitempty"` // when done and the program ran
	Error     string         `json:"error,omitempty"`  // when done and it could not run
}

// Info returns a snapshot of the job.
func (j *Job) Info() Info {
	j.mu.Lock()
	defer j.mu.Unlock()
	in := Info{ID: j.ID, Owner: j.Owner, Language: j.Spec.Language, Slots: j.slots, State: j.state, Node: j.node, Attempts: j.attempts,
		Submitted: j.Submitted, Started: j.started, Finished: j.finished}
	if n := len(j.events); n > 0 && j.events[n-1].Kind == EventDone {
		if e := j.events[n-1]; e.Err != nil {
			in.Error = e.Err.Error()
		} else {
			in.Status = e.Result.Status
		}
	}
	return in
}

// SendStdin forwards live input to an interactive job; it blocks while the job's input
// buffer is full. It is a no-op for a finished job or after CloseStdin.
func (j *Job) SendStdin(ctx context.Context, data []byte) error {
	if j.stdin == nil {
		return nil
	}
	j.stdinMu.Lock()
	defer j.stdinMu.Unlock()
	if j.stdinDone {
		return nil
	}
	select {
	case j.stdin <- append([]byte(nil), data...):
		return nil
	case <-j.doneCh:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// CloseStdin ends an interactive job's input.
func (j *Job) CloseStdin() {
	if j.stdin == nil {
		return
	}
	j.stdinMu.Lock()
	defer j.stdinMu.Unlock()
	if !j.stdinDone {
		j.stdinDone = true
		close(j.stdin)
	}
}

// Done is closed when the job has ended.
func (j *Job) Done() <-chan struct{} { return j.doneCh }

// newID returns a sortable, unique job id: time then randomness, base32.
func newID(now time.Time) string {
	var b [13]byte
	binary.BigEndian.PutUint64(b[:8], uint64(now.UnixMilli()))
	rand.Read(b[8:])
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[2:]))
}

// outputSlack is how far past its caps one attempt's output may go (chunk and frame
// boundaries) before the master drops the rest.
const outputSlack = 64 << 10

// outputBudget is the most output one attempt adds to a job's event log: the run's
// stdout+stderr cap, the compiler output's own cap (the same Limits.Output) and
// outputSlack. A node that sends more (a hostile or broken slave) is not believed.
func outputBudget(spec sandbox.Spec) int64 {
	lim := spec.Limits.WithDefaults(sandbox.DefaultLimits())
	return 2*lim.Output + outputSlack
}

// Caps of what a node's Result may hold beyond the output caps.
const (
	maxResultText = 4 << 10 // Message, a case's Diff and Message, Signal
	maxNodeName   = 256
)

// clipResult cuts what a node answered to what the job's limits allow: stdout, stderr and
// the compiler's output to the output cap (plus slack) each, at most one case result per
// test case, each with at most MaxCaseStderr of stderr, and short texts. The artefact
// never leaves the node that compiled it.
func clipResult(res sandbox.Result, spec sandbox.Spec) sandbox.Result {
	lim := spec.Limits.WithDefaults(sandbox.DefaultLimits())
	limit := int(lim.Output + outputSlack)
	res.Stdout = clip(res.Stdout, limit)
	res.Stderr = clip(res.Stderr, limit)
	res.CompileOutput = clip(res.CompileOutput, limit)
	res.Message = clipString(res.Message, maxResultText)
	res.Signal = clipString(res.Signal, 64)
	res.Node = clipString(res.Node, maxNodeName)
	res.Artifact = nil
	if len(res.Cases) > len(spec.Tests) {
		res.Cases = res.Cases[:len(spec.Tests)]
	}
	for i := range res.Cases {
		c := &res.Cases[i]
		c.Name = clipString(c.Name, 128)
		c.Message = clipString(c.Message, maxResultText)
		c.Diff = clipString(c.Diff, maxResultText)
		c.Signal = clipString(c.Signal, 64)
		c.Stderr = clip(c.Stderr, sandbox.MaxCaseStderr)
	}
	return res
}

func clip(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n:n]
	}
	return b
}

func clipString(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// jobOverhead approximates what a finished job holds beyond its output and result.
const jobOverhead = 1 << 10

// bytesLocked is what the job holds in memory once finished: its output events, its
// result and a fixed overhead (its inputs are dropped by then).
func (j *Job) bytesLocked() int64 {
	n := int64(jobOverhead) + InputBytes(j.Spec)
	for _, e := range j.events {
		n += int64(len(e.Chunk.Data)) + 64
		if e.Result != nil {
			n += ResultBytes(*e.Result)
		}
	}
	return n
}

// attemptTimeout is how long the master waits for one dispatch of spec on a node that
// runs parallel programs at once: the compile and run limits (for a judged run, the
// compile limit and one run limit per wave of cases run side by side, plus caseGrace per
// wave for starting their sandboxes), plus grace. Zero limits count as the sandbox's
// defaults.
func attemptTimeout(spec sandbox.Spec, parallel int, grace, caseGrace time.Duration) time.Duration {
	lim := spec.Limits.WithDefaults(sandbox.DefaultLimits())
	if len(spec.Tests) == 0 {
		return lim.CompileTime + lim.RunTime + grace
	}
	p := max(1, min(parallel, sandbox.MaxParallelCases))
	waves := (len(spec.Tests) + p - 1) / p
	return lim.CompileTime + time.Duration(waves)*(lim.RunTime+caseGrace) + grace
}

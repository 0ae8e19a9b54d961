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
	ID          string
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
}

// currentLease reports whether lease is the job's current one.
func (j *Job) currentLease(lease int) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.lease == lease
}

func newJob(id, owner string, spec sandbox.Spec, interactive bool, now time.Time) *Job {
	j := &Job{ID: id, Owner: owner, Spec: spec, Interactive: interactive, Submitted: now, state: StateQueued,
		changed: make(chan struct{}), doneCh: make(chan struct{})}
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
	ID        string         `json:"id"`
	Owner     string         `json:"owner,omitempty"`
	Language  string         `json:"language"`
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
	in := Info{ID: j.ID, Owner: j.Owner, Language: j.Spec.Language, State: j.state, Node: j.node, Attempts: j.attempts,
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

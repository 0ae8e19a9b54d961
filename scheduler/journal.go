package scheduler

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"runbox/sandbox"
)

// Record is a job as the journal keeps it. A finished job's record keeps its result and
// drops its inputs (see WithoutInputs): files' contents, stdin and test cases' data.
type Record struct {
	ID          string          `json:"id"`
	Spec        sandbox.Spec    `json:"spec"`
	Interactive bool            `json:"interactive,omitempty"`
	Owner       string          `json:"owner,omitempty"`
	Submitted   time.Time       `json:"submitted"`
	Done        bool            `json:"done"`
	Result      *sandbox.Result `json:"result,omitempty"`
	ErrCode     string          `json:"err_code,omitempty"`
	ErrMessage  string          `json:"err_message,omitempty"`
	// Attempts counts the job's dispatches: journaled when each starts (Journal.Dispatch),
	// so that a job that was running each time the master died is not run forever.
	Attempts int       `json:"attempts,omitempty"`
	Finished time.Time `json:"finished,omitzero"`
}

// Journal remembers accepted jobs so that none is lost when the server dies. Records read
// back are outside input (a damaged or edited file): an implementation skips, with a
// logged error, a record it cannot decode rather than failing or panicking.
//
// Accept, Dispatch and Finish block until their write is durable (an fsync). Their ctx
// stops a call that has not started writing: it then returns an error wrapping
// ctx.Err() and writes nothing. A write under way is not interrupted (an fsync cannot
// be), so it completes even when ctx ends meanwhile.
type Journal interface {
	// Accept stores a newly accepted job. It returns only once the record is durable:
	// the client gets the job's id after Accept returns. It wraps ErrStorageFull when the
	// journal cannot take the job (its disk is full, or it holds its bound of unfinished
	// jobs); nothing stored before is lost then.
	Accept(ctx context.Context, rec Record) error
	// Dispatch records that the pending job rec.ID (submitted at rec.Submitted) starts its
	// rec.Attempts-th dispatch. It returns once the count is durable, before the run
	// starts. A job that is not pending (finished, forgotten) is left alone.
	Dispatch(ctx context.Context, rec Record) error
	// Finish stores a job's end (rec.Done is true, with Result or ErrCode). A failed
	// Finish leaves the job pending; the caller may call it again.
	Finish(ctx context.Context, rec Record) error
	// Pending returns the jobs accepted and not finished, oldest first, with the attempts
	// journaled by Dispatch.
	Pending() ([]Record, error)
	// Get returns a job's record; ErrNotFound when there is none.
	Get(id string) (Record, error)
	// Close releases the journal.
	Close() error
}

// MemJournalConfig bounds what a MemJournal keeps of finished jobs: the oldest go first
// once any bound is passed.
type MemJournalConfig struct {
	// KeepFinished is how many finished records it keeps (at least 1).
	KeepFinished int
	// RetainBytes bounds the finished records' size (RecordSize; 0: keep none).
	RetainBytes int64
	// RetainAge drops finished records older than this (0: no age bound).
	RetainAge time.Duration
}

// DefaultMemJournalConfig returns the bounds of a master started without --data: 10,000
// finished records of at most DefaultRetainBytes in all, none older than a day.
func DefaultMemJournalConfig() MemJournalConfig {
	return MemJournalConfig{KeepFinished: 10000, RetainBytes: DefaultRetainBytes, RetainAge: 24 * time.Hour}
}

// Validate reports the first invalid field.
func (c MemJournalConfig) Validate() error {
	switch {
	case c.KeepFinished < 1:
		return fmt.Errorf("memory journal: keep finished %d, want at least 1", c.KeepFinished)
	case c.RetainBytes < 0:
		return fmt.Errorf("memory journal: retain bytes %d, want 0 or more", c.RetainBytes)
	case c.RetainAge < 0:
		return errors.New("memory journal: retain age must be 0 (no age bound) or more")
	}
	return nil
}

// DefaultRetainBytes is the default byte bound of retained finished jobs, in memory and
// in the journal (`runbox master --retain`).
const DefaultRetainBytes = 256 << 20

// MemJournal is a Journal in memory: nothing survives the process. It suits tests and a
// master started without --data.
type MemJournal struct {
	cfg MemJournalConfig
	now func() time.Time

	mu        sync.Mutex
	recs      map[string]Record
	done      []memDone // finished records, oldest first, for trimming
	doneBytes int64
}

type memDone struct {
	id       string
	finished time.Time
	size     int64
}

// NewMemJournal returns a MemJournal, for tests, that keeps at most keep finished records
// (at least 1: it panics otherwise), of at most DefaultRetainBytes, whatever their age.
func NewMemJournal(keep int) *MemJournal {
	m, err := NewMemJournalWith(MemJournalConfig{KeepFinished: keep, RetainBytes: DefaultRetainBytes})
	if err != nil {
		panic(err)
	}
	return m
}

// NewMemJournalWith returns a MemJournal bounded by cfg.
func NewMemJournalWith(cfg MemJournalConfig) (*MemJournal, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &MemJournal{cfg: cfg, now: time.Now, recs: map[string]Record{}}, nil
}

var _ Journal = (*MemJournal)(nil)

// Accept implements Journal.
func (m *MemJournal) Accept(ctx context.Context, rec Record) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("journal accept: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.recs[rec.ID] = rec
	return nil
}

// Dispatch implements Journal.
func (m *MemJournal) Dispatch(ctx context.Context, rec Record) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("journal dispatch: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if r, ok := m.recs[rec.ID]; ok && !r.Done {
		r.Attempts = rec.Attempts
		m.recs[rec.ID] = r
	}
	return nil
}

// Finish implements Journal.
func (m *MemJournal) Finish(ctx context.Context, rec Record) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("journal finish: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if old, ok := m.recs[rec.ID]; ok && old.Done {
		return nil // finished already (a retried Finish)
	}
	m.recs[rec.ID] = rec
	size := RecordSize(rec)
	m.done = append(m.done, memDone{id: rec.ID, finished: rec.Finished, size: size})
	m.doneBytes += size
	cutoff := time.Time{}
	if m.cfg.RetainAge > 0 {
		cutoff = m.now().Add(-m.cfg.RetainAge)
	}
	n := 0
	for n < len(m.done) && (len(m.done)-n > m.cfg.KeepFinished || m.doneBytes > m.cfg.RetainBytes || m.done[n].finished.Before(cutoff)) {
		delete(m.recs, m.done[n].id)
		m.doneBytes -= m.done[n].size
		n++
	}
	m.done = slices.Delete(m.done, 0, n)
	return nil
}

// Pending implements Journal.
func (m *MemJournal) Pending() ([]Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Record
	for _, r := range m.recs {
		if !r.Done {
			out = append(out, r)
		}
	}
	sortRecords(out)
	return out, nil
}

// Get implements Journal.
func (m *MemJournal) Get(id string) (Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.recs[id]
	if !ok {
		return Record{}, ErrNotFound
	}
	return r, nil
}

// Close implements Journal.
func (m *MemJournal) Close() error { return nil }

func sortRecords(rs []Record) {
	slices.SortFunc(rs, func(a, b Record) int {
		if c := a.Submitted.Compare(b.Submitted); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
}

// recordOverhead approximates what a record holds beyond its byte slices.
const recordOverhead = 512

// RecordSize approximates the bytes a record holds in memory: its inputs, its output and
// a fixed overhead.
func RecordSize(rec Record) int64 {
	n := int64(recordOverhead + len(rec.ID) + len(rec.Owner) + len(rec.ErrMessage))
	n += InputBytes(rec.Spec)
	if rec.Result != nil {
		n += ResultBytes(*rec.Result)
	}
	return n
}

// InputBytes is the size of a Spec's inputs: files' contents, stdin and test data.
func InputBytes(spec sandbox.Spec) int64 {
	n := int64(len(spec.Stdin) + len(spec.Artifact))
	for _, f := range spec.Files {
		n += int64(len(f.Name) + len(f.Content))
	}
	for _, tc := range spec.Tests {
		n += int64(len(tc.Name) + len(tc.Stdin) + len(tc.Expected))
	}
	return n
}

// ResultBytes is the size of a Result's variable parts.
func ResultBytes(res sandbox.Result) int64 {
	n := int64(len(res.Stdout) + len(res.Stderr) + len(res.CompileOutput) + len(res.Message) + len(res.Node) + len(res.Artifact))
	for _, c := range res.Cases {
		n += int64(64 + len(c.Name) + len(c.Message) + len(c.Diff) + len(c.Stderr) + len(c.Signal))
	}
	return n
}

// WithoutInputs returns spec without its inputs, for a finished job: files keep their
// names and lose their contents, stdin and the compiled artefact go, test cases keep
// their names and limits and lose their stdin and expected output. The language, limits
// and comparison mode stay (status views and Slots still read them).
func WithoutInputs(spec sandbox.Spec) sandbox.Spec {
	out := spec
	out.Stdin, out.Artifact = nil, nil
	out.Files = make([]sandbox.File, len(spec.Files))
	for i, f := range spec.Files {
		out.Files[i] = sandbox.File{Name: f.Name}
	}
	if spec.Tests != nil {
		out.Tests = make([]sandbox.TestCase, len(spec.Tests))
		for i, tc := range spec.Tests {
			out.Tests[i] = sandbox.TestCase{Name: tc.Name, Limits: tc.Limits}
		}
	}
	return out
}

package scheduler

import (
	"slices"
	"strings"
	"sync"
	"time"

	"runbox/sandbox"
)

// Record is a job as the journal keeps it.
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
	Attempts    int             `json:"attempts,omitempty"`
	Finished    time.Time       `json:"finished,omitzero"`
}

// Journal remembers accepted jobs so that none is lost when the server dies.
type Journal interface {
	// Accept stores a newly accepted job. It returns only once the record is durable:
	// the client gets the job's id after Accept returns.
	Accept(rec Record) error
	// Finish stores a job's end (rec.Done is true, with Result or ErrCode).
	Finish(rec Record) error
	// Pending returns the jobs accepted and not finished, oldest first.
	Pending() ([]Record, error)
	// Get returns a job's record; ErrNotFound when there is none.
	Get(id string) (Record, error)
	// Close releases the journal.
	Close() error
}

// MemJournal is a Journal in memory: nothing survives the process. It suits tests and a
// master started without --data.
type MemJournal struct {
	mu   sync.Mutex
	recs map[string]Record
	max  int
	done []string // finished ids, oldest first, for trimming
}

// NewMemJournal returns a MemJournal that keeps at most max finished records.
func NewMemJournal(max int) *MemJournal { return &MemJournal{recs: map[string]Record{}, max: max} }

var _ Journal = (*MemJournal)(nil)

// Accept implements Journal.
func (m *MemJournal) Accept(rec Record) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.recs[rec.ID] = rec
	return nil
}

// Finish implements Journal.
func (m *MemJournal) Finish(rec Record) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.recs[rec.ID] = rec
	m.done = append(m.done, rec.ID)
	for len(m.done) > m.max {
		delete(m.recs, m.done[0])
		m.done = m.done[1:]
	}
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
